//! Model hyper-parameters from GGUF metadata, for each architecture we run.

use bitnet_format::Metadata;

use crate::error::{ModelError, Result};

/// Architecture names (`general.architecture`) this crate runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["bitnet-b1.58", "bitnet-25", "bitnet", "llama"];

/// The FFN's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (1bitLLM models, Llama/Falcon3).
    Silu,
    /// Squared ReLU (BitNet b1.58 2B-4T).
    Relu2,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` pairs with `i + d/2` (GPT-NeoX, transformers' `rotate_half`): the bitnet
    /// architectures.
    Neox,
    /// Dimension `2i` pairs with `2i + 1` (llama.cpp's `llama`, whose converter permutes Q/K).
    Normal,
}

/// Everything the forward pass needs to know about the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `general.architecture`.
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ff: usize,
    /// Context length the model was trained with.
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Dimensions of each head that RoPE rotates.
    pub rope_dims: usize,
    pub rope_style: RopeStyle,
    pub activation: Activation,
    /// BitNet's extra RMSNorms before the attention output and FFN down projections.
    pub sub_norms: bool,
}

impl Config {
    /// Reads the hyper-parameters. The activation of `bitnet-b1.58` files is told apart by the
    /// tokenizer: 2B-4T (squared ReLU) has Llama 3's BPE vocabulary, 1bitLLM models (SiLU) a
    /// SentencePiece one.
    pub fn from_metadata(m: &Metadata) -> Result<Config> {
        let arch = m.architecture().ok_or_else(|| ModelError::MissingMetadata("general.architecture".into()))?;
        let (activation, sub_norms, rope_style) = match arch {
            "bitnet" => (Activation::Silu, true, RopeStyle::Neox),
            "bitnet-b1.58" | "bitnet-25" => {
                let spm = m.get_str("tokenizer.ggml.model") == Some("llama");
                (if spm { Activation::Silu } else { Activation::Relu2 }, true, RopeStyle::Neox)
            }
            "llama" => (Activation::Silu, false, RopeStyle::Normal),
            other => {
                return Err(ModelError::UnknownArchitecture {
                    name: other.into(),
                    supported: SUPPORTED_ARCHITECTURES.join(", "),
                });
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let int = |k: &str| -> Result<usize> {
            m.get_u64(&key(k)).map(|v| v as usize).ok_or_else(|| ModelError::MissingMetadata(key(k)))
        };
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        if heads == 0 || hidden % heads != 0 {
            return Err(ModelError::BadMetadata(format!(
                "{} = {hidden} is not a multiple of {} = {heads}",
                key("embedding_length"),
                key("attention.head_count")
            )));
        }
        let kv_heads = m.get_u64(&key("attention.head_count_kv")).map_or(heads, |v| v as usize);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(ModelError::BadMetadata(format!("{heads} attention heads cannot share {kv_heads} KV heads")));
        }
        let head_dim = m.get_u64(&key("attention.key_length")).map_or(hidden / heads, |v| v as usize);
        let vocab_size = m
            .get_u64(&key("vocab_size"))
            .map(|v| v as usize)
            .or_else(|| m.get("tokenizer.ggml.tokens").and_then(|t| t.as_array()).map(|a| a.len()))
            .ok_or_else(|| ModelError::MissingMetadata(key("vocab_size")))?;
        let rope_dims = m.get_u64(&key("rope.dimension_count")).map_or(head_dim, |v| v as usize);
        if rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
            return Err(ModelError::BadMetadata(format!("rope.dimension_count {rope_dims} for head size {head_dim}")));
        }
        Ok(Config {
            architecture: arch.into(),
            vocab_size,
            hidden,
            layers: int("block_count")?,
            heads,
            kv_heads,
            head_dim,
            ff: int("feed_forward_length")?,
            context_length: int("context_length")?,
            rms_eps: m.get_f64(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f32,
            rope_base: m.get_f64(&key("rope.freq_base")).unwrap_or(10000.0) as f32,
            rope_dims,
            rope_style,
            activation,
            sub_norms,
        })
    }
}
