//! Hugging Face checkpoints → GGUF, in the layout bitnet.cpp writes.
//!
//! Supported checkpoint kinds:
//! * `BitNetForCausalLM`, float master weights, `quantization_mode: "online"`
//!   (microsoft/bitnet-b1.58-2B-4T-bf16): each linear weight is absmean-ternarized exactly as
//!   transformers does at run time. Written as architecture `bitnet-b1.58`.
//! * `BitNetForCausalLM` or `LlamaForCausalLM` with packed uint8 weights and `weight_scale`
//!   (microsoft/bitnet-b1.58-2B-4T; Falcon3-*-1.58bit, Llama3-8B-1.58): unpacked as transformers
//!   does (four rows per byte, blocks along the output dimension); the scale multiplies for
//!   `linear_class: "autobitlinear"` and divides for `"bitlinear"`. Llama models are written as
//!   architecture `llama` with Q/K rows permuted for llama.cpp's RoPE, as its converter does.
//! * 1bitLLM's `BitnetForCausalLM` (bitnet_b1_58-large / -3B; float16 weights, no
//!   quantization_config, the model code quantizes): ternarized like the bf16 2B-4T master
//!   weights, sub-norms `inner_attn_ln` / `ffn_layernorm`, SiLU. Written as `bitnet-b1.58`, as
//!   bitnet.cpp's converter does; loaders tell its SiLU from 2B-4T's squared ReLU by the
//!   SentencePiece vocabulary (tokenizer.model), which is therefore required.
//!
//! The vocabulary comes from tokenizer.model (SentencePiece, `tokenizer.ggml.model = "llama"`) when
//! present, else tokenizer.json (byte-level BPE, `"gpt2"`), padded to `vocab_size` with `[PADn]`.
//!
//! Ternary weights go out as I2_S (x86 block order, the default), TQ1_0, TQ2_0, TL1 or TL2.
//! [`requantize`] re-encodes an existing GGUF model's ternary weights and/or head instead.
//!
//! The output is written to a temporary file beside the target, fsynced and renamed, so a failed
//! conversion never leaves a half-written model.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use bitnet_format::{Array, GgufBuilder, TensorType, Value};
use bitnet_quant::{
    I2sLayout, PackedTernary, TernaryFormat, TernaryMatrix, TqKind, WeightScales, absmean_quantize, i2s, tl, tq,
};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

mod tokenizer;

pub use tokenizer::{TokenizerMetadata, Vocab};

/// What went wrong converting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("output {path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error("unsupported checkpoint: {0}")]
    Unsupported(String),
    #[error("tensor {name}: {message}")]
    Tensor { name: String, message: String },
    #[error(transparent)]
    Gguf(#[from] bitnet_format::GgufError),
    #[error(transparent)]
    Quant(#[from] bitnet_quant::QuantError),
}

type Result<T, E = ConvertError> = std::result::Result<T, E>;

/// Type of the ternary linear weights in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    /// bitnet.cpp's I2_S (x86 block order), the default.
    I2s,
    /// llama.cpp's TQ1_0 (1.69 bits per weight; rows must be multiples of 256).
    Tq1_0,
    /// llama.cpp's TQ2_0 (2.06 bits per weight; rows must be multiples of 256).
    Tq2_0,
    /// bitnet.cpp's TL1 lookup-table layout (2 bits per weight) with a separate `<name>_scale`
    /// tensor, tiled as bitnet.cpp's preset kernels expect for their shapes (and recorded in the
    /// file, [`bitnet_quant::tl::TILINGS_KEY`], for any other shape).
    Tl1,
    /// bitnet.cpp's TL2 (1.67 bits per weight), like [`OutType::Tl1`].
    Tl2,
    /// Unquantized F16 layer weights (each ternary value times its scale): the baseline
    /// bitnet.cpp quotes its speed-ups against, readable by any GGUF tool. Runs as a dense model
    /// (activations are not quantized).
    F16,
    /// Unquantized F32 layer weights, like [`OutType::F16`].
    F32,
}

impl std::fmt::Display for OutType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutType::I2s => "i2_s",
            OutType::Tq1_0 => "tq1_0",
            OutType::Tq2_0 => "tq2_0",
            OutType::Tl1 => "tl1",
            OutType::Tl2 => "tl2",
            OutType::F16 => "f16",
            OutType::F32 => "f32",
        })
    }
}

impl std::str::FromStr for OutType {
    type Err = String;

    /// The names `--outtype` takes: i2_s, tq1_0, tq2_0, tl1, tl2, f16, f32.
    fn from_str(s: &str) -> Result<OutType, String> {
        parse_name(&OutType::ALL, s, "outtype")
    }
}

/// The one of `all` whose `Display` name is `s`, or an error listing the names.
fn parse_name<T: std::fmt::Display + Copy>(all: &[T], s: &str, what: &str) -> Result<T, String> {
    all.iter().copied().find(|t| t.to_string() == s).ok_or_else(|| {
        format!("unknown {what} {s:?} (one of {})", all.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "))
    })
}

impl OutType {
    /// Every type, in the order `--help` lists them.
    pub const ALL: [OutType; 7] =
        [OutType::I2s, OutType::Tq1_0, OutType::Tq2_0, OutType::Tl1, OutType::Tl2, OutType::F16, OutType::F32];

    fn tensor_type(self) -> TensorType {
        match self {
            OutType::I2s => TensorType::I2_S,
            OutType::Tq1_0 => TensorType::TQ1_0,
            OutType::Tq2_0 => TensorType::TQ2_0,
            OutType::Tl1 => TensorType::TL1,
            OutType::Tl2 => TensorType::TL2,
            OutType::F16 => TensorType::F16,
            OutType::F32 => TensorType::F32,
        }
    }

    /// `general.file_type`: bitnet.cpp's "mostly I2_S" (40), "mostly TL1/TL2" (38/39),
    /// llama.cpp's "mostly TQ1_0/TQ2_0" (36/37), "all F32" (0), "mostly F16" (1).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::I2s => 40,
            OutType::Tq1_0 => 36,
            OutType::Tq2_0 => 37,
            OutType::Tl1 => 38,
            OutType::Tl2 => 39,
            OutType::F16 => 1,
            OutType::F32 => 0,
        }
    }

    /// bitnet.cpp's TL types keep the scale out of the packed bytes, in a `<name>_scale` tensor.
    fn separate_scale(self) -> bool {
        matches!(self, OutType::Tl1 | OutType::Tl2)
    }

    fn pack(self, m: &TernaryMatrix, scale: f32) -> Result<Vec<u8>> {
        Ok(match self {
            OutType::I2s => i2s::pack(m, scale, I2sLayout::X86)?,
            OutType::Tq1_0 => tq::pack(TqKind::Tq1_0, m, scale)?,
            OutType::Tq2_0 => tq::pack(TqKind::Tq2_0, m, scale)?,
            OutType::Tl1 | OutType::Tl2 => {
                let tl2 = self == OutType::Tl2;
                let tiling = tl::choose_tiling(tl2, m.rows(), m.cols())?;
                if tl2 { tl::pack_tl2(m, tiling)? } else { tl::pack_tl1(m, tiling)? }
            }
            OutType::F16 | OutType::F32 => {
                let values: Vec<f32> = m.values().iter().map(|&t| f32::from(t) * scale).collect();
                bitnet_quant::dense::quantize_row(self.tensor_type(), &values)?
            }
        })
    }
}

/// Type of the embedding table (which is also the output head when tied). For BitNet 2B-4T the
/// head is read whole for every generated token and is larger than all ternary weights, so this
/// choice trades file size and decoding speed against accuracy (see docs/bench.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingType {
    F16,
    F32,
    /// 8.5 bits per weight (llama.cpp's Q8_0).
    Q8_0,
    /// 6.56 bits per weight (llama.cpp's Q6_K; rows must be multiples of 256).
    Q6K,
    /// Q8_0 where the rows (the hidden size) are multiples of 32, F16 otherwise: the best
    /// measured trade (docs/bench.md: +0.02% perplexity on the demo model, 26% fewer bytes per
    /// 2B-4T token, +23% / +43% generation speed at 1 / 2 threads; faster than Q6_K).
    Auto,
}

impl EmbeddingType {
    /// The concrete type for rows of `cols` (resolves [`EmbeddingType::Auto`]).
    pub fn for_rows(self, cols: usize) -> EmbeddingType {
        match self {
            EmbeddingType::Auto if cols.is_multiple_of(32) => EmbeddingType::Q8_0,
            EmbeddingType::Auto => EmbeddingType::F16,
            other => other,
        }
    }

    /// The GGUF tensor type (Auto as F16; resolve it with [`EmbeddingType::for_rows`] first).
    pub fn tensor_type(self) -> TensorType {
        match self {
            EmbeddingType::F16 | EmbeddingType::Auto => TensorType::F16,
            EmbeddingType::F32 => TensorType::F32,
            EmbeddingType::Q8_0 => TensorType::Q8_0,
            EmbeddingType::Q6K => TensorType::Q6_K,
        }
    }
}

impl EmbeddingType {
    /// Every type, in the order `--help` lists them.
    pub const ALL: [EmbeddingType; 5] =
        [EmbeddingType::Auto, EmbeddingType::F16, EmbeddingType::F32, EmbeddingType::Q8_0, EmbeddingType::Q6K];
}

impl std::fmt::Display for EmbeddingType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EmbeddingType::Auto => "auto",
            EmbeddingType::F16 => "f16",
            EmbeddingType::F32 => "f32",
            EmbeddingType::Q8_0 => "q8_0",
            EmbeddingType::Q6K => "q6_k",
        })
    }
}

impl std::str::FromStr for EmbeddingType {
    type Err = String;

    /// The names `--embedding-type` takes: auto, f16, f32, q8_0, q6_k.
    fn from_str(s: &str) -> Result<EmbeddingType, String> {
        parse_name(&EmbeddingType::ALL, s, "embedding type")
    }
}

/// Conversion options.
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    pub outtype: OutType,
    pub embedding_type: EmbeddingType,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { outtype: OutType::I2s, embedding_type: EmbeddingType::Auto }
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The file written: the output path, or the regular file it is a symbolic link to.
    pub path: PathBuf,
    pub architecture: String,
    pub tensors: usize,
    pub bytes: u64,
}

/// The GGUF architecture name we write for BitNet b1.58 2B-4T-style models (the name of the
/// official `microsoft/bitnet-b1.58-2B-4T-gguf` file).
pub const ARCH_BITNET_B158: &str = "bitnet-b1.58";

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| ConvertError::Json { path: path.into(), source })
}

/// The parts of config.json we use.
/// Largest size config.json may give (hidden, layers, vocabulary, context …): 2²⁸ fits the
/// 32-bit GGUF fields and lets two sizes multiply without overflow; real models are far below.
const MAX_CONFIG_DIM: u64 = 1 << 28;

#[derive(Debug, Clone)]
struct HfConfig {
    architecture: String,
    hidden: u64,
    ff: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    ctx: u64,
    eps: f64,
    rope_theta: f64,
    vocab: u64,
    hidden_act: String,
    tied: bool,
    quant: Option<Json>,
    /// 1bitLLM's config fields.
    weight_bits: Option<u64>,
    input_bits: Option<u64>,
}

impl HfConfig {
    fn load(dir: &Path) -> Result<HfConfig> {
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

/// The checkpoint's tensors, from one or more memory-mapped safetensors files.
struct Checkpoint {
    maps: Vec<memmap2::Mmap>,
    index: HashMap<String, Entry>,
}

/// Where a tensor lives, found once when the files are opened.
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: std::ops::Range<usize>,
}

impl Checkpoint {
    fn open(dir: &Path) -> Result<Checkpoint> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let j = read_json(&index_path)?;
            let map = j["weight_map"].as_object().ok_or_else(|| ConvertError::Checkpoint {
                path: index_path.clone(),
                message: "missing \"weight_map\"".into(),
            })?;
            let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for path in files {
            let io = |source| ConvertError::Io { path: path.clone(), source };
            let file = File::open(&path).map_err(io)?;
            let map = bitnet_format::map_file(&file).map_err(io)?;
            let invalid = |e: safetensors::SafeTensorError| ConvertError::Checkpoint {
                path: path.clone(),
                message: format!("not a valid safetensors file: {e}"),
            };
            // deserialize validates every tensor's offsets against the file; read_metadata gives them.
            SafeTensors::deserialize(&map).map_err(invalid)?;
            let (header, meta) = SafeTensors::read_metadata(&map).map_err(invalid)?;
            let data_start = 8 + header;
            for (name, info) in meta.tensors() {
                let (a, b) = info.data_offsets;
                let entry = Entry {
                    file: maps.len(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes: data_start + a..data_start + b,
                };
                index.insert(name, entry);
            }
            maps.push(map);
        }
        Ok(Checkpoint { maps, index })
    }

    /// The config's layer count and vocabulary must match the tensors present, checked before
    /// a plan (and a padded vocabulary) is sized from them.
    fn check_config(&self, c: &HfConfig) -> Result<()> {
        let layers = self
            .index
            .keys()
            .filter_map(|n| n.strip_prefix("model.layers.")?.split('.').next()?.parse::<u64>().ok())
            .max()
            .map_or(0, |l| l + 1);
        if layers != c.layers {
            return Err(ConvertError::Unsupported(format!(
                "config.json has num_hidden_layers = {} but the checkpoint has tensors for {layers} layers",
                c.layers
            )));
        }
        let embed = "model.embed_tokens.weight";
        let rows = self.index.get(embed).and_then(|e| e.shape.first().copied());
        match rows {
            None => Err(ConvertError::Tensor { name: embed.into(), message: "missing from the checkpoint".into() }),
            Some(rows) if rows as u64 != c.vocab => Err(ConvertError::Unsupported(format!(
                "config.json has vocab_size = {} but {embed} has {rows} rows",
                c.vocab
            ))),
            Some(_) => Ok(()),
        }
    }

    /// A tensor's dtype, shape (row-major, as in PyTorch) and bytes.
    fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let e = self
            .index
            .get(name)
            .ok_or_else(|| ConvertError::Tensor { name: name.into(), message: "missing from the checkpoint".into() })?;
        Ok((e.dtype, e.shape.clone(), &self.maps[e.file][e.bytes.clone()]))
    }

    /// A float tensor as f32 values with its shape.
    fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (dtype, shape, bytes) = self.raw(name)?;
        let values: Vec<f32> = match dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(ConvertError::Tensor {
                    name: name.into(),
                    message: format!("dtype {other:?} is not a float type"),
                });
            }
        };
        Ok((values, shape))
    }
}

/// One output tensor: GGUF name, source name, how to store it.
struct Plan {
    gguf: String,
    hf: String,
    kind: Kind,
    /// Expected PyTorch shape.
    shape: Vec<usize>,
    /// Permute rows for llama.cpp's RoPE with this many heads.
    permute: Option<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Norm,
    Embedding,
    Ternary,
}

fn plan(c: &HfConfig, family: Family) -> Vec<Plan> {
    let bitnet = family.bitnet_graph();
    let (attn_sub, ffn_sub) = match family {
        Family::OneBitLlm => ("self_attn.inner_attn_ln", "mlp.ffn_layernorm"),
        _ => ("self_attn.attn_sub_norm", "mlp.ffn_sub_norm"),
    };
    let (h, ff, q, kv) =
        (c.hidden as usize, c.ff as usize, (c.heads * c.head_dim) as usize, (c.kv_heads * c.head_dim) as usize);
    let (heads, kv_heads, vocab) = (c.heads as usize, c.kv_heads as usize, c.vocab as usize);
    let plan = |gguf: String, hf: String, kind, shape, permute| Plan { gguf, hf, kind, shape, permute };
    let mut p = vec![plan(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        Kind::Embedding,
        vec![vocab, h],
        None,
    )];
    // llama.cpp's `llama` graph rotates adjacent pairs, so its converter permutes Q and K rows;
    // the bitnet graphs use NEOX RoPE on the checkpoint's own order.
    let (pq, pk) = if bitnet { (None, None) } else { (Some(heads), Some(kv_heads)) };
    for l in 0..c.layers {
        let mut add = |gguf: &str, hf: &str, kind: Kind, shape: Vec<usize>, permute: Option<usize>| {
            p.push(plan(
                format!("blk.{l}.{gguf}.weight"),
                format!("model.layers.{l}.{hf}.weight"),
                kind,
                shape,
                permute,
            ))
        };
        add("attn_norm", "input_layernorm", Kind::Norm, vec![h], None);
        add("attn_q", "self_attn.q_proj", Kind::Ternary, vec![q, h], pq);
        add("attn_k", "self_attn.k_proj", Kind::Ternary, vec![kv, h], pk);
        add("attn_v", "self_attn.v_proj", Kind::Ternary, vec![kv, h], None);
        add("attn_output", "self_attn.o_proj", Kind::Ternary, vec![h, q], None);
        if bitnet {
            add("attn_sub_norm", attn_sub, Kind::Norm, vec![h], None);
        }
        add("ffn_norm", "post_attention_layernorm", Kind::Norm, vec![h], None);
        add("ffn_gate", "mlp.gate_proj", Kind::Ternary, vec![ff, h], None);
        add("ffn_up", "mlp.up_proj", Kind::Ternary, vec![ff, h], None);
        add("ffn_down", "mlp.down_proj", Kind::Ternary, vec![h, ff], None);
        if bitnet {
            add("ffn_sub_norm", ffn_sub, Kind::Norm, vec![ff], None);
        }
    }
    p.push(plan("output_norm.weight".into(), "model.norm.weight".into(), Kind::Norm, vec![h], None));
    if !c.tied {
        p.push(plan("output.weight".into(), "lm_head.weight".into(), Kind::Embedding, vec![vocab, h], None));
    }
    p
}

/// How the checkpoint stores its ternary linear weights.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    /// Float master weights, ternarized here (transformers' online mode).
    Online,
    /// Packed uint8 weights with a `weight_scale` that multiplies (`autobitlinear`) or divides
    /// (`bitlinear`) the output.
    Packed { divide: bool },
}

const SUPPORTED: &str = "supported: BitNetForCausalLM (float weights with quantization_mode \"online\", or packed \
                         uint8 weights) and LlamaForCausalLM with packed weights, each with \
                         quantization_config.quant_method \"bitnet\"; 1bitLLM's BitnetForCausalLM (float weights)";

/// The checkpoint families.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    /// transformers' `BitNetForCausalLM` (2B-4T): squared ReLU, sub-norms.
    BitNet,
    /// 1bitLLM's `BitnetForCausalLM` (bitnet_b1_58-large/-3B, custom model code): float weights
    /// quantized by the model at run time, SiLU, sub-norms named `inner_attn_ln`/`ffn_layernorm`.
    OneBitLlm,
    /// `LlamaForCausalLM` with packed ternary weights (Falcon3-1.58bit, Llama3-8B-1.58).
    Llama,
}

impl Family {
    fn bitnet_graph(self) -> bool {
        self != Family::Llama
    }
}

/// Decides the checkpoint kind: its family and weight source.
fn detect(c: &HfConfig) -> Result<(Family, Source)> {
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

/// transformers' packed layout: uint8 `[out/4, in]`, `W[i·R + r, c] = ((P[r, c] >> 2i) & 3) − 1`.
fn unpack_hf(name: &str, packed: &[u8], rows: usize, cols: usize) -> Result<TernaryMatrix> {
    let r4 = rows / 4;
    let mut values = vec![0i8; rows * cols];
    for (i, chunk) in values.chunks_exact_mut(r4 * cols).enumerate() {
        for (v, &p) in chunk.iter_mut().zip(packed) {
            let code = (p >> (2 * i)) & 3;
            if code == 3 {
                return Err(ConvertError::Tensor {
                    name: name.into(),
                    message: "packed code 3 is not a ternary value".into(),
                });
            }
            *v = code as i8 - 1;
        }
    }
    Ok(TernaryMatrix::new(rows, cols, values)?)
}

/// llama.cpp's Q/K permutation: within each head, row `half·d/2 + j` moves to `2j + half`.
fn permute_rows<T: Copy>(values: &[T], rows: usize, cols: usize, heads: usize) -> Vec<T> {
    let hd = rows / heads;
    let mut out = values.to_vec();
    for h in 0..heads {
        for half in 0..2 {
            for j in 0..hd / 2 {
                let (src, dst) = (h * hd + half * hd / 2 + j, h * hd + 2 * j + half);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Converts the Hugging Face checkpoint in `dir` to a GGUF file at `out`.
pub fn convert_dir(dir: &Path, out: &Path, opts: ConvertOptions) -> Result<Summary> {
    convert_dir_with_progress(dir, out, opts, &mut |_| {})
}

/// Where a conversion is: tensors written so far out of all, and the one being written.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub tensor: &'a str,
}

/// [`convert_dir`], calling `progress` before each tensor (for a progress bar).
pub fn convert_dir_with_progress(
    dir: &Path,
    out: &Path,
    opts: ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Summary> {
    output_target(out)?;
    let config = HfConfig::load(dir)?;
    let (family, source) = detect(&config)?;
    let ckpt = Checkpoint::open(dir)?;
    ckpt.check_config(&config)?;
    let tok = TokenizerMetadata::load(dir, config.vocab as usize)?;
    if family == Family::OneBitLlm && !matches!(tok.vocab, Vocab::SentencePiece { .. }) {
        // bitnet-b1.58 files carry no activation key: SiLU (1bitLLM) is told from squared ReLU
        // (2B-4T) by the SentencePiece vocabulary, as 1bitLLM models all have one.
        return Err(ConvertError::Unsupported(
            "a BitnetForCausalLM (1bitLLM) checkpoint without tokenizer.model: its SiLU graph is recognised by the \
             SentencePiece vocabulary"
                .into(),
        ));
    }
    let arch = if family.bitnet_graph() { ARCH_BITNET_B158 } else { "llama" };
    let plans = plan(&config, family);

    let mut b = GgufBuilder::new();
    let m = b.metadata_mut();
    m.insert("general.architecture", arch);
    m.insert("general.name", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    m.insert("general.file_type", opts.outtype.file_type());
    m.insert("general.quantization_version", 2u32);
    // Checked (config sizes are at most MAX_CONFIG_DIM), never truncated.
    let u32_of = |k: &str, v: u64| {
        u32::try_from(v).map_err(|_| ConvertError::Unsupported(format!("{k} = {v} does not fit a 32-bit GGUF field")))
    };
    m.insert(format!("{arch}.vocab_size"), u32_of("vocab_size", config.vocab)?);
    m.insert(format!("{arch}.context_length"), u32_of("context_length", config.ctx)?);
    m.insert(format!("{arch}.embedding_length"), u32_of("embedding_length", config.hidden)?);
    m.insert(format!("{arch}.block_count"), u32_of("block_count", config.layers)?);
    m.insert(format!("{arch}.feed_forward_length"), u32_of("feed_forward_length", config.ff)?);
    m.insert(format!("{arch}.attention.head_count"), u32_of("attention.head_count", config.heads)?);
    m.insert(format!("{arch}.attention.head_count_kv"), u32_of("attention.head_count_kv", config.kv_heads)?);
    m.insert(format!("{arch}.attention.layer_norm_rms_epsilon"), config.eps as f32);
    m.insert(format!("{arch}.rope.freq_base"), config.rope_theta as f32);
    m.insert(format!("{arch}.rope.dimension_count"), u32_of("rope.dimension_count", config.head_dim)?);
    if opts.outtype == OutType::I2s {
        m.insert(i2s::LAYOUT_KEY, I2sLayout::X86.as_str());
    }
    if opts.outtype.separate_scale() {
        // Every shape's tiling, decided (and checked) before anything is written.
        let tl2 = opts.outtype == OutType::Tl2;
        let mut tilings: Vec<(usize, usize, tl::TlTiling)> = Vec::new();
        for p in plans.iter().filter(|p| p.kind == Kind::Ternary) {
            let (rows, cols) = (p.shape[0], p.shape[1]);
            if !tilings.iter().any(|&(r, c, _)| (r, c) == (rows, cols)) {
                let t = tl::choose_tiling(tl2, rows, cols)
                    .map_err(|e| ConvertError::Unsupported(format!("--outtype {}: {}: {e}", opts.outtype, p.hf)))?;
                tilings.push((rows, cols, t));
            }
        }
        let values = tl::encode_tilings(&tilings).into_iter().map(Value::U32).collect();
        m.insert(tl::TILINGS_KEY, Array::new(bitnet_format::ValueType::U32, values).expect("all U32"));
    }
    tok.write(m);

    let emb_type = opts.embedding_type.for_rows(config.hidden as usize).tensor_type();
    // Block types need whole blocks per row: say so before writing anything.
    bitnet_quant::dense::row_bytes(emb_type, config.hidden as usize).map_err(|e| {
        ConvertError::Unsupported(format!(
            "--embedding-type {emb_type} cannot hold rows of {} (hidden size): {e}",
            config.hidden
        ))
    })?;
    for p in &plans {
        let ne: Vec<u64> = p.shape.iter().rev().map(|&d| d as u64).collect();
        let ty = match p.kind {
            Kind::Norm => TensorType::F32,
            Kind::Embedding => emb_type,
            Kind::Ternary => opts.outtype.tensor_type(),
        };
        b.add_tensor(&p.gguf, ty, &ne)?;
        if p.kind == Kind::Ternary && opts.outtype.separate_scale() {
            b.add_tensor(scale_name(&p.gguf), TensorType::F32, &[1])?;
        }
    }

    let (bytes, path) = write_atomically(out, b, |w| {
        for (done, p) in plans.iter().enumerate() {
            progress(Progress { done, total: plans.len(), tensor: &p.gguf });
            let bytes = match p.kind {
                Kind::Ternary => {
                    let (m, scale) = ternary(&ckpt, p, source)?;
                    let bytes = opts.outtype.pack(&m, scale)?;
                    if opts.outtype.separate_scale() {
                        w.write_tensor(&p.gguf, &bytes)?;
                        w.write_tensor(&scale_name(&p.gguf), &scale.to_le_bytes())?;
                        continue;
                    }
                    bytes
                }
                Kind::Norm | Kind::Embedding => {
                    let (values, shape) = ckpt.f32(&p.hf)?;
                    check_shape(p, &shape)?;
                    match p.kind {
                        Kind::Embedding => {
                            let mut bytes = Vec::new();
                            for row in values.chunks(config.hidden as usize) {
                                bytes.extend(bitnet_quant::dense::quantize_row(emb_type, row)?);
                            }
                            bytes
                        }
                        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    }
                }
            };
            w.write_tensor(&p.gguf, &bytes)?;
        }
        Ok(())
    })?;
    let scales =
        if opts.outtype.separate_scale() { plans.iter().filter(|p| p.kind == Kind::Ternary).count() } else { 0 };
    Ok(Summary { path, architecture: arch.into(), tensors: plans.len() + scales, bytes })
}

/// bitnet.cpp's name for the scale tensor of a TL1/TL2 weight.
fn scale_name(weight: &str) -> String {
    format!("{weight}_scale")
}

/// Where the output really goes: `out` itself when it does not exist or is a regular file, the
/// file a symlink points to when that is a regular file (the link is kept). Anything else (a
/// directory, a device such as /dev/full, a FIFO, a dangling link) is refused before any work is
/// done: renaming over it would replace it with a regular file.
pub fn output_target(out: &Path) -> Result<PathBuf> {
    let refuse = |message: String| ConvertError::Output { path: out.to_owned(), message };
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out.to_owned()),
        Err(source) => return Err(ConvertError::Io { path: out.to_owned(), source }),
    };
    let (target, meta) = if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(out).map_err(|_| {
            refuse("is a symbolic link to a file that does not exist; refusing to replace the link".into())
        })?;
        let meta = std::fs::metadata(&target).map_err(|source| ConvertError::Io { path: target.clone(), source })?;
        (target, meta)
    } else {
        (out.to_owned(), meta)
    };
    let kind = file_kind(&meta.file_type());
    if kind != "regular file" {
        let through =
            if target != out { format!(" (through the symbolic link to {})", target.display()) } else { String::new() };
        return Err(refuse(format!("is a {kind}{through}, not a regular file; refusing to replace it")));
    }
    Ok(target)
}

/// A file type in words, for error messages.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_block_device() || t.is_char_device() {
            return "device";
        }
        if t.is_fifo() {
            return "named pipe";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Writes a GGUF through a temporary file beside the output (fsync, then rename), so the output is
/// either the complete new file or untouched, and the temporary file is removed on every error
/// path (the rename's included). The output is checked by [`output_target`] before and again
/// right before the rename. Returns the bytes written and the path written (a symlink's target).
fn write_atomically(
    out: &Path,
    b: GgufBuilder,
    body: impl FnOnce(&mut bitnet_format::GgufWriter<BufWriter<File>>) -> Result<()>,
) -> Result<(u64, PathBuf)> {
    let target = output_target(out)?;
    let mut tmp_name = target.file_name().unwrap_or(target.as_os_str()).to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = target.with_file_name(tmp_name);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ConvertError::Io { path, source }
    };
    let result = (|| -> Result<u64> {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = b.start(BufWriter::new(file))?;
        body(&mut w)?;
        let file =
            w.finish()?.into_inner().map_err(|e| ConvertError::Io { path: tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&tmp))?;
        let bytes = file.metadata().map_err(io(&tmp))?.len();
        if output_target(out)? != target {
            return Err(ConvertError::Output { path: out.to_owned(), message: "changed while converting".into() });
        }
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        Ok(bytes)
    })();
    match result {
        Ok(bytes) => Ok((bytes, target)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// What [`requantize`] changes in an existing GGUF model; `None` keeps the file's own types.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequantizeOptions {
    /// Re-encode every ternary weight (I2_S, TQ1_0, TQ2_0, TL1, TL2 in the input) as this type.
    pub outtype: Option<OutType>,
    /// Re-encode the embedding table and output head as this type.
    pub embedding_type: Option<EmbeddingType>,
}

/// Re-encodes the embedding table and output head of an existing GGUF model (ours, bitnet.cpp's
/// or llama.cpp's) as `ty`, copying everything else byte for byte — llama-quantize's
/// `--token-embedding-type` / `--output-tensor-type` for the one choice that matters to ternary
/// models (the head is read whole for every generated token).
pub fn requantize_embeddings(input: &Path, out: &Path, ty: EmbeddingType) -> Result<Summary> {
    requantize(input, out, RequantizeOptions { outtype: None, embedding_type: Some(ty) })
}

/// Re-encodes an existing GGUF model (ours, bitnet.cpp's or llama.cpp's): its ternary weights as
/// `opts.outtype` and its embedding table / output head as `opts.embedding_type`, copying every
/// other tensor byte for byte. Ternary values never change between ternary types; scales do only
/// where the target stores them with less precision (TQ's per-block f16). A per-tensor type (I2_S,
/// TL1, TL2) cannot hold a TQ tensor whose blocks have different scales (llama.cpp's own
/// quantizer writes those), and float layer weights are not ternarized here: both are errors.
pub fn requantize(input: &Path, out: &Path, opts: RequantizeOptions) -> Result<Summary> {
    requantize_with_progress(input, out, opts, &mut |_| {})
}

/// [`requantize`], calling `progress` before each tensor (for a progress bar).
pub fn requantize_with_progress(
    input: &Path,
    out: &Path,
    opts: RequantizeOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Summary> {
    output_target(out)?;
    let file = bitnet_format::GgufFile::open(input)?;
    let hidden = file.tensor_info("token_embd.weight").and_then(|t| t.shape.first().copied()).unwrap_or(0) as usize;
    let emb_target = opts.embedding_type.map(|ty| ty.for_rows(hidden).tensor_type());
    let is_head = |name: &str| name == "token_embd.weight" || name == "output.weight";
    // bitnet.cpp's TL1/TL2 weights keep their scale in a separate one-value tensor.
    let is_tl_scale = |name: &str| {
        name.strip_suffix("_scale")
            .is_some_and(|w| file.tensor_info(w).is_some_and(|t| matches!(t.ty, TensorType::TL1 | TensorType::TL2)))
    };
    let outtype = opts.outtype;
    if let Some(o) = outtype
        && !file.tensors().iter().any(|t| t.ty.is_ternary())
    {
        return Err(ConvertError::Unsupported(format!(
            "--outtype {o}: {} has no ternary weights to re-encode (float layer weights are ternarized only from a \
             checkpoint directory)",
            input.display()
        )));
    }

    let mut meta = file.metadata().clone();
    let mut tilings: Vec<(usize, usize, tl::TlTiling)> = Vec::new();
    if let Some(o) = outtype {
        // Keys are replaced in place (and the I2_S layout key, harmless elsewhere, is kept), so
        // re-encoding there and back gives the same file.
        meta.insert("general.file_type", o.file_type());
        if o == OutType::I2s || meta.get(i2s::LAYOUT_KEY).is_some() {
            meta.insert(i2s::LAYOUT_KEY, I2sLayout::X86.as_str());
        }
    }
    let mut b = GgufBuilder::new();
    for t in file.tensors() {
        let cols = t.shape.first().copied().unwrap_or(1) as usize;
        let rows = (t.numel() as usize).checked_div(cols).unwrap_or(0);
        let mut ty = t.ty;
        if let Some(target) = emb_target.filter(|_| is_head(&t.name)) {
            bitnet_quant::dense::row_bytes(target, cols).map_err(|e| {
                ConvertError::Unsupported(format!(
                    "{}: --embedding-type {target} cannot hold rows of {cols}: {e}",
                    t.name
                ))
            })?;
            bitnet_quant::dense::row_bytes(t.ty, cols)
                .map_err(|e| ConvertError::Unsupported(format!("{}: cannot read type {} ({e})", t.name, t.ty)))?;
            ty = target;
        }
        if let Some(o) = outtype {
            if is_tl_scale(&t.name) {
                continue;
            }
            if t.ty.is_ternary() {
                ty = o.tensor_type();
                if o.separate_scale() && !tilings.iter().any(|&(r, c, _)| (r, c) == (rows, cols)) {
                    let tiling = tl::choose_tiling(o == OutType::Tl2, rows, cols)
                        .map_err(|e| ConvertError::Unsupported(format!("--outtype {o}: {}: {e}", t.name)))?;
                    tilings.push((rows, cols, tiling));
                }
            }
        }
        b.add_tensor(&t.name, ty, &t.shape)?;
        if outtype.is_some_and(OutType::separate_scale) && t.ty.is_ternary() {
            b.add_tensor(scale_name(&t.name), TensorType::F32, &[1])?;
        }
    }
    if outtype.is_some() && tilings.is_empty() {
        meta.remove(tl::TILINGS_KEY);
    } else if !tilings.is_empty() {
        let values = tl::encode_tilings(&tilings).into_iter().map(Value::U32).collect();
        meta.insert(tl::TILINGS_KEY, Array::new(bitnet_format::ValueType::U32, values).expect("all U32"));
    }
    b.with_metadata(meta);
    let arch = file.metadata().get("general.architecture").and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    let mut tensors = 0;
    let (bytes, path) = write_atomically(out, b, |w| {
        let total = file.tensors().len();
        for (done, t) in file.tensors().iter().enumerate() {
            progress(Progress { done, total, tensor: &t.name });
            let data = file.tensor_data(t);
            let cols = t.shape.first().copied().unwrap_or(1) as usize;
            if let Some(target) = emb_target.filter(|_| is_head(&t.name)) {
                let rb = bitnet_quant::dense::row_bytes(t.ty, cols)?;
                let mut row = vec![0f32; cols];
                for src in data.chunks_exact(rb) {
                    bitnet_quant::dense::dequantize_row(t.ty, src, &mut row);
                    w.write_tensor_chunk(&t.name, &bitnet_quant::dense::quantize_row(target, &row)?)?;
                }
                tensors += 1;
                continue;
            }
            match outtype {
                Some(_) if is_tl_scale(&t.name) => continue,
                Some(o) if t.ty.is_ternary() => {
                    let rows = t.numel() as usize / cols.max(1);
                    let (m, scales) = read_ternary(&file, t, rows, cols)?;
                    let tensor_error = |message: String| ConvertError::Tensor { name: t.name.clone(), message };
                    let outtype_error = |e: &dyn std::fmt::Display| tensor_error(format!("--outtype {o}: {e}"));
                    if matches!(o, OutType::I2s | OutType::Tl1 | OutType::Tl2) {
                        // One scale per tensor: the blocks' scales must agree.
                        let scale = single_scale(&scales).map_err(tensor_error)?;
                        w.write_tensor(&t.name, &o.pack(&m, scale).map_err(|e| outtype_error(&e))?)?;
                        if o.separate_scale() {
                            w.write_tensor(&scale_name(&t.name), &scale.to_le_bytes())?;
                            tensors += 1;
                        }
                    } else {
                        // TQ (per-block scales) and float types: every row from values × scales.
                        let mut bytes = Vec::new();
                        for row in dequantize_blocks(&m, &scales).chunks(cols) {
                            bytes.extend(
                                match o {
                                    OutType::Tq1_0 => tq::quantize_row(TqKind::Tq1_0, row),
                                    OutType::Tq2_0 => tq::quantize_row(TqKind::Tq2_0, row),
                                    _ => bitnet_quant::dense::quantize_row(o.tensor_type(), row),
                                }
                                .map_err(|e| outtype_error(&e))?,
                            );
                        }
                        w.write_tensor(&t.name, &bytes)?;
                    }
                }
                _ => w.write_tensor(&t.name, data)?,
            }
            tensors += 1;
        }
        Ok(())
    })?;
    Ok(Summary { path, architecture: arch, tensors, bytes })
}

/// Decodes a ternary tensor of a GGUF file to its values and scales.
fn read_ternary(
    file: &bitnet_format::GgufFile,
    t: &bitnet_format::TensorInfo,
    rows: usize,
    cols: usize,
) -> Result<(TernaryMatrix, WeightScales)> {
    let tl2 = t.ty == TensorType::TL2;
    let format = match t.ty {
        TensorType::I2_S => TernaryFormat::I2s(I2sLayout::of_file(file.metadata())?),
        TensorType::TQ1_0 => TernaryFormat::Tq1_0,
        TensorType::TQ2_0 => TernaryFormat::Tq2_0,
        TensorType::TL1 | TensorType::TL2 => {
            let tiling = tl::tiling_of_file(file.metadata(), tl2, rows, cols)?;
            if tl2 { TernaryFormat::Tl2(tiling) } else { TernaryFormat::Tl1(tiling) }
        }
        ty => unreachable!("{ty} is not ternary"),
    };
    let scale = match format {
        TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_) => {
            let name = scale_name(&t.name);
            let s = file
                .tensor_info(&name)
                .filter(|s| s.ty == TensorType::F32 && s.numel() == 1)
                .map(|s| file.tensor_data(s))
                .ok_or_else(|| ConvertError::Tensor {
                    name: t.name.clone(),
                    message: format!("{} needs its scale tensor {name} (one F32 value)", t.ty),
                })?;
            Some(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        }
        _ => None,
    };
    Ok(PackedTernary::new(format, rows, cols, file.tensor_data(t), scale)?.unpack()?)
}

/// The one scale of a tensor: per-block scales must all agree (blocks of zeros aside).
fn single_scale(scales: &WeightScales) -> Result<f32, String> {
    match scales {
        WeightScales::Tensor(s) => Ok(*s),
        WeightScales::Blocks { values, .. } => {
            let mut distinct = values.iter().copied().filter(|&v| v != 0.0);
            let first = distinct.next().unwrap_or(0.0);
            match distinct.find(|&v| v != first) {
                None => Ok(first),
                Some(other) => Err(format!(
                    "its blocks have different scales ({first} and {other}, as llama.cpp's own quantizer writes); a \
                     type with one scale per tensor cannot hold them: choose tq1_0 or tq2_0"
                )),
            }
        }
    }
}

/// Ternary values times their block (or tensor) scale.
fn dequantize_blocks(m: &TernaryMatrix, scales: &WeightScales) -> Vec<f32> {
    match scales {
        WeightScales::Tensor(s) => m.values().iter().map(|&t| f32::from(t) * s).collect(),
        WeightScales::Blocks { block, values } => m
            .values()
            .chunks(*block)
            .zip(values)
            .flat_map(|(ts, &d)| ts.iter().map(move |&t| f32::from(t) * d))
            .collect(),
    }
}

fn check_shape(p: &Plan, shape: &[usize]) -> Result<()> {
    if shape != p.shape {
        return Err(ConvertError::Tensor {
            name: p.hf.clone(),
            message: format!("shape {shape:?}, config.json implies {:?}", p.shape),
        });
    }
    Ok(())
}

/// The ternary values (rows permuted where the plan says) and dequantization scale of a linear.
fn ternary(ckpt: &Checkpoint, p: &Plan, source: Source) -> Result<(TernaryMatrix, f32)> {
    let (rows, cols) = (p.shape[0], p.shape[1]);
    let (m, scale) = match source {
        Source::Online => {
            let (values, shape) = ckpt.f32(&p.hf)?;
            check_shape(p, &shape)?;
            let q = absmean_quantize(&values, rows, cols)?;
            let scale = q.scale();
            (q.matrix, scale)
        }
        Source::Packed { divide } => {
            let (dtype, shape, bytes) = ckpt.raw(&p.hf)?;
            if dtype != Dtype::U8 || shape != [rows / 4, cols] || rows % 4 != 0 {
                return Err(ConvertError::Tensor {
                    name: p.hf.clone(),
                    message: format!("expected packed uint8 [{}, {cols}], found {dtype:?} {shape:?}", rows / 4),
                });
            }
            let m = unpack_hf(&p.hf, bytes, rows, cols)?;
            let scale_name = format!("{}_scale", p.hf);
            let (s, sshape) = ckpt.f32(&scale_name)?;
            if s.len() != 1 || sshape.len() > 1 {
                return Err(ConvertError::Tensor {
                    name: scale_name,
                    message: format!("expected one value, found shape {sshape:?}"),
                });
            }
            (m, if divide { 1.0 / s[0] } else { s[0] })
        }
    };
    match p.permute {
        Some(heads) => Ok((TernaryMatrix::new(rows, cols, permute_rows(m.values(), rows, cols, heads))?, scale)),
        None => Ok((m, scale)),
    }
}

pub(crate) fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(Array::strings(items))
}
