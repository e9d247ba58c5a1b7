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
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| ModelError::Invalid(format!("chat template: {e}")))?;
        Ok(ChatTemplate { env, bos: bos.into(), eos: eos.into() })
    }

    /// Renders a conversation; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let msgs: Vec<_> = messages.iter().map(|m| context! { role => &m.role, content => &m.content }).collect();
        let t = self.env.get_template("chat").map_err(|e| ModelError::Invalid(e.to_string()))?;
        t.render(context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| ModelError::Invalid(format!("chat template: {e}")))
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
    fn template_errors_are_reported() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        assert!(t.render(&[], true).unwrap_err().to_string().contains("roles must alternate"));
    }
}
