//! `bitnet run`, `bitnet logits`, `bitnet perplexity`: the model commands.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_model::{LoadOptions, Model, Sampler, SamplingParams, StreamDecoder, Tokenizer};

/// The demo model that ships in the source tree (used when no model is named).
pub const DEMO_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf");

/// The prompt `bitnet run` uses when none is given.
pub const DEMO_PROMPT: &str = "The Rust compiler";

/// Where the model comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Path to a GGUF model file (default, when --hf-repo is not given either: the small demo
    /// model shipped in this repository's fixtures/).
    #[arg(short, long, value_name = "FILE", conflicts_with = "hf_repo")]
    pub model: Option<PathBuf>,
    /// A Hugging Face repository to take the model from (e.g. microsoft/bitnet-b1.58-2B-4T-gguf),
    /// through the standard cache; cached files work offline.
    #[arg(long, value_name = "ID")]
    pub hf_repo: Option<String>,
    /// The GGUF file in --hf-repo (default: its only .gguf file).
    #[arg(long, value_name = "NAME", requires = "hf_repo")]
    pub hf_file: Option<String>,
    /// Threads for the matrix multiplications and attention (default: one per physical core).
    #[arg(short, long, value_name = "N")]
    pub threads: Option<usize>,
    /// Context size in tokens (default: the model's training context, at most 4096).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub ctx_size: Option<usize>,
    /// KV cache element type for run and chat: f16 (half the memory and the bytes attention reads,
    /// as llama.cpp) or f32 (exact). logits and perplexity always use f32.
    #[arg(long, value_enum, value_name = "TYPE", default_value = "f16")]
    pub kv_type: KvArg,
}

/// `--kv-type` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KvArg {
    F16,
    F32,
}

impl From<KvArg> for bitnet_model::KvType {
    fn from(k: KvArg) -> Self {
        match k {
            KvArg::F16 => bitnet_model::KvType::F16,
            KvArg::F32 => bitnet_model::KvType::F32,
        }
    }
}

impl ModelArgs {
    /// The model file's path (resolving --hf-repo).
    pub fn path(&self) -> Result<PathBuf> {
        match (&self.model, &self.hf_repo) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(repo)) => crate::hub::resolve(repo, self.hf_file.as_deref()),
            (None, None) => {
                let demo = PathBuf::from(DEMO_MODEL);
                if !demo.exists() {
                    bail!("no model given: pass -m FILE or --hf-repo ID");
                }
                eprintln!("no model given: using the demo model {}", demo.display());
                Ok(demo)
            }
        }
    }

    pub fn load(&self) -> Result<(Model, Tokenizer, usize)> {
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        let path = self.path()?;
        if !path.exists() {
            bail!("model file {} does not exist", path.display());
        }
        let model = Model::load(&path, LoadOptions { threads: self.threads.unwrap_or(0) })
            .with_context(|| format!("cannot load {}", path.display()))?;
        let tok = Tokenizer::from_metadata(model.metadata()).context("cannot build the tokenizer")?;
        let ctx = self.ctx_size.unwrap_or(model.config.context_length.min(4096));
        if ctx == 0 {
            bail!("--ctx-size must be at least 1");
        }
        Ok((model, tok, ctx))
    }
}

/// Sampling flags shared by run and chat.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy decoding.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Sample from the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample from the smallest set of tokens whose probabilities add up to p.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p × the most likely token.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty for repeating one of the last 64 tokens (1 = off).
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    /// Random seed (the same seed gives the same text).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: 64,
            seed: self.seed,
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  bitnet run -m model.gguf -p \"The capital of France is\" -n 32 --temp 0")]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (default: a demo prompt, which is announced).
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

/// Resident memory of this process, from /proc (Linux), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

pub fn run(args: &RunArgs) -> Result<()> {
    let (model, tok, ctx) = args.model.load()?;
    let text = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            eprintln!("no prompt given: using {DEMO_PROMPT:?} (pass -p TEXT)");
            DEMO_PROMPT.to_owned()
        }
    };
    let prompt = tok.encode(&text, true)?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    if prompt.len() + 1 > ctx {
        bail!("the prompt is {} tokens, more than the context of {ctx} allows (raise --ctx-size)", prompt.len());
    }
    let mut cache = model.new_cache_of(ctx, args.model.kv_type.into());
    let mut sampler = Sampler::new(args.sampling.params());
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")?;
    out.flush()?;

    let t0 = Instant::now();
    let mut logits = model.forward(&prompt, &mut cache, false)?;
    let prompt_time = t0.elapsed();
    let mut history = prompt.clone();
    let mut stream = StreamDecoder::default();
    let t1 = Instant::now();
    let mut generated = 0;
    let budget = args.n_predict.min(ctx - prompt.len());
    while generated < budget {
        let next = sampler.sample(&logits, &history);
        generated += 1;
        history.push(next);
        if !args.ignore_eos && tok.stop_tokens.contains(&next) {
            break;
        }
        write!(out, "{}", stream.push(&tok, next)?)?;
        out.flush()?;
        if generated == budget {
            break;
        }
        logits = model.forward(&[next], &mut cache, false)?;
    }
    let gen_time = t1.elapsed();
    writeln!(out)?;
    let rate = |n: usize, t: std::time::Duration| n as f64 / t.as_secs_f64().max(1e-9);
    eprintln!();
    eprintln!(
        "load:       {:8.2} ms  ({} threads, kernel {})",
        model.load_time.as_secs_f64() * 1e3,
        model.threads(),
        model.kernel_name()
    );
    eprintln!(
        "prompt:     {:8.2} ms / {:4} tokens ({:8.2} tokens/s)",
        prompt_time.as_secs_f64() * 1e3,
        prompt.len(),
        rate(prompt.len(), prompt_time)
    );
    eprintln!(
        "generation: {:8.2} ms / {:4} tokens ({:8.2} tokens/s)",
        gen_time.as_secs_f64() * 1e3,
        generated,
        rate(generated, gen_time)
    );
    if let Some(rss) = resident_bytes() {
        eprintln!(
            "memory:     {:8.1} MiB resident (model file {:.1} MiB, mapped)",
            rss as f64 / 1048576.0,
            model.file_size() as f64 / 1048576.0
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  bitnet logits -m model.gguf -p \"Hello\" --out logits.json\n  \
                        bitnet logits -m model.gguf --tokens 1,2,3 --out logits.json")]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to run (BOS is added when the model asks for it).
    #[arg(short, long, conflicts_with = "tokens", required_unless_present = "tokens")]
    pub prompt: Option<String>,
    /// Exact token ids, comma-separated (no tokenizer, no BOS).
    #[arg(long, value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    /// Where to write {"tokens": [...], "logits": [[...], ...]}.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn logits(args: &LogitsArgs) -> Result<()> {
    let (model, tok, ctx) = args.model.load()?;
    let tokens = match (&args.tokens, &args.prompt) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => tok.encode(p, true)?,
        (None, None) => unreachable!("clap requires one"),
    };
    if tokens.is_empty() {
        bail!("no tokens to run");
    }
    if tokens.len() > ctx {
        bail!("{} tokens do not fit the context of {ctx} (raise --ctx-size)", tokens.len());
    }
    let mut cache = model.new_cache(ctx);
    let logits = model.forward(&tokens, &mut cache, true)?;
    let rows: Vec<&[f32]> = logits.chunks(model.config.vocab_size).collect();
    let doc = serde_json::json!({ "tokens": tokens, "logits": rows });
    std::fs::write(&args.out, serde_json::to_vec(&doc)?).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote logits of {} positions × {} to {}", tokens.len(), model.config.vocab_size, args.out.display());
    Ok(())
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  bitnet perplexity -m model.gguf -f wiki.test.raw --ctx 512")]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text file to score.
    #[arg(short, long, value_name = "TEXT")]
    pub file: PathBuf,
    /// Tokens per evaluated chunk (each chunk starts with BOS).
    #[arg(long = "ctx", default_value_t = 512)]
    pub chunk: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn perplexity(args: &PerplexityArgs) -> Result<()> {
    let (model, tok, _) = args.model.load()?;
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let ids = tok.encode(&text, false)?;
    if args.chunk < 2 {
        bail!("--ctx must be at least 2");
    }
    if ids.len() < 2 {
        bail!("{} has fewer than 2 tokens", args.file.display());
    }
    let json = args.json;
    let r = bitnet_model::perplexity(&model, &tok, &ids, args.chunk, |done, total, ppl| {
        if !json {
            eprint!("\rchunk {done}/{total}: perplexity so far {ppl:.4}");
        }
    })?;
    if json {
        println!(
            "{}",
            serde_json::json!({"perplexity": r.perplexity, "tokens": r.tokens, "chunks": r.chunks, "ctx": args.chunk})
        );
    } else {
        eprintln!();
        println!(
            "perplexity: {:.4} over {} tokens ({} chunks of up to {})",
            r.perplexity, r.tokens, r.chunks, args.chunk
        );
    }
    Ok(())
}
