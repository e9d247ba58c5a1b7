//! `bitnet convert`: Hugging Face checkpoint directory → GGUF.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bitnet_convert::{ConvertOptions, EmbeddingType, OutType, convert_dir};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  bitnet convert ./bitnet-b1.58-2B-4T-bf16 -o model.gguf\n  \
    bitnet convert model.gguf -o model-q6k.gguf --embedding-type q6_k   (re-encode only the head)")]
pub struct Args {
    /// Directory with config.json, *.safetensors and tokenizer.json; or a GGUF model file, whose
    /// embedding table and output head are then re-encoded as --embedding-type (everything else
    /// is copied unchanged).
    pub dir: PathBuf,
    /// Output GGUF file.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Type of the ternary weights: bitnet.cpp's I2_S, or llama.cpp's TQ1_0 / TQ2_0 (rows must
    /// be multiples of 256).
    #[arg(long, value_enum, default_value = "i2_s")]
    pub outtype: Out,
    /// Type of the embedding table (also the output head when tied, which every generated token
    /// reads whole): f16 (as bitnet.cpp), f32, q8_0 (half the bytes of f16) or q6_k (0.41×).
    #[arg(long, value_enum, default_value = "f16")]
    pub embedding_type: Embedding,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Out {
    #[value(name = "i2_s")]
    I2s,
    #[value(name = "tq1_0")]
    Tq1_0,
    #[value(name = "tq2_0")]
    Tq2_0,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Embedding {
    F16,
    F32,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q6_k")]
    Q6K,
}

pub fn run(args: &Args) -> Result<()> {
    if args.dir.is_file() {
        let s = bitnet_convert::requantize_embeddings(&args.dir, &args.out, embedding(args.embedding_type))
            .with_context(|| format!("cannot re-encode {}", args.dir.display()))?;
        eprintln!("wrote {} ({}, {} tensors, {} bytes)", args.out.display(), s.architecture, s.tensors, s.bytes);
        return Ok(());
    }
    let embedding_type = embedding(args.embedding_type);
    let outtype = match args.outtype {
        Out::I2s => OutType::I2s,
        Out::Tq1_0 => OutType::Tq1_0,
        Out::Tq2_0 => OutType::Tq2_0,
    };
    let s = convert_dir(&args.dir, &args.out, ConvertOptions { outtype, embedding_type })
        .with_context(|| format!("cannot convert {}", args.dir.display()))?;
    eprintln!("wrote {} ({}, {} tensors, {} bytes)", args.out.display(), s.architecture, s.tensors, s.bytes);
    Ok(())
}

fn embedding(e: Embedding) -> EmbeddingType {
    match e {
        Embedding::F16 => EmbeddingType::F16,
        Embedding::F32 => EmbeddingType::F32,
        Embedding::Q8_0 => EmbeddingType::Q8_0,
        Embedding::Q6K => EmbeddingType::Q6K,
    }
}
