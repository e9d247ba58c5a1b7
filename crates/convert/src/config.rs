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
        let rope = &j["rope_parameters"]["rope_theta"];
        let rope_theta = float_or(if rope.is_null() { &j["rope_theta"] } else { rope }, "rope_theta", 10000.0)?;
        let head_dim = int_or("head_dim", hidden / heads)?;
        let kv_heads = int_or("num_key_value_heads", heads)?;
        if heads * head_dim > MAX_CONFIG_DIM || heads % kv_heads != 0 {
            return Err(bad(format!("{heads} heads of {head_dim} with {kv_heads} KV heads is not a valid shape")));
        }
        Ok(HfConfig {
            architecture,
            hidden,
            ff: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            ctx: int_or("max_position_embeddings", 2048)?,
            eps: float_or(&j["rms_norm_eps"], "rms_norm_eps", 1e-6)?,
            rope_theta,
            vocab: int("vocab_size")?,
            hidden_act: j["hidden_act"].as_str().unwrap_or("silu").to_owned(),
            tied: j["tie_word_embeddings"].as_bool().unwrap_or(true),
            quant: j.get("quantization_config").cloned(),
            weight_bits: j["weight_bits"].as_u64(),
            input_bits: j["input_bits"].as_u64(),
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
                         quantization_config.quant_method \"bitnet\"; 1bitLLM's BitnetForCausalLM (float weights)";

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
}

impl Family {
    pub(crate) fn bitnet_graph(self) -> bool {
        self != Family::Llama
    }
}

/// Decides the checkpoint kind: its family and weight source.
pub(crate) fn detect(c: &HfConfig) -> Result<(Family, Source)> {
    let family = match c.architecture.as_str() {
        "BitNetForCausalLM" => Family::BitNet,
        "BitnetForCausalLM" => Family::OneBitLlm,
        "LlamaForCausalLM" => Family::Llama,
        other => return Err(ConvertError::Unsupported(format!("architecture {other:?}; {SUPPORTED}"))),
    };
    let want_act = if family == Family::BitNet { "relu2" } else { "silu" };
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
    if source == Source::Online && family == Family::Llama {
        return Err(ConvertError::Unsupported(format!("online quantization of {}; {SUPPORTED}", c.architecture)));
    }
    Ok((family, source))
}
