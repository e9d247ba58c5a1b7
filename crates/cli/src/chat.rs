//! `bitnet chat`: an interactive conversation using the model's chat template.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use bitnet_model::{ChatTemplate, GenerateOptions, Message, Model, Sampler, Sequence, Tokenizer};

use crate::generate::{ModelArgs, SamplingArgs};

#[derive(clap::Args, Debug)]
#[command(after_help = "Type a message and press Enter. Commands: /clear (forget the conversation), /exit \
                        (or Ctrl-D). Ctrl-C stops the answer being written, not the program.\n\n\
                        Example:\n  bitnet chat -m model.gguf -s \"You are a concise assistant.\"")]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System prompt.
    #[arg(short, long)]
    pub system: Option<String>,
    /// Most tokens per answer.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

fn template(args: &ChatArgs, model: &Model, tok: &Tokenizer) -> Result<ChatTemplate> {
    let source = match &args.chat_template {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?),
        None => None,
    };
    ChatTemplate::of_model(model, tok, source.as_deref()).context("pass a chat template with --chat-template FILE")
}

/// Longest message line read from standard input.
const MAX_LINE: usize = 1 << 20;

/// What reading one line of standard input gave.
enum Line {
    Text(String),
    Eof,
    /// A line that cannot be a message; the session goes on.
    Rejected(String),
}

/// Reads one line of at most [`MAX_LINE`] bytes. A longer one is skipped up to its end (reading
/// at most 64 × that: an input with no line breaks, such as /dev/zero, ends the session).
fn read_line<R: BufRead>(mut input: R) -> Result<Line> {
    let mut buf = Vec::new();
    let n = std::io::Read::take(&mut input, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.len() > MAX_LINE && !buf.ends_with(b"\n") {
        let mut skipped = 0u64;
        loop {
            buf.clear();
            let n = std::io::Read::take(&mut input, MAX_LINE as u64).read_until(b'\n', &mut buf)?;
            skipped += n as u64;
            if n == 0 || buf.ends_with(b"\n") {
                break;
            }
            if skipped > 64 * MAX_LINE as u64 {
                bail!("standard input has a line longer than {} MiB; stopping", (64 * MAX_LINE) >> 20);
            }
        }
        return Ok(Line::Rejected(format!("the message is longer than {} MiB: ignored", MAX_LINE >> 20)));
    }
    match String::from_utf8(buf) {
        Ok(s) => Ok(Line::Text(s)),
        Err(e) => Ok(Line::Rejected(format!(
            "the message is not valid UTF-8 (byte {}): ignored",
            e.utf8_error().valid_up_to()
        ))),
    }
}

pub fn run(args: &ChatArgs) -> Result<()> {
    let (model, tok, ctx) = args.model.load()?;
    let template = template(args, &model, &tok)?;
    // A template that renders a conversation as nothing would fail every turn: say so now.
    template
        .encode(&tok, &[Message::new("user", "Hello")], true)
        .context("the chat template cannot be used (pass another with --chat-template FILE)")?;
    let mut sampler = Sampler::try_new(args.sampling.params())?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    }
    let mut messages: Vec<Message> = args.system.iter().map(|s| Message::new("system", s.clone())).collect();
    let mut seq = Sequence::new(&model, ctx, args.model.kv_for(&model))?;
    let opts = GenerateOptions { max_tokens: args.n_predict, ..GenerateOptions::default() };
    let mut stdin = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    eprintln!("chatting ({ctx} context tokens); /exit or Ctrl-D to quit, /clear to start over");
    loop {
        write!(out, "\n> ")?;
        out.flush()?;
        let line = match read_line(&mut stdin)? {
            Line::Eof => {
                writeln!(out)?;
                return Ok(());
            }
            Line::Rejected(why) => {
                eprintln!("({why})");
                continue;
            }
            Line::Text(line) => line,
        };
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/clear" => {
                messages.retain(|m| m.role == "system");
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", line));
        let tokens = match seq.chat_prompt(&tok, &template, &mut messages, args.n_predict) {
            Ok((t, dropped)) => {
                for _ in 0..dropped {
                    eprintln!("(context full: dropped the oldest message)");
                }
                t
            }
            Err(e) => {
                // The session goes on without this message.
                let e = match e {
                    bitnet_model::ModelError::ContextFull { needed, ctx } => format!(
                        "the message is too long for the context of {ctx} ({needed} tokens with the room kept for \
                         the answer; shorten it or raise --ctx-size)"
                    ),
                    e => e.to_string(),
                };
                eprintln!("({e}; the message was dropped)");
                messages.pop();
                continue;
            }
        };
        stop.store(false, Ordering::SeqCst);
        let mut answer = seq.generate_with(&model, &tok, &tokens, &opts, &mut sampler)?;
        loop {
            if stop.load(Ordering::SeqCst) {
                eprint!(" [stopped]");
                break;
            }
            match answer.next() {
                Some(piece) => write!(out, "{}", piece?.text)?,
                None => break,
            }
            out.flush()?;
        }
        writeln!(out)?;
        let reply = tok.decode(answer.token_ids(), false)?;
        messages.push(Message::new("assistant", reply));
    }
}
