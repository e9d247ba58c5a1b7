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
use crate::codes::{Layout, gemm_tiled};

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

/// Rows × tokens per micro-kernel: 4 row pairs × 4 token pairs, 16 accumulators; per 16
/// elements 8 + 8 loads feed 32 `smmla`.
const R: usize = 8;
const T: usize = 8;

/// The 32 bytes as two vectors.
#[target_feature(enable = "neon")]
#[inline]
fn ld32(s: &[i8; 32]) -> [int8x16_t; 2] {
    // SAFETY: the array holds 32 bytes; NEON loads need no alignment.
    unsafe { [vld1q_s8(s.as_ptr()), vld1q_s8(s.as_ptr().add(16))] }
}

/// Bytes `k` of the pair starting at `start` of `v`, as 32-byte arrays (16 elements of two rows).
#[inline]
fn blocks32<'a>(v: &'a [i8], start: usize, k: &Range<usize>) -> &'a [[i8; 32]] {
    v[start + k.start..start + k.end].as_chunks::<32>().0
}

/// `R` rows × `T` tokens in [`Layout::Pairs`] over the elements `k` (a multiple of 16).
// Not inlined: one call per tile is nothing, and tools/arm-mca.py finds the loop by name.
#[inline(never)]
#[target_feature(enable = "neon,i8mm")]
fn tile(w: &[i8], a: &[i8], stride: usize, k: Range<usize>) -> [[i32; T]; R] {
    // Pairs hold 32 bytes per 16 elements: elements k of a pair are bytes 2k.
    let k2 = 2 * k.start..2 * k.end;
    let wp: [&[[i8; 32]]; R / 2] = std::array::from_fn(|p| blocks32(w, 2 * p * stride, &k2));
    let ap: [&[[i8; 32]]; T / 2] = std::array::from_fn(|q| blocks32(a, 2 * q * stride, &k2));
    let mut acc = [[vdupq_n_s32(0); T / 2]; R / 2];
    for i in 0..k.len() / 16 {
        let wv: [[int8x16_t; 2]; R / 2] = std::array::from_fn(|p| ld32(&wp[p][i]));
        for q in 0..T / 2 {
            let av = ld32(&ap[q][i]);
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
    fn accepts(self, codes: Codes) -> bool {
        // The four-row I2_S order is x86's (the loader keeps the file's order here).
        codes != Codes::I2sRows4
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
