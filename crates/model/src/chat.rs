//! Chat templates: the model's `tokenizer.chat_template` (Jinja, rendered with minijinja and
//! Python-compatible string methods), or a built-in one where a model ships none.

use minijinja::{Environment, Error as JinjaError, ErrorKind, context};

use crate::error::{ModelError, Result};

/// BitNet b1.58 2B-4T's conversation format, as transformers' reference prompt shows it:
/// `<|begin_of_text|>System: …<|eot_id|>User: …<|eot_id|>Assistant: …<|eot_id|>`. Used for
/// `bitnet-b1.58` models whose file has no template (the official GGUF's is missing or wrong).
pub const BITNET_2B4T_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}\
{% if m['role'] == 'system' %}System: {% elif m['role'] == 'user' %}User: {% else %}Assistant: {% endif %}\
{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}";

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with a role ("system", "user", "assistant").
    pub fn new(role: &str, content: impl Into<String>) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template.
///
/// ```
/// use bitnet_model::{ChatTemplate, Message};
/// let t = ChatTemplate::new(bitnet_model::chat::BITNET_2B4T_TEMPLATE, "<|begin_of_text|>", "<|end_of_text|>")?;
/// let text = t.render(&[Message::new("user", "Hi")], true)?;
/// assert_eq!(text, "<|begin_of_text|>User: Hi<|eot_id|>Assistant: ");
/// # Ok::<(), bitnet_model::ModelError>(())
/// ```
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the texts of the model's BOS/EOS tokens.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| ModelError::Invalid(format!("chat template: {e}")))?;
        Ok(ChatTemplate { env, bos: bos.into(), eos: eos.into() })
    }

    /// The model's own template (`tokenizer.chat_template`), or for a BitNet model without one
    /// the BitNet b1.58 2B-4T template; `source` replaces both when given. BOS/EOS are the
    /// tokenizer's.
    pub fn of_model(model: &crate::Model, tok: &crate::Tokenizer, source: Option<&str>) -> Result<ChatTemplate> {
        let source = match source {
            Some(s) => s,
            None => match model.metadata().get_str("tokenizer.chat_template") {
                Some(t) => t,
                None if model.config.architecture.starts_with("bitnet") => BITNET_2B4T_TEMPLATE,
                None => {
                    return Err(ModelError::Invalid(
                        "the model has no chat template (no tokenizer.chat_template in the file)".into(),
                    ));
                }
            },
        };
        let text = |id: Option<u32>| id.and_then(|i| tok.token(i)).unwrap_or("").to_owned();
        ChatTemplate::new(source, &text(tok.bos), &text(tok.eos))
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let msgs: Vec<_> = messages.iter().map(|m| context! { role => &m.role, content => &m.content }).collect();
        let t = self.env.get_template("chat").map_err(|e| ModelError::Invalid(e.to_string()))?;
        let mut out = Limited(Vec::new());
        t.render_captured_to(
            context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos,
                eos_token => &self.eos,
            },
            &mut out,
        )
        .map(drop)
        .map_err(|e| match e.kind() {
            ErrorKind::OutOfFuel => ModelError::Invalid(format!(
                "chat template too expensive: it ran past {TEMPLATE_FUEL} steps (a loop that does not end?)"
            )),
            ErrorKind::WriteFailure => ModelError::Invalid(format!(
                "chat template too expensive: its output passed {} MiB",
                TEMPLATE_OUTPUT_LIMIT >> 20
            )),
            _ => ModelError::Invalid(format!("chat template: {e}")),
        })?;
        String::from_utf8(out.0).map_err(|_| ModelError::Invalid("chat template: output is not UTF-8".into()))
    }

    /// The token ids of a rendered conversation (the template writes BOS itself where the model
    /// wants one). An empty rendering is an error: there would be nothing to answer.
    pub fn encode(
        &self,
        tok: &crate::Tokenizer,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let text = self.render(messages, add_generation_prompt)?;
        let ids = tok.encode(&text, false)?;
        if ids.is_empty() {
            return Err(ModelError::Invalid("the chat template renders the conversation as nothing".into()));
        }
        Ok(ids)
    }

    /// The conversation's tokens with room for an answer of `reserve` tokens in a context of
    /// `ctx`: while it does not fit, the oldest message after the system messages is dropped
    /// from `messages` (the last message is never dropped). Returns the tokens and how many
    /// messages were dropped; a last message too long on its own is
    /// [`ModelError::ContextFull`].
    pub fn encode_fitting(
        &self,
        tok: &crate::Tokenizer,
        messages: &mut Vec<Message>,
        reserve: usize,
        ctx: usize,
    ) -> Result<(Vec<u32>, usize)> {
        let mut dropped = 0;
        loop {
            let t = self.encode(tok, messages, true)?;
            if t.len().saturating_add(reserve) <= ctx {
                return Ok((t, dropped));
            }
            match messages.iter().position(|m| m.role != "system") {
                Some(i) if messages.len() - i > 1 => {
                    messages.remove(i);
                    dropped += 1;
                }
                _ => return Err(ModelError::ContextFull { needed: t.len() + reserve, ctx }),
            }
        }
    }
}

/// Template instructions one rendering may execute: real templates take a few hundred per
/// message; a runaway loop stops here in well under a second.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// Bytes one rendering may write (far past any context window).
pub const TEMPLATE_OUTPUT_LIMIT: usize = 64 << 20;

/// A writer that fails past [`TEMPLATE_OUTPUT_LIMIT`].
struct Limited(Vec<u8>);

impl std::io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_OUTPUT_LIMIT {
            return Err(std::io::Error::other("chat template output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitnet_2b4t_format() {
        let t = ChatTemplate::new(BITNET_2B4T_TEMPLATE, "<|begin_of_text|>", "<|end_of_text|>").unwrap();
        let msgs = [
            Message::new("system", "You are a helpful AI assistant."),
            Message::new("user", "Hey, are you conscious? Can you talk to me?"),
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|begin_of_text|>System: You are a helpful AI assistant.<|eot_id|>\
             User: Hey, are you conscious? Can you talk to me?<|eot_id|>Assistant: "
        );
        let mut more = msgs.to_vec();
        more.push(Message::new("assistant", "Yes."));
        more.push(Message::new("user", "Good."));
        let text = t.render(&more, true).unwrap();
        assert!(text.ends_with("Assistant: Yes.<|eot_id|>User: Good.<|eot_id|>Assistant: "), "{text}");
    }

    #[test]
    fn real_world_template_with_python_methods() {
        // SmolLM2's template (ChatML), which uses Python-style string access.
        let src = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
            {{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}\
            {{'<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n'}}{% endfor %}\
            {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let out = t.render(&[Message::new("user", "  Hi ")], true).unwrap();
        assert!(out.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), "{out}");
    }

    #[test]
    fn runaway_templates_stop() {
        let nested = "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(nested, "", "").unwrap();
        // The fuel bounds the work (no timing here: the test also runs under an emulator).
        let err = t.render(&[], true).unwrap_err().to_string();
        assert!(err.contains("chat template too expensive"), "{err}");
        let wide = "{% for a in range(100000) %}{{ 'x' * 10000 }}{% endfor %}";
        let err = ChatTemplate::new(wide, "", "").unwrap().render(&[], true).unwrap_err().to_string();
        assert!(err.contains("chat template too expensive"), "{err}");
    }

    #[test]
    fn template_errors_are_reported() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        assert!(t.render(&[], true).unwrap_err().to_string().contains("roles must alternate"));
    }
}
