//! The scheduler: one thread that owns the model and runs continuous batching.
//!
//! Up to `parallel` sequences are active, each in its own slot with its own KV cache. Every
//! step is one [`Model::forward_batch`] over the last sampled token of every decoding sequence
//! plus one chunk of one prompt still being read ([`prompt_chunk`]: no more rows than are
//! decoding), so a long prompt holds the others back by one chunk per step, never by its whole
//! length. New requests take a free slot at the next step;
//! finished and abandoned ones (their receiver dropped: the client went away) leave at the next
//! step. The model's own thread pool does the arithmetic; the async runtime only moves bytes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bitnet_model::{Decoder, GenerateOptions, KvCache, KvType, Model, Sampler, Step, StopReason, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;

/// Most prompt tokens read per step for the one prompt being read.
pub const PROMPT_CHUNK: usize = 256;

/// Fewest prompt tokens read per step while other sequences decode.
pub const MIN_CHUNK: usize = 4;

/// Prompt tokens to read in a step with `decoding` sequences decoding: all of a chunk when none
/// is, else no more rows than they have (at least [`MIN_CHUNK`]). A step's cost grows with its
/// rows, so a step that also reads a prompt costs at most about twice one that does not: the
/// decoding answers' inter-token latency stays within 2× its median while prompts still get in.
pub fn prompt_chunk(decoding: usize) -> usize {
    if decoding == 0 { PROMPT_CHUNK } else { decoding.clamp(MIN_CHUNK, PROMPT_CHUNK) }
}

/// One request, as the engine sees it.
#[derive(Debug)]
pub struct Job {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    /// `Some(k)`: report each token's log-probability and the `k` most likely alternatives.
    pub logprobs: Option<usize>,
    pub events: UnboundedSender<Event>,
    pub received: Instant,
}

/// Texts to embed (already tokenized), answered with one vector per text or an error.
pub struct EmbedJob {
    pub texts: Vec<Vec<u32>>,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// What the engine is asked to do.
pub enum Work {
    Generate(Job),
    /// Runs between two generation steps, in passes of at most [`EMBED_BATCH_TOKENS`].
    Embed(EmbedJob),
}

/// Most tokens of one embedding pass (generation waits for a pass, not for the whole request).
pub const EMBED_BATCH_TOKENS: usize = 2048;

/// A token's log-probability, and the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Why an answer ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

/// What the engine tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// Text (possibly empty while a character or a stop string is incomplete) and its token.
    Piece { text: String, logprob: Option<TokenLogprob> },
    /// The end, with exact counts.
    Done { finish: Finish, prompt_tokens: usize, completion_tokens: usize },
    /// The request failed inside the engine.
    Error(String),
}

/// What became of a sequence after sampling.
enum Next {
    Continue,
    Ended,
    /// Its client is gone: the slot is freed.
    Gone,
    /// It failed and was told so: the slot is freed.
    Failed,
}

/// A sequence in a slot.
struct Active {
    job: Job,
    /// Prompt tokens already run.
    fed: usize,
    decoder: Decoder<'static>,
    /// Sampled, not yet run (the next step runs it).
    pending: Option<u32>,
    /// Every token the cache holds (the sampler's history).
    history: Vec<u32>,
}

/// The engine's end of the request channel, and what it shares with the HTTP side.
pub struct Engine {
    pub model: Model,
    pub tok: Arc<Tokenizer>,
    pub ctx: usize,
    pub kv: KvType,
    pub parallel: usize,
    pub metrics: Arc<Metrics>,
    /// Tests: the next step panics (to check that a panic fails only that step's requests).
    #[cfg(test)]
    pub panic_next_step: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Runs until every sender of `jobs` is gone (the server is shutting down) and nothing is
    /// left to do.
    pub fn run(self, jobs: std::sync::mpsc::Receiver<Work>) {
        let mut caches: Vec<KvCache> = Vec::new();
        let mut slots: Vec<Option<Active>> = (0..self.parallel).map(|_| None).collect();
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut embeds: VecDeque<(EmbedJob, Vec<Vec<f32>>)> = VecDeque::new();
        let mut open = true;
        loop {
            // Intake: block only when there is nothing to run.
            let take = |w: Work, waiting: &mut VecDeque<Job>, embeds: &mut VecDeque<_>| match w {
                Work::Generate(job) => waiting.push_back(job),
                Work::Embed(job) => embeds.push_back((job, Vec::new())),
            };
            if slots.iter().all(Option::is_none) && waiting.is_empty() && embeds.is_empty() {
                if !open {
                    return;
                }
                match jobs.recv() {
                    Ok(w) => take(w, &mut waiting, &mut embeds),
                    Err(_) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(w) => take(w, &mut waiting, &mut embeds),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            // Abandoned requests leave (their handler, and so the client, is gone).
            for slot in slots.iter_mut() {
                if slot.as_ref().is_some_and(|a| a.job.events.is_closed()) {
                    *slot = None;
                    self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                }
            }
            let before = waiting.len();
            waiting.retain(|j| !j.events.is_closed());
            self.metrics.cancelled.fetch_add((before - waiting.len()) as u64, Ordering::Relaxed);
            // New requests take free slots.
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                let Some(job) = waiting.pop_front() else { break };
                while caches.len() <= i {
                    match self.model.new_cache_of(self.ctx, self.kv) {
                        Ok(c) => caches.push(c),
                        Err(e) => {
                            let _ = job.events.send(Event::Error(format!("no memory for a KV cache: {e}")));
                            break;
                        }
                    }
                }
                if caches.len() <= i {
                    continue;
                }
                caches[i].truncate(0);
                *slot = Some(self.admit(job));
            }
            self.metrics.queue_depth.store(waiting.len(), Ordering::Relaxed);
            self.metrics.active.store(slots.iter().filter(|s| s.is_some()).count(), Ordering::Relaxed);
            // One embedding pass per turn of the loop, between generation steps.
            if let Some((job, done)) = embeds.front_mut() {
                let outcome = if job.reply.is_closed() { None } else { Some(self.embed_pass(&job.texts, done)) };
                if !matches!(outcome, Some(Ok(false))) {
                    let (job, done) = embeds.pop_front().expect("front");
                    self.metrics.embed_queue.fetch_sub(1, Ordering::Relaxed);
                    let counter = match outcome {
                        None => &self.metrics.cancelled,
                        Some(Ok(_)) => {
                            let _ = job.reply.send(Ok(done));
                            &self.metrics.completed
                        }
                        Some(Err(e)) => {
                            let _ = job.reply.send(Err(e));
                            &self.metrics.failed
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            if slots.iter().all(Option::is_none) {
                continue;
            }
            // A panic in one step fails the requests in it, not the server.
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(&mut slots, &mut caches)));
            if step.is_err() {
                for slot in slots.iter_mut() {
                    if let Some(a) = slot.take() {
                        self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                        let _ = a.job.events.send(Event::Error("internal error while generating".into()));
                    }
                }
            }
            self.metrics.active.store(slots.iter().filter(|s| s.is_some()).count(), Ordering::Relaxed);
        }
    }

    /// Embeds the next texts of a request (after the `done` ones), up to
    /// [`EMBED_BATCH_TOKENS`] tokens; true when every text is done. A panic fails this request
    /// only.
    fn embed_pass(&self, texts: &[Vec<u32>], done: &mut Vec<Vec<f32>>) -> Result<bool, String> {
        let Some(pooling) = self.model.config.pooling else {
            return Err("this model declares no pooling: it is not an embedding model".into());
        };
        let start = done.len();
        let mut end = start + 1;
        let mut tokens = texts[start].len();
        while end < texts.len() && tokens + texts[end].len() <= EMBED_BATCH_TOKENS {
            tokens += texts[end].len();
            end += 1;
        }
        let batch: Vec<&[u32]> = texts[start..end].iter().map(Vec::as_slice).collect();
        let t0 = Instant::now();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.model.embed(&batch, pooling, true)));
        match out {
            Ok(Ok(v)) => {
                self.metrics.step(tokens, 0, t0.elapsed().as_secs_f64());
                done.extend(v);
                Ok(done.len() == texts.len())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("internal error while embedding".into()),
        }
    }

    fn admit(&self, job: Job) -> Active {
        let room = self.ctx.saturating_sub(job.prompt.len());
        let decoder = Decoder::new(&self.tok, &job.opts, room, Sampler::new(job.opts.sampling));
        let wait = job.received.elapsed();
        self.metrics.queue_wait.observe(wait.as_secs_f64());
        Active { job, fed: 0, decoder, pending: None, history: Vec::new() }
    }

    /// One forward over every active sequence, then sampling.
    fn step(&self, slots: &mut [Option<Active>], caches: &mut [KvCache]) {
        #[cfg(test)]
        if self.panic_next_step.swap(false, Ordering::Relaxed) {
            panic!("a panic injected by a test");
        }
        // Sequences whose budget is spent end before their last token is run.
        for slot in slots.iter_mut() {
            if let Some(a) = slot
                && a.fed == a.job.prompt.len()
                && a.decoder.check_budget()
            {
                self.finish(slot.take().expect("active"));
            }
        }
        // The prompt to read a chunk of: the one admitted first (lowest slot among those
        // reading is good enough: slots fill in order).
        let reader = slots.iter().position(|s| s.as_ref().is_some_and(|a| a.fed < a.job.prompt.len()));
        let decoding = slots.iter().filter(|s| s.as_ref().is_some_and(|a| a.pending.is_some())).count();
        let chunk = prompt_chunk(decoding);
        let mut order = Vec::new();
        let mut steps = Vec::new();
        let started = Instant::now();
        let mut prompt_rows = 0;
        for (i, (slot, cache)) in slots.iter_mut().zip(caches.iter_mut()).enumerate() {
            let Some(a) = slot else { continue };
            let tokens: &[u32] = if a.fed < a.job.prompt.len() {
                if Some(i) != reader {
                    continue;
                }
                let n = chunk.min(a.job.prompt.len() - a.fed);
                prompt_rows = n;
                &a.job.prompt[a.fed..a.fed + n]
            } else if let Some(t) = &a.pending {
                std::slice::from_ref(t)
            } else {
                continue;
            };
            order.push((i, tokens.len()));
            steps.push(Step { tokens, cache, all_logits: false });
        }
        if steps.is_empty() {
            return;
        }
        let result = self.model.forward_batch(&mut steps);
        drop(steps);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                for (i, _) in order {
                    if let Some(a) = slots[i].take() {
                        self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                        let _ = a.job.events.send(Event::Error(format!("the model failed: {e}")));
                    }
                }
                return;
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let decoded = order.len() - usize::from(prompt_rows > 0);
        self.metrics.step(prompt_rows, decoded, secs);
        for ((i, n), logits) in order.into_iter().zip(logits) {
            let a = slots[i].as_mut().expect("active");
            if a.fed < a.job.prompt.len() {
                a.history.extend_from_slice(&a.job.prompt[a.fed..a.fed + n]);
                a.fed += n;
                if a.fed < a.job.prompt.len() {
                    continue;
                }
            } else {
                a.history.extend(a.pending.take());
            }
            match self.sample(a, &logits) {
                Next::Continue => {}
                Next::Ended => self.finish(slots[i].take().expect("active")),
                Next::Gone => {
                    slots[i] = None;
                    self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                Next::Failed => {
                    slots[i] = None;
                    self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Samples the next token of `a` from `logits` and sends its piece.
    fn sample(&self, a: &mut Active, logits: &[f32]) -> Next {
        let first = a.decoder.generated() == 0;
        let piece = match a.decoder.next(&self.tok, logits, &a.history) {
            Ok(p) => p,
            Err(e) => {
                let _ = a.job.events.send(Event::Error(format!("detokenizing: {e}")));
                return Next::Failed;
            }
        };
        if first {
            self.metrics.ttft.observe(a.job.received.elapsed().as_secs_f64());
        }
        let Some(piece) = piece else { return Next::Ended };
        let token = piece.token.expect("a sampled piece has a token");
        let logprob = a.job.logprobs.map(|k| logprob(logits, token, k));
        a.pending = Some(token);
        self.metrics.generated.fetch_add(1, Ordering::Relaxed);
        match a.job.events.send(Event::Piece { text: piece.text, logprob }) {
            Ok(()) => Next::Continue,
            Err(_) => Next::Gone,
        }
    }

    fn finish(&self, mut a: Active) {
        if let Some(p) = a.decoder.finish() {
            let _ = a.job.events.send(Event::Piece { text: p.text, logprob: None });
        }
        let finish = match a.decoder.stop_reason() {
            Some(StopReason::MaxTokens | StopReason::ContextFull) => Finish::Length,
            _ => Finish::Stop,
        };
        let completion_tokens = a.decoder.token_ids().len();
        self.metrics.completed.fetch_add(1, Ordering::Relaxed);
        let _ = a.job.events.send(Event::Done { finish, prompt_tokens: a.job.prompt.len(), completion_tokens });
    }
}

/// `token`'s log-probability under `logits` and the `k` most likely tokens with theirs.
pub fn logprob(logits: &[f32], token: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut top: Vec<(u32, f32)> = Vec::new();
    if k > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = k.min(idx.len());
        let by = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        idx.select_nth_unstable_by(k - 1, by);
        idx.truncate(k);
        idx.sort_unstable_by(by);
        top = idx.into_iter().map(|t| (t, logits[t as usize] - lse)).collect();
    }
    TokenLogprob { token, logprob: logits.get(token as usize).map_or(f32::NEG_INFINITY, |l| l - lse), top }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside a step fails the requests in it (each told so, counted as failed) and
    /// frees their slots; the engine keeps serving the next request.
    #[test]
    fn a_panicking_step_fails_its_requests_only() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf");
        let model = Model::load(path, bitnet_model::LoadOptions { threads: 1, kernels: None }).unwrap();
        let tok = Arc::new(Tokenizer::from_metadata(model.metadata()).unwrap());
        let metrics = Arc::new(Metrics::default());
        let engine = Engine {
            model,
            tok: tok.clone(),
            ctx: 128,
            kv: KvType::F16,
            parallel: 2,
            metrics: metrics.clone(),
            panic_next_step: std::sync::atomic::AtomicBool::new(true),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || engine.run(rx));
        let job = |events| Job {
            prompt: tok.encode("The Rust compiler", true).unwrap(),
            opts: GenerateOptions { max_tokens: 4, ..GenerateOptions::default() },
            logprobs: None,
            events,
            received: Instant::now(),
        };
        let (events, mut first) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Work::Generate(job(events))).unwrap();
        match first.blocking_recv() {
            Some(Event::Error(e)) => assert!(e.contains("internal error"), "{e}"),
            other => panic!("expected the injected failure, got {other:?}"),
        }
        let (events, mut second) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Work::Generate(job(events))).unwrap();
        let done = std::iter::from_fn(|| second.blocking_recv()).find(|e| !matches!(e, Event::Piece { .. }));
        assert!(matches!(done, Some(Event::Done { completion_tokens: 4, .. })), "{done:?}");
        drop(tx);
        thread.join().unwrap();
        assert_eq!(metrics.failed.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.completed.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.cancelled.load(Ordering::Relaxed), 0);
    }
}
