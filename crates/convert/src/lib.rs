//! Hugging Face checkpoints → GGUF, in the layout bitnet.cpp writes.
//!
//! Supported today: `BitNetForCausalLM` with float (f32/bf16/f16) master weights and a
//! `quantization_config` of `quant_method: "bitnet"`, `quantization_mode: "online"` (as
//! microsoft/bitnet-b1.58-2B-4T-bf16): every linear weight is absmean-ternarized exactly as
//! transformers does at run time and packed as I2_S (x86 block order). Other kinds are reported
//! by name with what is supported.
//!
//! The output is written to a temporary file beside the target, fsynced and renamed, so a failed
//! conversion never leaves a half-written model.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use bitnet_format::{Array, GgufBuilder, TensorType, Value};
use bitnet_quant::{I2sLayout, absmean_quantize, i2s};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

mod tokenizer;

pub use tokenizer::TokenizerMetadata;

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
}

/// Type of the embedding table (which is also the output head when tied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingType {
    F16,
    F32,
}

/// Conversion options.
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    pub outtype: OutType,
    pub embedding_type: EmbeddingType,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { outtype: OutType::I2s, embedding_type: EmbeddingType::F16 }
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct Summary {
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
}

impl HfConfig {
    fn load(dir: &Path) -> Result<HfConfig> {
        let path = dir.join("config.json");
        let j = read_json(&path)?;
        let bad = |message: String| ConvertError::Checkpoint { path: path.clone(), message };
        let int = |k: &str| j[k].as_u64().ok_or_else(|| bad(format!("missing or non-integer {k:?}")));
        let architecture =
            j["architectures"][0].as_str().ok_or_else(|| bad("missing \"architectures\"".into()))?.to_owned();
        let (hidden, heads) = (int("hidden_size")?, int("num_attention_heads")?);
        if heads == 0 || hidden % heads != 0 {
            return Err(bad(format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}")));
        }
        let rope_theta = j["rope_parameters"]["rope_theta"].as_f64().or(j["rope_theta"].as_f64()).unwrap_or(10000.0);
        Ok(HfConfig {
            architecture,
            hidden,
            ff: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads: j["num_key_value_heads"].as_u64().unwrap_or(heads),
            head_dim: j["head_dim"].as_u64().unwrap_or(hidden / heads),
            ctx: j["max_position_embeddings"].as_u64().unwrap_or(2048),
            eps: j["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta,
            vocab: int("vocab_size")?,
            hidden_act: j["hidden_act"].as_str().unwrap_or("silu").to_owned(),
            tied: j["tie_word_embeddings"].as_bool().unwrap_or(true),
            quant: j.get("quantization_config").cloned(),
        })
    }
}

/// The checkpoint's tensors, from one or more memory-mapped safetensors files.
struct Checkpoint {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
    index: HashMap<String, usize>,
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
            // SAFETY: read-only private map of a checkpoint file we only read; concurrent truncation by
            // another process is outside our contract (as for every mmap-based loader).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            let st = SafeTensors::deserialize(&map).map_err(|e| ConvertError::Checkpoint {
                path: path.clone(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
            for name in st.names() {
                index.insert(name.to_owned(), maps.len());
            }
            maps.push((path, map));
        }
        Ok(Checkpoint { maps, index })
    }

    /// A tensor as f32 values with its shape (row-major, as in PyTorch).
    fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let missing = || ConvertError::Tensor { name: name.into(), message: "missing from the checkpoint".into() };
        let (path, map) = &self.maps[*self.index.get(name).ok_or_else(missing)?];
        let st = SafeTensors::deserialize(map)
            .map_err(|e| ConvertError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        let view = st.tensor(name).map_err(|_| missing())?;
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
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
        Ok((values, view.shape().to_vec()))
    }
}

/// One output tensor: GGUF name, source name, how to store it.
struct Plan {
    gguf: String,
    hf: String,
    kind: Kind,
    /// Expected PyTorch shape.
    shape: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Norm,
    Embedding,
    Ternary,
}

fn plan(c: &HfConfig) -> Vec<Plan> {
    let (h, ff, q, kv) =
        (c.hidden as usize, c.ff as usize, (c.heads * c.head_dim) as usize, (c.kv_heads * c.head_dim) as usize);
    let mut p = vec![Plan {
        gguf: "token_embd.weight".into(),
        hf: "model.embed_tokens.weight".into(),
        kind: Kind::Embedding,
        shape: vec![c.vocab as usize, h],
    }];
    for l in 0..c.layers {
        let b = format!("model.layers.{l}");
        let mut add = |gguf: &str, hf: &str, kind: Kind, shape: Vec<usize>| {
            p.push(Plan { gguf: format!("blk.{l}.{gguf}.weight"), hf: format!("{b}.{hf}.weight"), kind, shape })
        };
        add("attn_norm", "input_layernorm", Kind::Norm, vec![h]);
        add("attn_q", "self_attn.q_proj", Kind::Ternary, vec![q, h]);
        add("attn_k", "self_attn.k_proj", Kind::Ternary, vec![kv, h]);
        add("attn_v", "self_attn.v_proj", Kind::Ternary, vec![kv, h]);
        add("attn_output", "self_attn.o_proj", Kind::Ternary, vec![h, q]);
        add("attn_sub_norm", "self_attn.attn_sub_norm", Kind::Norm, vec![h]);
        add("ffn_norm", "post_attention_layernorm", Kind::Norm, vec![h]);
        add("ffn_gate", "mlp.gate_proj", Kind::Ternary, vec![ff, h]);
        add("ffn_up", "mlp.up_proj", Kind::Ternary, vec![ff, h]);
        add("ffn_down", "mlp.down_proj", Kind::Ternary, vec![h, ff]);
        add("ffn_sub_norm", "mlp.ffn_sub_norm", Kind::Norm, vec![ff]);
    }
    p.push(Plan {
        gguf: "output_norm.weight".into(),
        hf: "model.norm.weight".into(),
        kind: Kind::Norm,
        shape: vec![h],
    });
    if !c.tied {
        p.push(Plan {
            gguf: "output.weight".into(),
            hf: "lm_head.weight".into(),
            kind: Kind::Embedding,
            shape: vec![c.vocab as usize, h],
        });
    }
    p
}

fn detect(c: &HfConfig) -> Result<()> {
    const SUPPORTED: &str = "supported: BitNetForCausalLM with float weights and quantization_config \
                             {quant_method: \"bitnet\", quantization_mode: \"online\"}";
    if c.architecture != "BitNetForCausalLM" {
        return Err(ConvertError::Unsupported(format!("architecture {:?}; {SUPPORTED}", c.architecture)));
    }
    let Some(q) = &c.quant else {
        return Err(ConvertError::Unsupported(format!(
            "BitNetForCausalLM without quantization_config is a full-precision model, not ternary; {SUPPORTED}"
        )));
    };
    if q["quant_method"] != "bitnet" || q["quantization_mode"] != "online" {
        return Err(ConvertError::Unsupported(format!("quantization_config {q}; {SUPPORTED}")));
    }
    if c.hidden_act != "relu2" {
        return Err(ConvertError::Unsupported(format!("hidden_act {:?} (BitNet b1.58 uses \"relu2\")", c.hidden_act)));
    }
    Ok(())
}

/// Converts the Hugging Face checkpoint in `dir` to a GGUF file at `out`.
pub fn convert_dir(dir: &Path, out: &Path, opts: ConvertOptions) -> Result<Summary> {
    let config = HfConfig::load(dir)?;
    detect(&config)?;
    let ckpt = Checkpoint::open(dir)?;
    let tok = TokenizerMetadata::load(dir)?;
    let arch = ARCH_BITNET_B158;
    let plans = plan(&config);

    let mut b = GgufBuilder::new();
    let m = b.metadata_mut();
    m.insert("general.architecture", arch);
    m.insert("general.name", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    m.insert("general.file_type", 40u32);
    m.insert("general.quantization_version", 2u32);
    m.insert(format!("{arch}.vocab_size"), config.vocab as u32);
    m.insert(format!("{arch}.context_length"), config.ctx as u32);
    m.insert(format!("{arch}.embedding_length"), config.hidden as u32);
    m.insert(format!("{arch}.block_count"), config.layers as u32);
    m.insert(format!("{arch}.feed_forward_length"), config.ff as u32);
    m.insert(format!("{arch}.attention.head_count"), config.heads as u32);
    m.insert(format!("{arch}.attention.head_count_kv"), config.kv_heads as u32);
    m.insert(format!("{arch}.attention.layer_norm_rms_epsilon"), config.eps as f32);
    m.insert(format!("{arch}.rope.freq_base"), config.rope_theta as f32);
    m.insert(format!("{arch}.rope.dimension_count"), config.head_dim as u32);
    m.insert(i2s::LAYOUT_KEY, I2sLayout::X86.as_str());
    tok.write(m);

    let emb_type = match opts.embedding_type {
        EmbeddingType::F16 => TensorType::F16,
        EmbeddingType::F32 => TensorType::F32,
    };
    for p in &plans {
        let ne: Vec<u64> = p.shape.iter().rev().map(|&d| d as u64).collect();
        let ty = match p.kind {
            Kind::Norm => TensorType::F32,
            Kind::Embedding => emb_type,
            Kind::Ternary => match opts.outtype {
                OutType::I2s => TensorType::I2_S,
            },
        };
        b.add_tensor(&p.gguf, ty, &ne)?;
    }

    let tmp = out.with_extension(format!("gguf.tmp{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ConvertError::Io { path, source }
    };
    let result = (|| -> Result<u64> {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = b.start(BufWriter::new(file))?;
        for p in &plans {
            let (values, shape) = ckpt.f32(&p.hf)?;
            if shape != p.shape {
                return Err(ConvertError::Tensor {
                    name: p.hf.clone(),
                    message: format!("shape {shape:?}, config.json implies {:?}", p.shape),
                });
            }
            let bytes: Vec<u8> = match p.kind {
                Kind::Norm => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Kind::Embedding => match opts.embedding_type {
                    EmbeddingType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
                    EmbeddingType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                },
                Kind::Ternary => {
                    let q = absmean_quantize(&values, shape[0], shape[1])?;
                    i2s::pack(&q.matrix, q.scale(), I2sLayout::X86)?
                }
            };
            w.write_tensor(&p.gguf, &bytes)?;
        }
        let file =
            w.finish()?.into_inner().map_err(|e| ConvertError::Io { path: tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&tmp))?;
        Ok(file.metadata().map_err(io(&tmp))?.len())
    })();
    match result {
        Ok(bytes) => {
            std::fs::rename(&tmp, out).map_err(io(out))?;
            Ok(Summary { architecture: arch.into(), tensors: plans.len(), bytes })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub(crate) fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(Array::strings(items))
}
