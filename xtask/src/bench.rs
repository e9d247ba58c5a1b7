//! `cargo xtask bench`: this machine's memory bandwidth, then `bitnet bench` on dummy models of
//! bitnet.cpp's benchmark shapes, written up as docs/bench.md with a PNG plot.
//!
//! Token generation streams every weight once per token, so its ceiling is the read bandwidth;
//! the report puts each result against that roofline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bitnet_format::GgufFile;
use serde_json::Value;

/// What to measure.
pub struct Options {
    /// 125M only, short tests, one repetition (the CI smoke run).
    pub quick: bool,
    pub threads: Vec<usize>,
    pub reps: usize,
    /// Report and plot destination (docs/bench.md and docs/bench.png).
    pub out_dir: PathBuf,
    /// Reuse `bitnet bench` results saved by an earlier run (target/bench/) instead of measuring
    /// again (to rewrite the report).
    pub reuse: bool,
}

/// Read and triad bandwidth at a thread count, GB/s.
#[derive(Debug, Clone, Copy)]
pub struct Bandwidth {
    pub threads: usize,
    pub read: f64,
    pub triad: f64,
}

/// Sums `buf` in `threads` parts; the best of `reps` passes of two loops, in GB/s: eight scalar
/// sums, and `bitnet_kernels::stream_sum` (the widest loads the CPU has). The scalar loop alone
/// under-read this machine kind by 10–25%, which had put generation at 101–121% of the
/// "roofline"; the best of both is the read limit any kernel can reach. (The GEMVs' prefetch
/// hints added to the wide loop read no more: 1 thread 22–23 against 28–30 GB/s without, 2
/// threads 33 against 34; 2026-12-05, Zen 4.)
fn read_bandwidth(buf: &[u64], threads: usize, reps: usize) -> f64 {
    let scalar = |part: &[u64]| {
        // Eight independent sums keep loads in flight.
        let mut acc = [0u64; 8];
        for c in part.chunks_exact(8) {
            for i in 0..8 {
                acc[i] = acc[i].wrapping_add(c[i]);
            }
        }
        acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
    };
    let mut best = f64::MAX;
    for rep in 0..2 * reps {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let parts: Vec<_> = buf
                .chunks(buf.len().div_ceil(threads))
                .map(|part| s.spawn(move || if rep % 2 == 0 { bitnet_kernels::stream_sum(part) } else { scalar(part) }))
                .collect();
            parts.into_iter().map(|h| h.join().expect("bandwidth thread")).fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (buf.len() * 8) as f64 / best / 1e9
}

/// STREAM's triad `a = b + s·c` in `threads` parts, counting 3 arrays of traffic; GB/s.
fn triad_bandwidth(a: &mut [f32], b: &[f32], c: &[f32], threads: usize, reps: usize) -> f64 {
    let mut best = f64::MAX;
    let chunk = a.len().div_ceil(threads);
    for _ in 0..reps {
        let start = Instant::now();
        std::thread::scope(|s| {
            for ((a, b), c) in a.chunks_mut(chunk).zip(b.chunks(chunk)).zip(c.chunks(chunk)) {
                s.spawn(move || {
                    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                        *a = b + 3.0 * c;
                    }
                });
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    (a.len() * 4 * 3) as f64 / best / 1e9
}

/// Measures read and triad bandwidth over buffers far larger than the caches.
pub fn bandwidth(threads: &[usize], quick: bool) -> Vec<Bandwidth> {
    let bytes: usize = if quick { 128 << 20 } else { 1 << 30 };
    // In 2 MiB pages where the system allows, as the model maps its weights
    // (bitnet_format::pages): over 4 KiB pages the probe read 26.4 GB/s at one thread while a
    // 2B-4T token from a file in 2 MiB pages read 28.5 (2026-12-06, Zen 4).
    let mut map = memmap2::MmapMut::map_anon(bytes).expect("anonymous memory for the bandwidth test");
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    let buf: &mut [u64] = bytemuck::cast_slice_mut(&mut map[..]);
    buf.iter_mut().enumerate().for_each(|(i, v)| *v = i as u64);
    let buf = &*buf;
    let n = bytes / 4 / 3;
    let (mut a, b, c) = (vec![0f32; n], vec![1f32; n], vec![2f32; n]);
    let reps = if quick { 2 } else { 5 };
    threads
        .iter()
        .map(|&t| Bandwidth {
            threads: t,
            read: read_bandwidth(buf, t, reps),
            triad: triad_bandwidth(&mut a, &b, &c, t, reps),
        })
        .collect()
}

/// This machine's bandwidth: measured and saved under target/bench/, or with `--reuse` the
/// saved figures (so a rewritten report keeps the roofline of the run that measured its rows).
fn saved_bandwidth(opts: &Options) -> Result<Vec<Bandwidth>> {
    let saved = bandwidth_file(opts);
    if opts.reuse && saved.exists() {
        eprintln!("reusing {}", saved.display());
        let v: Value = serde_json::from_slice(&std::fs::read(&saved)?).context("parsing saved bandwidth")?;
        return v
            .as_array()
            .context("saved bandwidth is an array")?
            .iter()
            .map(|b| {
                Ok(Bandwidth {
                    threads: b["threads"].as_u64().context("threads")? as usize,
                    read: b["read"].as_f64().context("read")?,
                    triad: b["triad"].as_f64().context("triad")?,
                })
            })
            .collect();
    }
    eprintln!("measuring memory bandwidth...");
    let bw = bandwidth(&opts.threads, opts.quick);
    save_bandwidth(&saved, &bw)?;
    Ok(bw)
}

fn bandwidth_file(opts: &Options) -> std::path::PathBuf {
    let threads = opts.threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join("_");
    root().join(format!("target/bench/bandwidth-t{threads}{}.json", if opts.quick { "-quick" } else { "" }))
}

fn save_bandwidth(path: &std::path::Path, bw: &[Bandwidth]) -> Result<()> {
    let json: Vec<Value> =
        bw.iter().map(|b| serde_json::json!({"threads": b.threads, "read": b.read, "triad": b.triad})).collect();
    std::fs::create_dir_all(path.parent().expect("target/bench"))?;
    std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    Ok(())
}

/// The higher of two readings of each figure, thread count by thread count: the roofline of a
/// run measured before and after (this VM's bandwidth drifts).
pub fn higher(before: &[Bandwidth], after: &[Bandwidth]) -> Vec<Bandwidth> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| Bandwidth { threads: b.threads, read: b.read.max(a.read), triad: b.triad.max(a.triad) })
        .collect()
}

/// Measures the bandwidth again after the runs and keeps the higher of each figure (saved for
/// `--reuse`): this VM's read bandwidth drifts by 20% and more over minutes, and a single
/// measurement at a slow moment had put 2-thread generation at 110–113% of its "roofline".
fn bandwidth_after(opts: &Options, before: &[Bandwidth]) -> Result<Vec<Bandwidth>> {
    eprintln!("measuring memory bandwidth again...");
    let after = bandwidth(&opts.threads, opts.quick);
    let best = higher(before, &after);
    for (b, a) in before.iter().zip(&after) {
        eprintln!("  {} threads: read {:.1} GB/s before, {:.1} after", b.threads, b.read, a.read);
    }
    save_bandwidth(&bandwidth_file(opts), &best)?;
    Ok(best)
}

/// One benchmark model: its shape name, weight type, file and bytes streamed per token.
struct ModelCase {
    size: &'static str,
    outtype: String,
    path: PathBuf,
    params: f64,
    bytes_per_token: f64,
}

/// Weights read per generated token: every tensor, except that a separate embedding table is
/// only looked up (one row) when an output head exists (TL1/TL2 run in place, so their bytes
/// count as the file has them).
pub fn weight_bytes(path: &Path) -> Result<(f64, f64)> {
    let f = GgufFile::open(path).with_context(|| format!("reading {}", path.display()))?;
    let tied = f.tensor_info("output.weight").is_none();
    let mut bytes = 0u64;
    let mut params = 0u64;
    for t in f.tensors() {
        params += t.numel();
        if t.name != "token_embd.weight" || tied {
            bytes += t.size;
        }
    }
    Ok((params as f64, bytes as f64))
}

fn root() -> PathBuf {
    crate::root()
}

/// Builds the release `bitnet` binary and returns its path.
pub fn build_cli() -> Result<PathBuf> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "bitnet-cli"])
        .current_dir(root())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building bitnet-cli failed");
    }
    // Where cargo put it: CARGO_TARGET_DIR (relative to the workspace) or target/.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |d| root().join(d));
    Ok(target.join("release/bitnet"))
}

/// The CPU's model name from /proc/cpuinfo.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// One `bitnet bench` row.
struct Row {
    size: &'static str,
    outtype: String,
    threads: usize,
    test: String,
    tps: f64,
    sd: f64,
    bytes_per_token: f64,
    params: f64,
}

pub fn run(opts: &Options) -> Result<()> {
    let cases: Vec<(&'static str, String)> = if opts.quick {
        vec![("125M", "i2_s".into())]
    } else {
        let mut v = Vec::new();
        for size in ["125M", "350M", "1B", "2B-4T", "3.8B", "7B"] {
            v.push((size, "i2_s".into()));
            v.push((size, "tq2_0".into()));
        }
        for size in ["125M", "350M", "1B"] {
            v.push((size, "f16".into()));
        }
        // The ~1.6-bit types at the 7B shape too (TL2 re-encoded from the I2_S dummy).
        v.push(("7B", "tl2".into()));
        v.push(("7B", "tq1_0".into()));
        // The other ternary types and the output-head trade (`bitnet convert --outtype /
        // --embedding-type`) at the 2B-4T shape.
        for (weights, head) in TRADES.iter().skip(1) {
            let case = ("2B-4T", trade_name(weights, head));
            if !v.contains(&case) {
                v.push(case);
            }
        }
        v
    };
    let (pp, tg) = if opts.quick { (32, 8) } else { (512, 128) };
    let mut bw = saved_bandwidth(opts)?;
    for b in &bw {
        eprintln!("  {} threads: read {:.1} GB/s, triad {:.1} GB/s", b.threads, b.read, b.triad);
    }
    let bitnet = build_cli()?;
    let mut models = Vec::new();
    for (size, outtype) in cases {
        let path = dummy_file(size, &outtype)?;
        let (params, bytes_per_token) = weight_bytes(&path)?;
        models.push(ModelCase { size, outtype, path, params, bytes_per_token });
    }
    let threads = opts.threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let mut rows = Vec::new();
    let mut measured = false;
    for m in &models {
        let saved = root().join(format!(
            "target/bench/{}-{}-p{pp}-n{tg}-t{}.json",
            m.size,
            m.outtype,
            threads.replace(',', "_")
        ));
        let json = if opts.reuse && saved.exists() {
            eprintln!("reusing {}", saved.display());
            std::fs::read(&saved)?
        } else {
            eprintln!("bench {} {}", m.size, m.outtype);
            measured = true;
            let out = Command::new(&bitnet)
                .args(["bench", "--json", "-m"])
                .arg(&m.path)
                .args(["-p", &pp.to_string(), "-n", &tg.to_string(), "-t", &threads, "-r", &opts.reps.to_string()])
                .output()
                .context("running bitnet bench")?;
            if !out.status.success() {
                bail!("bitnet bench failed on {}: {}", m.path.display(), String::from_utf8_lossy(&out.stderr));
            }
            std::fs::create_dir_all(saved.parent().expect("target/bench"))?;
            std::fs::write(&saved, &out.stdout)?;
            out.stdout
        };
        let results: Value = serde_json::from_slice(&json).context("parsing bitnet bench --json")?;
        for r in results.as_array().context("bench JSON is an array")? {
            rows.push(Row {
                size: m.size,
                outtype: m.outtype.clone(),
                threads: r["threads"].as_u64().unwrap_or(0) as usize,
                test: r["test"].as_str().unwrap_or("?").to_owned(),
                tps: r["tokens_per_second"].as_f64().unwrap_or(0.0),
                sd: r["stddev"].as_f64().unwrap_or(0.0),
                bytes_per_token: m.bytes_per_token,
                params: m.params,
            });
        }
    }
    if measured {
        bw = bandwidth_after(opts, &bw)?;
    }
    let heads = if opts.quick { Vec::new() } else { head_trade(&bitnet)? };
    std::fs::create_dir_all(&opts.out_dir)?;
    let mut md = report(&rows, &bw, opts, pp, tg);
    md.push_str(&against_bitnet_cpp(&rows, pp, tg));
    md.push_str(&head_section(&rows, &heads));
    // The peers, serving, embedding, KV and large-shape sections belong to `bench --peer` /
    // `bench-serve` / `bench-embed` / `bench-kv` / `bench --large`: kept.
    let old = std::fs::read_to_string(opts.out_dir.join("bench.md")).unwrap_or_default();
    let kept = [
        crate::marked::section(&old, crate::bench_peers::BEGIN, crate::bench_peers::END),
        crate::bench_serve::section(&old),
        crate::marked::section(&old, crate::bench_embed::BEGIN, crate::bench_embed::END),
        crate::marked::section(&old, crate::bench_kv::BEGIN, crate::bench_kv::END),
        crate::marked::section(&old, crate::bench_large::BEGIN, crate::bench_large::END),
    ];
    for section in kept.into_iter().flatten() {
        md.push('\n');
        md.push_str(section);
        md.push('\n');
    }
    std::fs::write(opts.out_dir.join("bench.md"), md)?;
    crate::plot::tg_by_size(&rows_for_plot(&rows), &opts.out_dir.join("bench.png"))?;
    eprintln!("wrote {} and bench.png", opts.out_dir.join("bench.md").display());
    Ok(())
}

/// bitnet.cpp 1.0 (I2_S, AVX2) on this machine kind, as the project's x86 issue quotes them:
/// (shape, threads, pp128 tokens/s, tg tokens/s).
const BITNET_CPP: &[(&str, usize, f64, f64)] =
    &[("125M", 1, 350.0, 137.0), ("125M", 2, 680.0, 205.0), ("2B-4T", 1, 30.0, 13.6), ("2B-4T", 2, 46.0, 19.9)];

fn against_bitnet_cpp(rows: &[Row], pp: usize, tg: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Against bitnet.cpp
"
    );
    let _ = writeln!(
        s,
        "bitnet.cpp 1.0 (I2_S, AVX2) figures for this machine kind as the project's x86 issue \
         quotes them (pp128, tg), against ours on the same shapes (pp{pp}, tg{tg}; I2_S, F16 head). \
         Targets: prompt processing ≥ 3×, generation ≥ 90% of the read roofline (table above).\n\n\
         | shape | threads | bitnet.cpp pp128 | ours pp{pp} | × | bitnet.cpp tg | ours tg{tg} | × |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for &(size, t, their_pp, their_tg) in BITNET_CPP {
        let find = |prefix: &str| {
            rows.iter().find(|r| r.size == size && r.outtype == "i2_s" && r.threads == t && r.test.starts_with(prefix))
        };
        if let (Some(p), Some(g)) = (find("pp"), find("tg")) {
            let _ = writeln!(
                s,
                "| {size} | {t} | {their_pp:.0} | {:.1} | {:.2} | {their_tg:.1} | {:.1} | {:.2} |",
                p.tps,
                p.tps / their_pp,
                g.tps,
                g.tps / their_tg
            );
        }
    }
    let _ = writeln!(s, "\nWhat limits each figure is analysed in [kernels.md](kernels.md#what-stops-the-targets).\n");
    s
}

/// The dummy model `target/dummy/dummy-SIZE-OUTTYPE.gguf`, written first if missing. `outtype` is
/// a weight type, `+HEAD` for a head type other than F16 (`i2_s+q8_0`, as `bitnet convert`
/// writes by default).
pub fn dummy_file(size: &str, outtype: &str) -> Result<PathBuf> {
    let path = dummy_file_path(size, outtype);
    if !path.exists() {
        eprintln!("writing {}", path.display());
        std::fs::create_dir_all(path.parent().expect("target/dummy"))?;
        let (weights, head) = outtype.split_once('+').unwrap_or((outtype, "f16"));
        if head == "f16" && DUMMY_TYPES.contains(&weights) {
            crate::dummy::write(size, weights, &path)?;
        } else {
            // The I2_S dummy re-encoded (`bitnet convert MODEL.gguf --outtype / --embedding-type`).
            let base_path = dummy_file(size, "i2_s")?;
            bitnet_convert::requantize(&base_path, &path, requantize_options(weights, head)?)?;
        }
    }
    Ok(path)
}

/// Where [`dummy_file`] keeps the dummy of `size` and `outtype`.
pub fn dummy_file_path(size: &str, outtype: &str) -> PathBuf {
    root().join(format!("target/dummy/dummy-{size}-{outtype}.gguf"))
}

/// Weight types `cargo xtask dummy` writes itself; others are re-encoded from its I2_S file.
const DUMMY_TYPES: &[&str] = &["i2_s", "tq1_0", "tq2_0", "f16"];

/// The (ternary type, head type) choices of the trade table; the first is the demo model as
/// shipped.
const TRADES: &[(&str, &str)] = &[
    ("i2_s", "f16"),
    ("i2_s", "q8_0"),
    ("i2_s", "q6_k"),
    ("tq2_0", "f16"),
    ("tq1_0", "f16"),
    ("tl2", "f16"),
    ("tq1_0", "q6_k"),
];

/// A trade's row name in the throughput table: the weight type, `+head` unless F16.
pub fn trade_name(weights: &str, head: &str) -> String {
    if head == "f16" { weights.to_owned() } else { format!("{weights}+{head}") }
}

fn requantize_options(weights: &str, head: &str) -> Result<bitnet_convert::RequantizeOptions> {
    Ok(bitnet_convert::RequantizeOptions {
        outtype: if weights == "i2_s" { None } else { Some(weights.parse().map_err(anyhow::Error::msg)?) },
        embedding_type: if head == "f16" { None } else { Some(head.parse().map_err(anyhow::Error::msg)?) },
    })
}

/// Perplexity, file size and generation speed of the shipped demo model on its held-out text
/// with each trade's weight and head types (re-encoded by `bitnet convert MODEL.gguf`).
fn head_trade(bitnet: &Path) -> Result<Vec<(String, f64, u64, f64)>> {
    let demo = root().join("fixtures/models/bitnet-demo.gguf");
    let text = root().join("fixtures/models/bitnet-demo-heldout.txt");
    let mut out = Vec::new();
    for &(weights, head) in TRADES {
        let name = trade_name(weights, head);
        let path = if name == "i2_s" {
            demo.clone()
        } else {
            let p = root().join(format!("target/dummy/bitnet-demo-{name}.gguf"));
            std::fs::create_dir_all(p.parent().expect("target/dummy"))?;
            bitnet_convert::requantize(&demo, &p, requantize_options(weights, head)?)?;
            p
        };
        let o = Command::new(bitnet).args(["perplexity", "--json", "-m"]).arg(&path).arg("-f").arg(&text).output()?;
        if !o.status.success() {
            bail!("bitnet perplexity failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let v: Value = serde_json::from_slice(&o.stdout).context("parsing bitnet perplexity --json")?;
        let b = Command::new(bitnet)
            .args(["bench", "--json", "-p", "0", "-n", "128", "-t", "1", "-r", "3", "-m"])
            .arg(&path)
            .output()?;
        if !b.status.success() {
            bail!("bitnet bench failed: {}", String::from_utf8_lossy(&b.stderr));
        }
        let tg: Value = serde_json::from_slice(&b.stdout).context("parsing bitnet bench --json")?;
        out.push((
            name.to_owned(),
            v["perplexity"].as_f64().unwrap_or(f64::NAN),
            std::fs::metadata(&path)?.len(),
            tg[0]["tokens_per_second"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    Ok(out)
}

fn head_section(rows: &[Row], heads: &[(String, f64, u64, f64)]) -> String {
    if heads.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Weight and head types: bytes against accuracy\n\nThe 2B-4T head (128256 × 2560) is read whole for \
         every generated token, and is larger than all its ternary weights. Generation speed at the 2B-4T shape \
         with each choice of ternary type (`bitnet convert --outtype`) and head type (`--embedding-type`), and \
         the perplexity of the shipped demo model (`fixtures/models/bitnet-demo.gguf`, I2_S with an F16 head; \
         whole held-out text) re-encoded the same way by `bitnet convert MODEL.gguf`, with its file size and \
         own generation speed (tg128 at 1 thread). Ternary values are the same in every type; TQ stores the \
         scale as f16 (per block), which is all that moves its perplexity. TL2 runs in place on the lookup-table \
         kernels (crates/tl-lut).\n\n\
         | weights + head | 2B-4T MB/token | 2B-4T tg t/s (1 thread) | 2B-4T tg t/s (2 threads) | demo perplexity | demo file | demo tg t/s |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let base = heads.iter().find(|h| h.0 == "i2_s").map_or(f64::NAN, |h| h.1);
    for (outtype, ppl, bytes, demo_tg) in heads {
        let label = if outtype.contains('+') { outtype.clone() } else { format!("{outtype}+f16") };
        let tg = |t: usize| {
            rows.iter()
                .find(|r| r.size == "2B-4T" && r.outtype == *outtype && r.threads == t && r.test.starts_with("tg"))
                .map_or("–".to_owned(), |r| format!("{:.1}", r.tps))
        };
        let mb = rows
            .iter()
            .find(|r| r.size == "2B-4T" && r.outtype == *outtype)
            .map_or(f64::NAN, |r| r.bytes_per_token / 1e6);
        let _ = writeln!(
            s,
            "| {label} | {mb:.0} | {} | {} | {ppl:.3} ({:+.2}%) | {:.2} MB | {demo_tg:.0} |",
            tg(1),
            tg(2),
            100.0 * (ppl / base - 1.0),
            *bytes as f64 / 1e6
        );
    }
    s.push('\n');
    s
}

/// (series label, params, tokens/s) of every generation result.
fn rows_for_plot(rows: &[Row]) -> Vec<(String, f64, f64)> {
    rows.iter()
        .filter(|r| r.test.starts_with("tg"))
        .map(|r| (format!("{} {}t", r.outtype, r.threads), r.params, r.tps))
        .collect()
}

fn report(rows: &[Row], bw: &[Bandwidth], opts: &Options, pp: usize, tg: usize) -> String {
    let mut s = String::new();
    let kernel = bitnet_kernel_name();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Measured by `cargo xtask bench{}` on {} ({} logical CPUs), kernel `{kernel}`, {}.\n\
         Models are random-weight dummies of bitnet.cpp's benchmark shapes (`cargo xtask dummy`), \
         F16 embeddings tied to the output head. pp{pp}: one forward pass over {pp} prompt tokens; \
         tg{tg}: {tg} single-token passes (mean ± sd over {} repetitions).\n",
        if opts.quick { " --quick" } else { "" },
        cpu_name(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        today(),
        opts.reps
    );
    let _ = writeln!(
        s,
        "## Memory bandwidth (this machine, measured by the same command)\n\nBefore and after the runs; the \
         higher of the two is kept (this VM's bandwidth drifts by 20% and more over minutes).\n"
    );
    let _ = writeln!(s, "| threads | read GB/s | triad GB/s |\n| ---: | ---: | ---: |");
    for b in bw {
        let _ = writeln!(s, "| {} | {:.1} | {:.1} |", b.threads, b.read, b.triad);
    }
    let _ = writeln!(
        s,
        "\n## Throughput\n\nWeight bytes per token: what one generated token streams from memory \
         (all layer weights plus the output head). Roofline: read bandwidth ÷ bytes per token.\n"
    );
    let _ = writeln!(
        s,
        "| model | type | threads | pp{pp} t/s | tg{tg} t/s | weight MB/token | tg GB/s | % of roofline |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut keys: Vec<(&str, &str, usize)> = rows.iter().map(|r| (r.size, r.outtype.as_str(), r.threads)).collect();
    keys.dedup();
    for (size, outtype, t) in keys {
        let find = |prefix: &str| {
            rows.iter().find(|r| r.size == size && r.outtype == outtype && r.threads == t && r.test.starts_with(prefix))
        };
        let (Some(p), Some(g)) = (find("pp"), find("tg")) else { continue };
        let gbs = g.tps * g.bytes_per_token / 1e9;
        let roof = bw.iter().find(|b| b.threads == t).map_or(f64::NAN, |b| b.read);
        let _ = writeln!(
            s,
            "| {size} | {outtype} | {t} | {:.1} ± {:.1} | {:.1} ± {:.1} | {:.0} | {gbs:.1} | {:.0}% |",
            p.tps,
            p.sd,
            g.tps,
            g.sd,
            g.bytes_per_token / 1e6,
            100.0 * gbs / roof
        );
    }
    let _ = writeln!(s, "\n![generation tokens/s by model size](bench.png)\n");
    s
}

/// The kernel set `bitnet` picks here (the one BITNET_KERNEL names, if set).
fn bitnet_kernel_name() -> String {
    bitnet_kernels::Kernels::from_env().map_or_else(|e| e, |k| k.name().to_owned())
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
pub fn today() -> String {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bandwidth_is_positive() {
        let b = super::bandwidth(&[1], true);
        assert!(b[0].read > 0.1 && b[0].triad > 0.1, "{b:?}");
    }
}
