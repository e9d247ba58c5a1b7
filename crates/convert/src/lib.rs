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
use bitnet_quant::{I2sLayout, PackedTernary, TernaryMatrix, TqKind, WeightScales, absmean_quantize, i2s, tl, tq};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

// The modules below share this file's imports through `use super::*`: one conversion pipeline,
// split by job.
mod checkpoint;
mod config;
mod hf;
mod output;
mod plan;
mod requantize;
mod tokenizer;
mod types;

use checkpoint::*;
use config::*;
use hf::scale_name;
use output::write_atomically;
use plan::*;

pub use hf::{Progress, convert_dir, convert_dir_with_progress, pooling_module};
pub use output::output_target;
pub use requantize::{RequantizeOptions, requantize, requantize_embeddings, requantize_with_progress};
use types::fallback_notes;
pub use types::{ConvertOptions, EmbeddingType, OutType};

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

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The file written: the output path, or the regular file it is a symbolic link to.
    pub path: PathBuf,
    pub architecture: String,
    pub tensors: usize,
    pub bytes: u64,
    /// Choices the conversion made that the user should hear about (e.g. the pooling).
    pub notes: Vec<String>,
}

/// The GGUF architecture name we write for BitNet b1.58 2B-4T-style models (the name of the
/// official `microsoft/bitnet-b1.58-2B-4T-gguf` file).
pub const ARCH_BITNET_B158: &str = "bitnet-b1.58";
