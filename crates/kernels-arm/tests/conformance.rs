//! Every aarch64 kernel level this CPU runs, through bitnet-quant's conformance harness (ternary
//! bit-identical to the reference, dense and f32 ops to float rounding, inputs at every offset);
//! a level this CPU lacks is named as skipped. On x86 every level is skipped (the crate's types
//! exist there, but `detect()` is `None`). Under qemu, `-cpu max` runs all three levels and
//! `-cpu cortex-a72` only `neon`.

use bitnet_kernels_arm::{Dotprod, I8mm, Neon};
use bitnet_quant::testkit;

/// Random cases per format and check (qemu runs these ~10× slower than native).
const CASES: u32 = 32;

#[test]
fn neon_i8mm() {
    testkit::kernel_set(I8mm::NAME, I8mm::detect().map(|k| (k, k.f32_ops())), "FEAT_I8MM or FEAT_DotProd", CASES);
}

#[test]
fn neon_dotprod() {
    testkit::kernel_set(Dotprod::NAME, Dotprod::detect().map(|k| (k, k.f32_ops())), "FEAT_DotProd", CASES);
}

#[test]
fn neon() {
    testkit::kernel_set(Neon::NAME, Neon::detect().map(|k| (k, k.f32_ops())), "NEON (not aarch64)", CASES);
}
