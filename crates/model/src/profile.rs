//! Where forward passes spend their time (`bitnet bench --profile`): wall time per part of the
//! graph, and for the matmul parts the weight bytes they read, so a token's time can be put
//! against the read roofline part by part. Off by default; when off, each part costs one relaxed
//! atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The part that times whole forward passes.
pub const TOTAL: &str = "forward (total)";

/// One part's totals since profiling was switched on.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// "attn q/k/v", "ffn down", "head", "quantize", "attention", "forward (total)", ...
    pub name: &'static str,
    pub time: Duration,
    /// Weight bytes read (matmul parts; 0 for the rest).
    pub bytes: u64,
    pub calls: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Profiler {
    on: AtomicBool,
    parts: Mutex<Vec<Part>>,
}

impl Profiler {
    /// A start time when profiling is on.
    pub(crate) fn start(&self) -> Option<Instant> {
        self.on.load(Ordering::Relaxed).then(Instant::now)
    }

    /// Adds the time since `since` (if profiling was on then) to part `name`.
    pub(crate) fn record(&self, name: &'static str, since: Option<Instant>, bytes: u64) {
        let Some(t) = since else { return };
        let time = t.elapsed();
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        match parts.iter_mut().find(|p| p.name == name) {
            Some(p) => {
                p.time += time;
                p.bytes += bytes;
                p.calls += 1;
            }
            None => parts.push(Part { name, time, bytes, calls: 1 }),
        }
    }

    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// The parts so far (in the order first seen), which are then reset.
    pub(crate) fn take(&self) -> Vec<Part> {
        std::mem::take(&mut *self.parts.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The profile part a weight tensor's matmul counts under, from its GGUF name.
pub(crate) fn part_of(tensor: &str) -> &'static str {
    let has = |s: &str| tensor.contains(s);
    if has("attn_q") || has("attn_k") || has("attn_v") {
        "attn q/k/v"
    } else if has("attn_output") {
        "attn output"
    } else if has("ffn_gate") || has("ffn_up") {
        "ffn gate/up"
    } else if has("ffn_down") {
        "ffn down"
    } else if tensor.starts_with("output") || tensor.starts_with("token_embd") {
        "head"
    } else {
        "other matmuls"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_accumulate_only_when_on() {
        let p = Profiler::default();
        p.record("x", p.start(), 10);
        assert!(p.take().is_empty());
        p.set(true);
        p.record("x", p.start(), 10);
        p.record("x", p.start(), 5);
        p.record("y", p.start(), 0);
        let parts = p.take();
        assert_eq!(parts.iter().map(|p| (p.name, p.bytes, p.calls)).collect::<Vec<_>>(), [("x", 15, 2), ("y", 0, 1)]);
        assert!(p.take().is_empty());
    }

    #[test]
    fn tensor_names_map_to_parts() {
        assert_eq!(part_of("blk.3.attn_k.weight"), "attn q/k/v");
        assert_eq!(part_of("blk.3.attn_output.weight"), "attn output");
        assert_eq!(part_of("blk.0.ffn_up.weight"), "ffn gate/up");
        assert_eq!(part_of("blk.0.ffn_down.weight"), "ffn down");
        assert_eq!(part_of("output.weight"), "head");
        assert_eq!(part_of("token_embd.weight"), "head");
    }
}
