//! The ISA-independent half of the ternary kernels: checks, activation preparation, tiling of
//! the output into rows × tokens blocks, and the final float operations (the reference's).

use std::ops::Range;

use bitnet_quant::tq::{QK_K, TQ1_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES};
use bitnet_quant::{
    I2sLayout, PackedTernary, QuantError, QuantizedActivations, ScalarKernel, TernaryFormat, TernaryKernel,
};

/// Which code layout a fast path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codes {
    /// I2_S x86: per 128 weights 32 bytes, group `g` of 32 at shift `6 − 2g`; one tensor scale.
    I2s,
    /// TQ2_0: per 256 weights 64 code bytes (two 128-halves, group `g` at shift `2g`) + f16 `d`.
    Tq2,
    /// TQ1_0: per 256 weights 48 bytes of five base-3 digits, 4 bytes of four, f16 `d`; decoded
    /// in element order, so it reads the activations unreordered.
    Tq1,
}

/// A matrix as a fast path sees it. Rows are walked in chunks of 256 weights.
#[derive(Debug)]
pub(crate) struct Job<'a> {
    pub codes: Codes,
    pub data: &'a [u8],
    /// Bytes from one row's codes to the next.
    pub row_bytes: usize,
    /// 256-weight chunks per row, rounded up.
    pub chunks: usize,
    /// I2_S only: the last chunk holds one 128-block, not two.
    pub half_tail: bool,
    /// Rows of the whole matrix.
    pub rows: usize,
}

impl<'a> Job<'a> {
    /// The fast-path view of `w`, or `None` when only the reference handles it.
    fn of(w: &PackedTernary<'a>) -> Option<Job<'a>> {
        let (rows, cols) = (w.rows, w.cols);
        let job = match w.format {
            TernaryFormat::I2s(I2sLayout::X86) if cols % 128 == 0 => Job {
                codes: Codes::I2s,
                data: w.data,
                row_bytes: cols / 4,
                chunks: cols.div_ceil(256),
                half_tail: cols % 256 != 0,
                rows,
            },
            TernaryFormat::Tq2_0 | TernaryFormat::Tq1_0 if cols % QK_K == 0 => {
                let (codes, block) = if w.format == TernaryFormat::Tq2_0 {
                    (Codes::Tq2, TQ2_0_BLOCK_BYTES)
                } else {
                    (Codes::Tq1, TQ1_0_BLOCK_BYTES)
                };
                Job { codes, data: w.data, row_bytes: cols / QK_K * block, chunks: cols / QK_K, half_tail: false, rows }
            }
            _ => return None,
        };
        // The loads below are bounds-checked; this check turns a short buffer into an error
        // rather than a panic.
        let need = rows * job.row_bytes + if job.codes == Codes::I2s { 4 } else { 0 };
        (cols > 0 && w.data.len() >= need).then_some(job)
    }

    /// Row `r`'s bytes.
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// `decode(v, codes)`: the four 2-bit code groups of one vector of packed codes, in element
/// order (I2_S keeps group `g` at shift `6 − 2g`, TQ2_0 at `2g`), for an instruction set's vector
/// type and intrinsics. TQ1_0's base-3 codes are decoded by `x256::tq1_codes` instead.
#[cfg(target_arch = "x86_64")]
macro_rules! decode_2bit {
    ($feat:literal, $vec:ty, $set1_epi8:ident, $srli_epi16:ident, $and:ident) => {
        #[target_feature(enable = $feat)]
        fn decode(v: $vec, codes: Codes) -> [$vec; 4] {
            let m = $set1_epi8(3);
            let (s2, s4, s6) = ($srli_epi16::<2>(v), $srli_epi16::<4>(v), $srli_epi16::<6>(v));
            match codes {
                Codes::I2s => [$and(s6, m), $and(s4, m), $and(s2, m), $and(v, m)],
                Codes::Tq2 => [$and(v, m), $and(s2, m), $and(s4, m), $and(s6, m)],
                Codes::Tq1 => unreachable!("TQ1_0 is decoded by x256::tq1_codes"),
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use decode_2bit;

/// The TQ formats' one-token product, given the ISA's exact code dot product of one block:
/// `dots[i] = Σ_block (block_dot(block, a) − sum_block) as f32 · d_block` for row `rows.start + i`,
/// blocks in order (the reference's float steps), `d` the f16 in each block's last two bytes.
#[inline(always)]
pub(crate) fn tq_gemv(
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
            let d = half::f16::from_le_bytes([block[bytes - 2], block[bytes - 1]]).to_f32();
            sum += (block_dot(block, &act[c * QK_K..]) - sums[c]) as f32 * d;
        }
        *dot = sum;
    }
}

/// One instruction set's ternary inner loops.
pub(crate) trait Isa {
    /// Writes one token's activations (length a multiple of 128) in the order [`Isa::gemv`] and
    /// [`Isa::gemm`] read them, zero-padded to `out.len()` = chunks·256 (TQ1_0 reads them
    /// unprepared, in element order).
    fn prepare(a: &[i8], out: &mut [i8]);

    /// The exact integer dot products of one token with every row of `rows`, as f32 (`dots[i]`
    /// for row `rows.start + i`): I2_S `(Σ t·a) as f32`; TQ `Σ_block (Σ_block t·a) as f32 ·
    /// d_block`, blocks in order. `sums` holds the token's code sum (I2_S) or its per-chunk sums
    /// (TQ).
    ///
    /// # Safety
    /// The CPU must support the ISA's target features.
    unsafe fn gemv(job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]);

    /// [`Isa::gemv`] for many tokens (`acts` holds them `stride` bytes apart): `dots[t·len + i]`
    /// for row `rows.start + i` and token `t`; `sums[t·per_token ..]` as for [`Isa::gemv`].
    ///
    /// # Safety
    /// The CPU must support the ISA's target features.
    unsafe fn gemm(job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]);
}

fn check(w: &PackedTernary<'_>, x: &QuantizedActivations, rows: &Range<usize>, out: &[f32]) -> Result<(), QuantError> {
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

/// `gemm_rows` on the fast path of ISA `I` (caller guarantees the CPU has it), or the reference
/// where the fast path does not apply.
///
/// # Safety
/// The CPU must support `I`'s target features.
pub(crate) unsafe fn gemm_rows<I: Isa>(
    w: &PackedTernary<'_>,
    x: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    check(w, x, &rows, out)?;
    let Some(job) = Job::of(w) else { return ScalarKernel.gemm_rows(w, x, rows, out) };
    let n = x.len();
    let stride = job.chunks * 256;
    let mut acts = take_scratch(&ACTS, n * stride);
    // TQ1_0 reads the activations in element order, straight from `x`.
    if job.codes != Codes::Tq1 {
        for (t, dst) in acts.chunks_exact_mut(stride).enumerate() {
            I::prepare(x.row(t), dst);
        }
    }
    // SAFETY: the caller guarantees the CPU supports I.
    let result = unsafe { run::<I>(&job, x, rows, out, &acts, stride) };
    ACTS.set(acts);
    result
}

thread_local! {
    /// Prepared activations, kept per thread between calls: a fresh 1 MB buffer per matmul
    /// costs page faults and zeroing that showed up as a tenth of prompt time.
    static ACTS: std::cell::Cell<Vec<i8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// This thread's scratch buffer from `cell`, resized to `len` (contents unspecified).
pub(crate) fn take_scratch<T: Copy + Default>(
    cell: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>,
    len: usize,
) -> Vec<T> {
    let mut v = cell.take();
    v.resize(len, T::default());
    v
}

/// The fast path once the activations are prepared: exact integer dot products from the ISA,
/// then the reference's float steps.
///
/// # Safety
/// The CPU must support `I`'s target features.
unsafe fn run<I: Isa>(
    job: &Job<'_>,
    x: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
    acts: &[i8],
    stride: usize,
) -> Result<(), QuantError> {
    let n = x.len();
    let sums: Vec<i32> = match job.codes {
        Codes::I2s => x.rows.iter().map(|a| a.sum).collect(),
        Codes::Tq2 | Codes::Tq1 => (0..n)
            .flat_map(|t| x.row(t).chunks_exact(QK_K).map(|b| b.iter().map(|&v| i32::from(v)).sum::<i32>()))
            .collect(),
    };
    // TQ1_0 reads the activations in element order, straight from `x`.
    let acts = if job.codes == Codes::Tq1 { &x.codes[..] } else { acts };
    // SAFETY: the caller guarantees the CPU supports I.
    unsafe {
        if n == 1 {
            I::gemv(job, rows.clone(), acts, &sums, out);
        } else {
            I::gemm(job, rows.clone(), acts, stride, &sums, out);
        }
    }
    let w_scale = match job.codes {
        Codes::I2s => f32::from_le_bytes(job.data[job.row_bytes * job.rows..][..4].try_into().expect("4 bytes")),
        Codes::Tq2 | Codes::Tq1 => 1.0,
    };
    for (part, act) in out.chunks_exact_mut(rows.len().max(1)).zip(&x.rows) {
        for v in part.iter_mut() {
            *v = match job.codes {
                Codes::I2s => *v / act.scale * w_scale,
                Codes::Tq2 | Codes::Tq1 => *v / act.scale,
            };
        }
    }
    Ok(())
}

impl Job<'_> {
    /// Code sums per token: 1 for I2_S (the whole row), one per 256-chunk for the TQ formats.
    pub fn sums_per_token(&self) -> usize {
        if self.codes == Codes::I2s { 1 } else { self.chunks }
    }
}
