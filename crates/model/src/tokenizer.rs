//! The tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata, built with the
//! `tokenizers` crate (the same implementation Hugging Face's fast tokenizers use).
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers
//! `llama-bpe` / `llama3` (Llama 3's split regex) and `gpt2` / `default` (GPT-2's); and `"llama"`
//! (SentencePiece BPE with byte fallback: Llama 1/2, 1bitLLM), rebuilt the way Hugging Face's
//! `LlamaTokenizerFast` is (merges recovered from the piece scores, `▁` for spaces, a `▁`
//! prefix). Control and user-defined tokens (token types 3 and 4) are matched as special tokens
//! before BPE.

use bitnet_format::{Metadata, Value};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::error::{ModelError, Result};

/// Qwen2's (and Qwen3's) split: Llama 3's with single digits.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer with the model's special tokens.
///
/// ```
/// # use bitnet_model::{LoadOptions, Model, StreamDecoder, Tokenizer};
/// # let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"), LoadOptions::default())?;
/// let tok = Tokenizer::from_metadata(model.metadata())?;
/// let ids = tok.encode("fn main() {}", false)?;
/// assert_eq!(tok.decode(&ids, false)?, "fn main() {}");
/// // Streaming: text as soon as it forms whole characters.
/// let mut stream = StreamDecoder::default();
/// let text: String = ids.iter().map(|&id| stream.push(&tok, id)).collect::<Result<_, _>>()?;
/// assert_eq!(text, "fn main() {}");
/// # Ok::<(), bitnet_model::ModelError>(())
/// ```
pub struct Tokenizer {
    inner: HfTokenizer,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
    /// Tokens that end a generation (EOS and, where present, `<|eot_id|>` / `<|im_end|>`).
    pub stop_tokens: Vec<u32>,
    /// Whether prompts start with BOS.
    pub add_bos: bool,
    /// Whether the tokenizer appends EOS to a text (`tokenizer.ggml.add_eos_token`: embedding
    /// models whose last-token pooling reads it).
    pub add_eos: bool,
    tokens: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

fn strings(m: &Metadata, key: &str) -> Result<Vec<String>> {
    let a = m.get(key).and_then(Value::as_array).ok_or_else(|| ModelError::MissingMetadata(key.into()))?;
    a.values()
        .iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| ModelError::BadMetadata(format!("{key} holds a non-string")))
        })
        .collect()
}

/// GPT-2-style byte-level BPE with the file's merges and pre-tokenizer.
fn byte_level_bpe(m: &Metadata, tokens: &[String]) -> Result<HfTokenizer> {
    let merges = strings(m, "tokenizer.ggml.merges")?;
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = merges
        .iter()
        .map(|s| {
            s.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or_else(|| err(format!("bad merge {s:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(err)?;
    let mut inner = HfTokenizer::new(bpe);
    let pre = m.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let pre: PreTokenizerWrapper = match pre {
        "llama-bpe" | "llama3" | "llama-v3" => Sequence::new(vec![
            Split::new(SplitPattern::Regex(LLAMA3_SPLIT.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(err)?
                .into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        "qwen2" => Sequence::new(vec![
            Split::new(SplitPattern::Regex(QWEN2_SPLIT.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(err)?
                .into(),
            ByteLevel::new(false, false, false).into(),
        ])
        .into(),
        "gpt2" | "default" => ByteLevel::new(false, true, true).into(),
        other => {
            return Err(ModelError::Tokenizer(format!(
                "pre-tokenizer {other:?} is not supported yet (supported: llama-bpe, qwen2, gpt2, default)"
            )));
        }
    };
    inner.with_pre_tokenizer(Some(pre));
    inner.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    Ok(inner)
}

/// SentencePiece BPE as Hugging Face's converter rebuilds it: every piece that splits into two
/// pieces of the vocabulary yields a merge ranked by the piece's score (what SentencePiece's BPE
/// maximizes), bytes not in the vocabulary fall back to `<0xXX>` pieces, spaces become `▁` and a
/// `▁` is put in front of the text.
fn sentencepiece_bpe(m: &Metadata, tokens: &[String], types: &[i64]) -> Result<HfTokenizer> {
    use tokenizers::decoders::{byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence as Dec, strip::Strip};
    use tokenizers::normalizers::{Prepend, Replace, Sequence as Norm};
    let scores: Vec<f64> = match m.get("tokenizer.ggml.scores").and_then(Value::as_array) {
        Some(a) => a.values().iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
        None => return Err(ModelError::MissingMetadata("tokenizer.ggml.scores".into())),
    };
    if scores.len() != tokens.len() {
        return Err(ModelError::BadMetadata(format!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut merges: Vec<(f64, u32, u32, String, String)> = Vec::new();
    for (piece, &score) in tokens.iter().zip(&scores) {
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                merges.push((score, li, ri, l.to_owned(), r.to_owned()));
            }
        }
    }
    // Highest score first; ties in the order of the left then right piece's id (HF's order).
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> = merges.into_iter().map(|(_, _, _, l, r)| (l, r)).collect();
    let unk = tokens.iter().zip(types).find(|(_, t)| **t == 2).map(|(s, _)| s.clone());
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let mut inner = HfTokenizer::new(builder.build().map_err(err)?);
    let add_prefix = m.get("tokenizer.ggml.add_space_prefix").and_then(Value::as_bool).unwrap_or(true);
    let mut norms = Vec::new();
    if add_prefix {
        norms.push(Prepend::new("▁".into()).into());
    }
    norms.push(Replace::new(" ", "▁").map_err(err)?.into());
    inner.with_normalizer(Some(Norm::new(norms))).map_err(err)?;
    let mut decoders =
        vec![Replace::new("▁", " ").map_err(err)?.into(), ByteFallback::default().into(), Fuse::default().into()];
    if add_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(Dec::new(decoders)));
    Ok(inner)
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes.
    pub fn from_metadata(m: &Metadata) -> Result<Tokenizer> {
        let model = m
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| ModelError::MissingMetadata("tokenizer.ggml.model".into()))?;
        let tokens = strings(m, "tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match m.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) => a.values().iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let mut inner = match model {
            "gpt2" => byte_level_bpe(m, &tokens)?,
            "llama" => sentencepiece_bpe(m, &tokens, &types)?,
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "tokenizer model {other:?} is not supported (supported: \"gpt2\" byte-level BPE, \"llama\" SentencePiece BPE)"
                )));
            }
        };
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| matches!(t, 3 | 4))
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(specials).map_err(err)?;
        let id = |key: &str| m.get_u64(key).map(|v| v as u32);
        let (bos, eos) = (id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"));
        let mut stop_tokens: Vec<u32> = eos.into_iter().collect();
        for name in ["<|eot_id|>", "<|im_end|>", "<|end_of_text|>"] {
            if let Some(i) = tokens.iter().position(|t| t == name)
                && !stop_tokens.contains(&(i as u32))
            {
                stop_tokens.push(i as u32);
            }
        }
        let add_bos = m.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool).unwrap_or(bos.is_some());
        let add_eos = m.get("tokenizer.ggml.add_eos_token").and_then(Value::as_bool).unwrap_or(false) && eos.is_some();
        Ok(Tokenizer { inner, bos, eos, stop_tokens, add_bos, add_eos, tokens })
    }

    /// Token ids of `text` (special tokens in the text are recognised), with BOS first when the
    /// model wants it and `with_bos` is set.
    pub fn encode(&self, text: &str, with_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if with_bos && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Token ids of a text to embed: BOS first and EOS last where the model's tokenizer adds them
    /// (what Hugging Face's tokenizer gives with its special tokens).
    pub fn encode_for_embedding(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text, true)?;
        if self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Text of `ids` (special tokens included verbatim when `keep_special`).
    pub fn decode(&self, ids: &[u32], keep_special: bool) -> Result<String> {
        self.inner.decode(ids, !keep_special).map_err(err)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// A token's text as stored in the vocabulary.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}

/// Turns a stream of token ids into text pieces as soon as they form whole UTF-8 characters.
///
/// Each push decodes the whole stream and emits what follows the text already emitted. Decoding
/// more tokens can change earlier text (a byte-fallback piece completing a character, a stripped
/// leading space); text already emitted cannot be taken back, so then only what follows the
/// longest common prefix (cut at a character boundary) is emitted.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: String,
}

impl StreamDecoder {
    /// Adds a token; returns the new text it completes, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids, false)?;
        // A multi-byte character split across tokens decodes to U+FFFD until it is whole.
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let common = common_prefix(&self.emitted, &text);
        let new = text[common..].to_owned();
        if common < self.emitted.len() && new.is_empty() {
            // The text got shorter: nothing new until it passes what was emitted.
            return Ok(String::new());
        }
        self.emitted = text;
        Ok(new)
    }
}

/// Length in bytes of the longest common prefix of `a` and `b` that ends on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
        .min(b.len())
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_ends_on_a_character_boundary() {
        assert_eq!(common_prefix("abc", "abd"), 2);
        assert_eq!(common_prefix("ab", "abcd"), 2);
        assert_eq!(common_prefix("abcd", "ab"), 2);
        // 'é' is two bytes; 'è' shares its first byte: the prefix stops before both.
        assert_eq!(common_prefix("aé", "aè"), 1);
        assert_eq!(common_prefix("", "x"), 0);
    }
}
