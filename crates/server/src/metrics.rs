//! Counters for `GET /metrics` (Prometheus text format 0.0.4).

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<(Vec<u64>, u64, f64)>,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, secs: f64) {
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if h.0.is_empty() {
            h.0 = vec![0; BUCKETS.len()];
        }
        for (b, &le) in BUCKETS.iter().enumerate() {
            if secs <= le {
                h.0[b] += 1;
            }
        }
        h.1 += 1;
        h.2 += secs;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, &le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", h.0.get(b).copied().unwrap_or(0));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", h.1, h.2, h.1);
    }
}

/// Everything the server counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub rejected_full: AtomicU64,
    pub bad_requests: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    /// Requests the engine failed (the model, detokenizing, a panic in a step).
    pub failed: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated: AtomicU64,
    pub queue_depth: AtomicUsize,
    /// Embedding requests sent to the engine and not yet answered.
    pub embed_queue: AtomicUsize,
    pub active: AtomicUsize,
    pub ttft: Histogram,
    pub queue_wait: Histogram,
    /// (prompt tokens, seconds of steps that read a prompt, decoded tokens, seconds of steps).
    rates: Mutex<(u64, f64, u64, f64)>,
}

impl Metrics {
    /// One engine step: `prompt` prompt tokens and `decoded` sequences' next tokens in `secs`.
    pub fn step(&self, prompt: usize, decoded: usize, secs: f64) {
        self.prompt_tokens.fetch_add(prompt as u64, Ordering::Relaxed);
        let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if prompt > 0 {
            r.0 += prompt as u64;
            r.1 += secs;
        }
        if decoded > 0 {
            r.2 += decoded as u64;
            r.3 += secs;
        }
    }

    /// The Prometheus text.
    pub fn render(&self, parallel: usize) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "bitnet_requests_total",
            "Requests received (completions and embeddings).",
            get(&self.requests),
        );
        counter(
            &mut out,
            "bitnet_requests_rejected_total",
            "Requests refused with 429 (queue full).",
            get(&self.rejected_full),
        );
        counter(
            &mut out,
            "bitnet_requests_invalid_total",
            "Requests refused with a 4xx other than 429.",
            get(&self.bad_requests),
        );
        counter(&mut out, "bitnet_requests_completed_total", "Requests answered to the end.", get(&self.completed));
        counter(
            &mut out,
            "bitnet_requests_cancelled_total",
            "Requests whose client went away first.",
            get(&self.cancelled),
        );
        counter(
            &mut out,
            "bitnet_requests_failed_total",
            "Requests the engine failed (answered with an error).",
            get(&self.failed),
        );
        counter(&mut out, "bitnet_prompt_tokens_total", "Prompt tokens run.", get(&self.prompt_tokens));
        counter(&mut out, "bitnet_generated_tokens_total", "Tokens generated.", get(&self.generated));
        gauge(
            &mut out,
            "bitnet_queue_depth",
            "Requests waiting for a slot.",
            self.queue_depth.load(Ordering::Relaxed) as f64,
        );
        gauge(&mut out, "bitnet_active_sequences", "Sequences in slots.", self.active.load(Ordering::Relaxed) as f64);
        gauge(&mut out, "bitnet_slots", "Slots (--parallel).", parallel as f64);
        let r = *self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        gauge(
            &mut out,
            "bitnet_prompt_tokens_per_second",
            "Prompt tokens per second of the steps that read prompts.",
            rate(r.0, r.1),
        );
        gauge(
            &mut out,
            "bitnet_generation_tokens_per_second",
            "Generated tokens per second of engine steps (all sequences together).",
            rate(r.2, r.3),
        );
        self.ttft.write(&mut out, "bitnet_time_to_first_token_seconds", "From request to its first token.");
        self.queue_wait.write(&mut out, "bitnet_queue_wait_seconds", "From request to a slot.");
        out
    }
}
