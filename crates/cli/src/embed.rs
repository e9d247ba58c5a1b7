//! `bitnet embed`: text embeddings from a ternary embedding model.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_model::embed::{EmbedOptions, cosine, embed_texts, with_instruction};
use bitnet_model::{LoadOptions, Model, Pooling, Tokenizer};

use crate::generate::{ModelArgs, check_threads};

#[derive(clap::Args, Debug)]
#[command(after_help = "Embedding models: microsoft/bitnet-embedding-0.6b (Qwen3) and -270m (Gemma 3) as \
                        bitnet.cpp's or bitnet's converter writes them. Queries take a one-sentence task \
                        (--instruction); documents go without.\n\n\
                        Examples:\n  bitnet embed -m emb.gguf -p 'What is BitNet?' -p 'BitNet is a ternary LLM.'\n  \
                        bitnet embed -m emb.gguf -f docs.txt --json > vectors.jsonl")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A text to embed (repeat for several).
    #[arg(short, long = "prompt", value_name = "TEXT", required_unless_present = "file")]
    pub prompt: Vec<String>,
    /// A file of texts, one per line (empty lines skipped); `-` reads standard input.
    #[arg(short, long, value_name = "FILE", conflicts_with = "prompt")]
    pub file: Option<PathBuf>,
    /// How the per-token states become one vector: auto (what the model file declares), last
    /// (the final token, the EOS the tokenizer appends), mean, or cls (the first token).
    #[arg(long, value_enum, default_value = "auto")]
    pub pooling: PoolingArg,
    /// Scale each vector to unit length (l2), or leave it as pooled (none).
    #[arg(long, value_enum, default_value = "l2")]
    pub normalize: NormalizeArg,
    /// A one-sentence task put before every text as `Instruct: TASK\nQuery: TEXT` (for queries,
    /// the Qwen3-Embedding convention).
    #[arg(long, value_name = "TASK")]
    pub instruction: Option<String>,
    /// Cut texts longer than the context instead of refusing them.
    #[arg(long)]
    pub truncate: bool,
    /// Print one JSON array per text, one per line (JSON Lines), instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Most tokens embedded in one pass (texts are batched up to this).
    #[arg(long, default_value_t = 2048, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_tokens: u64,
}

/// `--pooling` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PoolingArg {
    Auto,
    Last,
    Mean,
    Cls,
}

/// `--normalize` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum NormalizeArg {
    L2,
    None,
}

fn texts(args: &Args) -> Result<Vec<String>> {
    let Some(path) = &args.file else { return Ok(args.prompt.clone()) };
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
    if lines.is_empty() {
        bail!("{} has no text (every line is empty)", path.display());
    }
    Ok(lines)
}

pub fn run(args: &Args) -> Result<()> {
    let texts = texts(args)?;
    let threads = args.model.threads.map(check_threads).transpose()?.unwrap_or(0);
    let path = args.model.path()?;
    if !path.exists() {
        bail!("model file {} does not exist", path.display());
    }
    let model = Model::load(&path, LoadOptions { threads, ..Default::default() })
        .with_context(|| format!("cannot load {}", path.display()))?;
    let tok = Tokenizer::from_metadata(model.metadata()).context("cannot build the tokenizer")?;
    let pooling = match args.pooling {
        PoolingArg::Auto => None,
        PoolingArg::Last => Some(Pooling::Last),
        PoolingArg::Mean => Some(Pooling::Mean),
        PoolingArg::Cls => Some(Pooling::Cls),
    };
    let pooling_used = bitnet_model::embed::pooling_for(&model, pooling)
        .map_err(|e| anyhow::anyhow!("{e}; pass --pooling mean|last|cls"))?;
    let inputs: Vec<String> = match &args.instruction {
        Some(task) => texts.iter().map(|t| with_instruction(task, t)).collect(),
        None => texts.clone(),
    };
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let opts = EmbedOptions {
        pooling: Some(pooling_used),
        normalize: matches!(args.normalize, NormalizeArg::L2),
        truncate: args.truncate,
        batch_tokens: args.batch_tokens as usize,
        ctx: args.model.ctx_size,
    };
    let bar = indicatif::ProgressBar::new(refs.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} texts, {elapsed}").expect("valid template"),
    );
    if refs.len() < 64 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let start = Instant::now();
    let out = embed_texts(&model, &tok, &refs, &opts, &mut |done, _| bar.set_position(done as u64)).map_err(|e| {
        let hint = if e.to_string().contains("longer than the context") { " (pass --truncate to cut it)" } else { "" };
        anyhow::anyhow!("{e}{hint}")
    })?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let tokens: usize = out.tokens.iter().sum();
    let source = if pooling.is_some() { "--pooling" } else { "declared by the model" };
    eprintln!(
        "{} text(s), {tokens} tokens in {secs:.2} s ({:.0} tokens/s); pooling {} ({source}), normalize {}, {} dims, {} kernels, {} threads",
        refs.len(),
        tokens as f64 / secs.max(1e-9),
        out.pooling.name(),
        if opts.normalize { "l2" } else { "none" },
        model.config.hidden,
        model.kernel_name(),
        model.threads()
    );
    if out.truncated > 0 {
        eprintln!("warning: {} text(s) truncated to the context", out.truncated);
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        for v in &out.vectors {
            serde_json::to_writer(&mut stdout, v)?;
            writeln!(stdout)?;
        }
        return Ok(());
    }
    for (i, (text, v)) in texts.iter().zip(&out.vectors).enumerate() {
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
        let tail: Vec<String> = v.iter().skip(v.len().saturating_sub(2).max(4)).map(|x| format!("{x:+.4}")).collect();
        writeln!(
            stdout,
            "[{i}] {} tokens  [{}{}{}]  {}",
            out.tokens[i],
            head.join(", "),
            if tail.is_empty() { "" } else { ", …, " },
            tail.join(", "),
            preview(text)
        )?;
    }
    if out.vectors.len() > 1 {
        writeln!(stdout, "\ncosine similarity:")?;
        write!(stdout, "     ")?;
        for j in 0..out.vectors.len() {
            write!(stdout, "{:>7}", format!("[{j}]"))?;
        }
        writeln!(stdout)?;
        for (i, a) in out.vectors.iter().enumerate() {
            write!(stdout, "{:>5}", format!("[{i}]"))?;
            for b in &out.vectors {
                write!(stdout, "{:>7.3}", cosine(a, b))?;
            }
            writeln!(stdout)?;
        }
    }
    Ok(())
}

/// The start of a text on one line.
fn preview(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = one_line.chars().take(60).collect();
    if cut.len() < one_line.len() { format!("{cut}…") } else { cut }
}
