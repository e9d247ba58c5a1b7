//! Model hyper-parameters from GGUF metadata, for each architecture we run.

use bitnet_format::Metadata;

use crate::error::{ModelError, Result};

/// Architecture names (`general.architecture`) this crate runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["bitnet-b1.58", "bitnet-25", "bitnet", "llama"];

/// Largest size (hidden, heads, vocabulary, context …) a file may give.
const MAX_DIM: u64 = bitnet_format::MAX_MODEL_DIM;

/// Most layers a file may claim (the real models have 24 to 80).
const MAX_LAYERS: u64 = 1 << 16;

fn wrong_type(key: &str, v: &bitnet_format::Value, expected: &str) -> ModelError {
    ModelError::BadMetadata(format!("{key} has the wrong type: {} where {expected} is expected", v.value_type().name()))
}

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
    ///
    /// ```
    /// # let file = bitnet_format::GgufFile::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"))?;
    /// let c = bitnet_model::Config::from_metadata(file.metadata())?;
    /// assert_eq!(c.architecture, "bitnet-b1.58");
    /// assert!(c.layers > 0 && c.hidden % c.heads == 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        // Every size is checked at load, with the key and value named: a file's numbers decide
        // allocations and loop bounds later.
        let int_opt = |k: &str| -> Result<Option<usize>> {
            let k = key(k);
            match m.get(&k) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if (1..=MAX_DIM).contains(&n) => Ok(Some(n as usize)),
                    Some(n) => Err(ModelError::BadMetadata(format!("{k} = {n} is out of range (1 to {MAX_DIM})"))),
                    None => Err(wrong_type(&k, v, "an unsigned integer")),
                },
            }
        };
        let int = |k: &str| int_opt(k)?.ok_or_else(|| ModelError::MissingMetadata(key(k)));
        let float = |k: &str, default: f64| -> Result<f64> {
            let k = key(k);
            match m.get(&k) {
                None => Ok(default),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                    Some(x) => Err(ModelError::BadMetadata(format!("{k} = {x} must be a finite number above 0"))),
                    None => Err(wrong_type(&k, v, "a number")),
                },
            }
        };
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        if hidden % heads != 0 {
            return Err(ModelError::BadMetadata(format!(
                "{} = {hidden} is not a multiple of {} = {heads}",
                key("embedding_length"),
                key("attention.head_count")
            )));
        }
        let kv_heads = int_opt("attention.head_count_kv")?.unwrap_or(heads);
        if heads % kv_heads != 0 {
            return Err(ModelError::BadMetadata(format!("{heads} attention heads cannot share {kv_heads} KV heads")));
        }
        let head_dim = int_opt("attention.key_length")?.unwrap_or(hidden / heads);
        if (heads * head_dim) as u64 > MAX_DIM {
            return Err(ModelError::BadMetadata(format!("{heads} heads of {head_dim} are too large")));
        }
        let vocab_size = match int_opt("vocab_size")? {
            Some(v) => v,
            None => match m.get("tokenizer.ggml.tokens").and_then(|t| t.as_array()).map(|a| a.len()) {
                Some(0) => return Err(ModelError::BadMetadata("tokenizer.ggml.tokens is empty".into())),
                Some(n) => n,
                None => return Err(ModelError::MissingMetadata(key("vocab_size"))),
            },
        };
        let rope_dims = int_opt("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
            return Err(ModelError::BadMetadata(format!(
                "{} = {rope_dims} for heads of {head_dim} (must be even and at most the head size)",
                key("rope.dimension_count")
            )));
        }
        let layers = int("block_count")?;
        if layers as u64 > MAX_LAYERS {
            return Err(ModelError::BadMetadata(format!(
                "{} = {layers} is out of range (1 to {MAX_LAYERS})",
                key("block_count")
            )));
        }
        Ok(Config {
            architecture: arch.into(),
            vocab_size,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            ff: int("feed_forward_length")?,
            context_length: int("context_length")?,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5)? as f32,
            rope_base: float("rope.freq_base", 10000.0)? as f32,
            rope_dims,
            rope_style,
            activation,
            sub_norms,
        })
    }
}
