//! Model hyper-parameters from GGUF metadata, for each architecture we run.

use bitnet_format::Metadata;

use crate::error::{ModelError, Result};

/// Architecture names (`general.architecture`) this crate runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["bitnet-b1.58", "bitnet-25", "bitnet", "llama", "qwen3", "gemma3"];

/// Largest size (hidden, heads, vocabulary, context …) a file may give.
const MAX_DIM: u64 = bitnet_format::MAX_MODEL_DIM;

/// Most layers a file may claim (the real models have 24 to 80).
const MAX_LAYERS: u64 = 1 << 16;

fn wrong_type(key: &str, v: &bitnet_format::Value, expected: &str) -> ModelError {
    ModelError::BadMetadata(format!("{key} has the wrong type: {} where {expected} is expected", v.value_type().name()))
}

pub use bitnet_quant::vecops::Activation;

/// How an embedding model turns its per-token hidden states into one vector (llama.cpp's
/// `pooling_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the text's tokens.
    Mean,
    /// The first token's state.
    Cls,
    /// The last token's state (the EOS the tokenizer appends, for the Qwen3 embedding models).
    Last,
}

impl Pooling {
    /// The name `--pooling` takes.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }
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
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// RMSNorms of the attention and FFN outputs before the residual adds (Gemma 3).
    pub post_norms: bool,
    /// Factor the token embeddings are multiplied by (Gemma 3: √hidden).
    pub embed_scale: Option<f32>,
    /// Factor of the attention scores (`attention.scale`, else 1/√head_dim).
    pub attn_scale: f32,
    /// Whether a token attends only to itself and earlier tokens (`attention.causal`, default
    /// true; false for bidirectional embedding models).
    pub causal: bool,
    /// The window of sliding-window layers (`attention.sliding_window`): a query at position p
    /// sees keys within `window` positions of it.
    pub sliding_window: Option<usize>,
    /// Which layers use the sliding window (empty when none does).
    pub sliding_layers: Vec<bool>,
    /// RoPE base of the sliding-window layers (`rope.freq_base_swa`).
    pub rope_base_swa: f32,
    /// The pooling an embedding model declares (`pooling_type`); `None` for generative models.
    pub pooling: Option<Pooling>,
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
            "qwen3" => (Activation::Silu, false, RopeStyle::Neox),
            "gemma3" => (Activation::GeluTanh, false, RopeStyle::Neox),
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
        let key_length = int_opt("attention.key_length")?;
        if key_length.is_none() && hidden % heads != 0 {
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
        let head_dim = key_length.unwrap_or(hidden / heads);
        if let Some(v) = int_opt("attention.value_length")?
            && v != head_dim
        {
            return Err(ModelError::BadMetadata(format!(
                "{} = {v} differs from the key length {head_dim} (not supported)",
                key("attention.value_length")
            )));
        }
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
        let gemma = arch == "gemma3";
        let sliding_window = int_opt("attention.sliding_window")?;
        let sliding_layers = match (sliding_window, m.get(&key("attention.sliding_window_pattern"))) {
            (None, _) => Vec::new(),
            (Some(_), Some(v)) => {
                let k = key("attention.sliding_window_pattern");
                let a = v.as_array().ok_or_else(|| wrong_type(&k, v, "an array of booleans"))?;
                let flags: Option<Vec<bool>> = a.values().iter().map(|v| v.as_bool()).collect();
                match flags {
                    Some(f) if f.len() == layers => f,
                    Some(f) => {
                        return Err(ModelError::BadMetadata(format!(
                            "{k} has {} entries for {layers} layers",
                            f.len()
                        )));
                    }
                    None => return Err(wrong_type(&k, v, "an array of booleans")),
                }
            }
            // llama.cpp's Gemma 3 pattern: every sixth layer attends globally.
            (Some(_), None) => (0..layers).map(|l| !gemma || (l + 1) % 6 != 0).collect(),
        };
        let attn_scale = match m.get(&key("attention.scale")) {
            None => 1.0 / (head_dim as f32).sqrt(),
            Some(_) => float("attention.scale", 1.0)? as f32,
        };
        let causal = match m.get(&key("attention.causal")) {
            None => true,
            Some(v) => v.as_bool().ok_or_else(|| wrong_type(&key("attention.causal"), v, "a boolean"))?,
        };
        let pooling = match m.get(&key("pooling_type")) {
            None => None,
            Some(v) => match v.as_u64() {
                Some(0) => None,
                Some(1) => Some(Pooling::Mean),
                Some(2) => Some(Pooling::Cls),
                Some(3) => Some(Pooling::Last),
                Some(n) => {
                    return Err(ModelError::BadMetadata(format!(
                        "{} = {n} is not a pooling this engine runs (0 none, 1 mean, 2 CLS, 3 last token)",
                        key("pooling_type")
                    )));
                }
                None => return Err(wrong_type(&key("pooling_type"), v, "an unsigned integer")),
            },
        };
        let rope_base = float("rope.freq_base", 10000.0)? as f32;
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
            rope_base,
            rope_dims,
            rope_style,
            activation,
            sub_norms,
            qk_norm: matches!(arch, "qwen3" | "gemma3"),
            post_norms: gemma,
            embed_scale: gemma.then(|| (hidden as f32).sqrt()),
            attn_scale,
            causal,
            sliding_window,
            sliding_layers,
            // llama.cpp's Gemma 3 default for its local layers.
            rope_base_swa: float("rope.freq_base_swa", 10000.0)? as f32,
            pooling,
        })
    }
}
