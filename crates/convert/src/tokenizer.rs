//! Tokenizer fields for GGUF (`tokenizer.ggml.*`) from a Hugging Face tokenizer.json.

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

/// What a GGUF file says about its tokenizer.
#[derive(Debug, Clone)]
pub struct TokenizerMetadata {
    /// `tokenizer.ggml.pre`: the pre-tokenizer name llama.cpp knows.
    pub pre: String,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

fn token_text(v: &Json) -> Option<&str> {
    v.as_str().or_else(|| v["content"].as_str())
}

impl TokenizerMetadata {
    /// Reads tokenizer.json (and tokenizer_config.json, config.json for special ids) from `dir`.
    pub fn load(dir: &Path) -> Result<TokenizerMetadata> {
        let path = dir.join("tokenizer.json");
        let j = read_json(&path)?;
        let bad = |message: String| ConvertError::Checkpoint { path: path.clone(), message };
        if j["model"]["type"] != "BPE" {
            return Err(ConvertError::Unsupported(format!(
                "tokenizer model {} (byte-level BPE tokenizers are supported)",
                j["model"]["type"]
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
        let pre = if j["pre_tokenizer"].to_string().contains(&LLAMA3_SPLIT_START.replace('\\', "\\\\")) {
            "llama-bpe"
        } else {
            "gpt2"
        };

        let tc = dir.join("tokenizer_config.json");
        let tc = if tc.exists() { read_json(&tc)? } else { Json::Null };
        let cfg = read_json(&dir.join("config.json")).unwrap_or(Json::Null);
        let id_of = |key: &str| -> Option<u32> {
            let text = token_text(&tc[key]);
            text.and_then(|t| tokens.iter().position(|x| x == t))
                .map(|i| i as u32)
                .or_else(|| cfg[format!("{key}_id")].as_u64().map(|v| v as u32))
        };
        let bos = id_of("bos_token");
        let eos = id_of("eos_token");
        let add_bos = bos.is_some() && tc["add_bos_token"].as_bool().unwrap_or(true);
        let chat_template = tc["chat_template"].as_str().map(str::to_owned);
        Ok(TokenizerMetadata { pre: pre.into(), tokens, token_types, merges, bos, eos, add_bos, chat_template })
    }

    /// Writes the `tokenizer.ggml.*` keys llama.cpp reads.
    pub fn write(&self, m: &mut Metadata) {
        m.insert("tokenizer.ggml.model", "gpt2");
        m.insert("tokenizer.ggml.pre", self.pre.as_str());
        m.insert("tokenizer.ggml.tokens", strings(self.tokens.iter().cloned()));
        let types = self.token_types.iter().map(|&t| Value::I32(t)).collect();
        m.insert("tokenizer.ggml.token_type", Array::new(ValueType::I32, types).expect("all I32"));
        m.insert("tokenizer.ggml.merges", strings(self.merges.iter().cloned()));
        if let Some(b) = self.bos {
            m.insert("tokenizer.ggml.bos_token_id", b);
        }
        if let Some(e) = self.eos {
            m.insert("tokenizer.ggml.eos_token_id", e);
        }
        m.insert("tokenizer.ggml.add_bos_token", self.add_bos);
        if let Some(t) = &self.chat_template {
            m.insert("tokenizer.chat_template", t.as_str());
        }
    }
}
