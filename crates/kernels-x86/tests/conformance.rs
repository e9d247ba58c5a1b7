//! Every x86 kernel set this CPU runs, through bitnet-quant's conformance harness (ternary
//! bit-identical to the reference, dense and f32 ops to float rounding, inputs at every offset);
//! a set this CPU lacks is named as skipped.

use bitnet_kernels_x86::{Avx2, Avx512, AvxVnni, AvxVnniEvex};
use bitnet_quant::testkit;

/// Random cases per format and check.
const CASES: u32 = 48;

#[test]
fn avx512_vnni() {
    testkit::kernel_set(Avx512::NAME, Avx512::detect().map(|k| (k, k.f32_ops())), "AVX-512 F/BW/VL/VNNI", CASES);
}

#[test]
fn avx_vnni() {
    testkit::kernel_set(AvxVnni::NAME, AvxVnni::detect().map(|k| (k, k.f32_ops())), "AVX-VNNI/AVX2/FMA/F16C", CASES);
}

/// The AVX-VNNI loops in EVEX encoding: where the CPU lacks AVX-VNNI (and qemu cannot emulate
/// it), this is what tests them.
#[test]
fn avx_vnni_evex() {
    testkit::kernel_set(
        AvxVnniEvex::NAME,
        AvxVnniEvex::detect().map(|k| (k, k.f32_ops())),
        "AVX-512 F/VL/VNNI + AVX2/FMA/F16C",
        CASES,
    );
}

#[test]
fn avx2() {
    testkit::kernel_set(Avx2::NAME, Avx2::detect().map(|k| (k, k.f32_ops())), "AVX2/FMA/F16C", CASES);
}

#[test]
fn the_harness_accepts_the_reference() {
    testkit::ternary(&bitnet_quant::ScalarKernel, 4);
    testkit::dense(&bitnet_quant::ScalarDense, 4);
    testkit::f32_ops(&bitnet_quant::vecops::SCALAR, 4);
}

/// A kernel that is wrong in one output of one token: the harness must catch it.
struct OffByOne;

impl bitnet_quant::TernaryKernel for OffByOne {
    fn name(&self) -> &'static str {
        "off-by-one"
    }

    fn supports(&self, _: bitnet_quant::TernaryFormat) -> bool {
        true
    }

    fn gemm_rows(
        &self,
        w: &bitnet_quant::PackedTernary<'_>,
        x: &bitnet_quant::QuantizedActivations,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<(), bitnet_quant::QuantError> {
        bitnet_quant::ScalarKernel.gemm_rows(w, x, rows, out)?;
        if let Some(last) = out.last_mut() {
            *last = f32::from_bits(last.to_bits() ^ 1);
        }
        Ok(())
    }
}

#[test]
#[should_panic(expected = "off-by-one")]
fn the_harness_catches_a_wrong_kernel() {
    testkit::ternary(&OffByOne, 8);
}

/// The bandwidth probe sums exactly (wrapping) at every length and offset.
#[test]
fn sum_u64_is_the_wrapping_sum() {
    let buf: Vec<u64> = (0..5000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    for (start, len) in [(0, 0), (0, 1), (3, 31), (1, 32), (5, 33), (7, 4000), (0, 5000)] {
        let part = &buf[start..start + len];
        let want = part.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        assert_eq!(bitnet_kernels_x86::sum_u64(part), want, "{start}+{len}");
    }
}
