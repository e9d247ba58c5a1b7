//! config.json: the hyperparameters, range-checked, and which checkpoint family they describe.

use super::*;

pub(crate) fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| ConvertError::Json { path: path.into(), source })
}

/// Largest size config.json may give (hidden, layers, vocabulary, context …): what the loader
/// accepts.
pub(crate) const MAX_CONFIG_DIM: u64 = bitnet_format::MAX_MODEL_DIM;

/// The parts of config.json we use.
#[derive(Debug, Clone)]
pub(crate) struct HfConfig {
    pub(crate) architecture: String,
    pub(crate) hidden: u64,
    pub(crate) ff: u64,
    pub(crate) layers: u64,
    pub(crate) heads: u64,
    pub(crate) kv_heads: u64,
    pub(crate) head_dim: u64,
    pub(crate) ctx: u64,
    pub(crate) eps: f64,
    pub(crate) rope_theta: f64,
    pub(crate) vocab: u64,
    pub(crate) hidden_act: String,
    pub(crate) tied: bool,
    pub(crate) quant: Option<Json>,
    /// 1bitLLM's config fields.
    pub(crate) weight_bits: Option<u64>,
    pub(crate) input_bits: Option<u64>,
    /// Gemma 3: the attention window of its sliding layers (as the model applies it) and which
    /// layers slide; none when every layer attends globally.
    pub(crate) sliding: Option<(u64, Vec<bool>)>,
    /// Gemma 3: RoPE base of the sliding layers.
    pub(crate) rope_theta_local: Option<f64>,
    /// Gemma 3: queries are scaled by `query_pre_attn_scalar^-1/2`.
    pub(crate) query_pre_attn_scalar: Option<f64>,
    /// Gemma 3 `use_bidirectional_attention` (EmbeddingGemma style): attention is not causal.
    pub(crate) bidirectional: bool,
}

impl HfConfig {
    pub(crate) fn load(dir: &Path) -> Result<HfConfig> {
        let path = dir.join("config.json");
        let j = read_json(&path)?;
        let bad = |message: String| ConvertError::Checkpoint { path: path.clone(), message };
        // Every size goes into a 32-bit GGUF field and sizes allocations: checked, never cast.
        let range = |k: &str, v: u64| -> Result<u64> {
            if (1..=MAX_CONFIG_DIM).contains(&v) {
                Ok(v)
            } else {
                Err(bad(format!("{k:?} = {v} is out of range (1 to {MAX_CONFIG_DIM})")))
            }
        };
        let int = |k: &str| match j.get(k) {
            None | Some(Json::Null) => Err(bad(format!("missing {k:?}"))),
            Some(v) => range(k, v.as_u64().ok_or_else(|| bad(format!("{k:?} = {v} is not a non-negative integer")))?),
        };
        let int_or = |k: &str, default: u64| match j.get(k) {
            None | Some(Json::Null) => Ok(default),
            Some(_) => int(k),
        };
        let float_or = |v: &Json, k: &str, default: f64| match v {
            Json::Null => Ok(default),
            v => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(bad(format!("{k:?} = {v} must be a finite number above 0"))),
            },
        };
        let architecture =
            j["architectures"][0].as_str().ok_or_else(|| bad("missing \"architectures\"".into()))?.to_owned();
        let (hidden, heads) = (int("hidden_size")?, int("num_attention_heads")?);
        if hidden % heads != 0 {
            return Err(bad(format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}")));
        }
        // transformers 5 keeps RoPE in `rope_parameters`, per layer type for Gemma 3.
        let rp = &j["rope_parameters"];
        let rope =
            if rp["full_attention"].is_object() { &rp["full_attention"]["rope_theta"] } else { &rp["rope_theta"] };
        let rope_theta = float_or(if rope.is_null() { &j["rope_theta"] } else { rope }, "rope_theta", 10000.0)?;
        let local = &rp["sliding_attention"]["rope_theta"];
        let local = if local.is_null() { &j["rope_local_base_freq"] } else { local };
        let rope_theta_local = if local.is_null() { None } else { Some(float_or(local, "rope_local_base_freq", 1.0)?) };
        let layers = int("num_hidden_layers")?;
        let bidirectional = j["use_bidirectional_attention"].as_bool().unwrap_or(false);
        let sliding = match (j["sliding_window"].as_u64(), j["layer_types"].as_array()) {
            (Some(w), Some(types)) if types.iter().any(|t| t == "sliding_attention") => {
                if types.len() as u64 != layers {
                    return Err(bad(format!("layer_types has {} entries for {layers} layers", types.len())));
                }
                let w = range("sliding_window", w)?;
                // transformers applies a bidirectional window as |q − k| < w/2 + 1.
                let w = if bidirectional { w / 2 + 1 } else { w };
                Some((w, types.iter().map(|t| t == "sliding_attention").collect()))
            }
            _ => None,
        };
        let head_dim = int_or("head_dim", hidden / heads)?;
        let kv_heads = int_or("num_key_value_heads", heads)?;
        if heads * head_dim > MAX_CONFIG_DIM || heads % kv_heads != 0 {
            return Err(bad(format!("{heads} heads of {head_dim} with {kv_heads} KV heads is not a valid shape")));
        }
        Ok(HfConfig {
            architecture,
            hidden,
            ff: int("intermediate_size")?,
            layers,
            heads,
            kv_heads,
            head_dim,
            ctx: int_or("max_position_embeddings", 2048)?,
            eps: float_or(&j["rms_norm_eps"], "rms_norm_eps", 1e-6)?,
            rope_theta,
            vocab: int("vocab_size")?,
            hidden_act: j["hidden_act"].as_str().or(j["hidden_activation"].as_str()).unwrap_or("silu").to_owned(),
            tied: j["tie_word_embeddings"].as_bool().unwrap_or(true),
            quant: j.get("quantization_config").cloned(),
            weight_bits: j["weight_bits"].as_u64(),
            input_bits: j["input_bits"].as_u64(),
            sliding,
            rope_theta_local,
            query_pre_attn_scalar: match &j["query_pre_attn_scalar"] {
                Json::Null => None,
                v => Some(float_or(v, "query_pre_attn_scalar", 1.0)?),
            },
            bidirectional,
        })
    }
}

/// How the checkpoint stores its ternary linear weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Source {
    /// Float master weights, ternarized here (transformers' online mode).
    Online,
    /// Packed uint8 weights with a `weight_scale` that multiplies (`autobitlinear`) or divides
    /// (`bitlinear`) the output.
    Packed { divide: bool },
}

pub(crate) const SUPPORTED: &str = "supported: BitNetForCausalLM (float weights with quantization_mode \"online\", or packed \
                         uint8 weights) and LlamaForCausalLM with packed weights, each with \
                         quantization_config.quant_method \"bitnet\"; 1bitLLM's BitnetForCausalLM (float weights); \
                         ternary Qwen3 / Gemma 3 (bitnet-embedding: Qwen3Model, Gemma3TextModel, or their \
                         *ForCausalLM) with float weights and an autobitlinear \"online\" quantization_config";

/// The checkpoint families.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Family {
    /// transformers' `BitNetForCausalLM` (2B-4T): squared ReLU, sub-norms.
    BitNet,
    /// 1bitLLM's `BitnetForCausalLM` (bitnet_b1_58-large/-3B, custom model code): float weights
    /// quantized by the model at run time, SiLU, sub-norms named `inner_attn_ln`/`ffn_layernorm`.
    OneBitLlm,
    /// `LlamaForCausalLM` with packed ternary weights (Falcon3-1.58bit, Llama3-8B-1.58).
    Llama,
    /// Ternary Qwen3 (microsoft/bitnet-embedding-0.6b): q/k norms, SiLU, per-projection input
    /// norms when `use_rms_norm` is set.
    Qwen3,
    /// Ternary Gemma 3 text (microsoft/bitnet-embedding-270m): scaled embeddings, q/k norms,
    /// post-attention/FFN norms, GELU-tanh, (1 + w) norms, per-projection input norms.
    Gemma3,
}

impl Family {
    /// BitNet b1.58's graph (sub-norms, NEOX RoPE on the checkpoint's order).
    pub(crate) fn bitnet_graph(self) -> bool {
        matches!(self, Family::BitNet | Family::OneBitLlm)
    }

    /// The GGUF architecture name written (the names bitnet.cpp's converters use).
    pub(crate) fn architecture(self) -> &'static str {
        match self {
            Family::BitNet | Family::OneBitLlm => crate::ARCH_BITNET_B158,
            Family::Llama => "llama",
            Family::Qwen3 => "qwen3",
            Family::Gemma3 => "gemma3",
        }
    }
}

/// Decides the checkpoint kind: its family and weight source.
pub(crate) fn detect(c: &HfConfig) -> Result<(Family, Source)> {
    let family = match c.architecture.as_str() {
        "BitNetForCausalLM" => Family::BitNet,
        "BitnetForCausalLM" => Family::OneBitLlm,
        "LlamaForCausalLM" => Family::Llama,
        "Qwen3Model" | "Qwen3ForCausalLM" => Family::Qwen3,
        "Gemma3TextModel" | "Gemma3ForCausalLM" => Family::Gemma3,
        other => return Err(ConvertError::Unsupported(format!("architecture {other:?}; {SUPPORTED}"))),
    };
    let want_act = match family {
        Family::BitNet => "relu2",
        Family::Gemma3 => "gelu_pytorch_tanh",
        _ => "silu",
    };
    if c.hidden_act != want_act {
        return Err(ConvertError::Unsupported(format!(
            "hidden_act {:?} for {} (expected {want_act:?})",
            c.hidden_act, c.architecture
        )));
    }
    if family == Family::OneBitLlm {
        // 1bitLLM's config has no quantization_config: its BitLinear always quantizes, with
        // weight_bits 1 (ternary) and input_bits 8.
        if c.weight_bits.unwrap_or(1) != 1 || c.input_bits.unwrap_or(8) != 8 {
            return Err(ConvertError::Unsupported(format!(
                "BitnetForCausalLM with weight_bits {:?} / input_bits {:?} (1 and 8 are supported)",
                c.weight_bits, c.input_bits
            )));
        }
        return Ok((family, Source::Online));
    }
    let Some(q) = &c.quant else {
        return Err(ConvertError::Unsupported(format!(
            "{} without quantization_config is a full-precision model, not ternary; {SUPPORTED}",
            c.architecture
        )));
    };
    if q["quant_method"] != "bitnet" {
        return Err(ConvertError::Unsupported(format!("quantization_config {q}; {SUPPORTED}")));
    }
    let class = q["linear_class"].as_str().unwrap_or("bitlinear");
    let source = match (q["quantization_mode"].as_str().unwrap_or("offline"), class) {
        ("online", "autobitlinear") => Source::Online,
        ("offline", "autobitlinear") => Source::Packed { divide: false },
        ("offline", "bitlinear") => Source::Packed { divide: true },
        (mode, class) => {
            return Err(ConvertError::Unsupported(format!(
                "quantization_mode {mode:?} with linear_class {class:?}; {SUPPORTED}"
            )));
        }
    };
    if matches!(family, Family::Qwen3 | Family::Gemma3) && source != Source::Online {
        return Err(ConvertError::Unsupported(format!(
            "{} with packed weights (float master weights with quantization_mode \"online\" are supported)",
            c.architecture
        )));
    }
    if source == Source::Online && family == Family::Llama {
        return Err(ConvertError::Unsupported(format!("online quantization of {}; {SUPPORTED}", c.architecture)));
    }
    Ok((family, source))
}
