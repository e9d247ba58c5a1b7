//! `cargo xtask bench-serve`: a load generator for `bitnet serve`. It starts the release server on
//! a dummy model, drives it over HTTP with C concurrent streaming clients (each asking for the
//! same number of tokens, past end-of-sequence), and reports aggregate generation tokens/s, time
//! to first token and inter-token latency (p50/p99) per C, next to `bitnet bench`'s tg of the same
//! file and threads. The table goes into docs/bench.md between markers (`cargo xtask bench`
//! keeps it when it rewrites the rest).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Markers around the section this command owns in docs/bench.md.
pub const BEGIN: &str = "<!-- bench-serve -->";
pub const END: &str = "<!-- /bench-serve -->";

pub struct Options {
    pub size: String,
    /// The dummy's output-head type (its ternary weights are I2_S).
    pub head: String,
    pub threads: usize,
    pub concurrency: Vec<usize>,
    pub tokens: usize,
    pub rounds: usize,
    pub out: PathBuf,
    /// Upstream llama.cpp's `llama-server`: also measured, on the same weights as TQ2_0.
    pub llama_server: Option<PathBuf>,
}

/// What one request saw.
struct Trace {
    ttft: f64,
    gaps: Vec<f64>,
    tokens: usize,
}

/// One streaming completion on its own connection: the time to the first token and the gaps
/// between the following chunks (one per token: the dummy vocabulary is text, one byte or word
/// per token).
fn request(addr: &str, prompt: &str, tokens: usize) -> Result<Trace> {
    let body = json!({"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": true,
                      "ignore_eos": true, "stream_options": {"include_usage": true}})
    .to_string();
    let start = Instant::now();
    let mut c = TcpStream::connect(addr)?;
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(c);
    let mut times = Vec::new();
    let mut generated = 0;
    let mut line = String::new();
    while r.read_line(&mut line)? > 0 {
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            if data == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(data).context("a chunk that is not JSON")?;
            if let Some(u) = v.get("usage") {
                generated = u["completion_tokens"].as_u64().unwrap_or(0) as usize;
            } else if v["choices"][0]["finish_reason"].is_null() {
                times.push(start.elapsed().as_secs_f64());
            }
        } else if line.starts_with("HTTP/1.1 ") && !line.starts_with("HTTP/1.1 200") {
            bail!("the server answered {}", line.trim());
        }
        line.clear();
    }
    let ttft = *times.first().context("no token came")?;
    // A server that sends no usage chunk: one chunk per token.
    let tokens = if generated > 0 { generated } else { times.len() };
    Ok(Trace { ttft, gaps: times.windows(2).map(|w| w[1] - w[0]).collect(), tokens })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// One concurrency level: `c` clients, each sending `rounds` requests back to back.
fn level(addr: &str, c: usize, rounds: usize, tokens: usize) -> Result<Stats> {
    let start = Instant::now();
    let clients: Vec<_> = (0..c)
        .map(|i| {
            let addr = addr.to_owned();
            std::thread::spawn(move || -> Result<Vec<Trace>> {
                (0..rounds)
                    .map(|r| request(&addr, &format!("Client {i} request {r}: once upon a time"), tokens))
                    .collect()
            })
        })
        .collect();
    let mut traces = Vec::new();
    for t in clients {
        traces.extend(t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??);
    }
    let wall = start.elapsed().as_secs_f64();
    let total: usize = traces.iter().map(|t| t.tokens).sum();
    let mut ttft: Vec<f64> = traces.iter().map(|t| t.ttft).collect();
    let mut gaps: Vec<f64> = traces.iter().flat_map(|t| t.gaps.iter().copied()).collect();
    let span: f64 = gaps.iter().sum();
    let decode = if span > 0.0 { gaps.len() as f64 / span } else { 0.0 };
    Ok(Stats {
        aggregate: total as f64 / wall,
        ttft: percentile(&mut ttft, 0.5),
        itl_p50: percentile(&mut gaps, 0.5),
        itl_p99: percentile(&mut gaps, 0.99),
        decode,
    })
}

/// What one concurrency level measured.
struct Stats {
    /// All generated tokens / wall time (prompts included).
    aggregate: f64,
    /// Time to first token, median (s).
    ttft: f64,
    /// Inter-token latency, median and 99th percentile (s).
    itl_p50: f64,
    itl_p99: f64,
    /// One stream's tokens per second between its first and last token (1 / mean ITL): what
    /// `bitnet bench` tg measures, without the prompt.
    decode: f64,
}

/// One concurrency level's result.
type Level = (usize, Stats);

/// Waits for `GET /health` to answer 200 (10 minutes at most).
fn wait_healthy(addr: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        let ok = TcpStream::connect(addr).ok().and_then(|mut c| {
            write!(c, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
            let mut s = String::new();
            c.read_to_string(&mut s).ok()?;
            Some(s.starts_with("HTTP/1.1 200"))
        });
        if ok == Some(true) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the server never became healthy");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every concurrency level against a healthy server, after a warm-up request (page faults of
/// the first touch of the weights).
fn levels(addr: &str, opts: &Options) -> Result<Vec<Level>> {
    wait_healthy(addr)?;
    request(addr, "warm up", 8)?;
    let mut rows = Vec::new();
    for &c in &opts.concurrency {
        eprintln!("C = {c}");
        rows.push((c, level(addr, c, opts.rounds, opts.tokens)?));
    }
    Ok(rows)
}

/// Upstream `llama-server` on the same shape's weights as TQ2_0 (architecture `bitnet`, which it
/// runs) with our dummy's head type (F16 as written, another through its own `llama-quantize`
/// beside `bin`), the same threads, `-np` slots and context per slot, through the same levels.
fn llama_server_levels(bin: &Path, opts: &Options, parallel: usize) -> Result<Vec<Level>> {
    let f16 = crate::root().join(format!("target/dummy/dummy-{}-tq2_0-bitnet.gguf", opts.size));
    if !f16.exists() {
        crate::dummy::write_arch(&opts.size, "tq2_0", "bitnet", &f16)?;
    }
    let model = if opts.head == "f16" {
        f16
    } else {
        let model = crate::root().join(format!("target/dummy/dummy-{}-tq2_0+{}-bitnet.gguf", opts.size, opts.head));
        if !model.exists() {
            let quantize = bin.with_file_name("llama-quantize");
            let status = Command::new(&quantize)
                .args(["--allow-requantize", "--output-tensor-type", &opts.head, "--token-embedding-type", &opts.head])
                .arg(&f16)
                .arg(&model)
                .arg("TQ2_0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .with_context(|| {
                    format!("running {} (built beside llama-server) for its {} head", quantize.display(), opts.head)
                })?;
            if !status.success() {
                bail!("{} failed to write {}", quantize.display(), model.display());
            }
        }
        model
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    eprintln!("llama-server on {}", model.display());
    let mut server = Command::new(bin)
        .arg("-m")
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "-t", &opts.threads.to_string()])
        .args(["-np", &parallel.to_string(), "-c", &(1024 * parallel).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let rows = levels(&format!("127.0.0.1:{port}"), opts);
    let _ = server.kill();
    let _ = server.wait();
    rows
}

/// `bitnet bench`'s tg tokens/s for the file.
fn bench_tg(bitnet: &Path, model: &Path, threads: usize, tokens: usize) -> Result<f64> {
    let out = Command::new(bitnet)
        .args(["bench", "--json", "-m"])
        .arg(model)
        .args(["-p", "32", "-n", &tokens.to_string(), "-t", &threads.to_string(), "-r", "3"])
        .output()?;
    if !out.status.success() {
        bail!("bitnet bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    v.as_array()
        .and_then(|a| a.iter().find(|r| r["test"].as_str().is_some_and(|t| t.starts_with("tg"))))
        .and_then(|r| r["tokens_per_second"].as_f64())
        .context("no tg row in bitnet bench --json")
}

pub fn run(opts: &Options, bitnet: &Path, model: &Path) -> Result<()> {
    let parallel = opts.concurrency.iter().copied().max().unwrap_or(1);
    // This VM's speed drifts by tens of percent within minutes: `bitnet bench` runs right before
    // and right after the server, and C = 1 is compared with both.
    let tg_before = bench_tg(bitnet, model, opts.threads, opts.tokens)?;
    eprintln!("bitnet bench tg{}: {tg_before:.2} tokens/s", opts.tokens);
    let mut server = Command::new(bitnet)
        .args(["serve", "--port", "0", "-c", "1024", "-m"])
        .arg(model)
        .args(["-t", &opts.threads.to_string(), "--parallel", &parallel.to_string()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting bitnet serve")?;
    let mut err = BufReader::new(server.stderr.take().context("stderr")?);
    let mut addr = None;
    let mut line = String::new();
    while err.read_line(&mut line)? > 0 {
        if let Some(a) = line.trim().strip_prefix("listening on http://") {
            addr = a.split_whitespace().next().map(str::to_owned);
            break;
        }
        line.clear();
    }
    let addr = addr.context("bitnet serve did not say where it listens")?;
    // Drain the rest of its log so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    let rows = levels(&addr, opts)?;
    let _ = server.kill();
    let _ = server.wait();
    let tg_after = bench_tg(bitnet, model, opts.threads, opts.tokens)?;
    eprintln!("bitnet bench tg{}: {tg_after:.2} tokens/s", opts.tokens);
    let theirs = match &opts.llama_server {
        Some(bin) => Some(llama_server_levels(bin, opts, parallel)?),
        None => None,
    };
    let single = rows.iter().find(|r| r.0 == 1).map(|r| &r.1);
    let mut md = format!(
        "{BEGIN}\n## Serving: continuous batching (`cargo xtask bench-serve`)\n\n\
         `bitnet serve` on the dummy {} I2_S model with a{} {} output head, {} threads, `--parallel {parallel}`; C clients each send {} \
         streaming completions of {} tokens back to back (past end-of-sequence, greedy). Aggregate: all \
         generated tokens / wall time. TTFT: request to first token. ITL: gap between tokens of one \
         answer. `bitnet bench` tg{} on the same file and threads: **{tg_before:.2} tokens/s** before the server \
         ran, **{tg_after:.2}** after. Measured {} on {}.\n\n\
         | C | aggregate tokens/s | × C = 1 | TTFT p50 (s) | ITL p50 (ms) | ITL p99 (ms) | p99 / p50 |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        opts.size,
        if opts.head == "f16" { "n" } else { "" },
        opts.head.to_uppercase(),
        opts.threads,
        opts.rounds,
        opts.tokens,
        opts.tokens,
        crate::bench::today(),
        crate::bench::cpu_name(),
    );
    for (c, s) in &rows {
        let x = single.map_or("–".into(), |one| format!("{:.2}", s.aggregate / one.aggregate));
        md.push_str(&format!(
            "| {c} | {:.2} | {x} | {:.2} | {:.1} | {:.1} | {:.2} |\n",
            s.aggregate,
            s.ttft,
            s.itl_p50 * 1e3,
            s.itl_p99 * 1e3,
            if s.itl_p50 > 0.0 { s.itl_p99 / s.itl_p50 } else { 0.0 }
        ));
    }
    if let Some(one) = single {
        md.push_str(&format!(
            "\nC = 1 against `bitnet bench`: between its first and last token one stream decodes {:.2} tokens/s \
             (1 / mean ITL), {:.1}% / {:.1}% of `bitnet bench` tg before / after (the aggregate above also \
             counts each answer's prompt). What bounds the aggregate at larger C (the cost of a matmul against \
             its token count): docs/kernels.md, \"Small batches\".\n",
            one.decode,
            100.0 * one.decode / tg_before,
            100.0 * one.decode / tg_after,
        ));
    }
    if let Some(theirs) = &theirs {
        md.push_str(&format!(
            "\nUpstream llama.cpp's `llama-server` (from the llama-cpp-python 0.3.36 sdist, see \"Building the \
             peers\") on the same shape's weights as TQ2_0 (architecture `bitnet`) with the same head type ({}), \
             the same threads, `-np {parallel}` and 1024 tokens of context per slot, the same clients:\n\n\
             | C | llama-server tokens/s | × its C = 1 | TTFT p50 (s) | ITL p50 (ms) | ITL p99 (ms) | ours ÷ llama-server |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
            opts.head.to_uppercase()
        ));
        let their_single = theirs.iter().find(|r| r.0 == 1).map(|r| r.1.aggregate);
        for (c, s) in theirs {
            let agg = s.aggregate;
            let x = their_single.map_or("–".into(), |one| format!("{:.2}", agg / one));
            let ours = rows.iter().find(|r| r.0 == *c).map_or("–".into(), |r| format!("{:.2}", r.1.aggregate / agg));
            md.push_str(&format!(
                "| {c} | {agg:.2} | {x} | {:.2} | {:.1} | {:.1} | {ours} |\n",
                s.ttft,
                s.itl_p50 * 1e3,
                s.itl_p99 * 1e3
            ));
        }
    }
    md.push_str(&format!("{END}\n"));
    print!("{md}");
    let old = std::fs::read_to_string(&opts.out).unwrap_or_default();
    std::fs::write(&opts.out, splice(&old, &md))?;
    eprintln!("wrote the serving section of {}", opts.out.display());
    Ok(())
}

/// `old` with this command's section replaced by `section` (or `section` appended).
pub fn splice(old: &str, section: &str) -> String {
    crate::marked::splice(old, BEGIN, END, section)
}

/// This command's section of `old`, if any (for `cargo xtask bench` to keep).
pub fn section(old: &str) -> Option<&str> {
    crate::marked::section(old, BEGIN, END)
}
