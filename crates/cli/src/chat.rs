//! `bitnet chat`: an interactive conversation using the model's chat template.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use bitnet_model::chat::BITNET_2B4T_TEMPLATE;
use bitnet_model::{ChatTemplate, Message, Model, Sampler, StreamDecoder, Tokenizer};

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
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => match model.metadata().get_str("tokenizer.chat_template") {
            Some(t) => t.to_owned(),
            None if model.config.architecture.starts_with("bitnet") => BITNET_2B4T_TEMPLATE.to_owned(),
            None => bail!("the model has no chat template; pass one with --chat-template FILE"),
        },
    };
    let text = |id: Option<u32>| id.and_then(|i| tok.token(i)).unwrap_or("").to_owned();
    Ok(ChatTemplate::new(&source, &text(tok.bos), &text(tok.eos))?)
}

pub fn run(args: &ChatArgs) -> Result<()> {
    let (model, tok, ctx) = args.model.load()?;
    let template = template(args, &model, &tok)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    }
    let mut messages: Vec<Message> = args.system.iter().map(|s| Message::new("system", s.clone())).collect();
    let mut cache = model.new_cache_of(ctx, args.model.kv_type.into());
    let mut cached: Vec<u32> = Vec::new(); // tokens whose keys/values are in the cache
    let mut sampler = Sampler::new(args.sampling.params());
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    eprintln!("chatting ({ctx} context tokens); /exit or Ctrl-D to quit, /clear to start over");
    loop {
        write!(out, "\n> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            writeln!(out)?;
            return Ok(());
        }
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
        // Render the whole conversation; drop the oldest turns while it does not fit.
        let reserve = args.n_predict.min(ctx / 2);
        let tokens = loop {
            let t = tok.encode(&template.render(&messages, true)?, false)?;
            if t.len() + reserve <= ctx {
                break t;
            }
            let first = messages.iter().position(|m| m.role != "system");
            match first {
                Some(i) if messages.len() - i > 1 => {
                    messages.remove(i);
                    eprintln!("(context full: dropped the oldest message)");
                }
                _ => bail!("the message is {} tokens, too long for the context of {ctx} (raise --ctx-size)", t.len()),
            }
        };
        // Reuse the cached prefix the new prompt shares with what the cache holds.
        let common = cached.iter().zip(&tokens).take_while(|(a, b)| a == b).count().min(tokens.len() - 1);
        cache.truncate(common);
        cached.truncate(common);
        let mut logits = model.forward(&tokens[common..], &mut cache, false)?;
        cached.extend_from_slice(&tokens[common..]);
        stop.store(false, Ordering::SeqCst);
        let mut reply_ids = Vec::new();
        let mut stream = StreamDecoder::default();
        let budget = args.n_predict.min(ctx - cached.len());
        for i in 0..budget {
            if stop.load(Ordering::SeqCst) {
                eprint!(" [stopped]");
                break;
            }
            let next = sampler.sample(&logits, &cached);
            if tok.stop_tokens.contains(&next) {
                break;
            }
            reply_ids.push(next);
            write!(out, "{}", stream.push(&tok, next)?)?;
            out.flush()?;
            cached.push(next);
            if i + 1 < budget {
                logits = model.forward(&[next], &mut cache, false)?;
            }
        }
        writeln!(out)?;
        messages.push(Message::new("assistant", tok.decode(&reply_ids, false)?));
    }
}
