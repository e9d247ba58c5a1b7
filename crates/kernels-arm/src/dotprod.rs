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

crate::codes::ternary_loops!("neon,dotprod");

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
