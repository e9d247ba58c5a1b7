//! Base NEON (every aarch64 CPU): 16 int8 products per `smull` + `smlal2` into eight i16 lanes
//! (two products each, |p| ≤ 32·128, so no overflow), added pairwise into four i32 lanes by
//! `sadalp`.

use bitnet_quant::isa::TernaryIsa;

use crate::Neon;
use crate::codes::{Layout, gemm_tiled};

/// `acc` plus the 16 products of `c` and `a`.
#[target_feature(enable = "neon")]
#[inline]
fn mac(acc: int32x4_t, c: int8x16_t, a: int8x16_t) -> int32x4_t {
    vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(c), vget_low_s8(a)), c, a))
}

crate::codes::ternary_loops!("neon");

impl TernaryIsa for Neon {
    fn accepts(self, _: Codes) -> bool {
        true
    }

    fn gemv(self, job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { gemv(job, rows, act, sums, dots) }
    }

    fn gemm(self, job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, _: &[i32], dots: &mut [f32]) {
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe {
            gemm_tiled::<4, 4>(Layout::Plain, job, rows, acts, stride, dots, |w, a, s, k| tile::<4, 4>(w, a, s, k));
        }
    }
}
