//! `bitnet convert`: Hugging Face checkpoint directory → GGUF, or GGUF → GGUF re-encoded.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bitnet_convert::{ConvertOptions, EmbeddingType, OutType, RequantizeOptions, convert_dir_with_progress};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  bitnet convert ./bitnet-b1.58-2B-4T-bf16 -o model.gguf\n  \
    bitnet convert model.gguf -o model-q6k.gguf --embedding-type q6_k   (re-encode only the head)\n  \
    bitnet convert model.gguf -o model-tq1.gguf --outtype tq1_0         (re-encode only the ternary weights)")]
pub struct Args {
    /// Directory with config.json, *.safetensors and tokenizer.json; or a GGUF model file, whose
    /// ternary weights are then re-encoded as --outtype and its embedding table and output head as
    /// --embedding-type, each only when given (everything else is copied unchanged).
    #[arg(required_unless_present = "hf_repo", conflicts_with = "hf_repo")]
    pub dir: Option<PathBuf>,
    /// Take the checkpoint from this Hugging Face repository (e.g.
    /// microsoft/bitnet-b1.58-2B-4T-bf16), through the standard cache; cached files work offline.
    #[arg(long, value_name = "ID")]
    pub hf_repo: Option<String>,
    /// Branch, tag or commit of --hf-repo.
    #[arg(long, value_name = "REV", requires = "hf_repo")]
    pub revision: Option<String>,
    /// Output GGUF file.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Type of the ternary weights: bitnet.cpp's I2_S, llama.cpp's TQ1_0 / TQ2_0 (rows must be
    /// multiples of 256), bitnet.cpp's lookup-table TL1 / TL2 (tiled as its preset kernels expect
    /// for bitnet_b1_58-large/-3B and Llama3-8B; other shapes get a tiling recorded in the file;
    /// run in place by the lookup-table kernels: TL2 has the fewest bytes, I2_S generates fastest
    /// on x86, docs/kernels.md), or unquantized f16 / f32 (ternary values times their
    /// scale; the baseline for speed comparisons). Default for a checkpoint: i2_s; for a GGUF
    /// input: keep the file's.
    #[arg(long, value_enum)]
    pub outtype: Option<Out>,
    /// Type of the embedding table (also the output head when tied, which every generated token
    /// reads whole): f16 (as bitnet.cpp's converter), f32, q8_0 (half the bytes of f16) or q6_k
    /// (0.41×). The default, auto, is q8_0 where the rows are multiples of 32 (every real model)
    /// and f16 otherwise: the best measured trade of speed against perplexity (docs/bench.md).
    /// Default for a checkpoint: auto; for a GGUF input: keep the file's.
    #[arg(long, value_enum)]
    pub embedding_type: Option<Embedding>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Out {
    #[value(name = "i2_s")]
    I2s,
    #[value(name = "tq1_0")]
    Tq1_0,
    #[value(name = "tq2_0")]
    Tq2_0,
    Tl1,
    Tl2,
    F16,
    F32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Embedding {
    Auto,
    F16,
    F32,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q6_k")]
    Q6K,
}

pub fn run(args: &Args) -> Result<()> {
    let dir = match (&args.dir, &args.hf_repo) {
        (Some(dir), _) => dir.clone(),
        (None, Some(repo)) => crate::hub::resolve_checkpoint(repo, args.revision.as_deref())?,
        (None, None) => unreachable!("clap requires one"),
    };
    if !dir.exists() {
        anyhow::bail!("{} does not exist", dir.display());
    }
    if !dir.is_dir() {
        if !is_gguf(&dir)? {
            anyhow::bail!(
                "{} is neither a checkpoint directory nor a GGUF file (it does not start with the GGUF magic)",
                dir.display()
            );
        }
        let opts = RequantizeOptions {
            outtype: args.outtype.map(outtype),
            embedding_type: args.embedding_type.map(embedding),
        };
        if opts.outtype.is_none() && opts.embedding_type.is_none() {
            anyhow::bail!(
                "{} is a GGUF file: say what to re-encode with --outtype (the ternary weights) and/or --embedding-type \
                 (the embedding table and output head)",
                dir.display()
            );
        }
        let s = with_progress_bar(|progress| bitnet_convert::requantize_with_progress(&dir, &args.out, opts, progress))
            .with_context(|| format!("cannot re-encode {}", dir.display()))?;
        report(args, &s);
        return Ok(());
    }
    let embedding_type = embedding(args.embedding_type.unwrap_or(Embedding::Auto));
    let outtype = outtype(args.outtype.unwrap_or(Out::I2s));
    let opts = ConvertOptions { outtype, embedding_type };
    let s = with_progress_bar(|progress| convert_dir_with_progress(&dir, &args.out, opts, progress))
        .with_context(|| format!("cannot convert {}", dir.display()))?;
    report(args, &s);
    Ok(())
}

/// Whether `path` starts with the GGUF magic.
fn is_gguf(path: &std::path::Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = f.read(&mut magic).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(n == 4 && &magic == b"GGUF")
}

fn report(args: &Args, s: &bitnet_convert::Summary) {
    let through =
        if s.path != args.out { format!(" (through the symbolic link {})", args.out.display()) } else { String::new() };
    eprintln!("wrote {}{through} ({}, {} tensors, {} bytes)", s.path.display(), s.architecture, s.tensors, s.bytes);
    for note in &s.notes {
        eprintln!("  {note}");
    }
}

/// Runs `job` with a progress bar of tensors written, cleared when it ends.
fn with_progress_bar<T>(job: impl FnOnce(&mut dyn FnMut(bitnet_convert::Progress<'_>)) -> T) -> T {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tensors, {elapsed} {msg}")
            .expect("valid template"),
    );
    let out = job(&mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.tensor.to_owned());
    });
    bar.finish_and_clear();
    out
}

fn outtype(o: Out) -> OutType {
    match o {
        Out::I2s => OutType::I2s,
        Out::Tq1_0 => OutType::Tq1_0,
        Out::Tq2_0 => OutType::Tq2_0,
        Out::Tl1 => OutType::Tl1,
        Out::Tl2 => OutType::Tl2,
        Out::F16 => OutType::F16,
        Out::F32 => OutType::F32,
    }
}

fn embedding(e: Embedding) -> EmbeddingType {
    match e {
        Embedding::Auto => EmbeddingType::Auto,
        Embedding::F16 => EmbeddingType::F16,
        Embedding::F32 => EmbeddingType::F32,
        Embedding::Q8_0 => EmbeddingType::Q8_0,
        Embedding::Q6K => EmbeddingType::Q6K,
    }
}
