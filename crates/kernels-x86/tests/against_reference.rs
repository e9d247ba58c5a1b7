//! Every fast path against the scalar reference in bitnet-quant, on random shapes: odd row
//! counts, one row, one token, row sub-ranges, columns that are and are not whole 256-chunks,
//! activation codes at the int8 extremes. Integer sums are exact and the float steps are the
//! reference's, so results must be bit-identical.

use bitnet_kernels_x86::{Avx2Kernel, Avx512Kernel};
use bitnet_quant::tq::{self, TqKind};
use bitnet_quant::{
    ActScale, I2sLayout, PackedTernary, QuantizedActivations, ScalarKernel, TernaryFormat, TernaryKernel,
    TernaryMatrix, i2s,
};
use proptest::prelude::*;

/// The kernels this CPU runs; prints the ones it skips.
fn kernels() -> Vec<Box<dyn TernaryKernel>> {
    let mut out: Vec<Box<dyn TernaryKernel>> = Vec::new();
    match Avx512Kernel::detect() {
        Some(k) => out.push(Box::new(k)),
        None => eprintln!("skipped: avx512-vnni (this CPU lacks AVX-512 BW/VNNI)"),
    }
    match Avx2Kernel::detect() {
        Some(k) => out.push(Box::new(k)),
        None => eprintln!("skipped: avx2 (this CPU lacks AVX2)"),
    }
    out
}

#[test]
fn report_paths() {
    let names: Vec<_> = kernels().iter().map(|k| k.name()).collect();
    eprintln!("x86 kernel paths tested on this CPU: {names:?}");
}

/// A deterministic stream of pseudo-random numbers (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn activations(rng: &mut Rng, n: usize, cols: usize) -> QuantizedActivations {
    let codes: Vec<i8> = (0..n * cols)
        .map(|_| match rng.below(10) {
            0 => -128,
            1 => 127,
            _ => rng.next() as i8,
        })
        .collect();
    let rows = codes
        .chunks_exact(cols)
        .map(|r| ActScale { scale: 1.0 + rng.below(1000) as f32 / 7.0, sum: r.iter().map(|&v| i32::from(v)).sum() })
        .collect();
    QuantizedActivations { cols, codes, rows }
}

fn check(format: TernaryFormat, rows: usize, cols: usize, data: &[u8], n: usize, seed: u64) {
    let mut rng = Rng(seed);
    let x = activations(&mut rng, n, cols);
    let w = PackedTernary::new(format, rows, cols, data, None).unwrap();
    let start = rng.below(rows as u64) as usize;
    let end = start + 1 + rng.below((rows - start) as u64) as usize;
    for range in [0..rows, start..end] {
        let mut want = vec![0f32; n * range.len()];
        ScalarKernel.gemm_rows(&w, &x, range.clone(), &mut want).unwrap();
        for k in kernels() {
            let mut got = vec![f32::NAN; n * range.len()];
            k.gemm_rows(&w, &x, range.clone(), &mut got).unwrap();
            assert_eq!(got, want, "{} {format:?} {rows}x{cols}, {n} tokens, rows {range:?}", k.name());
        }
    }
}

fn ternary(rng: &mut Rng, rows: usize, cols: usize) -> TernaryMatrix {
    TernaryMatrix::new(rows, cols, (0..rows * cols).map(|_| rng.below(3) as i8 - 1).collect()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn i2s_matches_reference(rows in 1usize..40, blocks in 1usize..12, n in 1usize..10, seed: u64) {
        let cols = blocks * 128;
        let mut rng = Rng(seed);
        let bytes = i2s::pack(&ternary(&mut rng, rows, cols), 0.37 + rng.below(100) as f32 / 50.0, I2sLayout::X86).unwrap();
        check(TernaryFormat::I2s(I2sLayout::X86), rows, cols, &bytes, n, seed);
    }

    /// TQ2_0 and TQ1_0 (base-3 digits, decoded in 16-bit lanes), with real per-block scales.
    #[test]
    fn tq_match_reference(rows in 1usize..24, blocks in 1usize..7, n in 1usize..10, seed: u64) {
        let cols = blocks * 256;
        let mut rng = Rng(seed);
        let floats: Vec<f32> = (0..rows * cols).map(|_| (rng.below(2001) as f32 - 1000.0) / 300.0).collect();
        for (kind, format) in [(TqKind::Tq2_0, TernaryFormat::Tq2_0), (TqKind::Tq1_0, TernaryFormat::Tq1_0)] {
            let bytes: Vec<u8> = floats.chunks_exact(cols).flat_map(|r| tq::quantize_row(kind, r).unwrap()).collect();
            check(format, rows, cols, &bytes, n, seed);
        }
    }

    /// Shapes and formats without a fast path go to the reference inside the kernel.
    #[test]
    fn fallbacks_match_reference(rows in 1usize..9, n in 1usize..4, seed: u64) {
        let mut rng = Rng(seed);
        let (r2, c2) = (rows * 2, 64); // I2_S rows that are not whole 128-blocks
        let bytes = i2s::pack(&ternary(&mut rng, r2, c2), 1.5, I2sLayout::X86).unwrap();
        check(TernaryFormat::I2s(I2sLayout::X86), r2, c2, &bytes, n, seed);
        let m = ternary(&mut rng, rows * 4, 256);
        for layout in [I2sLayout::Arm, I2sLayout::X86Interleaved4] {
            let bytes = i2s::pack(&m, 0.5, layout).unwrap();
            check(TernaryFormat::I2s(layout), rows * 4, 256, &bytes, n, seed);
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    let bytes = i2s::pack(&TernaryMatrix::new(2, 128, vec![1; 256]).unwrap(), 1.0, I2sLayout::X86).unwrap();
    let w = PackedTernary::new(TernaryFormat::I2s(I2sLayout::X86), 2, 128, &bytes, None).unwrap();
    let x = QuantizedActivations::quantize(&[0.5; 128], 128).unwrap();
    for k in kernels() {
        assert!(k.gemm_rows(&w, &x, 0..2, &mut [0.0; 3]).is_err(), "{}: wrong output length", k.name());
        assert!(k.gemm_rows(&w, &x, 0..3, &mut [0.0; 3]).is_err(), "{}: rows past the end", k.name());
        let short = PackedTernary { data: &bytes[..40], ..w };
        let mut out = [0.0; 2];
        // A short buffer goes to the reference, which reports it instead of reading past it.
        assert!(k.gemm_rows(&short, &x, 0..2, &mut out).is_err(), "{}: short buffer", k.name());
    }
}
