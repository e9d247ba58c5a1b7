//! Generation: prompt tokens (or a chat) in, streamed text pieces and token ids out.
//!
//! A [`Sequence`] is one conversation's KV cache plus the tokens whose keys and values it holds;
//! one loaded [`Model`] serves any number of them. [`Sequence::generate`] runs a prompt, reusing
//! the prefix it shares with what the cache already holds (a chat's earlier turns), and returns a
//! [`Generation`]: an iterator of [`Piece`]s that samples, stops on stop tokens, stop strings or
//! the length budget, and detokenizes incrementally.
//!
//! ```
//! use bitnet_model::{GenerateOptions, KvType, LoadOptions, Model, Sequence, Tokenizer};
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf");
//! let model = Model::load(path, LoadOptions::default())?;
//! let tok = Tokenizer::from_metadata(model.metadata())?;
//! let mut seq = Sequence::new(&model, 512, KvType::F16)?;
//! let prompt = tok.encode("The capital of France is", true)?;
//! let opts = GenerateOptions { max_tokens: 16, ..GenerateOptions::default() };
//! for piece in seq.generate(&model, &tok, &prompt, &opts)? {
//!     print!("{}", piece?.text);
//! }
//! # Ok::<(), bitnet_model::ModelError>(())
//! ```

use crate::error::{ModelError, Result};
use crate::model::{KvCache, KvType, Model};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (fewer when the context fills first).
    pub max_tokens: usize,
    /// Sampling settings (the default is greedy).
    pub sampling: SamplingParams,
    /// Texts that end the generation; the text is not emitted, nor anything after it.
    pub stop_strings: Vec<String>,
    /// Token ids that end the generation, besides the tokenizer's own stop tokens.
    pub stop_tokens: Vec<u32>,
    /// Keep going past the tokenizer's stop tokens (EOS, end-of-turn).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop_strings: Vec::new(),
            stop_tokens: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was sampled (it is not part of the output).
    StopToken,
    /// A stop string appeared in the text.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
}

/// One step's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The sampled token (`None` for a last piece that only releases held-back text).
    pub token: Option<u32>,
    /// Text this step completes (empty while a multi-byte character or a possible stop string is
    /// incomplete).
    pub text: String,
}

/// A KV cache and the tokens it holds: one sequence of a model.
#[derive(Debug, Clone)]
pub struct Sequence {
    cache: KvCache,
    tokens: Vec<u32>,
}

impl Sequence {
    /// An empty sequence of at most `ctx` tokens.
    pub fn new(model: &Model, ctx: usize, kv: KvType) -> Result<Sequence> {
        Ok(Sequence { cache: model.new_cache_of(ctx, kv)?, tokens: Vec::new() })
    }

    /// The tokens whose keys and values the cache holds.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Most tokens the sequence can hold.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Forgets everything (the memory is kept for reuse).
    pub fn clear(&mut self) {
        self.cache.truncate(0);
        self.tokens.clear();
    }

    /// Makes the cache hold exactly `prompt`, running only what follows the prefix it shares
    /// with what is cached (at least the last token, whose logits are returned).
    pub fn prefill(&mut self, model: &Model, prompt: &[u32]) -> Result<Vec<f32>> {
        if prompt.is_empty() {
            return Err(ModelError::Invalid("the prompt is empty".into()));
        }
        if prompt.len() > self.capacity() {
            return Err(ModelError::ContextFull { needed: prompt.len(), ctx: self.capacity() });
        }
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        self.cache.truncate(common);
        self.tokens.truncate(common);
        let logits = model.forward(&prompt[common..], &mut self.cache, false)?;
        self.tokens.extend_from_slice(&prompt[common..]);
        Ok(logits)
    }

    /// Runs `prompt` (see [`Sequence::prefill`]) and returns the generation that follows it.
    pub fn generate<'a>(
        &'a mut self,
        model: &'a Model,
        tok: &'a Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Generation<'a>> {
        let sampler = Sampler::try_new(opts.sampling)?;
        self.generate_with(model, tok, prompt, opts, Box::new(sampler))
    }

    /// [`Sequence::generate`] for a conversation: `messages` rendered with `template` (the
    /// assistant's turn opened), the oldest turns dropped from `messages` while the prompt leaves
    /// fewer than `opts.max_tokens` (at most half the context) for the answer; the prefix the
    /// cache already holds (earlier turns) is not run again.
    ///
    /// ```
    /// # use bitnet_model::{ChatTemplate, GenerateOptions, KvType, LoadOptions, Message, Model, Sequence, Tokenizer};
    /// # let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"), LoadOptions::default())?;
    /// # let tok = Tokenizer::from_metadata(model.metadata())?;
    /// let template = ChatTemplate::new(bitnet_model::chat::BITNET_2B4T_TEMPLATE, "", "")?;
    /// let mut seq = Sequence::new(&model, 128, KvType::F16)?;
    /// let mut messages = vec![Message::new("user", "What does the borrow checker do?")];
    /// let opts = GenerateOptions { max_tokens: 8, ..GenerateOptions::default() };
    /// let answer: String = seq.generate_chat(&model, &tok, &template, &mut messages, &opts)?
    ///     .map(|p| p.map(|p| p.text))
    ///     .collect::<Result<_, _>>()?;
    /// messages.push(Message::new("assistant", answer));
    /// # Ok::<(), bitnet_model::ModelError>(())
    /// ```
    pub fn generate_chat<'a>(
        &'a mut self,
        model: &'a Model,
        tok: &'a Tokenizer,
        template: &crate::ChatTemplate,
        messages: &mut Vec<crate::Message>,
        opts: &GenerateOptions,
    ) -> Result<Generation<'a>> {
        let (prompt, _) = self.chat_prompt(tok, template, messages, opts.max_tokens)?;
        self.generate(model, tok, &prompt, opts)
    }

    /// The prompt [`Sequence::generate_chat`] runs: `messages` rendered, the oldest turns dropped
    /// from them while fewer than `max_tokens` (at most half the context) would be left for the
    /// answer; also how many were dropped. A last message too long on its own is
    /// [`ModelError::ContextFull`].
    pub fn chat_prompt(
        &self,
        tok: &Tokenizer,
        template: &crate::ChatTemplate,
        messages: &mut Vec<crate::Message>,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, usize)> {
        template.encode_fitting(tok, messages, max_tokens.min(self.capacity() / 2), self.capacity())
    }

    /// [`Sequence::generate`] with a sampler that lives on across generations (a chat's: its
    /// random stream continues from turn to turn).
    pub fn generate_with<'a>(
        &'a mut self,
        model: &'a Model,
        tok: &'a Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
        sampler: impl std::borrow::BorrowMut<Sampler> + 'a,
    ) -> Result<Generation<'a>> {
        let logits = self.prefill(model, prompt)?;
        let room = self.capacity() - prompt.len();
        let decoder = Decoder::new(tok, opts, room, sampler);
        Ok(Generation { model, tok, seq: self, decoder, logits, pending: None, finished: false })
    }
}

/// The sampling side of a generation, apart from running the model: samples each token from the
/// logits it is given, ends on stop tokens, stop strings, the length budget or a full context,
/// and turns tokens into text incrementally (holding back what may become a stop string).
/// [`Generation`] drives one with [`Model::forward`]; a server's scheduler drives many at once
/// with [`Model::forward_batch`], one logits row per sequence per step.
pub struct Decoder<'a> {
    sampler: Box<dyn std::borrow::BorrowMut<Sampler> + 'a>,
    generated: usize,
    budget: usize,
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    stop_strings: Vec<String>,
    stream: StreamDecoder,
    /// Text that may be the start of a stop string, not emitted yet.
    held: String,
    stopped: Option<StopReason>,
    ids: Vec<u32>,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("generated", &self.generated).field("stopped", &self.stopped).finish()
    }
}

impl<'a> Decoder<'a> {
    /// A decoder for an answer of at most `opts.max_tokens` tokens, `room` being what the context
    /// has left after the prompt.
    pub fn new(
        tok: &Tokenizer,
        opts: &GenerateOptions,
        room: usize,
        sampler: impl std::borrow::BorrowMut<Sampler> + 'a,
    ) -> Decoder<'a> {
        let mut stop_tokens = opts.stop_tokens.clone();
        if !opts.ignore_eos {
            stop_tokens.extend_from_slice(&tok.stop_tokens);
        }
        Decoder {
            sampler: Box::new(sampler),
            generated: 0,
            budget: opts.max_tokens.min(room),
            max_tokens: opts.max_tokens,
            stop_tokens,
            stop_strings: opts.stop_strings.iter().filter(|s| !s.is_empty()).cloned().collect(),
            stream: StreamDecoder::default(),
            held: String::new(),
            stopped: None,
            ids: Vec::new(),
        }
    }

    /// Why the generation ended (`None` while it has not).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stopped
    }

    /// Tokens sampled so far (a stop token included).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// The ids of the answer so far (stop tokens excluded).
    pub fn token_ids(&self) -> &[u32] {
        &self.ids
    }

    /// Ends the generation if its budget is spent (before the last sampled token is run: it
    /// never needs to be). Returns whether it has ended, for whatever reason.
    pub fn check_budget(&mut self) -> bool {
        if self.stopped.is_none() && self.generated == self.budget {
            let full = self.budget < self.max_tokens;
            self.stopped = Some(if full { StopReason::ContextFull } else { StopReason::MaxTokens });
        }
        self.stopped.is_some()
    }

    /// Samples the next token from `logits`, the model's output after `history`: the piece to
    /// emit (its token must be run before the next call), or `None` once the generation has
    /// ended ([`Decoder::stop_reason`] says why; [`Decoder::finish`] releases held-back text).
    pub fn next(&mut self, tok: &Tokenizer, logits: &[f32], history: &[u32]) -> Result<Option<Piece>> {
        if self.check_budget() {
            return Ok(None);
        }
        let next = (*self.sampler).borrow_mut().sample(logits, history);
        self.generated += 1;
        if self.stop_tokens.contains(&next) {
            self.stopped = Some(StopReason::StopToken);
            return Ok(None);
        }
        self.ids.push(next);
        let text = self.stream.push(tok, next)?;
        self.held.push_str(&text);
        let text = self.release();
        Ok(Some(Piece { token: Some(next), text }))
    }

    /// After the end: the text held back for a stop string that never came, if any.
    pub fn finish(&mut self) -> Option<Piece> {
        (!self.held.is_empty()).then(|| Piece { token: None, text: std::mem::take(&mut self.held) })
    }

    /// Splits `held` into what can be emitted now and what may still become a stop string.
    fn release(&mut self) -> String {
        if let Some(at) = self.stop_strings.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            self.held.truncate(at);
            self.stopped = Some(StopReason::StopString);
            return std::mem::take(&mut self.held);
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let keep = (1..=self.held.len())
            .rev()
            .filter(|&n| self.held.is_char_boundary(self.held.len() - n))
            .find(|&n| {
                let tail = &self.held[self.held.len() - n..];
                self.stop_strings.iter().any(|s| s.len() > n && s.starts_with(tail))
            })
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        std::mem::replace(&mut self.held, rest)
    }
}

/// The tokens of one answer as they are sampled; see [`Sequence::generate`].
///
/// Each sampled token is run through the model (its keys and values cached) only when the next
/// one is needed, so the last token of a generation is never run: the sequence then holds
/// exactly the tokens that were run, and the next prompt's prefix reuse starts from there.
pub struct Generation<'a> {
    model: &'a Model,
    tok: &'a Tokenizer,
    seq: &'a mut Sequence,
    decoder: Decoder<'a>,
    logits: Vec<f32>,
    /// Sampled, not yet run.
    pending: Option<u32>,
    finished: bool,
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation").field("decoder", &self.decoder).finish()
    }
}

impl Generation<'_> {
    /// Why the generation ended (`None` while it has not).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.decoder.stop_reason()
    }

    /// Tokens sampled so far (a stop token included).
    pub fn generated(&self) -> usize {
        self.decoder.generated()
    }

    /// The ids of the answer so far (stop tokens excluded).
    pub fn token_ids(&self) -> &[u32] {
        self.decoder.token_ids()
    }

    fn step(&mut self) -> Result<Option<Piece>> {
        // The budget is checked first: the last token sampled is never run.
        if self.decoder.check_budget() {
            return Ok(None);
        }
        if let Some(t) = self.pending.take() {
            self.logits = self.model.forward(&[t], &mut self.seq.cache, false)?;
            self.seq.tokens.push(t);
        }
        let piece = self.decoder.next(self.tok, &self.logits, &self.seq.tokens)?;
        self.pending = piece.as_ref().and_then(|p| p.token);
        Ok(piece)
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Piece>;

    fn next(&mut self) -> Option<Result<Piece>> {
        if self.finished {
            return None;
        }
        if self.decoder.stop_reason().is_none() {
            match self.step() {
                Ok(Some(piece)) => return Some(Ok(piece)),
                Ok(None) => {}
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
        // Ended: release text held for a stop string that never came.
        self.finished = true;
        self.decoder.finish().map(Ok)
    }
}
