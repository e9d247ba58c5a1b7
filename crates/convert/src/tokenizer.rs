//! Tokenizer fields for GGUF (`tokenizer.ggml.*`) from a Hugging Face tokenizer.json (byte-level
//! BPE) or a SentencePiece tokenizer.model.

use std::path::Path;

use bitnet_format::{Array, Metadata, Value, ValueType};
use serde_json::Value as Json;

use crate::{ConvertError, Result, read_json, strings};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Llama 3's pre-tokenizer split pattern: a tokenizer.json that uses it gets `pre = "llama-bpe"`.
const LLAMA3_SPLIT_START: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}";
/// Qwen2's (Qwen3's) pattern: Llama 3's with single digits; `pre = "qwen2"`.
const QWEN2_SPLIT_START: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?";
const UNKNOWN: i32 = 2;
const BYTE: i32 = 6;

/// The two vocabulary kinds llama.cpp knows that ternary checkpoints use.
#[derive(Debug, Clone)]
pub enum Vocab {
    /// Byte-level BPE from tokenizer.json (`tokenizer.ggml.model = "gpt2"`): 2B-4T, Falcon3,
    /// Llama 3.
    Bpe {
        /// `tokenizer.ggml.pre`: the pre-tokenizer name llama.cpp knows.
        pre: String,
        merges: Vec<String>,
    },
    /// SentencePiece from tokenizer.model (`tokenizer.ggml.model = "llama"`): 1bitLLM, Llama 1/2.
    SentencePiece {
        scores: Vec<f32>,
        /// The model puts `▁` in front of the text (SentencePiece's `add_dummy_prefix`).
        add_space_prefix: bool,
    },
}

/// What a GGUF file says about its tokenizer.
#[derive(Debug, Clone)]
pub struct TokenizerMetadata {
    pub vocab: Vocab,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    /// `add_eos_token` when tokenizer_config.json says.
    pub add_eos: Option<bool>,
    pub chat_template: Option<String>,
}

fn token_text(v: &Json) -> Option<&str> {
    v.as_str().or_else(|| v["content"].as_str())
}

impl TokenizerMetadata {
    /// Reads the tokenizer in `dir`: tokenizer.model (SentencePiece) when there is one, as
    /// bitnet.cpp's converter prefers it, else tokenizer.json (byte-level BPE); special ids from
    /// tokenizer_config.json and config.json. The vocabulary is padded with `[PADn]` tokens up to
    /// `vocab_size` (the embedding's row count) when the tokenizer has fewer.
    pub fn load(dir: &Path, vocab_size: usize) -> Result<TokenizerMetadata> {
        let Pieces { mut vocab, mut tokens, types: mut token_types, trainer_ids } =
            if dir.join("tokenizer.model").exists() { sentencepiece(dir)? } else { byte_level_bpe(dir, vocab_size)? };
        if tokens.len() > vocab_size {
            return Err(ConvertError::Checkpoint {
                path: dir.into(),
                message: format!("the tokenizer has {} tokens, more than vocab_size {vocab_size}", tokens.len()),
            });
        }
        for i in 1..=vocab_size - tokens.len() {
            tokens.push(format!("[PAD{i}]"));
            token_types.push(UNUSED);
            if let Vocab::SentencePiece { scores, .. } = &mut vocab {
                scores.push(-1000.0);
            }
        }

        let tc = dir.join("tokenizer_config.json");
        let tc = if tc.exists() { read_json(&tc)? } else { Json::Null };
        let cfg = read_json(&dir.join("config.json")).unwrap_or(Json::Null);
        let id_of = |key: &str, spm: Option<i32>| -> Option<u32> {
            let text = token_text(&tc[key]);
            text.and_then(|t| tokens.iter().position(|x| x == t))
                .map(|i| i as u32)
                .or_else(|| cfg[format!("{key}_id")].as_u64().map(|v| v as u32))
                .or_else(|| spm.and_then(|v| u32::try_from(v).ok()))
                .filter(|&i| (i as usize) < tokens.len())
        };
        let [spm_bos, spm_eos, spm_unk, spm_pad] = trainer_ids.map_or([None; 4], |ids| ids.map(Some));
        let bos = id_of("bos_token", spm_bos);
        let eos = id_of("eos_token", spm_eos);
        let unk = id_of("unk_token", spm_unk);
        let pad = id_of("pad_token", spm_pad);
        // tokenizer.json's post-processor template says which special tokens encoding adds
        // (Qwen3-Embedding's appends <|endoftext|>, which last-token pooling reads): it decides
        // where tokenizer_config.json is silent.
        let template = template_specials(dir, &tokens)?;
        let (mut bos, mut eos) = (bos, eos);
        let mut add_bos = bos.is_some() && tc["add_bos_token"].as_bool().unwrap_or(true);
        let mut add_eos = tc["add_eos_token"].as_bool();
        // A bare `$A` template (what transformers 5 saves for a tokenizer without one) says nothing.
        if let Some((first, last)) = template.filter(|(f, l)| f.is_some() || l.is_some()) {
            if tc["add_bos_token"].is_null() {
                add_bos = first.is_some();
                bos = first.or(bos);
            }
            if tc["add_eos_token"].is_null() && last.is_some() {
                add_eos = Some(true);
                eos = last;
            }
        }
        let chat_template = tc["chat_template"].as_str().map(str::to_owned);
        Ok(TokenizerMetadata { vocab, tokens, token_types, bos, eos, unk, pad, add_bos, add_eos, chat_template })
    }

    /// Writes the `tokenizer.ggml.*` keys llama.cpp reads.
    pub fn write(&self, m: &mut Metadata) {
        match &self.vocab {
            Vocab::Bpe { pre, merges } => {
                m.insert("tokenizer.ggml.model", "gpt2");
                m.insert("tokenizer.ggml.pre", pre.as_str());
                m.insert("tokenizer.ggml.tokens", strings(self.tokens.iter().cloned()));
                m.insert("tokenizer.ggml.token_type", i32s(&self.token_types));
                m.insert("tokenizer.ggml.merges", strings(merges.iter().cloned()));
            }
            Vocab::SentencePiece { scores, add_space_prefix } => {
                m.insert("tokenizer.ggml.model", "llama");
                m.insert("tokenizer.ggml.pre", "default");
                m.insert("tokenizer.ggml.tokens", strings(self.tokens.iter().cloned()));
                let scores = scores.iter().map(|&s| Value::F32(s)).collect();
                m.insert("tokenizer.ggml.scores", Array::new(ValueType::F32, scores).expect("all F32"));
                m.insert("tokenizer.ggml.token_type", i32s(&self.token_types));
                m.insert("tokenizer.ggml.add_space_prefix", *add_space_prefix);
            }
        }
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", self.bos),
            ("tokenizer.ggml.eos_token_id", self.eos),
            ("tokenizer.ggml.unknown_token_id", self.unk),
            ("tokenizer.ggml.padding_token_id", self.pad),
        ] {
            if let Some(id) = id {
                m.insert(key, id);
            }
        }
        m.insert("tokenizer.ggml.add_bos_token", self.add_bos);
        if let Some(add_eos) = self.add_eos {
            m.insert("tokenizer.ggml.add_eos_token", add_eos);
        }
        if let Some(t) = &self.chat_template {
            m.insert("tokenizer.chat_template", t.as_str());
        }
    }
}

/// The special tokens tokenizer.json's `TemplateProcessing` post-processor puts before and after
/// a single text, when it has one.
type Template = (Option<u32>, Option<u32>);

fn template_specials(dir: &Path, tokens: &[String]) -> Result<Option<Template>> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Ok(None);
    }
    let j = read_json(&path)?;
    let pp = &j["post_processor"];
    let single = if pp["type"] == "TemplateProcessing" {
        &pp["single"]
    } else if pp["type"] == "Sequence" {
        match pp["processors"].as_array().into_iter().flatten().find(|p| p["type"] == "TemplateProcessing") {
            Some(t) => &t["single"],
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    let Some(items) = single.as_array() else { return Ok(None) };
    let special = |item: Option<&Json>| -> Option<u32> {
        let name = item?["SpecialToken"]["id"].as_str()?;
        tokens.iter().position(|t| t == name).map(|i| i as u32)
    };
    Ok(Some((special(items.first()), special(items.last()))))
}

/// A vocabulary as read, before padding and special ids.
struct Pieces {
    vocab: Vocab,
    tokens: Vec<String>,
    types: Vec<i32>,
    /// SentencePiece's trainer bos/eos/unk/pad ids (−1: none).
    trainer_ids: Option<[i32; 4]>,
}

/// tokenizer.json's byte-level BPE: tokens by id (gaps as `[PADn]`), types, merges, pre-tokenizer.
fn byte_level_bpe(dir: &Path, vocab_size: usize) -> Result<Pieces> {
    let path = dir.join("tokenizer.json");
    let j = read_json(&path)?;
    let bad = |message: String| ConvertError::Checkpoint { path: path.clone(), message };
    if j["model"]["type"] != "BPE" {
        return Err(ConvertError::Unsupported(format!(
            "tokenizer model {} (byte-level BPE tokenizers are supported)",
            j["model"]["type"]
        )));
    }
    if !j["pre_tokenizer"].to_string().contains("\"ByteLevel\"") && j["model"]["byte_fallback"] == true {
        return sentencepiece_json(&j, &path, vocab_size);
    }
    if !j["pre_tokenizer"].to_string().contains("\"ByteLevel\"") {
        return Err(ConvertError::Unsupported(format!(
            "{}: a BPE tokenizer without byte-level pre-tokenization (SentencePiece style); put its \
             tokenizer.model beside it",
            path.display()
        )));
    }
    let vocab = j["model"]["vocab"].as_object().ok_or_else(|| bad("missing model.vocab".into()))?;
    let added = j["added_tokens"].as_array().cloned().unwrap_or_default();
    let max_id = vocab
        .values()
        .filter_map(Json::as_u64)
        .chain(added.iter().filter_map(|a| a["id"].as_u64()))
        .max()
        .ok_or_else(|| bad("empty vocabulary".into()))?;
    // The padded vocabulary is sized from the largest id: bounded by the model's vocab_size (itself
    // checked against the embedding rows) before anything is allocated.
    if max_id >= vocab_size as u64 {
        return Err(bad(format!("token id {max_id} is beyond the model's vocab_size {vocab_size}")));
    }
    let n = max_id as usize + 1;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut token_types = vec![NORMAL; n];
    for (text, id) in vocab {
        let id = id.as_u64().ok_or_else(|| bad(format!("token {text:?} has a non-integer id")))? as usize;
        tokens[id] = Some(text.clone());
    }
    for a in &added {
        let (Some(id), Some(text)) = (a["id"].as_u64(), a["content"].as_str()) else {
            return Err(bad(format!("malformed added token {a}")));
        };
        tokens[id as usize] = Some(text.to_owned());
        token_types[id as usize] = if a["special"].as_bool().unwrap_or(false) { CONTROL } else { USER_DEFINED };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                token_types[i] = UNUSED;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges = j["model"]["merges"]
        .as_array()
        .ok_or_else(|| bad("missing model.merges".into()))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) if pair.len() == 2 => {
                Ok(format!("{} {}", pair[0].as_str().unwrap_or(""), pair[1].as_str().unwrap_or("")))
            }
            other => Err(bad(format!("malformed merge {other}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let pre_tokenizer = j["pre_tokenizer"].to_string();
    let pre = if pre_tokenizer.contains(&LLAMA3_SPLIT_START.replace('\\', "\\\\")) {
        "llama-bpe"
    } else if pre_tokenizer.contains(&QWEN2_SPLIT_START.replace('\\', "\\\\")) {
        "qwen2"
    } else {
        "gpt2"
    };
    Ok(Pieces { vocab: Vocab::Bpe { pre: pre.into(), merges }, tokens, types: token_types, trainer_ids: None })
}

/// A SentencePiece-style BPE tokenizer.json (`▁` for spaces, byte fallback: Gemma's) written as
/// a `llama` vocabulary the way bitnet.cpp's embedding converter does: a piece's score is minus
/// the rank of the merge that makes it (0 for single characters and bytes), added tokens score
/// −1000 (control when special), `<0xXX>` pieces are bytes; a space prefix only when the
/// normalizer prepends `▁`.
fn sentencepiece_json(j: &Json, path: &Path, vocab_size: usize) -> Result<Pieces> {
    let bad = |message: String| ConvertError::Checkpoint { path: path.into(), message };
    let vocab = j["model"]["vocab"].as_object().ok_or_else(|| bad("missing model.vocab".into()))?;
    let mut rank: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, m) in j["model"]["merges"].as_array().into_iter().flatten().enumerate() {
        let joined = match m {
            Json::String(s) => s.replacen(' ', "", 1),
            Json::Array(pair) => pair.iter().filter_map(Json::as_str).collect(),
            other => return Err(bad(format!("malformed merge {other}"))),
        };
        rank.entry(joined).or_insert(i);
    }
    let added = j["added_tokens"].as_array().cloned().unwrap_or_default();
    let mut n = 0usize;
    for id in vocab.values().filter_map(Json::as_u64).chain(added.iter().filter_map(|a| a["id"].as_u64())) {
        if id >= vocab_size as u64 {
            return Err(bad(format!("token id {id} is beyond the model's vocab_size {vocab_size}")));
        }
        n = n.max(id as usize + 1);
    }
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let (mut types, mut scores) = (vec![UNUSED; n], vec![-10000f32; n]);
    for (text, id) in vocab {
        let id = id.as_u64().ok_or_else(|| bad(format!("token {text:?} has a non-integer id")))? as usize;
        let is_byte = text.len() == 6 && text.starts_with("<0x") && text.ends_with('>');
        (types[id], scores[id]) = if is_byte {
            (BYTE, 0.0)
        } else if j["model"]["unk_token"].as_str() == Some(text) {
            (UNKNOWN, 0.0)
        } else {
            (NORMAL, rank.get(text).map_or(0.0, |&r| -(r as f32)))
        };
        tokens[id] = Some(text.clone());
    }
    for a in &added {
        let (Some(id), Some(text)) = (a["id"].as_u64(), a["content"].as_str()) else {
            return Err(bad(format!("malformed added token {a}")));
        };
        let (id, special) = (id as usize, a["special"].as_bool().unwrap_or(false));
        tokens[id] = Some(text.to_owned());
        types[id] = if special { CONTROL } else { USER_DEFINED };
        scores[id] = -1000.0;
    }
    let tokens = tokens.into_iter().enumerate().map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]"))).collect();
    let normalizer = j["normalizer"].to_string();
    let add_space_prefix =
        normalizer.contains("\"Prepend\"") || j["pre_tokenizer"].to_string().contains("\"Metaspace\"");
    Ok(Pieces { vocab: Vocab::SentencePiece { scores, add_space_prefix }, tokens, types, trainer_ids: None })
}

/// tokenizer.model's SentencePiece pieces as llama.cpp's converter writes them (piece text, score,
/// the piece type as the token type), then added_tokens.json's tokens (score −1000,
/// user-defined); also the trainer's bos/eos/unk/pad ids.
fn sentencepiece(dir: &Path) -> Result<Pieces> {
    use sentencepiece_model::{ModelType, SentencePieceModel};
    let path = dir.join("tokenizer.model");
    let bad = |message: String| ConvertError::Checkpoint { path: path.clone(), message };
    let bytes = std::fs::read(&path).map_err(|source| ConvertError::Io { path: path.clone(), source })?;
    let model = SentencePieceModel::from_slice(&bytes).map_err(|e| bad(format!("not a SentencePiece model: {e}")))?;
    let trainer = model.trainer().cloned().unwrap_or_default();
    if trainer.model_type() != ModelType::Bpe {
        return Err(ConvertError::Unsupported(format!(
            "SentencePiece model type {:?} (BPE models, as Llama's and 1bitLLM's, are supported)",
            trainer.model_type()
        )));
    }
    if model.pieces().is_empty() {
        return Err(bad("no pieces".into()));
    }
    let mut tokens = Vec::with_capacity(model.pieces().len());
    let mut types = Vec::with_capacity(model.pieces().len());
    let mut scores = Vec::with_capacity(model.pieces().len());
    for p in model.pieces() {
        tokens.push(p.piece().to_owned());
        scores.push(p.score());
        // SentencePiece's piece types use llama.cpp's token type numbers (NORMAL 1 .. BYTE 6).
        types.push(p.r#type() as i32);
    }
    let added = dir.join("added_tokens.json");
    if added.exists() {
        let j = read_json(&added)?;
        let mut extra: Vec<(u64, &str)> = j
            .as_object()
            .ok_or_else(|| ConvertError::Checkpoint { path: added.clone(), message: "not a JSON object".into() })?
            .iter()
            .filter_map(|(text, id)| Some((id.as_u64()?, text.as_str())))
            .collect();
        extra.sort();
        for (id, text) in extra {
            if tokens.iter().any(|t| t == text) {
                continue;
            }
            if id as usize != tokens.len() {
                return Err(ConvertError::Checkpoint {
                    path: added.clone(),
                    message: format!("added token {text:?} has id {id}, expected {}", tokens.len()),
                });
            }
            tokens.push(text.to_owned());
            types.push(USER_DEFINED);
            scores.push(-1000.0);
        }
    }
    let add_space_prefix = model.normalizer().is_none_or(|n| n.add_dummy_prefix());
    let ids = [trainer.bos_id(), trainer.eos_id(), trainer.unk_id(), trainer.pad_id()];
    Ok(Pieces { vocab: Vocab::SentencePiece { scores, add_space_prefix }, tokens, types, trainer_ids: Some(ids) })
}

fn i32s(values: &[i32]) -> Array {
    Array::new(ValueType::I32, values.iter().map(|&t| Value::I32(t)).collect()).expect("all I32")
}
