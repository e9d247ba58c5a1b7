//! `bitnet bench`: llama-bench-style throughput of prompt processing (pp) and token
//! generation (tg), with the spread over repetitions.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_model::{KvCache, KvType, LoadOptions, Model, Step};
use serde_json::json;

#[derive(clap::Args, Debug)]
#[command(long_about = "Measure prompt processing and generation speed, like llama-bench.\n\n\
    pp N: one forward pass over N prompt tokens from an empty cache (tokens/s = N / time).\n\
    tg N: N single-token forward passes after an empty cache (tokens/s = N / time).\n\
    Token ids are fixed pseudo-random ones, so runs are comparable across engines and builds.\n\
    With -d D every test starts from D tokens of context instead of an empty cache; with several\n\
    --kv-type values the context is computed once (exact f32 cache) and converted to each type.\n\
    With --parallel P, tg N runs P sequences that decode together (one forward pass per step\n\
    over one new token of each, as `bitnet serve` batches them): tokens/s = P·N / time.\n\
    Each (threads, test) pair runs once to warm up, then --repetitions times; the table shows\n\
    the mean and standard deviation.")]
pub struct Args {
    /// The GGUF model to measure.
    #[arg(short, long, value_name = "FILE")]
    model: PathBuf,
    /// Prompt lengths to measure, comma-separated (0 skips prompt processing).
    #[arg(short = 'p', long = "n-prompt", value_name = "N,...", value_delimiter = ',', default_value = "512")]
    prompt: Vec<usize>,
    /// Generated token counts to measure, comma-separated (0 skips generation).
    #[arg(short = 'n', long = "n-gen", value_name = "N,...", value_delimiter = ',', default_value = "128")]
    gen_tokens: Vec<usize>,
    /// Context already in the cache before each test (like llama-bench's -d): measures
    /// attention at depth, e.g. `-d 512 -n 32` is generation with 512 tokens of context.
    #[arg(short = 'd', long = "n-depth", value_name = "N", default_value_t = 0)]
    depth: usize,
    /// Thread counts to measure, comma-separated (default: one per physical core).
    #[arg(short, long, value_name = "N,...", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Timed repetitions of each test.
    #[arg(short, long, default_value_t = 3)]
    repetitions: usize,
    /// Print JSON (one object per test) instead of the table.
    #[arg(long)]
    json: bool,
    /// KV cache element types, comma-separated: f16 (llama-bench's default), f32, q8_0, q4_0.
    #[arg(long, value_enum, value_name = "TYPE,...", value_delimiter = ',', default_value = "f16")]
    kv_type: Vec<crate::generate::KvArg>,
    /// Also time each part of the forward pass during the timed runs (matmuls by weight group,
    /// with the GB/s of weights each streams; quantization; attention; the rest) and print the
    /// breakdown per token after each test.
    #[arg(long)]
    profile: bool,
    /// Sequences decoding together in the generation tests, comma-separated (1: one sequence).
    /// Each step is one forward pass over one new token of every sequence, as `bitnet serve`
    /// runs its batch; the rate is all sequences' tokens per second.
    #[arg(long, value_name = "P,...", value_delimiter = ',', default_value = "1")]
    parallel: Vec<usize>,
}

/// One measured test.
#[derive(Debug, Clone)]
pub struct Result1 {
    pub threads: usize,
    pub kv: KvType,
    pub test: String,
    pub tokens: usize,
    /// Sequences decoding together (1 but for `--parallel`).
    pub parallel: usize,
    /// Tokens per second of each repetition.
    pub rates: Vec<f64>,
    /// With `--profile`: each part's totals over the timed repetitions.
    pub profile: Vec<bitnet_model::profile::Part>,
}

impl Result1 {
    pub fn mean(&self) -> f64 {
        self.rates.iter().sum::<f64>() / self.rates.len() as f64
    }

    pub fn stddev(&self) -> f64 {
        let m = self.mean();
        let n = self.rates.len();
        if n < 2 {
            return 0.0;
        }
        (self.rates.iter().map(|r| (r - m) * (r - m)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

/// Fixed pseudo-random token ids below `vocab`.
fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}

/// A cache holding `depth` tokens of context, with room for `n` more.
fn cache_at(model: &Model, depth: usize, n: usize, kv: KvType) -> Result<KvCache> {
    let ctx = depth.checked_add(n).ok_or_else(|| anyhow::anyhow!("--n-depth {depth} plus {n} tokens overflows"))?;
    let mut cache = model.new_cache_of(ctx, kv)?;
    if depth > 0 {
        model.forward(&tokens(depth, model.config.vocab_size), &mut cache, false)?;
    }
    Ok(cache)
}

/// Prompt processing of `ids` after the cache's first `depth` positions (the rest is forgotten).
fn time_pp(model: &Model, ids: &[u32], depth: usize, cache: &mut KvCache) -> Result<f64> {
    cache.truncate(depth);
    let start = Instant::now();
    model.forward(ids, cache, false)?;
    Ok(ids.len() as f64 / start.elapsed().as_secs_f64())
}

/// Generation of `ids`, one token at a time, after the caches' first `depth` positions: with
/// several caches, each step runs one token of every sequence in one batched forward pass
/// (sequence `s` reads `ids` rotated by `s`, so the batch's rows differ).
fn time_tg(model: &Model, ids: &[u32], depth: usize, caches: &mut [KvCache]) -> Result<f64> {
    caches.iter_mut().for_each(|c| c.truncate(depth));
    let start = Instant::now();
    if let [cache] = caches {
        for &t in ids {
            model.forward(&[t], cache, false)?;
        }
    } else {
        for i in 0..ids.len() {
            let toks: Vec<u32> = (0..caches.len()).map(|s| ids[(i + s) % ids.len()]).collect();
            let mut steps: Vec<Step<'_>> = caches
                .iter_mut()
                .zip(&toks)
                .map(|(cache, t)| Step { tokens: std::slice::from_ref(t), cache, all_logits: false })
                .collect();
            model.forward_batch(&mut steps)?;
        }
    }
    Ok((ids.len() * caches.len()) as f64 / start.elapsed().as_secs_f64())
}

/// Runs the tests of `args` at each thread count and returns one result per (threads, test,
/// KV type).
pub fn measure(args: &Args, threads: &[usize]) -> Result<(Model, Vec<Result1>)> {
    let (path, prompt, gen_tokens, depth, reps, profile) =
        (&args.model, &args.prompt, &args.gen_tokens, args.depth, args.repetitions, args.profile);
    let kvs: Vec<KvType> = args.kv_type.iter().map(|&k| k.into()).collect();
    if reps == 0 {
        bail!("--repetitions must be at least 1");
    }
    if args.parallel.contains(&0) {
        bail!("--parallel must be at least 1");
    }
    let threads: Vec<usize> = threads.iter().map(|&t| crate::generate::check_threads(t)).collect::<Result<_>>()?;
    let mut results = Vec::new();
    let mut last = None;
    for &t in &threads {
        // The previous thread count's model goes first: two mappings of a 17 GB file would
        // count twice in the resident set reported after the run.
        drop(last.take());
        let model = Model::load(path, LoadOptions { threads: t, ..Default::default() })
            .with_context(|| format!("cannot load {}", path.display()))?;
        let ctx = model.config.context_length.max(1);
        let tests = prompt.iter().filter(|&&n| n > 0).map(|&n| (format!("pp{n}"), n, 1)).chain(
            gen_tokens.iter().filter(|&&n| n > 0).flat_map(|&n| {
                args.parallel.iter().map(move |&p| (if p > 1 { format!("tg{n} x{p}") } else { format!("tg{n}") }, n, p))
            }),
        );
        for (name, n, parallel) in tests {
            let pp = name.starts_with("pp");
            let name = if depth > 0 { format!("{name} @ d{depth}") } else { name };
            let total =
                n.checked_add(depth).with_context(|| format!("{name}: --n-depth {depth} plus {n} tokens overflows"))?;
            // As llama-bench: the speed at any depth can be measured; past the training context
            // the model's outputs would not mean much, which a benchmark does not read.
            if total > ctx {
                eprintln!("note: {name}: {total} tokens run past the model's training context of {ctx}");
            }
            let ids = tokens(n, model.config.vocab_size);
            // The context is computed once per test (in the one type asked for, or exactly and
            // then converted to each); each run forgets what came after it.
            let exact = if kvs.len() > 1 { Some(cache_at(&model, depth, n, KvType::F32)?) } else { None };
            for &kv in &kvs {
                let mut caches = (0..parallel)
                    .map(|_| match &exact {
                        Some(c) => Ok(c.to_type(kv)?),
                        None => cache_at(&model, depth, n, kv),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut run = |ids: &[u32]| {
                    if pp {
                        time_pp(&model, ids, depth, &mut caches[0])
                    } else {
                        time_tg(&model, ids, depth, &mut caches)
                    }
                };
                run(&ids[..n.min(if pp { n } else { 8 })])?; // warm-up: maps the weights in
                model.set_profiling(profile);
                let rates = (0..reps).map(|_| run(&ids)).collect::<Result<Vec<_>>>();
                model.set_profiling(false);
                let (rates, profile) = (rates?, model.take_profile());
                let mean = rates.iter().sum::<f64>() / reps as f64;
                eprintln!("  {name} at {t} threads, {kv} cache: {mean:.2} tokens/s");
                results.push(Result1 {
                    threads: t,
                    kv,
                    test: name.clone(),
                    tokens: n * parallel,
                    parallel,
                    rates,
                    profile,
                });
            }
        }
        last = Some(model);
    }
    Ok((last.context("no thread count to measure")?, results))
}

pub fn run(args: &Args) -> Result<()> {
    if !args.model.exists() {
        bail!("model file {} does not exist", args.model.display());
    }
    let threads = if args.threads.is_empty() { vec![bitnet_model::physical_cores()] } else { args.threads.clone() };
    let (model, results) = measure(args, &threads)?;
    let name = args.model.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let size_gib = model.file_size() as f64 / (1u64 << 30) as f64;
    let peak_rss = peak_rss_bytes();
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|r| {
                let mut v = json!({
                    "model": name, "size_bytes": model.file_size(), "kernel": model.kernel_name(),
                    "threads": r.threads, "kv_type": r.kv.to_string(), "test": r.test, "tokens": r.tokens, "parallel": r.parallel,
                    "tokens_per_second": r.mean(), "stddev": r.stddev(), "samples": r.rates,
                    "load_seconds": model.load_time.as_secs_f64(), "peak_rss_bytes": peak_rss,
                    "pages": model.pages.to_string(), "repacked": model.repacked.to_string(),
                });
                if args.profile {
                    let per = (r.tokens * r.rates.len()).max(1) as f64;
                    v["profile"] = r
                        .profile
                        .iter()
                        .map(|p| {
                            json!({"part": p.name, "seconds_per_token": p.time.as_secs_f64() / per,
                                "weight_bytes_per_token": p.bytes as f64 / per, "calls": p.calls})
                        })
                        .collect();
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("| model | size | kernel | threads | kv | test | t/s |");
    println!("| --- | ---: | --- | ---: | --- | ---: | ---: |");
    for r in &results {
        println!(
            "| {name} | {size_gib:.2} GiB | {} | {} | {} | {} | {:.2} ± {:.2} |",
            model.kernel_name(),
            r.threads,
            r.kv,
            r.test,
            r.mean(),
            r.stddev()
        );
    }
    println!(
        "\nloaded in {:.2} s ({}{}); peak resident memory {}",
        model.load_time.as_secs_f64(),
        model.pages,
        repacked(&model),
        peak_rss.map_or("unknown".into(), |b| format!(
            "{:.2} GiB (the mapped weights count once touched)",
            b as f64 / (1u64 << 30) as f64
        ))
    );
    for r in results.iter().filter(|_| args.profile) {
        println!("\n{} at {} threads, {} cache: time per token by part\n", r.test, r.threads, r.kv);
        print!("{}", profile_table(&r.profile, (r.tokens * r.rates.len()).max(1)));
    }
    Ok(())
}

/// This process's peak resident set (VmHWM, Linux), mapped file pages included.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// A profile as a Markdown table per token: each part's time, share of the forward pass, and
/// for matmuls the weight MB read and the GB/s they streamed; the pass's unprofiled rest last.
pub fn profile_table(parts: &[bitnet_model::profile::Part], tokens: usize) -> String {
    use std::fmt::Write as _;
    let total = parts.iter().find(|p| p.name == bitnet_model::profile::TOTAL).map_or(0.0, |p| p.time.as_secs_f64());
    let per = tokens as f64;
    let mut s =
        String::from("| part | ms/token | share | weight MB/token | GB/s |\n| --- | ---: | ---: | ---: | ---: |\n");
    let mut rest = total;
    let row = |s: &mut String, name: &str, secs: f64, bytes: u64| {
        let (ms, mb) = (1e3 * secs / per, bytes as f64 / per / 1e6);
        let gbs = if bytes > 0 { format!("{:.1}", bytes as f64 / secs / 1e9) } else { "–".into() };
        let mb = if bytes > 0 { format!("{mb:.1}") } else { "–".into() };
        let _ =
            writeln!(s, "| {name} | {ms:.3} | {:.1}% | {mb} | {gbs} |", 100.0 * secs / total.max(f64::MIN_POSITIVE));
    };
    for p in parts.iter().filter(|p| p.name != bitnet_model::profile::TOTAL) {
        rest -= p.time.as_secs_f64();
        row(&mut s, p.name, p.time.as_secs_f64(), p.bytes);
    }
    row(&mut s, "rest (norms, RoPE, residuals, activations, hand-offs)", rest.max(0.0), 0);
    let bytes: u64 = parts.iter().filter(|p| p.name != bitnet_model::profile::TOTAL).map(|p| p.bytes).sum();
    row(&mut s, "forward pass", total, bytes);
    s
}

/// "; 210 TQ1_0 matrices run as TL2, repacked in 0.85 s" when the load repacked any, else "".
pub(crate) fn repacked(model: &bitnet_model::Model) -> String {
    if model.repacked.counts.is_empty() { String::new() } else { format!("; {}", model.repacked) }
}
