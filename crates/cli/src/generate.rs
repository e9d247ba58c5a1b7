//! `bitnet run`, `bitnet logits`, `bitnet perplexity`: the model commands.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_model::sampling::limits;
use bitnet_model::{GenerateOptions, LoadOptions, Model, SamplingParams, Sequence, Tokenizer};

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
    /// KV cache element type: q8_0 (8.5 bits per element, no measurable accuracy cost, long
    /// contexts generate faster), f16 (as llama.cpp), f32 (exact) or q4_0 (4.5 bits, ~1%
    /// perplexity). Default: q8_0 for run, chat and serve (f16 where the heads are not a
    /// multiple of 32 wide); f32 for logits and perplexity.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub kv_type: Option<KvArg>,
}

/// `--kv-type` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum KvArg {
    F16,
    F32,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<KvArg> for bitnet_model::KvType {
    fn from(k: KvArg) -> Self {
        match k {
            KvArg::F16 => bitnet_model::KvType::F16,
            KvArg::F32 => bitnet_model::KvType::F32,
            KvArg::Q8_0 => bitnet_model::KvType::Q8_0,
            KvArg::Q4_0 => bitnet_model::KvType::Q4_0,
        }
    }
}

impl ModelArgs {
    /// The KV cache type asked for, else `default`.
    pub fn kv(&self, default: bitnet_model::KvType) -> bitnet_model::KvType {
        self.kv_type.map_or(default, Into::into)
    }

    /// The KV cache type asked for, else the model's preferred one for generation.
    pub fn kv_for(&self, model: &bitnet_model::Model) -> bitnet_model::KvType {
        self.kv(model.preferred_kv_type())
    }

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
        let threads = self.threads.map(check_threads).transpose()?.unwrap_or(0);
        let path = self.path()?;
        if !path.exists() {
            bail!("model file {} does not exist", path.display());
        }
        let model = Model::load(&path, LoadOptions { threads, ..Default::default() })
            .with_context(|| format!("cannot load {}", path.display()))?;
        let tok = Tokenizer::from_metadata(model.metadata()).context("cannot build the tokenizer")?;
        let ctx = self.ctx_size.unwrap_or(model.config.context_length.min(4096));
        if ctx == 0 {
            bail!("--ctx-size must be at least 1");
        }
        if ctx > model.config.context_length {
            eprintln!(
                "warning: --ctx-size {ctx} is above the {} tokens the model was trained with; \
                 text past that point degrades",
                model.config.context_length
            );
        }
        Ok((model, tok, ctx))
    }
}

/// `--threads N` as the model will use it: at least 1; above the CPUs this process may use, a
/// warning and the CPU count (the pool's workers spin, so extra threads only slow each other).
pub fn check_threads(threads: usize) -> Result<usize> {
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > cpus {
        eprintln!(
            "warning: --threads {threads} is more than the {cpus} CPUs this process may use; using {cpus} \
             (extra threads would only slow each other down)"
        );
        return Ok(cpus);
    }
    Ok(threads)
}

/// Sampling flags shared by run and chat.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy decoding.
    #[arg(long = "temp", default_value_t = 0.8, value_parser = temperature, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample from the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample from the smallest set of tokens whose probabilities add up to p.
    #[arg(long, default_value_t = 0.95, value_parser = top_p)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p × the most likely token.
    #[arg(long, default_value_t = 0.05, value_parser = min_p)]
    pub min_p: f32,
    /// Penalty for repeating one of the last 64 tokens (1 = off).
    #[arg(long, default_value_t = 1.1, value_parser = repeat_penalty)]
    pub repeat_penalty: f32,
    /// Random seed (the same seed gives the same text).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// A flag's number checked against the model crate's range for it (clap names the flag and the
/// value in its message).
fn number(s: &str, limit: limits::Limit) -> std::result::Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    limit(v).map_err(|want| format!("must be {want}"))
}

fn temperature(s: &str) -> std::result::Result<f32, String> {
    number(s, limits::temperature)
}

fn top_p(s: &str) -> std::result::Result<f32, String> {
    number(s, limits::top_p)
}

fn min_p(s: &str) -> std::result::Result<f32, String> {
    number(s, limits::min_p)
}

fn repeat_penalty(s: &str) -> std::result::Result<f32, String> {
    number(s, limits::repeat_penalty)
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
    let mut seq = Sequence::new(&model, ctx, args.model.kv_for(&model))?;
    let opts = GenerateOptions {
        max_tokens: args.n_predict,
        sampling: args.sampling.params(),
        ignore_eos: args.ignore_eos,
        ..GenerateOptions::default()
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")?;
    out.flush()?;

    let t0 = Instant::now();
    let mut generation = seq.generate(&model, &tok, &prompt, &opts)?;
    let prompt_time = t0.elapsed();
    let t1 = Instant::now();
    for piece in generation.by_ref() {
        write!(out, "{}", piece?.text)?;
        out.flush()?;
    }
    let generated = generation.generated();
    let gen_time = t1.elapsed();
    writeln!(out)?;
    let rate = |n: usize, t: std::time::Duration| n as f64 / t.as_secs_f64().max(1e-9);
    eprintln!();
    eprintln!(
        "load:       {:8.2} ms  ({} threads, kernel {}, {}{})",
        model.load_time.as_secs_f64() * 1e3,
        model.threads(),
        model.kernel_name(),
        model.pages,
        crate::bench::repacked(&model)
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
    let mut cache = model.new_cache_of(ctx, args.model.kv(bitnet_model::KvType::F32))?;
    let logits = model.forward(&tokens, &mut cache, true)?;
    let rows: Vec<&[f32]> = logits.chunks(model.config.vocab_size).collect();
    let doc = serde_json::json!({ "tokens": tokens, "logits": rows });
    std::fs::write(&args.out, serde_json::to_vec(&doc)?).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote logits of {} positions × {} to {}", tokens.len(), model.config.vocab_size, args.out.display());
    Ok(())
}

/// Largest text `perplexity` reads (wiki.test.raw is 1.3 MB).
pub const MAX_TEXT: u64 = 256 << 20;

/// A UTF-8 text file of at most [`MAX_TEXT`] bytes (also a device or pipe, read up to that).
fn read_text(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("{} is a directory, not a text file", path.display());
    }
    let mut bytes = Vec::new();
    file.take(MAX_TEXT + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_TEXT {
        bail!("{} is larger than {} MiB, the most perplexity reads", path.display(), MAX_TEXT >> 20);
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
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
    let text = read_text(&args.file)?;
    let ids = tok.encode(&text, false)?;
    if args.chunk < 2 {
        bail!("--ctx must be at least 2");
    }
    if ids.len() < 2 {
        bail!("{} has fewer than 2 tokens", args.file.display());
    }
    let json = args.json;
    let kv = args.model.kv(bitnet_model::KvType::F32);
    let r = bitnet_model::perplexity(&model, &tok, &ids, args.chunk, kv, |done, total, ppl| {
        if !json {
            eprint!("\rchunk {done}/{total}: perplexity so far {ppl:.4}");
        }
    })?;
    if json {
        println!(
            "{}",
            serde_json::json!({"perplexity": r.perplexity, "tokens": r.tokens, "chunks": r.chunks, "ctx": args.chunk,
                "kv_type": kv.to_string()})
        );
    } else {
        eprintln!();
        println!(
            "perplexity: {:.4} over {} tokens ({} chunks of up to {}, {kv} KV cache)",
            r.perplexity, r.tokens, r.chunks, args.chunk
        );
    }
    Ok(())
}
