//! `bitnet convert`: Hugging Face checkpoint directory → GGUF.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bitnet_convert::{ConvertOptions, EmbeddingType, convert_dir};

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  bitnet convert ./bitnet-b1.58-2B-4T-bf16 -o model.gguf")]
pub struct Args {
    /// Directory with config.json, *.safetensors and tokenizer.json.
    pub dir: PathBuf,
    /// Output GGUF file.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Type of the embedding table (also the output head when tied).
    #[arg(long, value_enum, default_value = "f16")]
    pub embedding_type: Embedding,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Embedding {
    F16,
    F32,
}

pub fn run(args: &Args) -> Result<()> {
    let embedding_type = match args.embedding_type {
        Embedding::F16 => EmbeddingType::F16,
        Embedding::F32 => EmbeddingType::F32,
    };
    let s = convert_dir(&args.dir, &args.out, ConvertOptions { embedding_type, ..Default::default() })
        .with_context(|| format!("cannot convert {}", args.dir.display()))?;
    eprintln!("wrote {} ({}, {} tensors, {} bytes)", args.out.display(), s.architecture, s.tensors, s.bytes);
    Ok(())
}
