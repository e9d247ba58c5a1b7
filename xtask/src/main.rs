//! Project automation: `cargo xtask <command>`.

#![forbid(unsafe_code)]

mod bench;
mod bench_embed;
mod bench_kv;
mod bench_large;
mod bench_peers;
mod bench_serve;
mod dummy;
mod malformed;
mod marked;
mod plot;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project automation for the bitnet workspace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face checkpoint directory to GGUF (the same code as `bitnet convert`).
    Convert {
        /// Directory with config.json, *.safetensors and tokenizer.json.
        dir: PathBuf,
        /// Output GGUF file.
        #[arg(short, long)]
        out: PathBuf,
        /// Layer weight type: i2_s, tq1_0, tq2_0, tl1, tl2, f16 or f32.
        #[arg(long, default_value = "i2_s")]
        outtype: String,
        /// Embedding type: auto (q8_0 when rows are multiples of 32, else f16), f16, f32, q8_0 or q6_k.
        #[arg(long, default_value = "auto")]
        embedding_type: String,
    },
    /// Write a random-weight model of one of bitnet.cpp's benchmark shapes.
    Dummy {
        /// 125M, 350M, 1B, 1.5B, 2.7B, 3.8B, 7B, 13B, 30B, 70B, 100B or 2B-4T.
        #[arg(long)]
        size: String,
        /// Layer weight type: i2_s, tq1_0, tq2_0, or f16 (the unquantized baseline).
        #[arg(long, default_value = "i2_s")]
        outtype: String,
        /// Architecture name: bitnet-b1.58 (2B-4T's graph) or bitnet (bitnet.cpp 1.0's name; it
        /// runs such files too, for head-to-head benchmarks).
        #[arg(long, default_value = "bitnet-b1.58")]
        arch: String,
        /// Output file (default: target/dummy/dummy-SIZE-OUTTYPE.gguf).
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Measure memory bandwidth and `bitnet bench` on dummy models of bitnet.cpp's benchmark
    /// shapes (I2_S, TQ2_0, and F16 for the small ones); write docs/bench.md and docs/bench.png.
    Bench {
        /// Only the 125M I2_S shape, short tests, one repetition (the CI smoke run).
        #[arg(long)]
        quick: bool,
        /// Thread counts, comma-separated.
        #[arg(short, long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Repetitions per test (default 3; 1 with --quick).
        #[arg(short, long)]
        reps: Option<usize>,
        /// Where to write bench.md and bench.png (default docs/, or target/bench-quick with --quick).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Reuse the `bitnet bench` results an earlier run saved under target/bench/ (rewrites
        /// the report without measuring again).
        #[arg(long)]
        reuse: bool,
        /// A peer engine's `llama-bench` (repeatable): NAME is bitnet.cpp, llama.cpp or
        /// ik_llama.cpp. Each runs the same weights in its own types (ik's IQ2_BN / IQ1_BN are made
        /// by the `llama-quantize` beside it), one engine after the other, for the side-by-side table.
        #[arg(long, value_name = "NAME=PATH")]
        peer: Vec<bench_peers::Peer>,
        /// Same as `--peer bitnet.cpp=PATH`.
        #[arg(long, value_name = "LLAMA_BENCH")]
        bitnet_cpp: Option<PathBuf>,
        /// Only the side-by-side table (ours and every --peer); the rest of bench.md is kept.
        #[arg(long)]
        peers_only: bool,
        /// Shapes of the side-by-side table.
        #[arg(long, value_delimiter = ',', default_value = "125M,2B-4T,7B")]
        peer_sizes: Vec<String>,
        /// Also the 70B shape in I2_S, TL2 and TQ1_0, each ~1.6-bit type in rounds alternating
        /// with the I2_S file (pp32, tg16; ~14-17 GB per file, written and deleted in turn, at
        /// most two on disk at a time; needs the I2_S file's size in memory; ~50 min on 2 cores).
        #[arg(long)]
        large: bool,
        /// Only the large-shape section (the rest of bench.md is kept).
        #[arg(long)]
        large_only: bool,
        /// The shape `--large` measures.
        #[arg(long, default_value = "70B")]
        large_size: String,
        /// Rounds per type for `--large` (each an I2_S run and a run of the type).
        #[arg(long, default_value_t = 2)]
        large_rounds: usize,
        /// Keep the dummy files `--large` wrote (target/dummy/) instead of deleting them.
        #[arg(long)]
        keep_large: bool,
    },
    /// Prompt processing of the embedding models' shapes (emb-0.6B, emb-270M) at 128…4096 tokens;
    /// write the table into docs/bench.md.
    BenchEmbed {
        /// Thread counts, comma-separated.
        #[arg(short, long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Timed repetitions of each test.
        #[arg(short, long, default_value_t = 3)]
        reps: usize,
        /// The Markdown file whose embedding section is rewritten.
        #[arg(long, default_value = "docs/bench.md")]
        out: PathBuf,
    },
    /// Generation at depth with each KV cache type (f16, q8_0, q4_0) on a dummy model, and each
    /// type's perplexity cost on the demo model; write the table into docs/bench.md.
    BenchKv {
        /// Dummy model shape (see `dummy --size`).
        #[arg(long, default_value = "2B-4T")]
        size: String,
        /// Context depths, comma-separated.
        #[arg(short, long, value_delimiter = ',', default_value = "0,4096,16384")]
        depths: Vec<usize>,
        /// Threads.
        #[arg(short, long, default_value_t = 2)]
        threads: usize,
        /// Tokens generated per run.
        #[arg(short = 'n', long, default_value_t = 16)]
        tokens: usize,
        /// Timed repetitions of each test.
        #[arg(short, long, default_value_t = 3)]
        reps: usize,
        /// The Markdown file whose KV cache section is rewritten.
        #[arg(long, default_value = "docs/bench.md")]
        out: PathBuf,
    },
    /// Load-test `bitnet serve` (continuous batching) with C concurrent streaming clients on a
    /// dummy model; write the table into docs/bench.md.
    BenchServe {
        /// Dummy model shape (see `dummy --size`).
        #[arg(long, default_value = "2B-4T")]
        size: String,
        /// Output-head type of the dummy (its ternary weights are I2_S): q8_0 is what `bitnet
        /// convert` writes by default, f16 the head bitnet.cpp's benchmark files carry.
        #[arg(long, default_value = "q8_0", value_parser = ["f16", "q8_0", "q6_k"])]
        head: String,
        /// Threads of the server.
        #[arg(short, long, default_value_t = 2)]
        threads: usize,
        /// Concurrent clients to test, comma-separated.
        #[arg(short, long, value_delimiter = ',', default_value = "1,2,4,8,16")]
        concurrency: Vec<usize>,
        /// Tokens per answer.
        #[arg(short = 'n', long, default_value_t = 64)]
        tokens: usize,
        /// Requests each client sends, back to back.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// The Markdown file whose serving section is rewritten.
        #[arg(long, default_value = "docs/bench.md")]
        out: PathBuf,
        /// Upstream llama.cpp's `llama-server`: measured too, on the same weights as TQ2_0.
        #[arg(long, value_name = "PATH")]
        llama_server: Option<PathBuf>,
    },
    /// This machine's read and triad memory bandwidth (the roofline `bench` uses), GB/s.
    Bandwidth {
        /// Thread counts, comma-separated.
        #[arg(short, long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
    },
    /// Write the corpus of malformed GGUF files the format crate's tests and fuzzer use.
    MalformedCorpus {
        /// Output directory.
        #[arg(long, default_value = "fixtures/gguf/malformed")]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Convert { dir, out, outtype, embedding_type } => {
            use bitnet_convert::{ConvertOptions, EmbeddingType, OutType};
            let outtype: OutType = outtype.parse().map_err(anyhow::Error::msg)?;
            let embedding_type: EmbeddingType = embedding_type.parse().map_err(anyhow::Error::msg)?;
            let s = bitnet_convert::convert_dir(&dir, &out, ConvertOptions { outtype, embedding_type })?;
            println!("wrote {} ({}, {} tensors, {} bytes)", out.display(), s.architecture, s.tensors, s.bytes);
            Ok(())
        }
        Command::Dummy { size, outtype, arch, out } => {
            let out = out.unwrap_or_else(|| root().join(format!("target/dummy/dummy-{size}-{outtype}.gguf")));
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            dummy::write_arch(&size, &outtype, &arch, &out)
        }
        Command::Bench {
            quick,
            threads,
            reps,
            out,
            reuse,
            mut peer,
            bitnet_cpp,
            peers_only,
            peer_sizes,
            large,
            large_only,
            large_size,
            large_rounds,
            keep_large,
        } => {
            let out_dir = out.unwrap_or_else(|| root().join(if quick { "target/bench-quick" } else { "docs" }));
            let reps = reps.unwrap_or(if quick { 1 } else { 3 });
            if let Some(bench) = bitnet_cpp {
                peer.push(bench_peers::Peer { engine: bench_peers::Engine::BitnetCpp, bench });
            }
            let peers = bench_peers::Options {
                sizes: if quick { vec!["125M".into()] } else { peer_sizes },
                threads: threads.clone(),
                reps,
                pp: 128,
                tg: if quick { 8 } else { 64 },
                peers: peer,
                reuse,
                out: out_dir.join("bench.md"),
            };
            let large_opts = bench_large::Options {
                size: large_size,
                threads: threads.clone(),
                reps,
                rounds: large_rounds,
                keep: keep_large,
                out: out_dir.join("bench.md"),
            };
            if !peers_only && !large_only {
                bench::run(&bench::Options { quick, threads, reps, out_dir, reuse })?;
            }
            if peers_only || (!large_only && !peers.peers.is_empty()) {
                bench_peers::run(&peers, &bench::build_cli()?)?;
            }
            if large || large_only {
                bench_large::run(&large_opts, &bench::build_cli()?)?;
            }
            Ok(())
        }
        Command::BenchServe { size, head, threads, concurrency, tokens, rounds, out, llama_server } => {
            let bitnet = bench::build_cli()?;
            let model = bench::dummy_file(&size, &bench::trade_name("i2_s", &head))?;
            let out = root().join(out);
            let opts = bench_serve::Options { size, head, threads, concurrency, tokens, rounds, out, llama_server };
            bench_serve::run(&opts, &bitnet, &model)
        }
        Command::BenchEmbed { threads, reps, out } => {
            let bitnet = bench::build_cli()?;
            let mut models = Vec::new();
            for size in ["emb-0.6B", "emb-270M"] {
                models.push((size, bench::dummy_file(size, "i2_s")?));
            }
            bench_embed::run(&bench_embed::Options { threads, reps, out: root().join(out) }, &bitnet, &models)
        }
        Command::BenchKv { size, depths, threads, tokens, reps, out } => {
            let bitnet = bench::build_cli()?;
            let model = bench::dummy_file(&size, "i2_s")?;
            let opts = bench_kv::Options { size, depths, threads, tokens, reps, out: root().join(out) };
            bench_kv::run(&opts, &bitnet, &model)
        }
        Command::Bandwidth { threads } => {
            for b in bench::bandwidth(&threads, false) {
                println!("{} threads: read {:.1} GB/s, triad {:.1} GB/s", b.threads, b.read, b.triad);
            }
            Ok(())
        }
        Command::MalformedCorpus { out } => malformed::write_corpus(&root().join(out)),
    }
}

/// The workspace root (xtask's parent), so commands work from any directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}
