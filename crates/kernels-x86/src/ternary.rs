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

/// One instruction set's inner loops.
pub(crate) trait Isa {
    /// Writes one token's activations (length a multiple of 128) in the order [`Isa::tile`]
    /// reads them, zero-padded to `out.len()` = chunks·256.
    fn prepare(a: &[i8], out: &mut [i8]);

    /// The exact integer dot products of rows `row0..row0+R` with `T` prepared tokens, as f32:
    /// I2_S `(Σ t·a) as f32`; TQ2_0 `Σ_block (Σ_block t·a) as f32 · d_block`, blocks in order.
    /// `sums[t]` holds token t's code sum (I2_S) or its per-chunk sums (TQ2_0). Only reached
    /// when [`Isa::gemm`] declines (AVX2; AVX-512's gemm takes every format).
    ///
    /// # Safety
    /// The CPU must support the ISA's target features.
    unsafe fn tile<const R: usize, const T: usize>(
        job: &Job<'_>,
        row0: usize,
        acts: [&[i8]; T],
        sums: [&[i32]; T],
    ) -> [[f32; T]; R];

    /// [`Isa::tile`] for one token and every row of `rows`: `dots[i]` for row `rows.start + i`.
    ///
    /// # Safety
    /// The CPU must support the ISA's target features.
    unsafe fn gemv(job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]);

    /// A whole many-token GEMM, if this ISA has a dedicated one: `dots[t·len + i]` = the exact
    /// dot product (as in [`Isa::tile`]) of row `rows.start + i` with token `t` of `acts`
    /// (`stride` bytes apart; prepared, except TQ1_0's in element order); `sums` as for
    /// [`Isa::tile`], `sums[t·chunks + c]` for the TQ formats. Returns false (and writes
    /// nothing) otherwise.
    ///
    /// # Safety
    /// The CPU must support the ISA's target features.
    unsafe fn gemm(
        _job: &Job<'_>,
        _rows: Range<usize>,
        _acts: &[i8],
        _stride: usize,
        _sums: &[i32],
        _dots: &mut [f32],
    ) -> bool {
        false
    }
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

/// The fast path once the activations are prepared.
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
    let (sums, per_token): (Vec<i32>, usize) = match job.codes {
        Codes::I2s => (x.rows.iter().map(|a| a.sum).collect(), 1),
        Codes::Tq2 | Codes::Tq1 => {
            let s = (0..n)
                .flat_map(|t| x.row(t).chunks_exact(QK_K).map(|b| b.iter().map(|&v| i32::from(v)).sum::<i32>()))
                .collect();
            (s, job.chunks)
        }
    };
    let w_scale = match job.codes {
        Codes::I2s => f32::from_le_bytes(job.data[job.row_bytes * job.rows..][..4].try_into().expect("4 bytes")),
        Codes::Tq2 | Codes::Tq1 => 1.0,
    };
    let ctx = Ctx { job, acts, stride, sums: &sums, per_token, x, w_scale, rows };
    let finish_all = |out: &mut [f32]| {
        let len = ctx.rows.len();
        for (t, part) in out.chunks_exact_mut(len).enumerate() {
            let act = x.rows[t];
            part.iter_mut().for_each(|v| *v = ctx.finish(*v, act));
        }
    };
    if n > 1 && job.codes != Codes::I2s {
        // TQ1_0 reads the activations in element order, straight from `x`.
        let tq_acts = if job.codes == Codes::Tq1 { &x.codes[..] } else { acts };
        // SAFETY: the caller guarantees the CPU supports I.
        if unsafe { I::gemm(job, ctx.rows.clone(), tq_acts, stride, &sums, out) } {
            finish_all(out);
            return Ok(());
        }
    }
    if job.codes == Codes::Tq1 {
        // One token at a time: each block is decoded per token (TQ1_0 has no many-token kernel).
        let len = ctx.rows.len();
        for (t, part) in out.chunks_exact_mut(len).enumerate() {
            // SAFETY: the caller guarantees the CPU supports I.
            unsafe { I::gemv(job, ctx.rows.clone(), x.row(t), &sums[t * per_token..], part) };
            let act = x.rows[t];
            part.iter_mut().for_each(|v| *v = ctx.finish(*v, act));
        }
        return Ok(());
    }
    if n == 1 {
        // SAFETY: the caller guarantees the CPU supports I.
        unsafe { I::gemv(job, ctx.rows.clone(), acts, &sums, out) };
        let act = x.rows[0];
        for v in out.iter_mut() {
            *v = ctx.finish(*v, act);
        }
        return Ok(());
    }
    // SAFETY: the caller guarantees the CPU supports I.
    if job.codes == Codes::I2s && unsafe { I::gemm(job, ctx.rows.clone(), acts, stride, &sums, out) } {
        finish_all(out);
        return Ok(());
    }
    // Blocks of rows small enough to stay in L1/L2 while every token passes over them.
    let mut r0 = ctx.rows.start;
    while r0 < ctx.rows.end {
        let block = r0..(r0 + ROW_BLOCK).min(ctx.rows.end);
        let mut t0 = 0;
        while t0 < n {
            let tt = (n - t0).min(4);
            // SAFETY: the caller guarantees the CPU supports I.
            unsafe {
                match tt {
                    1 => ctx.rows_of::<I, 4, 1>(t0, block.clone(), out),
                    2 => ctx.rows_of::<I, 2, 2>(t0, block.clone(), out),
                    3 => ctx.rows_of::<I, 2, 3>(t0, block.clone(), out),
                    _ => ctx.rows_of::<I, 2, 4>(t0, block.clone(), out),
                }
            }
            t0 += tt;
        }
        r0 = block.end;
    }
    Ok(())
}

/// Rows per cache block of the many-token path (64 rows of 2560 I2_S weights: 40 KiB).
const ROW_BLOCK: usize = 64;

/// Everything one `gemm_rows` call shares between its tiles.
struct Ctx<'a, 'b> {
    job: &'a Job<'b>,
    acts: &'a [i8],
    stride: usize,
    sums: &'a [i32],
    per_token: usize,
    x: &'a QuantizedActivations,
    w_scale: f32,
    rows: Range<usize>,
}

impl Ctx<'_, '_> {
    /// Tokens `t0..t0+T` against every row, `R` rows at a time.
    ///
    /// # Safety
    /// The CPU must support `I`'s target features.
    unsafe fn rows_of<I: Isa, const R: usize, const T: usize>(&self, t0: usize, block: Range<usize>, out: &mut [f32]) {
        let acts: [&[i8]; T] = std::array::from_fn(|i| &self.acts[(t0 + i) * self.stride..][..self.stride]);
        let sums: [&[i32]; T] = std::array::from_fn(|i| &self.sums[(t0 + i) * self.per_token..][..self.per_token]);
        let mut r = block.start;
        while r < block.end {
            if r + R <= block.end {
                // SAFETY: the caller guarantees the CPU supports I.
                let v = unsafe { I::tile::<R, T>(self.job, r, acts, sums) };
                self.store(t0, r, &v, out);
                r += R;
            } else {
                // SAFETY: the caller guarantees the CPU supports I.
                let v = unsafe { I::tile::<1, T>(self.job, r, acts, sums) };
                self.store(t0, r, &v, out);
                r += 1;
            }
        }
    }

    /// The reference's float steps on an exact dot product.
    fn finish(&self, dot: f32, act: bitnet_quant::ActScale) -> f32 {
        match self.job.codes {
            Codes::I2s => dot / act.scale * self.w_scale,
            Codes::Tq2 | Codes::Tq1 => dot / act.scale,
        }
    }

    fn store<const R: usize, const T: usize>(&self, t0: usize, r0: usize, v: &[[f32; T]; R], out: &mut [f32]) {
        let len = self.rows.len();
        for (i, row) in v.iter().enumerate() {
            for (t, &dot) in row.iter().enumerate() {
                let act = self.x.rows[t0 + t];
                out[(t0 + t) * len + r0 + i - self.rows.start] = self.finish(dot, act);
            }
        }
    }
}

macro_rules! kernel {
    ($name:ident, $isa:ty, $label:literal, $detect:expr) => {
        /// A ternary kernel for one x86 instruction set (see the crate docs); built only by
        /// `detect`, so holding one proves the CPU runs it.
        #[derive(Debug, Clone, Copy)]
        pub struct $name(());

        impl $name {
            /// The kernel, if this CPU supports its instruction set.
            pub fn detect() -> Option<$name> {
                #[cfg(target_arch = "x86_64")]
                {
                    if $detect {
                        return Some($name(()));
                    }
                }
                None
            }
        }

        impl TernaryKernel for $name {
            fn name(&self) -> &'static str {
                $label
            }

            fn supports(&self, format: TernaryFormat) -> bool {
                matches!(format, TernaryFormat::I2s(I2sLayout::X86) | TernaryFormat::Tq2_0)
            }

            fn gemm_rows(
                &self,
                w: &PackedTernary<'_>,
                x: &QuantizedActivations,
                rows: Range<usize>,
                out: &mut [f32],
            ) -> Result<(), QuantError> {
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: `self` exists only if `detect` found the instruction set.
                    unsafe { gemm_rows::<$isa>(w, x, rows, out) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    ScalarKernel.gemm_rows(w, x, rows, out)
                }
            }
        }
    };
}

kernel!(
    Avx512Kernel,
    crate::avx512::Avx512,
    "avx512-vnni",
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
);
kernel!(Avx2Kernel, crate::avx2::Avx2, "avx2", is_x86_feature_detected!("avx2"));
