//! Base NEON (every aarch64 CPU): int8 products by `smull`/`smlal`/`smlal2` into eight i16
//! lanes, widened into four i32 lanes by `sadalp` before an i16 lane can overflow: after four
//! products of masked codes (|p| ≤ 32·128) in one token's loop, after 64 steps of two signed
//! ternary products (|p| ≤ 128) in the many-token tile.

use bitnet_quant::isa::TernaryIsa;

use crate::Neon;
use crate::codes::{Layout, gemm_tiled};

/// `acc` plus the 16 products of `c` and `a`.
#[target_feature(enable = "neon")]
#[inline]
fn mac(acc: int32x4_t, c: int8x16_t, a: int8x16_t) -> int32x4_t {
    vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(c), vget_low_s8(a)), c, a))
}

/// `acc` plus the products of both pairs: four products per i16 lane, then one `sadalp`.
#[target_feature(enable = "neon")]
#[inline]
fn mac2(acc: int32x4_t, c0: int8x16_t, a0: int8x16_t, c1: int8x16_t, a1: int8x16_t) -> int32x4_t {
    let p = vmlal_high_s8(vmull_s8(vget_low_s8(c0), vget_low_s8(a0)), c0, a0);
    vpadalq_s16(acc, vmlal_high_s8(vmlal_s8(p, vget_low_s8(c1), vget_low_s8(a1)), c1, a1))
}

crate::codes::ternary_loops!("neon");

/// TQ1_0 rows against one token: each block's digits decoded to codes (`tq1_codes`), then
/// multiplied by `mac`.
#[target_feature(enable = "neon")]
fn tq1_gemv(job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    tq_gemv(job, rows, act, sums, dots, |block, a| {
        let codes = crate::codes::tq1_codes(block);
        let mut acc = [vdupq_n_s32(0); 4];
        for (i, &v) in codes.iter().enumerate() {
            acc[i % 4] = mac(acc[i % 4], vreinterpretq_s8_u8(v), ld_i8(&a[16 * i..]));
        }
        vaddvq_s32(vaddq_s32(vaddq_s32(acc[0], acc[1]), vaddq_s32(acc[2], acc[3])))
    })
}

/// Rows × tokens of the many-token tile: 8 i16 and 8 i32 accumulators, 2 + 4 loads and 16
/// multiply-accumulates per 16 elements.
const R: usize = 2;
const T: usize = 4;

/// Steps of 16 elements an i16 lane takes before widening: two products of at most 128 each.
const STEPS: usize = 64;

/// `R` rows × `T` tokens of signed ternary values in element order, over the elements `k`.
// Not inlined: one call per tile is nothing, and tools/arm-mca.py finds the loop by name.
#[inline(never)]
#[target_feature(enable = "neon")]
fn tile(w: &[i8], a: &[i8], stride: usize, k: Range<usize>) -> [[i32; T]; R] {
    use crate::codes::{blocks16, ld16};
    let wr: [&[[i8; 16]]; R] = std::array::from_fn(|r| blocks16(w, r * stride, &k));
    let ar: [&[[i8; 16]]; T] = std::array::from_fn(|t| blocks16(a, t * stride, &k));
    let mut acc = [[vdupq_n_s32(0); T]; R];
    let n = k.len() / 16;
    let mut i0 = 0;
    while i0 < n {
        let mut acc16 = [[vdupq_n_s16(0); T]; R];
        for i in i0..(i0 + STEPS).min(n) {
            let wv: [int8x16_t; R] = std::array::from_fn(|r| ld16(&wr[r][i]));
            for t in 0..T {
                let av = ld16(&ar[t][i]);
                for r in 0..R {
                    let p = vmlal_s8(acc16[r][t], vget_low_s8(wv[r]), vget_low_s8(av));
                    acc16[r][t] = vmlal_high_s8(p, wv[r], av);
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                acc[r][t] = vpadalq_s16(acc[r][t], acc16[r][t]);
            }
        }
        i0 += STEPS;
    }
    acc.map(|row| row.map(|v| vaddvq_s32(v)))
}

impl TernaryIsa for Neon {
    fn accepts(self, codes: Codes) -> bool {
        // The four-row I2_S order is x86's (the loader keeps the file's order here).
        codes != Codes::I2sRows4
    }

    fn gemv(self, job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { gemv(job, rows, act, sums, dots) }
    }

    fn gemm(self, job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, _: &[i32], dots: &mut [f32]) {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe {
            gemm_tiled::<R, T>(Layout::Plain, job, rows, acts, stride, dots, |w, a, s, k| tile(w, a, s, k));
        }
    }
}
