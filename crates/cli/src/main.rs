//! `bitnet`: run ternary (1.58-bit) LLMs on a CPU.

#![forbid(unsafe_code)]

mod bench;
mod chat;
mod convert;
mod embed;
mod generate;
mod hub;
mod inspect;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bitnet",
    version,
    about = "Run ternary (1.58-bit) LLMs such as BitNet b1.58 on an ordinary CPU",
    long_about = "Run ternary (1.58-bit) LLMs such as BitNet b1.58 on an ordinary CPU.\n\n\
                  Models are GGUF files, including those written by bitnet.cpp (I2_S, TL1, TL2) \
                  and llama.cpp (TQ1_0, TQ2_0).",
    after_long_help = "Environment:\n  \
                       BITNET_KERNEL     force a kernel set: avx512-vnni, avx-vnni, avx-vnni-evex, avx2, \
                       neon-i8mm, neon-dotprod, neon or scalar (default: the fastest this CPU runs)\n  \
                       BITNET_HUGE_PAGES=0  map model files as they are (no re-read into 2 MiB pages)\n  \
                       BITNET_DENSE_STREAM=0  AVX-512: read an F16 or Q8_0 head's rows side by side, as before \
                       2026-12-07 (to compare on your CPU)\n  \
                       BITNET_API_KEY    the key `serve` requires (as --api-key)\n  \
                       HF_HUB_CACHE, HF_HOME, HF_HUB_OFFLINE  the Hugging Face cache `--hf-repo` uses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming tokens as they come.
    Run(generate::RunArgs),
    /// Chat interactively, using the model's chat template.
    Chat(chat::ChatArgs),
    /// Write the logits of every position of a prompt (or exact token ids) to JSON.
    Logits(generate::LogitsArgs),
    /// Measure a model's perplexity on a text file.
    Perplexity(generate::PerplexityArgs),
    /// Convert a Hugging Face checkpoint to GGUF, or re-encode a GGUF (ternary type, head type).
    Convert(convert::Args),
    /// Show what a GGUF file holds: header, metadata and tensors.
    Inspect(inspect::Args),
    /// Measure prompt processing and generation speed (llama-bench style).
    Bench(bench::Args),
    /// Serve the model over HTTP with an OpenAI-compatible API (continuous batching).
    Serve(serve::Args),
    Embed(embed::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => generate::run(&args),
        Command::Chat(args) => chat::run(&args),
        Command::Logits(args) => generate::logits(&args),
        Command::Perplexity(args) => generate::perplexity(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Embed(args) => embed::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`bitnet run | head`) is not an error, as for Unix tools.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message before it
/// already ends with (errors that print their source as well as returning it).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
