//! NEON with `FEAT_DotProd`: `sdot` adds four int8 products into each of four i32 lanes in one
//! instruction. `vdotq_s32` is not stable in Rust 1.95/1.96, so it is one `asm!` instruction.

use bitnet_quant::isa::TernaryIsa;

use crate::Dotprod;
use crate::codes::{Layout, gemm_tiled};

/// `acc` plus the 16 products of `c` and `a` (`sdot`).
#[target_feature(enable = "dotprod")]
#[inline]
pub(crate) fn mac(mut acc: int32x4_t, c: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` only reads and writes these registers; the enclosing target feature
    // guarantees the CPU has the instruction.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {c:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            c = in(vreg) c,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `acc` plus the products of both pairs (two `sdot`).
#[target_feature(enable = "dotprod")]
#[inline]
fn mac2(acc: int32x4_t, c0: int8x16_t, a0: int8x16_t, c1: int8x16_t, a1: int8x16_t) -> int32x4_t {
    mac(mac(acc, c0, a0), c1, a1)
}

crate::codes::ternary_loops!("neon,dotprod");

/// `R` rows × `T` tokens of signed values in element order (`Layout::Plain`), over the
/// elements `k` (a multiple of 16): one multiply-accumulate per row and token per 16.
/// Rows and tokens are cut to exactly `k` as 16-byte arrays first, so the loop has no
/// bounds checks (they had been half its instructions).
// Not inlined: one call per tile is nothing, and tools/arm-mca.py finds the loop by name.
#[inline(never)]
#[target_feature(enable = "neon,dotprod")]
fn tile<const R: usize, const T: usize>(w: &[i8], a: &[i8], stride: usize, k: Range<usize>) -> [[i32; T]; R] {
    let wr: [&[[i8; 16]]; R] = std::array::from_fn(|r| crate::codes::blocks16(w, r * stride, &k));
    let ar: [&[[i8; 16]]; T] = std::array::from_fn(|t| crate::codes::blocks16(a, t * stride, &k));
    let mut acc = [[vdupq_n_s32(0); T]; R];
    for i in 0..k.len() / 16 {
        let wv: [int8x16_t; R] = std::array::from_fn(|r| crate::codes::ld16(&wr[r][i]));
        for t in 0..T {
            let av = crate::codes::ld16(&ar[t][i]);
            for r in 0..R {
                acc[r][t] = mac(acc[r][t], wv[r], av);
            }
        }
    }
    acc.map(|row| row.map(|v| vaddvq_s32(v)))
}

/// [`gemv`] for other levels that have dotprod (i8mm).
///
/// # Safety
/// The CPU must support dotprod.
pub(crate) unsafe fn gemv_dotprod(job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    // SAFETY: the caller guarantees dotprod.
    unsafe { gemv(job, rows, act, sums, dots) }
}

impl TernaryIsa for Dotprod {
    fn accepts(self, _: Codes) -> bool {
        true
    }

    fn gemv(self, job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
        // SAFETY: the token exists only if `detect` found dotprod.
        unsafe { gemv(job, rows, act, sums, dots) }
    }

    fn gemm(self, job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, _: &[i32], dots: &mut [f32]) {
        let tile = |w: &[i8], a: &[i8], s: usize, k: Range<usize>| {
            // SAFETY: the token exists only if `detect` found dotprod.
            unsafe { tile::<4, 4>(w, a, s, k) }
        };
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { gemm_tiled::<4, 4>(Layout::Plain, job, rows, acts, stride, dots, tile) }
    }
}
