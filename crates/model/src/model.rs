//! The forward pass: BitNet b1.58 (with sub-norms) and Llama-style ternary models.
//!
//! Per layer, for a batch of tokens at positions `pos..pos+n`:
//! ```text
//! h   = RMSNorm(x) · attn_norm
//! q,k,v = Wq·h, Wk·h, Wv·h        (int8 activations × ternary weights)
//! q,k = RoPE(q, k)                 (NEOX pairs for bitnet, adjacent pairs for llama)
//! a   = softmax(q·kᵀ/√d + causal mask)·v over the KV cache (grouped-query)
//! a   = RMSNorm(a) · attn_sub_norm (bitnet only)
//! x  += Wo·a
//! h   = RMSNorm(x) · ffn_norm
//! f   = act(Wg·h) ⊙ (Wu·h)          (squared ReLU for 2B-4T, SiLU otherwise)
//! f   = RMSNorm(f) · ffn_sub_norm  (bitnet only)
//! x  += Wd·f
//! ```
//! then `logits = head · (RMSNorm(x) · output_norm)`, the head being `output.weight` or the tied
//! embedding table.
//!
//! Qwen3 and Gemma 3 (bitnet.cpp's ternary embedding models) add: a per-head RMSNorm of q and k
//! before RoPE; each projection's own input RMSNorm (`*_norm_in`) applied to its input before
//! the int8 quantization; for Gemma, embeddings scaled by √hidden, RMSNorms of the attention and
//! FFN outputs before the residual adds, GELU-tanh and sliding-window layers with their own RoPE
//! base. Embedding models pool the final normed states ([`Model::embed`]).

use std::path::Path;
use std::time::{Duration, Instant};

use bitnet_format::{GgufFile, Pages, ReadOptions};
use bitnet_kernels::Kernels;
use bitnet_quant::vecops::{F32Ops, KvBlock, Mat};

use crate::config::{Config, Pooling, RopeStyle};
use crate::error::{ModelError, Result};
use crate::ops::rms_norm;
use crate::profile::{Part, Profiler, TOTAL};
use crate::scratch::{Buf, BufferPool};
use crate::threads::Pool;
use crate::weights::{Acts, Matrix, vector};

struct Layer {
    attn_norm: Vec<f32>,
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    wo: Matrix,
    attn_sub_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: Matrix,
    w_up: Matrix,
    w_down: Matrix,
    ffn_sub_norm: Option<Vec<f32>>,
    /// Per-head norms of queries and keys (Qwen3, Gemma 3).
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// Norms of the attention and FFN outputs (Gemma 3).
    post_attn_norm: Option<Vec<f32>>,
    post_ffn_norm: Option<Vec<f32>>,
    /// Each projection's own input norm (bitnet-embedding), in the order q, k, v, o, gate, up,
    /// down.
    norms_in: Option<Box<[Vec<f32>; 7]>>,
}

/// GGUF names of the per-projection input norms, in [`Layer::norms_in`]'s order.
const NORMS_IN: [&str; 7] = [
    "attn_q_norm_in",
    "attn_k_norm_in",
    "attn_v_norm_in",
    "attn_output_norm_in",
    "ffn_gate_norm_in",
    "ffn_up_norm_in",
    "ffn_down_norm_in",
];

/// One sequence's part of a [`Model::forward_batch`] step.
#[derive(Debug)]
pub struct Step<'a> {
    /// The new tokens, run at the cache's next positions.
    pub tokens: &'a [u32],
    /// The sequence's cache.
    pub cache: &'a mut KvCache,
    /// Logits of every new token, or only of the last.
    pub all_logits: bool,
}

/// Options for loading.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Threads for the matmuls and attention (0: one per physical core).
    pub threads: usize,
    /// The kernel set (`None`: the one `BITNET_KERNEL` names, else the fastest this CPU runs).
    pub kernels: Option<Kernels>,
}

/// A loaded model: weights stay in the memory-mapped file. One model serves any number of
/// sequences, each with its own [`KvCache`] (see [`crate::Sequence`] for generation).
///
/// ```
/// use bitnet_model::{LoadOptions, Model, Tokenizer, argmax};
/// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf");
/// let model = Model::load(path, LoadOptions::default())?;
/// let tok = Tokenizer::from_metadata(model.metadata())?;
/// let ids = tok.encode("The Rust compiler", true)?;
/// let mut cache = model.new_cache(64)?;
/// let logits = model.forward(&ids, &mut cache, false)?; // the last position's
/// assert_eq!(logits.len(), model.config.vocab_size);
/// println!("next: {:?} ({} kernels)", tok.decode(&[argmax(&logits)], false)?, model.kernel_name());
/// # Ok::<(), bitnet_model::ModelError>(())
/// ```
pub struct Model {
    pub config: Config,
    file: GgufFile,
    embed: Matrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    head: Matrix,
    kernels: Kernels,
    pool: Pool,
    /// Activation buffers reused across matmuls and passes.
    bufs: BufferPool,
    /// Time per part of the graph, when switched on ([`Model::set_profiling`]).
    profiler: Profiler,
    /// How long loading took.
    pub load_time: Duration,
    /// How the weights' pages came out (2 MiB pages stream faster: `bitnet_format::pages`).
    pub pages: Pages,
    /// The matrices repacked at load into a type the kernels run faster (TQ1_0 → TL2, ...).
    pub repacked: Repacked,
}

/// Matrices repacked at load, by (file type, type run), and the time it took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Repacked {
    pub counts: std::collections::BTreeMap<(&'static str, &'static str), usize>,
    pub time: Duration,
}

impl Repacked {
    fn add(&mut self, from: &'static str, to: &'static str, count: usize, time: Duration) {
        *self.counts.entry((from, to)).or_default() += count;
        self.time += time;
    }
}

impl std::fmt::Display for Repacked {
    /// "no repacking", or e.g. "210 TQ1_0 matrices run as TL2, repacked in 0.85 s".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.counts.is_empty() {
            return write!(f, "no repacking");
        }
        for (i, ((from, to), n)) in self.counts.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            write!(f, "{sep}{n} {from} matri{} run as {to}", if *n == 1 { "x" } else { "ces" })?;
        }
        write!(f, ", repacked in {:.2} s", self.time.as_secs_f64())?;
        // A file in the type the kernels run loads without the wait (seconds for 7B, 20–60 s for
        // a 70B TQ1_0 file on a 2-vCPU VM).
        if self.time >= REPACK_HINT && self.counts.keys().all(|&(_, to)| to == "TL2") {
            write!(f, " (a file written by `bitnet convert --outtype tl2` loads without it)")?;
        }
        Ok(())
    }
}

/// How the load message names I2_S moved to the four-row order.
const ROWS4: &str = "I2_S in the four-row order";

/// The repacking time from which the load message says how to do without it.
const REPACK_HINT: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("config", &self.config).field("kernels", &self.kernels.name()).finish()
    }
}

impl Model {
    /// Maps and validates a GGUF model.
    pub fn load(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Model> {
        let start = Instant::now();
        let (file, pages) = GgufFile::open_weights(path, ReadOptions::default())?;
        let config = Config::from_metadata(file.metadata())?;
        let c = &config;
        let (q_dim, kv_dim) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let kernels = match opts.kernels {
            Some(k) => k,
            None => Kernels::from_env().map_err(ModelError::Kernel)?,
        };
        let threads = if opts.threads == 0 { crate::threads::physical_cores() } else { opts.threads };
        let repacked = std::cell::RefCell::new(Repacked::default());
        let m = |name: &str, rows, cols| -> Result<Matrix> {
            let loaded = Matrix::load(&file, name, rows, cols)?;
            let (in_file, from) = (loaded.file_range(), loaded.ternary_format());
            let start = Instant::now();
            let suited = loaded.suited_to(file.bytes(), &kernels, threads)?;
            if let (Some(range), None) = (in_file, suited.file_range()) {
                // Repacked: its file bytes are not read again.
                file.release_pages(range);
                if let (Some(from), Some(to)) = (from, suited.ternary_format()) {
                    repacked.borrow_mut().add(from.type_name(), to.type_name(), 1, start.elapsed());
                }
            }
            Ok(suited)
        };
        let embed = m("token_embd.weight", c.vocab_size, c.hidden)?;
        check_block_count(&file, c)?;
        // Never sized from the file's count up front: each layer is pushed once its tensors load.
        let mut layers = Vec::new();
        for l in 0..c.layers {
            let p = |n: &str| format!("blk.{l}.{n}.weight");
            let sub = |n: &str, len| if c.sub_norms { vector(&file, &p(n), len).map(Some) } else { Ok(None) };
            let when = |on: bool, n: &str, len| if on { vector(&file, &p(n), len).map(Some) } else { Ok(None) };
            // The input norms come as a set: all seven or none (a model without them is a plain
            // ternary Qwen3 / Gemma 3).
            let norms_in = if file.tensor_info(&p(NORMS_IN[0])).is_some() {
                let lens = [c.hidden, c.hidden, c.hidden, q_dim, c.hidden, c.hidden, c.ff];
                let mut v = Vec::with_capacity(7);
                for (n, len) in NORMS_IN.iter().zip(lens) {
                    v.push(vector(&file, &p(n), len)?);
                }
                Some(Box::new(v.try_into().expect("seven norms")))
            } else {
                None
            };
            layers.push(Layer {
                q_norm: when(c.qk_norm, "attn_q_norm", c.head_dim)?,
                k_norm: when(c.qk_norm, "attn_k_norm", c.head_dim)?,
                post_attn_norm: when(c.post_norms, "post_attention_norm", c.hidden)?,
                post_ffn_norm: when(c.post_norms, "post_ffw_norm", c.hidden)?,
                norms_in,
                attn_norm: vector(&file, &p("attn_norm"), c.hidden)?,
                wq: m(&p("attn_q"), q_dim, c.hidden)?,
                wk: m(&p("attn_k"), kv_dim, c.hidden)?,
                wv: m(&p("attn_v"), kv_dim, c.hidden)?,
                wo: m(&p("attn_output"), c.hidden, q_dim)?,
                attn_sub_norm: sub("attn_sub_norm", c.hidden)?,
                ffn_norm: vector(&file, &p("ffn_norm"), c.hidden)?,
                w_gate: m(&p("ffn_gate"), c.ff, c.hidden)?,
                w_up: m(&p("ffn_up"), c.ff, c.hidden)?,
                w_down: m(&p("ffn_down"), c.hidden, c.ff)?,
                ffn_sub_norm: sub("ffn_sub_norm", c.ff)?,
            });
        }
        // I2_S in the order the set reads fastest, all in one buffer (see `to_rows4`).
        let mut rows4: Vec<&mut Matrix> = layers
            .iter_mut()
            .flat_map(|l: &mut Layer| {
                [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down]
            })
            .filter(|m| crate::weights::wants_rows4(m, &kernels))
            .collect();
        if !rows4.is_empty() {
            let start = Instant::now();
            crate::weights::to_rows4(&mut rows4, file.bytes(), threads, |range| file.release_pages(range))?;
            repacked.borrow_mut().add("I2_S", ROWS4, rows4.len(), start.elapsed());
        }
        let output_norm = vector(&file, "output_norm.weight", c.hidden)?;
        let head = if file.tensor_info("output.weight").is_some() {
            m("output.weight", c.vocab_size, c.hidden)?
        } else {
            embed.clone()
        };
        if let crate::weights::MatrixKind::Ternary { .. } = embed.kind {
            return Err(ModelError::BadTensor {
                name: "token_embd.weight".into(),
                message: "ternary embeddings are not supported".into(),
            });
        }
        Ok(Model {
            config,
            file,
            embed,
            layers,
            output_norm,
            head,
            kernels,
            pool: Pool::try_new(threads)?,
            bufs: BufferPool::default(),
            profiler: Profiler::default(),
            load_time: start.elapsed(),
            pages,
            repacked: repacked.into_inner(),
        })
    }

    /// The model file's metadata (for the tokenizer and chat template).
    pub fn metadata(&self) -> &bitnet_format::Metadata {
        self.file.metadata()
    }

    /// Bytes of the mapped file.
    pub fn file_size(&self) -> usize {
        self.file.bytes().len()
    }

    /// The name of the kernel set in use.
    pub fn kernel_name(&self) -> &'static str {
        self.kernels.name()
    }

    /// The kernel set in use.
    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Threads used per matmul.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The KV cache type for generation when none is asked for: q8_0 where the heads are whole
    /// 32-element blocks (its perplexity cost on the demo model is 0.005%, below the 0.1% that
    /// would keep f16, and it is never slower: docs/bench.md), else f16.
    pub fn preferred_kv_type(&self) -> KvType {
        if self.config.head_dim.is_multiple_of(KvBlock::ELEMENTS) { KvType::Q8_0 } else { KvType::F16 }
    }

    /// A fresh exact (f32) KV cache for `ctx` positions.
    pub fn new_cache(&self, ctx: usize) -> Result<KvCache> {
        self.new_cache_of(ctx, KvType::F32)
    }

    /// Bytes one position of one sequence takes in a KV cache of `ty` (keys and values of every
    /// layer).
    pub fn kv_bytes_per_token(&self, ty: KvType) -> usize {
        self.config.layers * 2 * ty.row_bytes(self.config.kv_heads * self.config.head_dim)
    }

    /// A KV cache for `ctx` positions holding `ty` elements. Its memory grows as positions are
    /// filled; a `ctx` whose full cache could not fit this machine's memory (RAM and swap) is an
    /// error naming the bytes it needs.
    pub fn new_cache_of(&self, ctx: usize, ty: KvType) -> Result<KvCache> {
        if ctx == 0 {
            return Err(ModelError::Invalid("the context must hold at least 1 token".into()));
        }
        let kv_dim = self.config.kv_heads * self.config.head_dim;
        ty.check_heads(self.config.head_dim)?;
        let row = ty.row_bytes(kv_dim);
        let bytes = ctx
            .checked_mul(row)
            .and_then(|n| n.checked_mul(2))
            .and_then(|n| n.checked_mul(self.config.layers))
            .ok_or_else(|| ModelError::Invalid(format!("a KV cache of {ctx} positions is too large to address")))?;
        if let Some(have) = crate::threads::memory_bytes()
            && bytes as u64 > have
        {
            return Err(ModelError::Invalid(format!(
                "a KV cache of {ctx} positions needs {:.1} GiB ({} layers × keys and values × {row} bytes \
                 per position), more than this machine's {:.1} GiB of memory (lower --ctx-size)",
                bytes as f64 / GIB,
                self.config.layers,
                have as f64 / GIB
            )));
        }
        Ok(KvCache { ctx, len: 0, kv_dim, head_dim: self.config.head_dim, store: KvStore::new(ty, self.config.layers) })
    }

    fn matmul(&self, w: &Matrix, x: &[f32]) -> Result<Buf<'_>> {
        let [out] = self.matmuls([w], x)?;
        Ok(out)
    }

    /// Activation rows quantized for the ternary kernels, a prompt's rows split over the threads
    /// (in the pieces `Pool::tokens` gives a matmul's threads, kept apart: [`Acts`]).
    fn quantize(&self, x: &[f32], cols: usize) -> Result<Acts> {
        let n = x.len() / cols.max(1);
        let parts = self.pool.threads().min(n / 16);
        let kernel = self.kernels.ternary();
        if parts <= 1 {
            return Ok(Acts::new(vec![kernel.quantize(x, cols)?]));
        }
        let chunk = n.div_ceil(parts) * cols;
        let part = |p: usize| kernel.quantize(&x[(p * chunk).min(x.len())..((p + 1) * chunk).min(x.len())], cols);
        let parts = self.pool.map(parts, part).into_iter().collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Acts::new(parts))
    }

    /// `w · (RMSNorm(x) · norm)` when the projection has its own input norm, else `w · x`.
    fn normed_matmul(&self, w: &Matrix, norm: Option<&[f32]>, x: &[f32]) -> Result<Buf<'_>> {
        match norm {
            Some(n) => {
                let h = self.normed(x, n);
                self.matmul(w, &h)
            }
            None => self.matmul(w, x),
        }
    }

    /// `RMSNorm(x) · w` for every `w.len()`-wide row of `x`, into a buffer of the pool; a prompt's
    /// rows spread over the threads.
    fn normed(&self, x: &[f32], w: &[f32]) -> Buf<'_> {
        let mut h = self.bufs.overwritten(x.len());
        let eps = self.config.rms_eps;
        self.pool.each_rows(x.len() / w.len(), &mut h, x, |_, h, x| {
            h.copy_from_slice(x);
            rms_norm(h, w, eps);
        });
        h
    }

    /// `rms_norm` in place, a prompt's rows spread over the threads.
    fn norm_rows(&self, x: &mut [f32], w: &[f32]) {
        let eps = self.config.rms_eps;
        self.pool.each_rows(x.len() / w.len(), x, &[], |_, x, _| rms_norm(x, w, eps));
    }

    /// The residual `x += y` over `rows` rows, spread over the threads.
    fn add_rows(&self, rows: usize, x: &mut [f32], y: &[f32]) {
        self.pool.each_rows(rows, x, y, |_, x, y| x.iter_mut().zip(y).for_each(|(a, b)| *a += b));
    }

    /// Several matrices applied to the same input, which is quantized once for all of them.
    fn matmuls<const K: usize>(&self, ws: [&Matrix; K], x: &[f32]) -> Result<[Buf<'_>; K]> {
        let ternary = ws.iter().any(|w| matches!(w.kind, crate::weights::MatrixKind::Ternary { .. }));
        let t = self.profiler.start();
        let acts = if ternary { Some(self.quantize(x, ws[0].cols)?) } else { None };
        self.profiler.record("quantize", t, 0);
        let mut outs: [Buf<'_>; K] = std::array::from_fn(|i| self.bufs.overwritten(x.len() / ws[i].cols * ws[i].rows));
        let all_ternary = ws.iter().all(|w| matches!(w.kind, crate::weights::MatrixKind::Ternary { .. }));
        if let Some(acts) = &acts
            && K > 1
            && all_ternary
            && ws.iter().all(|w| w.part == ws[0].part)
            && x.len() == ws[0].cols
        {
            // One token through matrices of one profile part (q/k/v, gate/up): one parallel
            // region for all (2B-4T's 640-row K and V each in a region of their own streamed 17
            // GB/s at two threads where the large matrices read 25-28).
            let t = self.profiler.start();
            let mut parts: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
            crate::weights::matmul_one_token(&ws, self.file.bytes(), &self.kernels, &self.pool, acts, &mut parts)?;
            self.profiler.record(ws[0].part, t, ws.iter().map(|w| w.len() as u64).sum());
            return Ok(outs);
        }
        for (w, out) in ws.iter().zip(&mut outs) {
            let t = self.profiler.start();
            w.matmul(self.file.bytes(), &self.kernels, &self.pool, x, acts.as_ref(), out)?;
            self.profiler.record(w.part, t, w.len() as u64);
        }
        Ok(outs)
    }

    /// Causal grouped-query attention of the `n` new tokens (queries `q`, `n × heads × hd`) over
    /// the cached keys/values of positions `0..pos0+n`. Heads run in parallel when worth it.
    ///
    /// A non-causal model's tokens see every position of the cache; a sliding `window` limits
    /// them to keys within `window` positions (transformers' `|q − k| < window`).
    fn attention(
        &self,
        q: &[f32],
        (k, v): (KvSlice<'_>, KvSlice<'_>),
        pos0: usize,
        n: usize,
        window: Option<usize>,
    ) -> Buf<'_> {
        let c = &self.config;
        let (hd, kv_dim, group) = (c.head_dim, c.kv_heads * c.head_dim, c.heads / c.kv_heads);
        let scale = c.attn_scale;
        let end = pos0 + n;
        let ops = self.kernels.f32();
        // Keys from..to that the query at row i sees: causal ones end at its own position.
        // Both ends never decrease with i.
        let range = |i: usize| {
            let p = pos0 + i;
            let from = window.map_or(0, |w| (p + 1).saturating_sub(w));
            let to = if c.causal { p + 1 } else { window.map_or(end, |w| end.min(p + w)) };
            (from, to)
        };
        // Fewer than BLOCKED_ROWS rows (`one_job`) go one at a time, straight on the stored
        // cache. A long cache is read in blocks of KB keys: the query heads that share a KV head
        // (GQA) take each block in turn while it is in L1, instead of each streaming the whole
        // cache. A cache of at most 2·KB positions is one block (each row's sums are then exactly
        // the unblocked ones).
        const KB: usize = 128;
        let kb = if end >= 2 * KB { KB } else { usize::MAX };
        // Jobs of `sub` query heads sharing one KV head: as many heads per job as keeps the
        // jobs a multiple of the threads (20 heads on 5 KV heads, 2 threads: 10 jobs of 2).
        let threads = self.pool.threads();
        let sub =
            (1..=group).rev().find(|&s| group.is_multiple_of(s) && (c.heads / s).is_multiple_of(threads)).unwrap_or(1);
        let one_job = |job: usize| {
            let (h0, kvh) = (job * sub, job * sub / group);
            let mut out = self.bufs.zeroed(sub * n * hd);
            let mut scores = self.bufs.overwritten(sub * end);
            let q_of = |i: usize, h: usize| &q[(i * c.heads + h0 + h) * hd..][..hd];
            for i in 0..n {
                let (f, t) = range(i);
                // The row's keys in blocks of at most `kb`: (first, end) of each.
                let blocks = || (f..t).step_by(kb.min(t - f).max(1)).map(|a| (a, a.saturating_add(kb).min(t)));
                for (a, b) in blocks() {
                    let kv = a * kv_dim + kvh * hd;
                    for h in 0..sub {
                        let s = &mut scores[h * end..][a..b];
                        match k {
                            KvSlice::F32(k) => (ops.scores)(q_of(i, h), &k[kv..], kv_dim, s),
                            KvSlice::F16(k) => (ops.scores_f16)(q_of(i, h), &k[2 * kv..], kv_dim, s),
                            KvSlice::Blocks(ty, k) => {
                                let (row, at) = block_offsets(ty, kv_dim, hd, a, kvh);
                                (ops.scores_kv)(ty, q_of(i, h), &k[at..], row, s)
                            }
                        }
                    }
                }
                for h in 0..sub {
                    let s = &mut scores[h * end..][f..t];
                    s.iter_mut().for_each(|x| *x *= scale);
                    (ops.softmax)(s);
                }
                for (a, b) in blocks() {
                    let kv = a * kv_dim + kvh * hd;
                    for h in 0..sub {
                        let s = &scores[h * end..][a..b];
                        let o = &mut out[(h * n + i) * hd..][..hd];
                        match v {
                            KvSlice::F32(v) => (ops.weighted_sum)(s, &v[kv..], kv_dim, o),
                            KvSlice::F16(v) => (ops.weighted_sum_f16)(s, &v[2 * kv..], kv_dim, o),
                            KvSlice::Blocks(ty, v) => {
                                let (row, at) = block_offsets(ty, kv_dim, hd, a, kvh);
                                (ops.weighted_sum_kv)(ty, s, &v[at..], row, o)
                            }
                        }
                    }
                }
            }
            out
        };
        // Several rows: the keys and values every row sees, as f32 (keys transposed) once per
        // job, then each block of QB rows as two small products (queries × keys, weights ×
        // values) for every head of the job. Row by row, a 125M-shape prompt spent a third of
        // its time at 512 tokens in attention (a horizontal sum and a conversion per key and
        // query).
        let blocked_job = |job: usize| {
            const QB: usize = 32;
            let (h0, kvh) = (job * sub, job * sub / group);
            let (first, last) = (range(0).0, range(n - 1).1);
            let span = last - first;
            // Keys transposed, `ks` columns a row: whole vectors for any row block's range.
            let ks = span.next_multiple_of(16) + 16;
            let mut vals = self.bufs.overwritten(span.max(1) * hd);
            kv_rows_f32(ops, k, (kv_dim, hd, kvh), (first, last), &mut vals);
            let mut kt = self.bufs.zeroed(hd * ks);
            (ops.transpose)(Mat { data: &vals, rows: span, cols: hd, stride: hd }, &mut kt, ks);
            kv_rows_f32(ops, v, (kv_dim, hd, kvh), (first, last), &mut vals);
            let mut out = self.bufs.zeroed(sub * n * hd);
            let mut scores = self.bufs.overwritten(sub * QB.min(n) * ks);
            for r0 in (0..n).step_by(QB) {
                let (r1, m) = ((r0 + QB).min(n), QB.min(n - r0));
                let (lo, hi) = (range(r0).0, range(r1 - 1).1);
                // Score rows padded to whole vectors of keys; key `lo + j` in column `j`.
                let wp = (hi - lo).next_multiple_of(16);
                let s = &mut scores[..sub * m * wp];
                s.fill(0.0);
                for h in 0..sub {
                    let a = Mat { data: &q[(r0 * c.heads + h0 + h) * hd..], rows: m, cols: hd, stride: c.heads * hd };
                    let b = Mat { data: &kt[lo - first..], rows: hd, cols: wp, stride: ks };
                    (ops.matmul_add)(a, b, &mut s[h * m * wp..], wp);
                    for i in r0..r1 {
                        let row = &mut s[(h * m + i - r0) * wp..][..wp];
                        let (f, t) = range(i);
                        let live = &mut row[f - lo..t - lo];
                        live.iter_mut().for_each(|x| *x *= scale);
                        (ops.softmax)(live);
                        // Keys this row does not see weigh nothing in the values' product.
                        row[..f - lo].fill(0.0);
                        row[t - lo..].fill(0.0);
                    }
                    let a = Mat { data: &s[h * m * wp..], rows: m, cols: hi - lo, stride: wp };
                    let b = Mat { data: &vals[(lo - first) * hd..], rows: hi - lo, cols: hd, stride: hd };
                    (ops.matmul_add)(a, b, &mut out[(h * n + r0) * hd..], hd);
                }
            }
            out
        };
        // Below ~16k multiply-adds waking the pool costs more than it saves.
        let work = n * (pos0 + n) * hd * c.heads;
        let jobs = c.heads / sub;
        let outs: Vec<Buf<'_>> = match (n >= BLOCKED_ROWS, work < 1 << 14) {
            (true, true) => (0..jobs).map(blocked_job).collect(),
            (true, false) => self.pool.map(jobs, blocked_job),
            (false, true) => (0..jobs).map(one_job).collect(),
            (false, false) => self.pool.map(jobs, one_job),
        };
        let mut attn = self.bufs.overwritten(n * c.heads * hd);
        for (job, out) in outs.iter().enumerate() {
            for h in 0..sub {
                for i in 0..n {
                    attn[(i * c.heads + job * sub + h) * hd..][..hd].copy_from_slice(&out[(h * n + i) * hd..][..hd]);
                }
            }
        }
        attn
    }

    /// Runs `tokens` at the cache's next positions and returns their logits (`n × vocab`), or
    /// only the last token's when `all_logits` is false.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Vec<f32>> {
        let mut steps = [Step { tokens, cache, all_logits }];
        Ok(self.forward_batch(&mut steps)?.pop().expect("one step, one result"))
    }

    /// One forward pass over several sequences at once, each at its own position with its own
    /// cache: the matmuls run over every step's rows together (each weight matrix is read once
    /// for all of them, which is what makes serving many sequences cheap), attention and the
    /// cache writes per sequence. Returns each step's logits as [`Model::forward`] would. Every
    /// step is checked before anything runs, so an error leaves every cache as it was.
    ///
    /// ```
    /// # use bitnet_model::{LoadOptions, Model, Step};
    /// # let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"), LoadOptions::default())?;
    /// let (mut a, mut b) = (model.new_cache(64)?, model.new_cache(64)?);
    /// model.forward(&[1, 2, 3, 4], &mut a, false)?; // `a` is further along than `b`
    /// let out = model.forward_batch(&mut [
    ///     Step { tokens: &[5], cache: &mut a, all_logits: false },
    ///     Step { tokens: &[1, 2], cache: &mut b, all_logits: false },
    /// ])?;
    /// assert_eq!((out.len(), a.len(), b.len()), (2, 5, 2));
    /// # Ok::<(), bitnet_model::ModelError>(())
    /// ```
    pub fn forward_batch(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let t = self.profiler.start();
        let out = self.logits(steps);
        self.profiler.record(TOTAL, t, 0);
        out
    }

    /// Switches the time-per-part profile of forward passes on or off ([`Model::take_profile`]).
    pub fn set_profiling(&self, on: bool) {
        self.profiler.set(on);
    }

    /// The profile since it was switched on or last taken: each part's time and weight bytes,
    /// and the whole passes' under [`TOTAL`] (the rest of a pass is norms, RoPE, residuals,
    /// activation functions and the embedding lookup).
    pub fn take_profile(&self) -> Vec<Part> {
        self.profiler.take()
    }

    fn logits(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let (x, starts) = self.hidden_states(steps)?;
        let c = &self.config;
        // The rows whose logits are wanted, through one head matmul for every step.
        let wanted: Vec<(usize, usize)> = steps
            .iter()
            .zip(&starts)
            .map(|(s, &start)| {
                let n = s.tokens.len();
                if s.all_logits { (start, n) } else { (start + n - 1, 1) }
            })
            .collect();
        let mut last = Vec::with_capacity(wanted.iter().map(|w| w.1).sum::<usize>() * c.hidden);
        for &(from, n) in &wanted {
            last.extend_from_slice(&x[from * c.hidden..(from + n) * c.hidden]);
        }
        rms_norm(&mut last, &self.output_norm, c.rms_eps);
        let logits = self.matmul(&self.head, &last)?;
        if steps.len() == 1 {
            return Ok(vec![logits.into_vec()]);
        }
        let vocab = c.vocab_size;
        let mut at = 0;
        Ok(wanted
            .iter()
            .map(|&(_, n)| {
                at += n;
                logits[(at - n) * vocab..at * vocab].to_vec()
            })
            .collect())
    }

    /// Embeddings of several token sequences (texts already tokenized, with the special tokens
    /// the model's tokenizer adds: see [`crate::Tokenizer::encode_for_embedding`]): the final
    /// normed hidden states pooled per sequence, then scaled to unit length when `normalize`.
    /// All sequences run through one pass (their rows share every weight read, the many-token
    /// GEMM's case). A sequence longer than the model's context is an error naming both.
    ///
    /// ```
    /// # use bitnet_model::{LoadOptions, Model, Pooling};
    /// # let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"), LoadOptions::default())?;
    /// let v = model.embed(&[&[1, 2, 3][..], &[4, 5][..]], Pooling::Mean, true)?;
    /// assert_eq!((v.len(), v[0].len()), (2, model.config.hidden));
    /// let norm: f32 = v[1].iter().map(|x| x * x).sum::<f32>().sqrt();
    /// assert!((norm - 1.0).abs() < 1e-5);
    /// # Ok::<(), bitnet_model::ModelError>(())
    /// ```
    pub fn embed(&self, texts: &[&[u32]], pooling: Pooling, normalize: bool) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        for t in texts {
            if t.is_empty() {
                return Err(ModelError::Invalid("cannot embed an empty text (no tokens)".into()));
            }
            if t.len() > c.context_length {
                return Err(ModelError::Invalid(format!(
                    "a text of {} tokens is longer than the model's context of {} tokens",
                    t.len(),
                    c.context_length
                )));
            }
        }
        let mut caches = texts.iter().map(|t| self.new_cache_of(t.len(), KvType::F32)).collect::<Result<Vec<_>>>()?;
        let mut steps: Vec<Step<'_>> = texts
            .iter()
            .zip(caches.iter_mut())
            .map(|(tokens, cache)| Step { tokens, cache, all_logits: true })
            .collect();
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let (mut x, starts) = self.hidden_states(&mut steps)?;
        rms_norm(&mut x, &self.output_norm, c.rms_eps);
        let h = c.hidden;
        Ok(texts
            .iter()
            .zip(&starts)
            .map(|(t, &start)| {
                let rows = &x[start * h..(start + t.len()) * h];
                let mut v = match pooling {
                    Pooling::Cls => rows[..h].to_vec(),
                    Pooling::Last => rows[rows.len() - h..].to_vec(),
                    Pooling::Mean => {
                        // Summed in f64: a long text's mean does not depend on its order.
                        let mut sum = vec![0f64; h];
                        for row in rows.chunks_exact(h) {
                            sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
                        }
                        sum.iter().map(|s| (s / t.len() as f64) as f32).collect()
                    }
                };
                if normalize {
                    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
                    if norm > 0.0 {
                        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
                    }
                }
                v
            })
            .collect())
    }

    /// Every step checked before anything runs.
    fn check_steps(&self, steps: &[Step<'_>]) -> Result<()> {
        let c = &self.config;
        let kv_dim = c.kv_heads * c.head_dim;
        for step in steps.iter() {
            let n = step.tokens.len();
            if n == 0 {
                return Err(ModelError::Invalid("no tokens to run".into()));
            }
            if step.cache.kv_dim != kv_dim || step.cache.store.layers() != c.layers {
                return Err(ModelError::Invalid("this KV cache was made for another model".into()));
            }
            if step.cache.len + n > step.cache.ctx {
                return Err(ModelError::ContextFull { needed: step.cache.len + n, ctx: step.cache.ctx });
            }
            if let Some(&t) = step.tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
                return Err(ModelError::BadToken { id: t, vocab: c.vocab_size });
            }
        }
        Ok(())
    }

    /// The layers over every step's tokens: the final hidden states (before the output norm)
    /// of all rows, step i owning rows `starts[i]..starts[i] + n_i`. Advances every cache.
    fn hidden_states(&self, steps: &mut [Step<'_>]) -> Result<(Vec<f32>, Vec<usize>)> {
        self.check_steps(steps)?;
        let c = &self.config;
        let (hd, kv_dim, q_dim) = (c.head_dim, c.kv_heads * c.head_dim, c.heads * c.head_dim);
        let starts: Vec<usize> =
            steps.iter().scan(0, |at, s| Some(std::mem::replace(at, *at + s.tokens.len()))).collect();
        let rows: usize = steps.iter().map(|s| s.tokens.len()).sum();
        let bytes = self.file.bytes();
        let mut x = vec![0f32; rows * c.hidden];
        let tokens = steps.iter().flat_map(|s| s.tokens.iter());
        for (row, &t) in x.chunks_exact_mut(c.hidden).zip(tokens) {
            self.embed.dense_row(bytes, t as usize, row);
        }
        if let Some(s) = c.embed_scale {
            x.iter_mut().for_each(|v| *v *= s);
        }
        let spans: Vec<(usize, usize)> = steps.iter().map(|s| (s.cache.len, s.tokens.len())).collect();
        let rope = RopeTable::new(c, c.rope_base, &spans);
        let rope_swa = c.sliding_layers.contains(&true).then(|| RopeTable::new(c, c.rope_base_swa, &spans));
        for (l, layer) in self.layers.iter().enumerate() {
            let sliding = c.sliding_layers.get(l) == Some(&true);
            let window = if sliding { c.sliding_window } else { None };
            let rope = if sliding { rope_swa.as_ref().expect("made when a layer slides") } else { &rope };
            let h = self.normed(&x, &layer.attn_norm);
            let [mut q, mut k, v] = match &layer.norms_in {
                // Each projection normalizes (and so quantizes) its own copy of the input.
                Some(n) => [
                    self.normed_matmul(&layer.wq, Some(&n[0]), &h)?,
                    self.normed_matmul(&layer.wk, Some(&n[1]), &h)?,
                    self.normed_matmul(&layer.wv, Some(&n[2]), &h)?,
                ],
                None => self.matmuls([&layer.wq, &layer.wk, &layer.wv], &h)?,
            };
            for (x, heads, norm) in [(&mut q, c.heads, &layer.q_norm), (&mut k, c.kv_heads, &layer.k_norm)] {
                self.pool.each_rows(rows, x, &[], |first, x, _| {
                    if let Some(w) = norm {
                        rms_norm(x, w, c.rms_eps);
                    }
                    rope.apply(x, first, heads, hd);
                });
            }
            let mut attn = if steps.len() == 1 { None } else { Some(self.bufs.overwritten(rows * q_dim)) };
            let mut single = None;
            for (step, &start) in steps.iter_mut().zip(&starts) {
                let (pos0, n) = (step.cache.len, step.tokens.len());
                let kv = start * kv_dim..(start + n) * kv_dim;
                let t = self.profiler.start();
                step.cache.store.write(l, pos0 * kv_dim, &k[kv.clone()], &v[kv])?;
                let out =
                    self.attention(&q[start * q_dim..(start + n) * q_dim], step.cache.store.layer(l), pos0, n, window);
                self.profiler.record("attention", t, 0);
                match &mut attn {
                    Some(all) => all[start * q_dim..(start + n) * q_dim].copy_from_slice(&out),
                    None => single = Some(out),
                }
            }
            let mut attn = attn.or(single).expect("at least one step");
            if let Some(w) = &layer.attn_sub_norm {
                self.norm_rows(&mut attn, w);
            }
            let mut o = self.normed_matmul(&layer.wo, layer.norms_in.as_ref().map(|n| &n[3][..]), &attn)?;
            if let Some(w) = &layer.post_attn_norm {
                self.norm_rows(&mut o, w);
            }
            self.add_rows(rows, &mut x, &o);

            let h = self.normed(&x, &layer.ffn_norm);
            let [mut f, up] = match &layer.norms_in {
                Some(n) => [
                    self.normed_matmul(&layer.w_gate, Some(&n[4]), &h)?,
                    self.normed_matmul(&layer.w_up, Some(&n[5]), &h)?,
                ],
                None => self.matmuls([&layer.w_gate, &layer.w_up], &h)?,
            };
            let ops = self.kernels.f32();
            self.pool.each_rows(rows, &mut f, &up, |_, f, up| {
                (ops.glu)(c.activation, f, up);
                if let Some(w) = &layer.ffn_sub_norm {
                    rms_norm(f, w, c.rms_eps);
                }
            });
            let mut d = self.normed_matmul(&layer.w_down, layer.norms_in.as_ref().map(|n| &n[6][..]), &f)?;
            if let Some(w) = &layer.post_ffn_norm {
                self.norm_rows(&mut d, w);
            }
            self.add_rows(rows, &mut x, &d);
        }
        for step in steps.iter_mut() {
            step.cache.len += step.tokens.len();
        }
        Ok((x, starts))
    }
}

/// The file's `block_count` must match the `blk.N.*` tensors it holds: a count too large is a
/// missing tensor, one too small would silently run a shrunken model.
fn check_block_count(file: &GgufFile, c: &Config) -> Result<()> {
    let blocks = file
        .tensors()
        .iter()
        .filter_map(|t| t.name.strip_prefix("blk.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |b| b + 1);
    if blocks != c.layers {
        return Err(ModelError::BadMetadata(format!(
            "{}.block_count = {} but the file has tensors for {blocks} blocks",
            c.architecture, c.layers
        )));
    }
    Ok(())
}

/// cos/sin of every rotated pair at positions `pos0..pos0+n`, computed in f32 as transformers does.
struct RopeTable {
    style: RopeStyle,
    dims: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The table for rows at positions `pos0..pos0 + n` of each `(pos0, n)` span, in order.
    fn new(c: &Config, base: f32, spans: &[(usize, usize)]) -> RopeTable {
        let half = c.rope_dims / 2;
        let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / base.powf((2 * i) as f32 / c.rope_dims as f32)).collect();
        let rows: usize = spans.iter().map(|s| s.1).sum();
        let (mut cos, mut sin) = (Vec::with_capacity(rows * half), Vec::with_capacity(rows * half));
        for p in spans.iter().flat_map(|&(pos0, n)| pos0..pos0 + n) {
            for f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        RopeTable { style: c.rope_style, dims: c.rope_dims, cos, sin }
    }

    /// Rotates each of the `heads` heads (size `hd`) of every row of `x`, its first row being the
    /// table's row `first`.
    fn apply(&self, x: &mut [f32], first: usize, heads: usize, hd: usize) {
        let half = self.dims / 2;
        for (t, row) in x.chunks_exact_mut(heads * hd).enumerate() {
            let t = first + t;
            let (cos, sin) = (&self.cos[t * half..][..half], &self.sin[t * half..][..half]);
            for head in row.chunks_exact_mut(hd) {
                for i in 0..half {
                    let (a, b) = match self.style {
                        RopeStyle::Neox => (i, i + half),
                        RopeStyle::Normal => (2 * i, 2 * i + 1),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x1 * cos[i] + x0 * sin[i];
                }
            }
        }
    }
}

/// Keys and values of every layer for the positions seen so far: one sequence's state, separate
/// from the weights. Its memory grows as positions are filled.
///
/// ```
/// # use bitnet_model::{KvType, LoadOptions, Model};
/// # let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"), LoadOptions::default())?;
/// let mut cache = model.new_cache_of(32, KvType::F16)?;
/// model.forward(&[1, 2, 3], &mut cache, false)?;
/// assert_eq!((cache.len(), cache.capacity()), (3, 32));
/// cache.truncate(1); // forget positions 1.. (to rerun them differently)
/// model.forward(&[7], &mut cache, false)?;
/// assert_eq!(cache.len(), 2);
/// # Ok::<(), bitnet_model::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct KvCache {
    ctx: usize,
    len: usize,
    kv_dim: usize,
    head_dim: usize,
    store: KvStore,
}

const GIB: f64 = (1u64 << 30) as f64;

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Exact: what the reference tests compare against transformers with.
    #[default]
    F32,
    /// Half the memory and half the bytes attention reads (llama.cpp's default); keys and values
    /// rounded to f16 (relative error ≤ 2⁻¹¹).
    F16,
    /// llama.cpp's `q8_0` blocks (32 int8 and an f16 scale: 8.5 bits per element), 53% of F16's
    /// bytes: for long contexts, where reading the cache costs more than the weights.
    Q8_0,
    /// llama.cpp's `q4_0` blocks (32 4-bit codes and an f16 scale: 4.5 bits per element), 28% of
    /// F16's bytes, at a larger accuracy cost (see docs/bench.md).
    Q4_0,
}

impl KvType {
    /// The block type of a quantized cache.
    fn block(self) -> Option<KvBlock> {
        match self {
            KvType::F32 | KvType::F16 => None,
            KvType::Q8_0 => Some(KvBlock::Q8_0),
            KvType::Q4_0 => Some(KvBlock::Q4_0),
        }
    }

    /// Bytes of `n` elements (for a block type, `n` a multiple of 32).
    pub fn row_bytes(self, n: usize) -> usize {
        match self.block() {
            None if self == KvType::F32 => 4 * n,
            None => 2 * n,
            Some(b) => b.bytes_of(n),
        }
    }

    /// A block type quantizes each head in whole blocks: an error naming the head size otherwise.
    fn check_heads(self, head_dim: usize) -> Result<()> {
        if self.block().is_some() && !head_dim.is_multiple_of(KvBlock::ELEMENTS) {
            return Err(ModelError::Invalid(format!(
                "a {self} KV cache quantizes each head in blocks of {}, but this model's heads have {head_dim} \
                 elements (use --kv-type f16)",
                KvBlock::ELEMENTS
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        })
    }
}

/// (bytes per position, byte offset of position `pos`'s head `kvh`) in a block-quantized layer.
fn block_offsets(ty: KvBlock, kv_dim: usize, hd: usize, pos: usize, kvh: usize) -> (usize, usize) {
    let row = ty.bytes_of(kv_dim);
    (row, pos * row + kvh * ty.bytes_of(hd))
}

/// Keys and values per layer, `positions × kv_dim` each, grown as positions are written.
#[derive(Debug, Clone)]
enum KvStore {
    F32 {
        k: Vec<Vec<f32>>,
        v: Vec<Vec<f32>>,
    },
    /// Little-endian f16 bytes.
    F16 {
        k: Vec<Vec<u8>>,
        v: Vec<Vec<u8>>,
    },
    /// Rows of `kv_dim / 32` blocks.
    Blocks {
        ty: KvBlock,
        k: Vec<Vec<u8>>,
        v: Vec<Vec<u8>>,
    },
}

/// Fewest rows (a prompt's tokens) whose attention runs as small matrix products
/// ([`Model::attention`]); fewer go row by row, reading the cache as it is stored.
const BLOCKED_ROWS: usize = 4;

/// Keys or values of positions `a..b` of KV head `kvh` (`kv_dim` floats a position, `hd` a
/// head) as f32 rows of `hd` in `out`, whatever the cache's element type.
fn kv_rows_f32(
    ops: &F32Ops,
    kv: KvSlice<'_>,
    (kv_dim, hd, kvh): (usize, usize, usize),
    (a, b): (usize, usize),
    out: &mut [f32],
) {
    for (p, o) in (a..b).zip(out.chunks_exact_mut(hd)) {
        let at = p * kv_dim + kvh * hd;
        match kv {
            KvSlice::F32(s) => o.copy_from_slice(&s[at..at + hd]),
            KvSlice::F16(s) => (ops.f16_to_f32)(&s[2 * at..2 * (at + hd)], o),
            KvSlice::Blocks(ty, s) => {
                let (_, off) = block_offsets(ty, kv_dim, hd, p, kvh);
                ty.dequantize(&s[off..off + ty.bytes_of(hd)], o);
            }
        }
    }
}

/// One layer's cached keys or values as attention reads them.
#[derive(Clone, Copy)]
enum KvSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [u8]),
    Blocks(KvBlock, &'a [u8]),
}

impl KvStore {
    fn new(ty: KvType, layers: usize) -> KvStore {
        match ty {
            KvType::F32 => KvStore::F32 { k: vec![Vec::new(); layers], v: vec![Vec::new(); layers] },
            KvType::F16 => KvStore::F16 { k: vec![Vec::new(); layers], v: vec![Vec::new(); layers] },
            KvType::Q8_0 | KvType::Q4_0 => KvStore::Blocks {
                ty: ty.block().expect("a block type"),
                k: vec![Vec::new(); layers],
                v: vec![Vec::new(); layers],
            },
        }
    }

    fn layers(&self) -> usize {
        match self {
            KvStore::F32 { k, .. } => k.len(),
            KvStore::F16 { k, .. } => k.len(),
            KvStore::Blocks { k, .. } => k.len(),
        }
    }

    /// Stores `k`, `v` (`n × kv_dim`) of layer `l` from element `at` on, growing the layer's
    /// buffers when they are shorter (amortized doubling; an allocation failure is an error).
    fn write(&mut self, l: usize, at: usize, k: &[f32], v: &[f32]) -> Result<()> {
        fn grown<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> Result<&mut Vec<T>> {
            if buf.len() < len {
                buf.try_reserve(len - buf.len()).map_err(|_| {
                    ModelError::Invalid(format!("out of memory growing the KV cache to {len} elements"))
                })?;
                buf.resize(len, T::default());
            }
            Ok(buf)
        }
        match self {
            KvStore::F32 { k: ks, v: vs } => {
                grown(&mut ks[l], at + k.len())?[at..at + k.len()].copy_from_slice(k);
                grown(&mut vs[l], at + v.len())?[at..at + v.len()].copy_from_slice(v);
            }
            KvStore::F16 { k: ks, v: vs } => {
                // Through half's slice conversion (F16C 8 at a time where the CPU has it): one
                // `f16::from_f32` per element, each a detected-feature call, was 3% of a
                // 125M-shape prompt.
                let put = |dst: &mut [u8], src: &[f32]| {
                    use half::slice::HalfFloatSliceExt;
                    let mut tmp = [half::f16::ZERO; 256];
                    for (d, s) in dst.chunks_mut(512).zip(src.chunks(256)) {
                        let tmp = &mut tmp[..s.len()];
                        tmp.convert_from_f32_slice(s);
                        for (d, h) in d.chunks_exact_mut(2).zip(tmp.iter()) {
                            d.copy_from_slice(&h.to_le_bytes());
                        }
                    }
                };
                put(&mut grown(&mut ks[l], 2 * (at + k.len()))?[2 * at..], k);
                put(&mut grown(&mut vs[l], 2 * (at + v.len()))?[2 * at..], v);
            }
            // Whole rows of blocks: `at` and the lengths are multiples of kv_dim, itself of 32.
            KvStore::Blocks { ty, k: ks, v: vs } => {
                ty.quantize(k, &mut grown(&mut ks[l], ty.bytes_of(at + k.len()))?[ty.bytes_of(at)..]);
                ty.quantize(v, &mut grown(&mut vs[l], ty.bytes_of(at + v.len()))?[ty.bytes_of(at)..]);
            }
        }
        Ok(())
    }

    fn layer(&self, l: usize) -> (KvSlice<'_>, KvSlice<'_>) {
        match self {
            KvStore::F32 { k, v } => (KvSlice::F32(&k[l]), KvSlice::F32(&v[l])),
            KvStore::F16 { k, v } => (KvSlice::F16(&k[l]), KvSlice::F16(&v[l])),
            KvStore::Blocks { ty, k, v } => (KvSlice::Blocks(*ty, &k[l]), KvSlice::Blocks(*ty, &v[l])),
        }
    }
}

impl KvSlice<'_> {
    /// The first `n` elements as f32.
    fn to_f32(self, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        match self {
            KvSlice::F32(x) => out.copy_from_slice(&x[..n]),
            KvSlice::F16(x) => {
                bitnet_quant::dense::dequantize_row(bitnet_format::TensorType::F16, &x[..2 * n], &mut out)
            }
            KvSlice::Blocks(ty, x) => ty.dequantize(&x[..ty.bytes_of(n)], &mut out),
        }
        out
    }
}

impl KvCache {
    /// The same positions in a cache of element type `ty` (keys and values rounded to it): the
    /// context without computing it again (`bitnet bench` measures every type at one depth so).
    ///
    /// ```
    /// # use bitnet_model::{KvType, LoadOptions, Model};
    /// # let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"), LoadOptions::default())?;
    /// let mut exact = model.new_cache_of(16, KvType::F32)?;
    /// model.forward(&[1, 2, 3], &mut exact, false)?;
    /// let mut small = exact.to_type(KvType::Q8_0)?;
    /// model.forward(&[4], &mut small, false)?;
    /// assert_eq!((small.len(), small.kv_type()), (4, KvType::Q8_0));
    /// # Ok::<(), bitnet_model::ModelError>(())
    /// ```
    pub fn to_type(&self, ty: KvType) -> Result<KvCache> {
        ty.check_heads(self.head_dim)?;
        let layers = self.store.layers();
        let mut store = KvStore::new(ty, layers);
        let n = self.len * self.kv_dim;
        for l in 0..layers {
            let (k, v) = self.store.layer(l);
            store.write(l, 0, &k.to_f32(n), &v.to_f32(n))?;
        }
        Ok(KvCache { store, ..*self })
    }

    /// The element type.
    pub fn kv_type(&self) -> KvType {
        match &self.store {
            KvStore::F32 { .. } => KvType::F32,
            KvStore::F16 { .. } => KvType::F16,
            KvStore::Blocks { ty: KvBlock::Q8_0, .. } => KvType::Q8_0,
            KvStore::Blocks { ty: KvBlock::Q4_0, .. } => KvType::Q4_0,
        }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn capacity(&self) -> usize {
        self.ctx
    }

    /// Forgets positions from `len` on (e.g. to restart a conversation).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_repack_says_how_to_skip_it() {
        let mut r = Repacked::default();
        assert_eq!(r.to_string(), "no repacking");
        r.add("TQ1_0", "TL2", 1, Duration::from_millis(850));
        assert_eq!(r.to_string(), "1 TQ1_0 matrix run as TL2, repacked in 0.85 s");
        r.add("TQ1_0", "TL2", 1, Duration::from_secs(20));
        let s = r.to_string();
        assert!(s.starts_with("2 TQ1_0 matrices run as TL2, repacked in 20.85 s ("), "{s}");
        assert!(s.contains("bitnet convert --outtype tl2"), "{s}");
    }
}
