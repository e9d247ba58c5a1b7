//! `cargo xtask bench-kv`: generation at depth (`bitnet bench -d D -n N -p 0`) with each KV cache
//! type on a dummy model (the 2B-4T shape by default), and the demo model's perplexity with each
//! type against the exact f32 cache. The table goes into docs/bench.md between markers (`cargo
//! xtask bench` keeps it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub const BEGIN: &str = "<!-- bench-kv -->";
pub const END: &str = "<!-- /bench-kv -->";

/// The types compared, f16 (the default) first.
const TYPES: [&str; 3] = ["f16", "q8_0", "q4_0"];

pub struct Options {
    pub size: String,
    pub depths: Vec<usize>,
    pub threads: usize,
    pub tokens: usize,
    pub reps: usize,
    pub out: PathBuf,
}

/// `bitnet bench --json` of generation at `depth` with every type of [`TYPES`] (the context is
/// computed once and converted to each): (type, tokens/s, sd).
fn tg(bitnet: &Path, model: &Path, opts: &Options, depth: usize) -> Result<Vec<(String, f64, f64)>> {
    eprintln!("bench-kv: tg{} at depth {depth}", opts.tokens);
    let out = Command::new(bitnet)
        .args(["bench", "--json", "-p", "0", "-m"])
        .arg(model)
        .args(["-n", &opts.tokens.to_string(), "-d", &depth.to_string(), "-t", &opts.threads.to_string()])
        .args(["-r", &opts.reps.to_string(), "--kv-type", &TYPES.join(",")])
        .output()
        .context("running bitnet bench")?;
    if !out.status.success() {
        bail!("bitnet bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing bitnet bench --json")?;
    Ok(v.as_array()
        .context("bench JSON is an array")?
        .iter()
        .map(|r| {
            (
                r["kv_type"].as_str().unwrap_or("").to_owned(),
                r["tokens_per_second"].as_f64().unwrap_or(0.0),
                r["stddev"].as_f64().unwrap_or(0.0),
            )
        })
        .collect())
}

/// The demo model's perplexity on its held-out text with a `kv` cache.
fn perplexity(bitnet: &Path, kv: &str) -> Result<f64> {
    let fixtures = crate::root().join("fixtures/models");
    let out = Command::new(bitnet)
        .args(["perplexity", "--json", "--kv-type", kv, "-m"])
        .arg(fixtures.join("bitnet-demo.gguf"))
        .arg("-f")
        .arg(fixtures.join("bitnet-demo-heldout.txt"))
        .output()
        .context("running bitnet perplexity")?;
    if !out.status.success() {
        bail!("bitnet perplexity failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing bitnet perplexity --json")?;
    v["perplexity"].as_f64().context("no perplexity in the JSON")
}

pub fn run(opts: &Options, bitnet: &Path, model: &Path) -> Result<()> {
    let exact = perplexity(bitnet, "f32")?;
    let mut ppl = Vec::new();
    for kv in TYPES {
        ppl.push(perplexity(bitnet, kv)?);
    }
    let mut rates = Vec::new();
    for &d in &opts.depths {
        for (kv, v, sd) in tg(bitnet, model, opts, d)? {
            rates.push((d, kv, (v, sd)));
        }
    }
    let mut md = format!(
        "{BEGIN}\n## KV cache types: generation at depth (`cargo xtask bench-kv`)\n\n\
         `bitnet bench -m dummy-{size} -p 0 -n {n} -d DEPTH -t {t} --kv-type f16,q8_0,q4_0` (mean ± sd of {r} runs; \
         the context is computed once per depth in an exact f32 cache and converted to each type, each run \
         generates after it). At depth D one generated token reads \
         D × 30 layers × 2 × 640 elements of cache (1.26 GB in f16 at 16384, 0.67 GB in q8_0, 0.35 GB in q4_0). Perplexity: the demo model on its held-out text (`bitnet perplexity \
         --kv-type TYPE`), against {exact:.3} with the exact f32 cache.\n\n",
        size = opts.size,
        n = opts.tokens,
        t = opts.threads,
        r = opts.reps,
    );
    md.push_str("| type | bits per element | demo perplexity | cost |");
    for d in &opts.depths {
        md.push_str(&format!(" tg{} @ d{d} t/s | vs f16 |", opts.tokens));
    }
    md.push_str("\n| --- | ---: | ---: | ---: |");
    for _ in &opts.depths {
        md.push_str(" ---: | ---: |");
    }
    md.push('\n');
    for (i, kv) in TYPES.iter().enumerate() {
        let bits = match *kv {
            "f16" => 16.0,
            "q8_0" => 8.5,
            _ => 4.5,
        };
        md.push_str(&format!("| {kv} | {bits} | {:.3} | {:+.3}% |", ppl[i], 100.0 * (ppl[i] / exact - 1.0)));
        for &d in &opts.depths {
            let of = |k: &str| rates.iter().find(|r| r.0 == d && r.1 == k).map(|r| r.2).context("a type not measured");
            let ((v, sd), (f16, _)) = (of(kv)?, of("f16")?);
            md.push_str(&format!(" {v:.2} ± {sd:.2} | {:.2}× |", v / f16));
        }
        md.push('\n');
    }
    md.push_str(&format!("\n{END}\n"));
    let old = std::fs::read_to_string(&opts.out).unwrap_or_default();
    std::fs::write(&opts.out, crate::marked::splice(&old, BEGIN, END, &md))?;
    eprintln!("wrote the KV cache section of {}", opts.out.display());
    Ok(())
}
