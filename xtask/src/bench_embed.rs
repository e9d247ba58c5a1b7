//! `cargo xtask bench-embed`: prompt processing of the ternary embedding models' shapes
//! (`dummy --size emb-0.6B|emb-270M`, random weights) at 128…4096 tokens, next to the I2_S
//! prefill rates bitnet.cpp's guide reports for the real models (docs/bitnet-embeddings-i2s-guide.md
//! in microsoft/BitNet: 8 threads of a Xeon Platinum 8573C). The table goes into docs/bench.md
//! between markers (`cargo xtask bench` keeps it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub const BEGIN: &str = "<!-- bench-embed -->";
pub const END: &str = "<!-- /bench-embed -->";

/// Prompt lengths measured (bitnet.cpp's guide's).
const PROMPTS: [usize; 6] = [128, 256, 512, 1024, 2048, 4096];

/// bitnet.cpp's I2_S prefill tokens/s on 8 threads, per prompt length of [`PROMPTS`].
const BITNET_CPP: [(&str, [f64; 6]); 2] = [
    ("emb-0.6B", [870.90, 827.75, 716.27, 620.58, 481.14, 336.32]),
    ("emb-270M", [2019.59, 2119.50, 2181.23, 2086.46, 1471.60, 1033.46]),
];

pub struct Options {
    pub threads: Vec<usize>,
    pub reps: usize,
    pub out: PathBuf,
}

/// `bitnet bench --json` on `model`: tokens/s by (threads, prompt length).
fn measure(bitnet: &Path, model: &Path, opts: &Options) -> Result<Vec<(usize, usize, f64, f64)>> {
    let list = |v: &[usize]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    eprintln!("bench {}", model.display());
    let out = Command::new(bitnet)
        .args(["bench", "--json", "-n", "0", "-m"])
        .arg(model)
        .args(["-p", &list(&PROMPTS), "-t", &list(&opts.threads), "-r", &opts.reps.to_string()])
        .output()
        .context("running bitnet bench")?;
    if !out.status.success() {
        bail!("bitnet bench failed on {}: {}", model.display(), String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing bitnet bench --json")?;
    Ok(v.as_array()
        .context("bench JSON is an array")?
        .iter()
        .map(|r| {
            (
                r["threads"].as_u64().unwrap_or(0) as usize,
                r["tokens"].as_u64().unwrap_or(0) as usize,
                r["tokens_per_second"].as_f64().unwrap_or(0.0),
                r["stddev"].as_f64().unwrap_or(0.0),
            )
        })
        .collect())
}

pub fn run(opts: &Options, bitnet: &Path, models: &[(&str, PathBuf)]) -> Result<()> {
    let mut md = format!(
        "{BEGIN}\n## Embedding models: prompt processing (`cargo xtask bench-embed`)\n\n\
         Random-weight files of bitnet.cpp's ternary embedding models' shapes (`cargo xtask dummy --size \
         emb-0.6B|emb-270M`: Qwen3 and Gemma 3 graphs with per-projection input norms, I2_S), `bitnet bench -p N -n 0`, \
         tokens/s (mean ± sd of {} runs). bitnet.cpp's column is its guide's I2_S figure for the real model on 8 threads \
         of a Xeon Platinum 8573C; the issue's target is twice its per-thread rate on each of 2 threads here (4× per thread; stated at 128 tokens, computed for every length).\n\n",
        opts.reps
    );
    let mut header = "| model | tokens |".to_owned();
    let mut rule = "| --- | ---: |".to_owned();
    for t in &opts.threads {
        header.push_str(&format!(" ours, {t} thread{} |", if *t == 1 { "" } else { "s" }));
        rule.push_str(" ---: |");
    }
    md.push_str(&format!("{header} bitnet.cpp, 8 threads | its per thread | target at 2 threads | met |\n"));
    md.push_str(&format!("{rule} ---: | ---: | ---: | --- |\n"));
    for (size, path) in models {
        let rows = measure(bitnet, path, opts)?;
        let theirs = BITNET_CPP.iter().find(|b| b.0 == *size).map(|b| b.1);
        for (i, &n) in PROMPTS.iter().enumerate() {
            let mut line = format!("| {size} | {n} |");
            for &t in &opts.threads {
                match rows.iter().find(|r| r.0 == t && r.1 == n) {
                    Some(r) => line.push_str(&format!(" {:.0} ± {:.0} |", r.2, r.3)),
                    None => line.push_str(" – |"),
                }
            }
            let two = rows.iter().find(|r| r.0 == 2 && r.1 == n).map(|r| r.2);
            match theirs {
                Some(b) => {
                    // Twice bitnet.cpp's per-thread rate, on each of 2 threads.
                    let target = 2.0 * 2.0 * b[i] / 8.0;
                    let met = two.map_or("–", |v| if v >= target { "yes" } else { "no" });
                    line.push_str(&format!(" {:.0} | {:.0} | {target:.0} | {met} |", b[i], b[i] / 8.0));
                }
                None => line.push_str(" – | – | – | – |"),
            }
            md.push_str(&line);
            md.push('\n');
        }
    }
    md.push_str(&format!("\n{END}\n"));
    let old = std::fs::read_to_string(&opts.out).unwrap_or_default();
    std::fs::write(&opts.out, crate::marked::splice(&old, BEGIN, END, &md))?;
    eprintln!("wrote the embedding section of {}", opts.out.display());
    Ok(())
}
