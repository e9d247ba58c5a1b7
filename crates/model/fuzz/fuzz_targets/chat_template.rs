//! Chat templates from hostile files: any template source and conversation renders to Ok or an
//! error (a runaway template stops at its fuel or output limit), never a panic or a hang.
//!
//! Input: the template, then after a 0 byte the messages, separated by 0 bytes; each message's
//! first byte picks its role.
#![no_main]

use bitnet_model::{ChatTemplate, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let source = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let messages: Vec<Message> = parts
        .map(|p| {
            let role = match p.first().copied().unwrap_or(0) % 4 {
                0 => "system",
                1 => "user",
                2 => "assistant",
                _ => "tool",
            };
            Message::new(role, String::from_utf8_lossy(p.get(1..).unwrap_or_default()))
        })
        .collect();
    let Ok(t) = ChatTemplate::new(&source, "<s>", "</s>") else { return };
    let _ = t.render(&messages, true);
    let _ = t.render(&messages, false);
});
