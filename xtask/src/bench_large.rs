//! `cargo xtask bench --large`: the 70B shape (or another, `--large-size`) in I2_S, TL2 and
//! TQ1_0, each ~1.6-bit type measured in rounds alternating with the I2_S file, since the files
//! do not fit this machine's memory together and its bandwidth drifts over minutes: every run of
//! a type is set against the I2_S run beside it. The section goes into docs/bench.md between
//! markers (`cargo xtask bench` keeps it).
//!
//! The files are ~14–17 GB each at 70B; those this command writes are deleted once measured
//! (`--keep-large` keeps them), so at most two lie on disk at a time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bench::{self, Bandwidth};

pub const BEGIN: &str = "<!-- bench-large -->";
pub const END: &str = "<!-- /bench-large -->";

/// The types set against I2_S.
const TYPES: [&str; 2] = ["tl2", "tq1_0"];

/// Prompt and generation lengths: a 70B forward pass takes seconds at one thread.
const PP: usize = 32;
const TG: usize = 16;

pub struct Options {
    pub size: String,
    pub threads: Vec<usize>,
    pub reps: usize,
    /// Rounds per type (each: one I2_S run and one run of the type, in alternating order).
    pub rounds: usize,
    /// Keep the files this command wrote.
    pub keep: bool,
    pub out: PathBuf,
}

/// One `bitnet bench` result row of one run.
#[derive(Debug, Clone)]
struct Run {
    /// The weight type (`i2_s`, `tl2`, `tq1_0`).
    ty: String,
    /// Which pairing block the run belongs to (the type set against I2_S then).
    block: String,
    round: usize,
    threads: usize,
    pp: f64,
    tg: f64,
    load_s: f64,
    peak_rss: f64,
    pages: String,
    repacked: String,
}

/// Per-type facts of the files.
struct FileFacts {
    ty: String,
    file_bytes: u64,
    bytes_per_token: f64,
}

/// The dummy file of `ty`, written first if missing; whether this call wrote it.
fn ensure(size: &str, ty: &str) -> Result<(PathBuf, bool)> {
    let path = bench::dummy_file_path(size, ty);
    if path.exists() {
        return Ok((path, false));
    }
    let path = bench::dummy_file(size, ty)
        .with_context(|| format!("writing the {size} {ty} dummy (the 70B files take 14–17 GB of disk each)"))?;
    Ok((path, true))
}

/// Physical memory, from /proc/meminfo (None elsewhere).
fn mem_total() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One `bitnet bench --json` run of `path`.
fn measure(bitnet: &Path, path: &Path, ty: &str, block: &str, round: usize, opts: &Options) -> Result<Vec<Run>> {
    let threads = opts.threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    eprintln!("bench --large: {} ({ty}, round {})", path.display(), round + 1);
    let out = Command::new(bitnet)
        .args(["bench", "--json", "-m"])
        .arg(path)
        .args(["-p", &PP.to_string(), "-n", &TG.to_string(), "-t", &threads, "-r", &opts.reps.to_string()])
        .output()
        .context("running bitnet bench")?;
    if !out.status.success() {
        bail!("bitnet bench failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing bitnet bench --json")?;
    let rows = v.as_array().context("bench JSON is an array")?;
    let mut runs = Vec::new();
    for &t in &opts.threads {
        let of = |prefix: &str| {
            rows.iter().find(|r| {
                r["threads"].as_u64() == Some(t as u64) && r["test"].as_str().is_some_and(|s| s.starts_with(prefix))
            })
        };
        let (Some(p), Some(g)) = (of("pp"), of("tg")) else { bail!("bitnet bench gave no pp/tg at {t} threads") };
        runs.push(Run {
            ty: ty.to_owned(),
            block: block.to_owned(),
            round,
            threads: t,
            pp: p["tokens_per_second"].as_f64().unwrap_or(f64::NAN),
            tg: g["tokens_per_second"].as_f64().unwrap_or(f64::NAN),
            load_s: g["load_seconds"].as_f64().unwrap_or(f64::NAN),
            peak_rss: g["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN),
            pages: g["pages"].as_str().unwrap_or("").to_owned(),
            repacked: g["repacked"].as_str().unwrap_or("").to_owned(),
        });
    }
    Ok(runs)
}

pub fn run(opts: &Options, bitnet: &Path) -> Result<()> {
    if opts.rounds == 0 || opts.reps == 0 {
        bail!("--large needs at least one round and one repetition");
    }
    eprintln!("bench --large: measuring memory bandwidth...");
    let before = bench::bandwidth(&opts.threads, false);
    let (i2s, wrote_i2s) = ensure(&opts.size, "i2_s")?;
    let i2s_bytes = std::fs::metadata(&i2s)?.len();
    if let Some(total) = mem_total() {
        // The mapped file must stay resident: a token reads all of it.
        if i2s_bytes + (1 << 30) > total {
            bail!(
                "the {} I2_S file is {:.1} GiB and this machine has {:.1} GiB of memory: a token would read it \
                 from disk (pick a smaller --large-size)",
                opts.size,
                i2s_bytes as f64 / (1u64 << 30) as f64,
                total as f64 / (1u64 << 30) as f64
            );
        }
    }
    let mut facts =
        vec![FileFacts { ty: "i2_s".into(), file_bytes: i2s_bytes, bytes_per_token: bench::weight_bytes(&i2s)?.1 }];
    let mut runs = Vec::new();
    for ty in TYPES {
        let (path, wrote) = ensure(&opts.size, ty)?;
        facts.push(FileFacts {
            ty: ty.into(),
            file_bytes: std::fs::metadata(&path)?.len(),
            bytes_per_token: bench::weight_bytes(&path)?.1,
        });
        for round in 0..opts.rounds {
            // Alternate which file runs first (each run pages its file in from disk first,
            // untimed, evicting the other one).
            let order = if round % 2 == 0 { [("i2_s", &i2s), (ty, &path)] } else { [(ty, &path), ("i2_s", &i2s)] };
            for (t, p) in order {
                runs.extend(measure(bitnet, p, t, ty, round, opts)?);
            }
        }
        if wrote && !opts.keep {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    if wrote_i2s && !opts.keep {
        std::fs::remove_file(&i2s).with_context(|| format!("removing {}", i2s.display()))?;
    }
    eprintln!("bench --large: measuring memory bandwidth again...");
    let after = bench::bandwidth(&opts.threads, false);
    let md = section(opts, &runs, &facts, &before, &after, &bench::cpu_name(), &bench::today());
    let old = std::fs::read_to_string(&opts.out).unwrap_or_default();
    std::fs::write(&opts.out, crate::marked::splice(&old, BEGIN, END, &md))?;
    eprintln!("wrote the large-shape section of {}", opts.out.display());
    Ok(())
}

/// Median of a non-empty list (the lower middle for an even count: a figure that was measured).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// `lo–hi` of a list, or the one value.
fn range(v: &[f64], digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() == 1 || (hi - lo).abs() < 0.5 * 10f64.powi(-(digits as i32)) {
        format!("{lo:.digits$}")
    } else {
        format!("{lo:.digits$}–{hi:.digits$}")
    }
}

/// Each run of `ty` at `threads` divided by the I2_S run of the same block and round.
fn pair_ratios(runs: &[Run], ty: &str, threads: usize) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.ty == ty && r.block == ty && r.threads == threads)
        .filter_map(|r| {
            runs.iter()
                .find(|b| b.ty == "i2_s" && b.block == ty && b.round == r.round && b.threads == threads)
                .map(|b| r.tg / b.tg)
        })
        .collect()
}

fn section(
    opts: &Options,
    runs: &[Run],
    facts: &[FileFacts],
    before: &[Bandwidth],
    after: &[Bandwidth],
    cpu: &str,
    date: &str,
) -> String {
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let mut s = String::new();
    let _ =
        writeln!(s, "{BEGIN}\n## The {} shape: TL2 and TQ1_0 against I2_S (`cargo xtask bench --large`)\n", opts.size);
    let probe = |bw: &[Bandwidth]| {
        bw.iter().map(|b| format!("{:.1} GB/s at {} thread(s)", b.read, b.threads)).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        s,
        "Measured {date} on {cpu}: `cargo xtask dummy --size {size}` (I2_S, F16 head), `bitnet convert --outtype tl2` \
         of it, and `cargo xtask dummy --size {size} --outtype tq1_0` (repacked to TL2 at load where the kernels \
         walk tables). Each run is `bitnet bench -p {PP} -n {TG} -r {r} -t {t}`; the files do not fit the page \
         cache together, so each run first pages its file in from disk (untimed) and each type is measured in \
         {rounds} rounds alternating with the I2_S file (which goes first every other round). × I2_S: each run \
         of the type against the I2_S run of its round (median, and the range over rounds); target: 0.95 × the \
         ratio of bytes per token (issue 16). Read probe before: {}; after: {}; the higher is the roofline. \
         Load: `bitnet bench`'s load time (mapping, checks and any repack; the file's pages come in from \
         disk during the untimed warm-up).\n",
        probe(before),
        probe(after),
        size = opts.size,
        r = opts.reps,
        t = opts.threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
        rounds = opts.rounds,
    );
    let _ = writeln!(
        s,
        "| type | threads | file GiB | GB/token | load s | peak resident GiB | pp{PP} t/s | tg{TG} t/s | tg GB/s | % of roofline | × I2_S | target × |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let i2s = facts.iter().find(|f| f.ty == "i2_s");
    let mut notes = Vec::new();
    for f in facts {
        for &t in &opts.threads {
            let mine: Vec<&Run> = runs.iter().filter(|r| r.ty == f.ty && r.threads == t).collect();
            if mine.is_empty() {
                continue;
            }
            let tg: Vec<f64> = mine.iter().map(|r| r.tg).collect();
            let pp: Vec<f64> = mine.iter().map(|r| r.pp).collect();
            let load: Vec<f64> = mine.iter().map(|r| r.load_s).collect();
            let rss = mine.iter().map(|r| r.peak_rss).fold(0.0, f64::max);
            let tg_med = median(tg.clone());
            let gbs = tg_med * f.bytes_per_token / 1e9;
            let roof = before.iter().chain(after).filter(|b| b.threads == t).map(|b| b.read).fold(0.0, f64::max);
            let (pairs, target) = match i2s {
                Some(base) if f.ty != "i2_s" => {
                    let r = pair_ratios(runs, &f.ty, t);
                    let target = 0.95 * base.bytes_per_token / f.bytes_per_token;
                    let met = r.iter().filter(|&&x| x >= target).count();
                    let cell = if r.is_empty() {
                        "–".to_owned()
                    } else {
                        format!("{:.2} ({}; {met} of {} ≥ target)", median(r.clone()), range(&r, 2), r.len())
                    };
                    (cell, format!("{target:.2}"))
                }
                _ => ("–".to_owned(), "–".to_owned()),
            };
            let _ = writeln!(
                s,
                "| {} | {t} | {:.2} | {:.2} | {} | {:.2} | {:.2} ({}) | {:.2} ({}) | {gbs:.1} | {:.0}% | {pairs} | {target} |",
                f.ty,
                gib(f.file_bytes as f64),
                f.bytes_per_token / 1e9,
                range(&load, 1),
                gib(rss),
                median(pp.clone()),
                range(&pp, 2),
                tg_med,
                range(&tg, 2),
                100.0 * gbs / roof,
            );
            // The page report of every distinct kind, the repack of the first load (its time
            // is in the load column).
            for r in &mine {
                let n = format!("{}: {}", f.ty, r.pages);
                if !r.pages.is_empty() && !notes.contains(&n) {
                    notes.push(n);
                }
            }
            if let Some(r) = mine.iter().find(|r| !r.repacked.is_empty() && r.repacked != "no repacking") {
                let first = format!("{}: ", f.ty);
                if !notes.iter().any(|m| m.starts_with(&first) && m.ends_with("(first load)")) {
                    notes.push(format!("{first}{} (first load)", r.repacked));
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\nWhat the loads reported:\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(s, "\n{END}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ty: &str, block: &str, round: usize, threads: usize, tg: f64) -> Run {
        Run {
            ty: ty.into(),
            block: block.into(),
            round,
            threads,
            pp: 2.0,
            tg,
            load_s: 10.0,
            peak_rss: 16.0 * (1u64 << 30) as f64,
            pages: "weights in 2 MiB pages".into(),
            repacked: if ty == "tq1_0" { "repacked 560 matrices to TL2 in 20.0 s".into() } else { String::new() },
        }
    }

    /// Two TL2 rounds (1.20× and 1.40× I2_S) and one TQ1_0 round with the given tokens/s.
    fn sample_runs(i2s_beside_tq: f64, tq: f64) -> Vec<Run> {
        vec![
            run("i2_s", "tl2", 0, 1, 0.60),
            run("tl2", "tl2", 0, 1, 0.72),
            run("tl2", "tl2", 1, 1, 0.70),
            run("i2_s", "tl2", 1, 1, 0.50),
            run("i2_s", "tq1_0", 0, 1, i2s_beside_tq),
            run("tq1_0", "tq1_0", 0, 1, tq),
        ]
    }

    #[test]
    fn each_run_is_set_against_the_i2s_run_of_its_round() {
        let runs = sample_runs(1.00, 0.90);
        let r = pair_ratios(&runs, "tl2", 1);
        assert_eq!(r.len(), 2);
        assert!((r[0] - 1.2).abs() < 1e-9 && (r[1] - 1.4).abs() < 1e-9, "{r:?}");
        assert_eq!(pair_ratios(&runs, "tq1_0", 1), vec![0.9]);
        assert!(pair_ratios(&runs, "tq1_0", 2).is_empty());
        assert_eq!(median(vec![3.0, 1.0, 2.0, 4.0]), 2.0);
        assert_eq!(range(&[1.0, 1.004], 2), "1.00");
        assert_eq!(range(&[1.0, 1.25], 2), "1.00–1.25");
    }

    #[test]
    fn the_section_states_pairs_targets_and_roofline() {
        let opts = Options {
            size: "70B".into(),
            threads: vec![1],
            reps: 2,
            rounds: 2,
            keep: false,
            out: PathBuf::from("bench.md"),
        };
        let runs = sample_runs(0.60, 0.66);
        let gb = 1e9;
        let facts = vec![
            FileFacts { ty: "i2_s".into(), file_bytes: 18 << 30, bytes_per_token: 18.0 * gb },
            FileFacts { ty: "tl2".into(), file_bytes: 15 << 30, bytes_per_token: 15.0 * gb },
            FileFacts { ty: "tq1_0".into(), file_bytes: 15 << 30, bytes_per_token: 15.0 * gb },
        ];
        let bw = |read| vec![Bandwidth { threads: 1, read, triad: 10.0 }];
        let s = section(&opts, &runs, &facts, &bw(12.0), &bw(13.5), "a CPU", "2026-12-07");
        assert!(s.starts_with(BEGIN) && s.trim_end().ends_with(END), "{s}");
        // I2_S: median of 0.60, 0.50, 0.60 → 0.60; 10.8 GB/s of the 13.5 probe = 80%.
        assert!(
            s.contains(
                "| i2_s | 1 | 18.00 | 18.00 | 10.0 | 16.00 | 2.00 (2.00) | 0.60 (0.50–0.60) | 10.8 | 80% | – | – |"
            ),
            "{s}"
        );
        // TL2: pairs 1.20 and 1.40, target 0.95 × 18 / 15 = 1.14.
        assert!(s.contains("| 1.20 (1.20–1.40; 2 of 2 ≥ target) | 1.14 |"), "{s}");
        assert!(s.contains("| 1.10 (1.10; 0 of 1 ≥ target) | 1.14 |"), "{s}");
        assert!(s.contains("- tq1_0: repacked 560 matrices to TL2 in 20.0 s (first load)"), "{s}");
        assert!(!s.contains("no repacking"), "{s}");
        assert!(s.contains("13.5 GB/s at 1 thread(s)"), "{s}");
    }
}
