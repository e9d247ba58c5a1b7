//! The instruction-set-independent half of every fast kernel crate (kernels-x86, kernels-arm):
//! argument checks, the view of a packed matrix a vector loop reads ([`Job`]), activation
//! preparation, the dense row loop, and the reference's final float operations. An instruction
//! set supplies only its inner loops, through [`TernaryIsa`] and [`DenseIsa`].
//!
//! Both traits are implemented on a *token*: a zero-sized value that the kernel crate builds only
//! after detecting the CPU features its loops use, so holding one proves they may run. The trait
//! methods are therefore safe; each implementation's `unsafe` call into its `#[target_feature]`
//! loop rests on the token (this crate itself has no unsafe code).
//!
//! Codes are `t + 1 ∈ {0, 1, 2}`; `Σ code·a − Σ a = Σ t·a` undoes the offset, with the
//! activation sum computed once per token (per 256-block for the TQ formats), so every integer
//! sum is exact and a fast kernel's result equals [`ScalarKernel`]'s bit for bit.

use std::ops::Range;

pub use bitnet_format::TensorType;

use crate::dense::{Q8Activations, Q8Row, check_dense, dequantize_row};
use crate::tq::{QK_K, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES};
use crate::{I2sLayout, PackedTernary, QuantError, QuantizedActivations, ScalarKernel, TernaryFormat, TernaryKernel};

/// Which code layout a fast path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codes {
    /// I2_S x86 order: per 128 weights 32 bytes, group `g` of 32 at shift `6 − 2g`; one tensor
    /// scale after the codes.
    I2s,
    /// I2_S ARM order: per 64 weights 16 bytes, group `g` of 16 at shift `6 − 2g`.
    I2sArm,
    /// I2_S x86 256-chunks, four rows' in turn ([`I2sLayout::X86Rows4`]): read through
    /// [`Job::chunk_at`], never [`Job::row`].
    I2sRows4,
    /// TQ2_0: per 256 weights 64 code bytes (two 128-halves, group `g` at shift `2g`) + f16 `d`.
    Tq2,
    /// TQ1_0: per 256 weights 48 bytes of five base-3 digits, 4 bytes of four, f16 `d`.
    Tq1,
}

impl Codes {
    /// The I2_S orders (one tensor scale) as opposed to the TQ formats (a scale per block).
    pub fn is_i2s(self) -> bool {
        matches!(self, Codes::I2s | Codes::I2sArm | Codes::I2sRows4)
    }
}

/// A matrix as a fast path sees it. Rows are walked in chunks of 256 weights.
#[derive(Debug)]
pub struct Job<'a> {
    pub codes: Codes,
    pub data: &'a [u8],
    /// Bytes from one row's codes to the next.
    pub row_bytes: usize,
    /// 256-weight chunks per row, rounded up.
    pub chunks: usize,
    /// I2_S only: the last chunk is not whole (x86 order: it holds one 128-block; ARM order:
    /// `cols % 256` weights in 64-blocks).
    pub half_tail: bool,
    /// Rows of the whole matrix.
    pub rows: usize,
    /// Columns (weights per row).
    pub cols: usize,
}

impl<'a> Job<'a> {
    /// The fast-path view of `w`, or `None` when only the reference handles it (rows that are
    /// not whole blocks, the interleaved I2_S order, TL1/TL2).
    pub fn of(w: &PackedTernary<'a>) -> Option<Job<'a>> {
        let (rows, cols) = (w.rows, w.cols);
        let i2s = |codes| Job {
            codes,
            data: w.data,
            row_bytes: cols / 4,
            chunks: cols.div_ceil(256),
            half_tail: cols % 256 != 0,
            rows,
            cols,
        };
        let job = match w.format {
            TernaryFormat::I2s(I2sLayout::X86) if cols % 128 == 0 => i2s(Codes::I2s),
            TernaryFormat::I2s(I2sLayout::Arm) if cols % 64 == 0 => i2s(Codes::I2sArm),
            TernaryFormat::I2s(I2sLayout::X86Rows4) if cols % 256 == 0 && rows % 4 == 0 => i2s(Codes::I2sRows4),
            TernaryFormat::Tq2_0 | TernaryFormat::Tq1_0 if cols % QK_K == 0 => {
                let (codes, block) = if w.format == TernaryFormat::Tq2_0 {
                    (Codes::Tq2, TQ2_0_BLOCK_BYTES)
                } else {
                    (Codes::Tq1, TQ1_0_BLOCK_BYTES)
                };
                Job {
                    codes,
                    data: w.data,
                    row_bytes: cols / QK_K * block,
                    chunks: cols / QK_K,
                    half_tail: false,
                    rows,
                    cols,
                }
            }
            _ => return None,
        };
        // The loads are bounds-checked; this check turns a short buffer into an error rather
        // than a panic.
        let need = rows * job.row_bytes + if job.codes.is_i2s() { 4 } else { 0 };
        (cols > 0 && w.data.len() >= need).then_some(job)
    }

    /// Row `r`'s bytes (every order but [`Codes::I2sRows4`], whose rows are not contiguous:
    /// [`Job::chunk_at`]).
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        debug_assert!(self.codes != Codes::I2sRows4, "rows in fours are read by chunks");
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The x86 I2_S orders' 64-byte 256-chunks of row `r`: chunk `c` (the last one of a row that
    /// ends in half a chunk: 32 bytes) starts at byte `first + c·step` of [`Job::data`], `(first,
    /// step)` returned. Row-major: the row's bytes; four-row order: the group's chunks in turn.
    #[inline]
    pub fn chunk_at(&self, r: usize) -> (usize, usize) {
        match self.codes {
            Codes::I2sRows4 => ((r / 4) * 4 * self.row_bytes + (r % 4) * 64, 256),
            _ => (r * self.row_bytes, 64),
        }
    }

    /// The bytes of rows `rows` (those of their whole groups of four in the four-row order).
    pub fn span(&self, rows: Range<usize>) -> Range<usize> {
        match self.codes {
            Codes::I2sRows4 => {
                let end = rows.end.next_multiple_of(4).min(self.rows);
                (rows.start / 4) * 4 * self.row_bytes..end * self.row_bytes
            }
            _ => rows.start * self.row_bytes..rows.end * self.row_bytes,
        }
    }

    /// Code sums per token: 1 for I2_S (the whole row), one per 256-chunk for the TQ formats.
    pub fn sums_per_token(&self) -> usize {
        if self.codes.is_i2s() { 1 } else { self.chunks }
    }
}

/// The TQ formats' one-token product, given the ISA's exact code dot product of one block:
/// `dots[i] = Σ_block (block_dot(block, a) − sum_block) as f32 · d_block` for row `rows.start + i`,
/// blocks in order (the reference's float steps), `d` the f16 in each block's last two bytes.
#[inline(always)]
pub fn tq_gemv(
    job: &Job<'_>,
    rows: Range<usize>,
    act: &[i8],
    sums: &[i32],
    dots: &mut [f32],
    block_dot: impl Fn(&[u8], &[i8]) -> i32,
) {
    let bytes = job.row_bytes / job.chunks.max(1);
    for (r, dot) in rows.zip(dots.iter_mut()) {
        let row = job.row(r);
        let mut sum = 0f32;
        for (c, block) in row.chunks_exact(bytes).enumerate() {
            sum += (block_dot(block, &act[c * QK_K..]) - sums[c]) as f32 * tq_scale(block);
        }
        *dot = sum;
    }
}

/// A TQ block's `d` (the f16 in its last two bytes), as f32.
#[inline(always)]
pub fn tq_scale(block: &[u8]) -> f32 {
    let n = block.len();
    half::f16::from_le_bytes([block[n - 2], block[n - 1]]).to_f32()
}

/// One instruction set's ternary inner loops, implemented on its detection token.
pub trait TernaryIsa: Copy {
    /// Whether the loops read this code layout (the rest goes to the reference).
    fn accepts(self, codes: Codes) -> bool;

    /// Writes one token's activations (length a multiple of 64) in the order [`TernaryIsa::gemv`]
    /// and [`TernaryIsa::gemm`] read them, zero-padded to `out.len()` = chunks·256 (TQ1_0 reads
    /// them unprepared, in element order). The default keeps element order.
    fn prepare(self, a: &[i8], out: &mut [i8]) {
        out[..a.len()].copy_from_slice(a);
        out[a.len()..].fill(0);
    }

    /// One activation row quantized exactly as [`crate::quantize_row_i8s`] (`out.len() ==
    /// x.len()`); the default is that function.
    fn quantize_row(self, x: &[f32], out: &mut [i8]) -> crate::ActScale {
        crate::act::row_i8s(x, out)
    }

    /// The exact integer dot products of one token with every row of `rows`, as f32 (`dots[i]`
    /// for row `rows.start + i`): I2_S `(Σ t·a) as f32`; TQ `Σ_block (Σ_block t·a) as f32 ·
    /// d_block`, blocks in order. `sums` holds the token's code sum (I2_S) or its per-chunk sums
    /// (TQ).
    fn gemv(self, job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]);

    /// [`TernaryIsa::gemv`] for many tokens (`acts` holds them `stride` bytes apart):
    /// `dots[t·len + i]` for row `rows.start + i` and token `t`; `sums[t·per_token ..]` as for
    /// [`TernaryIsa::gemv`].
    fn gemm(self, job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]);

    /// [`scale_dots`], the reference's float step after the integer products; the default is
    /// that function (a kernel crate compiles the same code for its wider registers).
    fn scale_dots(self, dots: &mut [f32], acts: &[crate::ActScale], w_scale: Option<f32>) {
        scale_dots(dots, acts, w_scale)
    }
}

/// The float step after the exact integer products, bitnet.cpp's: `dots` holds one token's
/// products after another (`dots.len() / acts.len()` each), and each becomes `dot / act_scale ·
/// w_scale` (I2_S's one weight scale) or `dot / act_scale` (TQ, whose block scales are already
/// in). A division per output, element-wise: any vector width gives the same bits.
#[inline(always)]
pub fn scale_dots(dots: &mut [f32], acts: &[crate::ActScale], w_scale: Option<f32>) {
    for (part, act) in dots.chunks_exact_mut((dots.len() / acts.len().max(1)).max(1)).zip(acts) {
        match w_scale {
            Some(w) => part.iter_mut().for_each(|v| *v = *v / act.scale * w),
            None => part.iter_mut().for_each(|v| *v /= act.scale),
        }
    }
}

/// Whether `isa`'s loops (rather than the reference they fall back to) run `format`.
pub fn supports<I: TernaryIsa>(isa: I, format: TernaryFormat) -> bool {
    match format {
        TernaryFormat::I2s(I2sLayout::X86) => isa.accepts(Codes::I2s),
        TernaryFormat::I2s(I2sLayout::Arm) => isa.accepts(Codes::I2sArm),
        TernaryFormat::I2s(I2sLayout::X86Rows4) => isa.accepts(Codes::I2sRows4),
        TernaryFormat::Tq2_0 => isa.accepts(Codes::Tq2),
        TernaryFormat::Tq1_0 => isa.accepts(Codes::Tq1),
        TernaryFormat::I2s(I2sLayout::X86Interleaved4) | TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_) => false,
    }
}

/// The argument checks every fast [`TernaryKernel::gemm_rows`] makes before its loops: the
/// activation width, the output length and the row range.
pub fn check(
    w: &PackedTernary<'_>,
    x: &QuantizedActivations,
    rows: &Range<usize>,
    out: &[f32],
) -> Result<(), QuantError> {
    let len = |what, expected: usize, got: usize| {
        if expected == got { Ok(()) } else { Err(QuantError::Length { what, expected, got }) }
    };
    len("activation row length", w.cols, x.cols)?;
    len("output", x.len() * rows.len(), out.len())?;
    if rows.end > w.rows || rows.start > rows.end {
        return Err(QuantError::Length { what: "row range end", expected: w.rows, got: rows.end });
    }
    Ok(())
}

thread_local! {
    /// Prepared activations, kept per thread between calls: a fresh 1 MB buffer per matmul
    /// costs page faults and zeroing that showed up as a tenth of prompt time.
    static ACTS: std::cell::Cell<Vec<i8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// This thread's scratch buffer from `cell`, resized to `len` (contents unspecified); put it
/// back with `cell.set(v)` to reuse it.
pub fn take_scratch<T: Copy + Default>(
    cell: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>,
    len: usize,
) -> Vec<T> {
    let mut v = cell.take();
    v.resize(len, T::default());
    v
}

/// `len` elements of `buf` (which holds at least `len + 63` elements) from its first 64-byte
/// boundary: the kernels' vector loads of prepared activations then never straddle two cache
/// lines (an allocator's `Vec<i8>` is only 16-byte aligned, and a 32-byte load across two lines
/// costs a second load).
pub fn line_aligned<T>(buf: &mut [T], len: usize) -> &mut [T] {
    let at = line_offset(buf, len);
    &mut buf[at..at + len]
}

/// Where [`line_aligned`]'s `len` elements start in `buf`.
pub fn line_offset<T>(buf: &[T], len: usize) -> usize {
    buf.as_ptr().align_offset(64).min(buf.len().saturating_sub(len))
}

/// [`TernaryKernel::gemm_rows`] on `isa`'s loops, or the reference where they do not apply.
pub fn gemm_rows<I: TernaryIsa>(
    isa: I,
    w: &PackedTernary<'_>,
    x: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    check(w, x, &rows, out)?;
    let Some(job) = Job::of(w).filter(|j| isa.accepts(j.codes)) else {
        return ScalarKernel.gemm_rows(w, x, rows, out);
    };
    let n = x.len();
    let stride = job.chunks * 256;
    let mut buf = take_scratch(&ACTS, n * stride + 63);
    let acts = line_aligned(&mut buf, n * stride);
    // TQ1_0 reads the activations in element order, straight from `x`.
    if job.codes != Codes::Tq1 {
        for (t, dst) in acts.chunks_exact_mut(stride).enumerate() {
            isa.prepare(x.row(t), dst);
        }
    }
    run(isa, &job, x, rows, out, acts, stride);
    ACTS.set(buf);
    Ok(())
}

/// The fast path once the activations are prepared: exact integer dot products from the ISA,
/// then the reference's float steps.
fn run<I: TernaryIsa>(
    isa: I,
    job: &Job<'_>,
    x: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
    acts: &[i8],
    stride: usize,
) {
    let n = x.len();
    let sums: Vec<i32> = if job.codes.is_i2s() {
        x.rows.iter().map(|a| a.sum).collect()
    } else {
        (0..n).flat_map(|t| x.row(t).chunks_exact(QK_K).map(|b| b.iter().map(|&v| i32::from(v)).sum::<i32>())).collect()
    };
    // TQ1_0 reads the activations in element order, straight from `x`.
    let acts = if job.codes == Codes::Tq1 { &x.codes[..] } else { acts };
    if n == 1 {
        isa.gemv(job, rows.clone(), acts, &sums, out);
    } else {
        isa.gemm(job, rows.clone(), acts, stride, &sums, out);
    }
    let w_scale = job
        .codes
        .is_i2s()
        .then(|| f32::from_le_bytes(job.data[job.row_bytes * job.rows..][..4].try_into().expect("4 bytes")));
    isa.scale_dots(&mut out[..n * rows.len()], &x.rows, w_scale);
}

/// One instruction set's dense row dot products, implemented on its detection token.
pub trait DenseIsa: Copy {
    /// Σ w·x over an f32 row.
    fn dot_f32(self, w: &[f32], x: &[f32]) -> f32;
    /// Σ w·x over an F16 row (`w` holds `x.len()` little-endian halves).
    fn dot_f16(self, w: &[u8], x: &[f32]) -> f32;
    /// Σ w·x over a Q8_0 row (34-byte blocks: f16 d, 32 int8) and a token's activations
    /// quantized per block ([`crate::dense::dot_q8_0`] is the reference).
    fn dot_q8_0(self, w: &[u8], x: Q8Row<'_>) -> f32;
    /// Σ w·x over a Q6_K row (210-byte blocks of 256).
    fn dot_q6_k(self, w: &[u8], x: &[f32]) -> f32;

    /// `out[r·n + t]` = [`DenseIsa::dot_f32`] of row `w[r]` (one or two rows) and token `t`
    /// of `x` (`cols` apart, `n = out.len() / w.len()` of them), bit-identical to one row and
    /// token at a time. Instruction sets override the four `dots_*` to load and widen each
    /// weight vector once for several tokens and each token's vector once for both rows (a
    /// server's batch, a perplexity run's every position).
    fn dots_f32(self, w: &[&[f32]], x: &[f32], cols: usize, out: &mut [f32]) {
        dots_by(w, x, cols, out, |w, x| self.dot_f32(w, x));
    }
    /// [`DenseIsa::dots_f32`] over F16 rows.
    fn dots_f16(self, w: &[&[u8]], x: &[f32], cols: usize, out: &mut [f32]) {
        dots_by(w, x, cols, out, |w, x| self.dot_f16(w, x));
    }
    /// One token against consecutive F16 rows (decoding through an F16 head): `out[r]` =
    /// [`DenseIsa::dot_f16`] of row `r` of `w` (`2·cols` bytes each, `out.len()` rows) and `x`
    /// (`cols`). By default two rows side by side through [`DenseIsa::dots_f16`]
    /// ([`gemv_f16_in_pairs`]); a set that streams better one row after another overrides it.
    fn gemv_f16(self, w: &[u8], cols: usize, x: &[f32], out: &mut [f32]) {
        gemv_f16_in_pairs(self, w, cols, x, out);
    }
    /// `out[r·n + t]` = [`DenseIsa::dot_q8_0`] of row `r` of `w` (one to eight consecutive rows
    /// of `row_bytes`) and token `t` of `x`, bit-identical to one row and token at a time.
    fn dots_q8_0(self, w: &[u8], row_bytes: usize, x: &Q8Activations, out: &mut [f32]) {
        let n = x.len();
        for (row, out) in w.chunks_exact(row_bytes.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
            out.iter_mut().enumerate().for_each(|(t, o)| *o = self.dot_q8_0(row, x.row(t)));
        }
    }
    /// One token (`x` holds one) against consecutive Q8_0 rows of `row_bytes`: `out[r]` =
    /// [`DenseIsa::dot_q8_0`] of row `r` (`out.len()` rows). By default eight rows side by side
    /// through [`DenseIsa::dots_q8_0`] ([`gemv_q8_0_in_eights`]); a set that streams better one
    /// row after another overrides it.
    fn gemv_q8_0(self, w: &[u8], row_bytes: usize, x: &Q8Activations, out: &mut [f32]) {
        gemv_q8_0_in_eights(self, w, row_bytes, x, out);
    }
    /// [`DenseIsa::dots_f32`] over Q6_K rows.
    fn dots_q6_k(self, w: &[&[u8]], x: &[f32], cols: usize, out: &mut [f32]) {
        dots_by(w, x, cols, out, |w, x| self.dot_q6_k(w, x));
    }
}

/// [`DenseIsa::gemv_f16`] two rows at a time through [`DenseIsa::dots_f16`] (the default).
pub fn gemv_f16_in_pairs<I: DenseIsa>(isa: I, w: &[u8], cols: usize, x: &[f32], out: &mut [f32]) {
    let rb = 2 * cols;
    for (rows, out) in w.chunks(2 * rb).zip(out.chunks_mut(2)) {
        match (rows.get(..rb), rows.get(rb..2 * rb)) {
            (Some(a), Some(b)) if out.len() == 2 => isa.dots_f16(&[a, b], x, cols, out),
            (Some(a), _) => isa.dots_f16(&[a], x, cols, &mut out[..1]),
            _ => {}
        }
    }
}

/// [`DenseIsa::gemv_q8_0`] eight rows at a time through [`DenseIsa::dots_q8_0`] (the default).
pub fn gemv_q8_0_in_eights<I: DenseIsa>(isa: I, w: &[u8], row_bytes: usize, x: &Q8Activations, out: &mut [f32]) {
    let rb = row_bytes.max(1);
    for (rows, out) in w.chunks(8 * rb).zip(out.chunks_mut(8)) {
        let n = (rows.len() / rb).min(out.len());
        if n > 0 {
            isa.dots_q8_0(&rows[..n * rb], rb, x, &mut out[..n]);
        }
    }
}

/// For a kernel that takes exactly eight consecutive Q8_0 rows: `eight(rows, row_bytes)` on `w`
/// (one to eight rows of `row_bytes`) itself when it holds eight, else on a copy with the last
/// row repeated up to eight; the first `w.len() / row_bytes` results are `w`'s rows'.
pub fn q8_0_eight<R>(w: &[u8], row_bytes: usize, eight: impl FnOnce(&[u8], usize) -> R) -> R {
    if w.len() == 8 * row_bytes {
        return eight(w, row_bytes);
    }
    let mut padded = Vec::with_capacity(8 * row_bytes);
    let last = w.len().saturating_sub(row_bytes);
    padded.extend_from_slice(w);
    while padded.len() < 8 * row_bytes {
        padded.extend_from_slice(&w[last..]);
    }
    eight(&padded, row_bytes)
}

/// The `dots_*` defaults: one row and token at a time.
fn dots_by<W: ?Sized>(w: &[&W], x: &[f32], cols: usize, out: &mut [f32], dot: impl Fn(&W, &[f32]) -> f32) {
    let n = out.len() / w.len().max(1);
    for (row, out) in w.iter().zip(out.chunks_exact_mut(n.max(1))) {
        out.iter_mut().zip(x.chunks_exact(cols)).for_each(|(o, x)| *o = dot(row, x));
    }
}

/// The tiles of a `dots_*` implementation over `R` rows: the `n = out.len() / R` tokens of `x`
/// (`cols` apart) go to `big` `N` at a time, then to `two` in pairs, then to `one`;
/// `out[r·n + t]` is row `r`'s result for token `t`.
pub fn by_tokens<const R: usize, const N: usize>(
    x: &[f32],
    cols: usize,
    out: &mut [f32],
    big: impl Fn([&[f32]; N]) -> [[f32; N]; R],
    two: impl Fn([&[f32]; 2]) -> [[f32; 2]; R],
    one: impl Fn([&[f32]; 1]) -> [[f32; 1]; R],
) {
    fn tokens<const T: usize>(x: &[f32], cols: usize) -> [&[f32]; T] {
        std::array::from_fn(|t| &x[t * cols..(t + 1) * cols])
    }
    fn put<const R: usize, const T: usize>(out: &mut [f32], n: usize, t: usize, v: [[f32; T]; R]) -> usize {
        for (r, v) in v.iter().enumerate() {
            out[r * n + t..r * n + t + T].copy_from_slice(v);
        }
        T
    }
    let n = out.len() / R;
    let mut t = 0;
    while t < n {
        let (x, left) = (&x[t * cols..], n - t);
        t += if left >= N {
            put(out, n, t, big(tokens(x, cols)))
        } else if left >= 2 {
            put(out, n, t, two(tokens(x, cols)))
        } else {
            put(out, n, t, one(tokens(x, cols)))
        };
    }
}

/// [`crate::DenseKernel::gemm_rows`] on `isa`'s row dot products: F16, Q8_0 and Q6_K rows are
/// read in place; F32 and BF16 rows are decoded into a scratch row first (the reference
/// dequantizer; file bytes need not be f32-aligned) and then take the F32 path.
pub fn dense_gemm_rows<I: DenseIsa>(
    isa: I,
    ty: TensorType,
    w: &[u8],
    cols: usize,
    x: &[f32],
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let rb = check_dense(ty, w, cols, x, &rows, out)?;
    let (len, n) = (rows.len(), x.len() / cols);
    // Q8_0 rows multiply activations quantized once per call.
    let q8 = (ty == TensorType::Q8_0).then(|| Q8Activations::quantize(x, cols));
    if n == 1 {
        // One token: `out` is row-major already, and the set picks how it streams the rows.
        let w = &w[rows.start * rb..rows.end * rb];
        match (ty, &q8) {
            (TensorType::F16, _) => {
                isa.gemv_f16(w, cols, x, out);
                return Ok(());
            }
            (_, Some(q8)) => {
                isa.gemv_q8_0(w, rb, q8, out);
                return Ok(());
            }
            _ => {}
        }
    }
    let mut scratch = [vec![0f32; cols], vec![0f32; cols]];
    // A few rows against every token (each row is read once), then scattered to token-major `out`.
    let mut dots = vec![0f32; 8 * n];
    let mut r = rows.start;
    while r < rows.end {
        // Several tokens read F16 rows two at a time (one token went to `gemv_f16` above, whose
        // default does the same: over 2 MiB pages the 2B-4T F16 head read 28.8-29.8 GB/s so
        // against 23.8-27.5 one row at a time with the 512-bit loop, 2026-12-06, Zen 4). Q8_0
        // rows go eight at a time (each block of activations loaded once for the eight); Q6_K
        // does more work per byte and reads one row at a time faster at one token.
        let most = match ty {
            TensorType::Q8_0 => 8,
            TensorType::Q6_K if n == 1 => 1,
            _ => 2,
        };
        let group = (rows.end - r).min(most);
        let row = |i: usize| &w[(r + i) * rb..(r + i + 1) * rb];
        let all = [row(0), row(1.min(group - 1))];
        let bytes = &all[..group.min(2)];
        let dots = &mut dots[..group * n];
        match (ty, &q8) {
            (_, Some(q8)) => isa.dots_q8_0(&w[r * rb..(r + group) * rb], rb, q8, dots),
            (TensorType::F16, _) => isa.dots_f16(bytes, x, cols, dots),
            (TensorType::Q6_K, _) => isa.dots_q6_k(bytes, x, cols, dots),
            _ => {
                for (b, s) in bytes.iter().zip(scratch.iter_mut()) {
                    dequantize_row(ty, b, s);
                }
                let [s0, s1] = &scratch;
                isa.dots_f32(&[&s0[..], &s1[..]][..group], x, cols, dots);
            }
        }
        for (i, row) in dots.chunks_exact(n.max(1)).enumerate() {
            for (j, &d) in row.iter().enumerate() {
                out[j * len + (r - rows.start) + i] = d;
            }
        }
        r += group;
    }
    Ok(())
}

/// The scalar tail of an f32 dot product (the elements after the last whole vector).
pub fn tail_f32(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// The scalar tail of an F16 dot product.
pub fn tail_f16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2).zip(x).map(|(h, b)| half::f16::from_le_bytes([h[0], h[1]]).to_f32() * b).sum()
}

/// Implements [`TernaryKernel`] and [`crate::DenseKernel`] for a token type that implements
/// [`TernaryIsa`] and [`DenseIsa`]: `name` is the kernel set's name. With a third argument,
/// `reference`, they run the scalar reference instead: for a kernel crate built for another
/// architecture, whose token `detect()` never builds.
#[macro_export]
macro_rules! isa_kernel_impls {
    ($token:ty, $name:expr, reference) => {
        impl $crate::TernaryKernel for $token {
            fn name(&self) -> &'static str {
                $name
            }

            fn supports(&self, _: $crate::TernaryFormat) -> bool {
                false
            }

            fn gemm_rows(
                &self,
                w: &$crate::PackedTernary<'_>,
                x: &$crate::QuantizedActivations,
                rows: ::std::ops::Range<usize>,
                out: &mut [f32],
            ) -> Result<(), $crate::QuantError> {
                $crate::ScalarKernel.gemm_rows(w, x, rows, out)
            }
        }

        impl $crate::DenseKernel for $token {
            fn name(&self) -> &'static str {
                $name
            }

            fn gemm_rows(
                &self,
                ty: $crate::isa::TensorType,
                w: &[u8],
                cols: usize,
                x: &[f32],
                rows: ::std::ops::Range<usize>,
                out: &mut [f32],
            ) -> Result<(), $crate::QuantError> {
                $crate::ScalarDense.gemm_rows(ty, w, cols, x, rows, out)
            }
        }
    };
    ($token:ty, $name:expr) => {
        impl $crate::TernaryKernel for $token {
            fn name(&self) -> &'static str {
                $name
            }

            fn supports(&self, format: $crate::TernaryFormat) -> bool {
                $crate::isa::supports(*self, format)
            }

            fn quantize(&self, x: &[f32], cols: usize) -> Result<$crate::QuantizedActivations, $crate::QuantError> {
                $crate::QuantizedActivations::quantize_by(x, cols, |x, q| {
                    $crate::isa::TernaryIsa::quantize_row(*self, x, q)
                })
            }

            fn gemm_rows(
                &self,
                w: &$crate::PackedTernary<'_>,
                x: &$crate::QuantizedActivations,
                rows: ::std::ops::Range<usize>,
                out: &mut [f32],
            ) -> Result<(), $crate::QuantError> {
                $crate::isa::gemm_rows(*self, w, x, rows, out)
            }
        }

        impl $crate::DenseKernel for $token {
            fn name(&self) -> &'static str {
                $name
            }

            fn gemm_rows(
                &self,
                ty: $crate::isa::TensorType,
                w: &[u8],
                cols: usize,
                x: &[f32],
                rows: ::std::ops::Range<usize>,
                out: &mut [f32],
            ) -> Result<(), $crate::QuantError> {
                $crate::isa::dense_gemm_rows(*self, ty, w, cols, x, rows, out)
            }
        }
    };
}

/// An [`F32Ops`](crate::vecops::F32Ops) from one instruction set's `#[target_feature]` functions
/// (`dot`, `axpy`, `scores`, `weighted_sum`, `scores_f16`, `weighted_sum_f16`, `scores_kv`,
/// `weighted_sum_kv`, in that order),
/// each wrapped in a plain `fn` (function pointers cannot carry target features); the ops not
/// listed (`glu`, `softmax`, `matmul_add`, `transpose`, `f16_to_f32`) are the reference's unless
/// the caller sets them. Invoke it only
/// in a function that takes the instruction set's detection token, so the ops are handed out only
/// where the features were found.
#[macro_export]
macro_rules! f32_ops {
    ($name:expr, $dot:path, $axpy:path, $scores:path, $weighted_sum:path, $scores_f16:path, $weighted_sum_f16:path,
     $scores_kv:path, $weighted_sum_kv:path) => {{
        fn wrapped_dot(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: reachable only through the F32Ops built here, which the invoking code
            // hands out only to a holder of the detection token of these functions' features.
            unsafe { $dot(a, b) }
        }
        fn wrapped_axpy(y: &mut [f32], a: f32, x: &[f32]) {
            // SAFETY: as for `wrapped_dot`.
            unsafe { $axpy(y, a, x) }
        }
        fn wrapped_scores(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
            // SAFETY: as for `wrapped_dot`.
            unsafe { $scores(q, k, stride, out) }
        }
        fn wrapped_weighted_sum(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
            // SAFETY: as for `wrapped_dot`.
            unsafe { $weighted_sum(w, v, stride, out) }
        }
        fn wrapped_scores_f16(q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
            // SAFETY: as for `wrapped_dot`.
            unsafe { $scores_f16(q, k, stride, out) }
        }
        fn wrapped_weighted_sum_f16(w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
            // SAFETY: as for `wrapped_dot`.
            unsafe { $weighted_sum_f16(w, v, stride, out) }
        }
        fn wrapped_scores_kv(ty: $crate::vecops::KvBlock, q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
            // SAFETY: as for `wrapped_dot`.
            unsafe { $scores_kv(ty, q, k, stride, out) }
        }
        fn wrapped_weighted_sum_kv(ty: $crate::vecops::KvBlock, w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
            // SAFETY: as for `wrapped_dot`.
            unsafe { $weighted_sum_kv(ty, w, v, stride, out) }
        }
        // Distinct names: a local `fn dot` would shadow the `$dot` it wraps.
        $crate::vecops::F32Ops {
            name: $name,
            dot: wrapped_dot,
            axpy: wrapped_axpy,
            scores: wrapped_scores,
            weighted_sum: wrapped_weighted_sum,
            scores_f16: wrapped_scores_f16,
            weighted_sum_f16: wrapped_weighted_sum_f16,
            scores_kv: wrapped_scores_kv,
            weighted_sum_kv: wrapped_weighted_sum_kv,
            ..$crate::vecops::SCALAR
        }
    }};
}

/// Defines a kernel crate's detection token for one instruction set: a struct that only
/// `detect()` builds (`std::arch::$detect!` of every feature listed, on `target_arch = $arch`), so
/// holding one proves the CPU runs them; `f32_ops()` calls `$ops(token)`; the kernel traits come
/// from [`isa_kernel_impls!`] (the module of the instruction set implements [`TernaryIsa`] and
/// [`DenseIsa`] on the token). On another architecture `detect()` is always `None` and the
/// kernels are the reference's.
#[macro_export]
macro_rules! kernel_token {
    ($(#[$doc:meta])* $name:ident, $label:literal, $arch:literal, $detect:ident, [$($feature:tt),+], $ops:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name(());

        impl $name {
            /// The name of this kernel set (`BITNET_KERNEL` selects it by this name).
            pub const NAME: &'static str = $label;

            /// The kernels, if this CPU supports every feature they use.
            pub fn detect() -> Option<$name> {
                #[cfg(target_arch = $arch)]
                {
                    if $(std::arch::$detect!($feature))&&+ {
                        return Some($name(()));
                    }
                }
                None
            }

            /// The f32 ops (attention, norms) of this instruction set.
            pub fn f32_ops(self) -> $crate::vecops::F32Ops {
                #[cfg(target_arch = $arch)]
                {
                    ($ops)(self)
                }
                #[cfg(not(target_arch = $arch))]
                {
                    $crate::vecops::SCALAR
                }
            }
        }

        #[cfg(target_arch = $arch)]
        $crate::isa_kernel_impls!($name, $label);

        #[cfg(not(target_arch = $arch))]
        $crate::isa_kernel_impls!($name, $label, reference);
    };
}

#[cfg(test)]
mod tests {
    use super::{line_aligned, line_offset};

    #[test]
    fn line_aligned_starts_on_a_cache_line() {
        for extra in 0..64 {
            let mut buf = vec![0i8; 1000 + 63 + extra];
            let base = buf.as_ptr() as usize;
            let at = line_offset(&buf, 1000);
            let part = line_aligned(&mut buf, 1000);
            assert_eq!(part.len(), 1000);
            assert_eq!(part.as_ptr() as usize % 64, 0);
            assert_eq!(part.as_ptr() as usize - base, at);
        }
        // Too short to shift: the slice starts where the buffer does.
        let mut short = vec![0u8; 10];
        assert_eq!(line_aligned(&mut short, 10).len(), 10);
    }
}
