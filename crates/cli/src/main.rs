//! `bitnet`: run ternary (1.58-bit) LLMs on a CPU.

mod bench;
mod chat;
mod convert;
mod generate;
mod hub;
mod inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bitnet",
    version,
    about = "Run ternary (1.58-bit) LLMs such as BitNet b1.58 on an ordinary CPU",
    long_about = "Run ternary (1.58-bit) LLMs such as BitNet b1.58 on an ordinary CPU.\n\n\
                  Models are GGUF files, including those written by bitnet.cpp (I2_S, TL1, TL2) \
                  and llama.cpp (TQ1_0, TQ2_0)."
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
