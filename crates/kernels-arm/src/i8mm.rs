//! NEON with `FEAT_I8MM` for the many-token product: `smmla` multiplies a 2×8 int8 matrix (two
//! rows' weights) by an 8×2 one (two tokens' activations) into a 2×2 i32 tile, 32 products per
//! instruction against `sdot`'s 16. Rows and tokens are laid out in pairs
//! ([`Layout::Pairs`]) once per block, so the inner loop is loads and `smmla` only, and each
//! accumulator lane is one (row, token) result: no horizontal sums. One token runs `sdot`.
//! `vmmlaq_s32` is not stable in Rust 1.95/1.96, so `smmla` is one `asm!` instruction.

use std::arch::aarch64::*;
use std::ops::Range;

use bitnet_quant::isa::{Codes, Job, TernaryIsa};

use crate::I8mm;
use crate::codes::{Layout, gemm_tiled, ld_i8};

/// `acc` plus the 2×2 products of the row pair `w` and token pair `a` (`smmla`).
#[target_feature(enable = "i8mm")]
#[inline]
fn smmla(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: `smmla` only reads and writes these registers; the enclosing target feature
    // guarantees the CPU has the instruction.
    unsafe {
        std::arch::asm!(
            "smmla {acc:v}.4s, {w:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Rows × tokens per micro-kernel: 4 row pairs × 2 token pairs, 8 accumulators; per 16
/// elements 8 + 4 loads feed 16 `smmla`.
const R: usize = 8;
const T: usize = 4;

/// `R` rows × `T` tokens in [`Layout::Pairs`] over the elements `k` (a multiple of 16).
#[target_feature(enable = "neon,i8mm")]
fn tile(w: &[i8], a: &[i8], stride: usize, k: Range<usize>) -> [[i32; T]; R] {
    let mut acc = [[vdupq_n_s32(0); T / 2]; R / 2];
    for e in k.step_by(16) {
        let wv: [[int8x16_t; 2]; R / 2] =
            std::array::from_fn(|p| [ld_i8(&w[2 * p * stride + 2 * e..]), ld_i8(&w[2 * p * stride + 2 * e + 16..])]);
        for q in 0..T / 2 {
            let av = [ld_i8(&a[2 * q * stride + 2 * e..]), ld_i8(&a[2 * q * stride + 2 * e + 16..])];
            for p in 0..R / 2 {
                acc[p][q] = smmla(smmla(acc[p][q], wv[p][0], av[0]), wv[p][1], av[1]);
            }
        }
    }
    // Lanes: (row 2p, token 2q), (2p, 2q + 1), (2p + 1, 2q), (2p + 1, 2q + 1).
    let mut out = [[0i32; T]; R];
    for (p, accs) in acc.iter().enumerate() {
        for (q, v) in accs.iter().enumerate() {
            out[2 * p][2 * q] = vgetq_lane_s32::<0>(*v);
            out[2 * p][2 * q + 1] = vgetq_lane_s32::<1>(*v);
            out[2 * p + 1][2 * q] = vgetq_lane_s32::<2>(*v);
            out[2 * p + 1][2 * q + 1] = vgetq_lane_s32::<3>(*v);
        }
    }
    out
}

impl TernaryIsa for I8mm {
    fn accepts(self, _: Codes) -> bool {
        true
    }

    fn gemv(self, job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
        // SAFETY: the token exists only if `detect` found dotprod (and i8mm).
        unsafe { crate::dotprod::gemv_dotprod(job, rows, act, sums, dots) }
    }

    fn gemm(self, job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, _: &[i32], dots: &mut [f32]) {
        let tile = |w: &[i8], a: &[i8], s: usize, k: Range<usize>| {
            // SAFETY: the token exists only if `detect` found i8mm.
            unsafe { tile(w, a, s, k) }
        };
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { gemm_tiled::<R, T>(Layout::Pairs, job, rows, acts, stride, dots, tile) }
    }
}
