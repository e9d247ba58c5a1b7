//! Project automation: `cargo xtask <command>`.

mod malformed;

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
    /// Write the corpus of malformed GGUF files the format crate's tests and fuzzer use.
    MalformedCorpus {
        /// Output directory.
        #[arg(long, default_value = "fixtures/gguf/malformed")]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::MalformedCorpus { out } => malformed::write_corpus(&root().join(out)),
    }
}

/// The workspace root (xtask's parent), so commands work from any directory.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}
