//! Every lookup loop this CPU runs against the scalar reference, on random TL1/TL2 tilings and
//! shapes (bit-identical results); the loops it cannot run are named as skipped.

use bitnet_quant::TernaryKernel;
use bitnet_tl_lut::Lut;

#[test]
fn every_lut_variant_matches_the_reference() {
    let available = Lut::available();
    for name in ["lut-avx512vbmi", "lut-avx512", "lut-avx2", "lut-neon", "lut-portable"] {
        match available.iter().find(|l| l.name() == name) {
            Some(l) => {
                bitnet_quant::testkit::tl(l, 48);
                eprintln!("tested: {name}");
            }
            None => eprintln!("skipped: {name} (not on this CPU)"),
        }
    }
}

#[test]
fn other_formats_go_to_the_reference() {
    for l in Lut::available() {
        assert!(!l.supports(bitnet_quant::TernaryFormat::Tq2_0));
        bitnet_quant::testkit::ternary(&l, 4);
    }
}

/// The weight of (row, column) and the activation of a column in a test pattern.
type Weight = fn(usize, usize) -> i8;
type Activation = fn(usize) -> i8;

/// The largest sums (every activation −128, every weight the same sign) over long runs and many
/// column tiles: the 16-bit partial sums must be widened before they overflow. Also the largest
/// sums of both signs side by side (rows of alternating sign, activations alternating −128 and
/// 127), which the SIMD walks add up in bytes for eight lookups before widening.
#[test]
fn extreme_sums_over_long_runs_stay_exact() {
    use bitnet_quant::tl::{pack_tl1, pack_tl2};
    use bitnet_quant::{
        ActScale, PackedTernary, QuantizedActivations, ScalarKernel, TernaryFormat, TernaryMatrix, TlTiling,
    };
    let cases = [
        (false, 64, 4096, TlTiling { bm: 64, bk: 1024, bmm: 16 }),
        (false, 128, 4096, TlTiling { bm: 128, bk: 2048, bmm: 64 }),
        (true, 64, 192 * 12 + 256, TlTiling { bm: 64, bk: 192, bmm: 32 }),
        (true, 32, 24 * 104, TlTiling { bm: 32, bk: 24, bmm: 32 }),
    ];
    for (tl2, rows, cols, t) in cases {
        let patterns: [(Weight, Activation); 4] = [
            (|_, _| 1, |_| -128),
            (|_, _| -1, |_| -128),
            (|_, _| 1, |_| 127),
            (|r, c| if (r + c % 2) % 2 == 0 { 1 } else { -1 }, |c| if c % 2 == 0 { -128 } else { 127 }),
        ];
        for (w, a) in patterns {
            let m = TernaryMatrix::new(rows, cols, (0..rows * cols).map(|i| w(i / cols, i % cols)).collect()).unwrap();
            let (format, bytes) = if tl2 {
                (TernaryFormat::Tl2(t), pack_tl2(&m, t).unwrap())
            } else {
                (TernaryFormat::Tl1(t), pack_tl1(&m, t).unwrap())
            };
            let w = PackedTernary::new(format, rows, cols, &bytes, Some(1.0)).unwrap();
            // One token (the table walk) and two (the panel where a variant has one).
            for n in [1, 2] {
                let codes: Vec<i8> = (0..n * cols).map(|i| a(i % cols)).collect();
                let sum = (0..cols).map(|c| i32::from(a(c))).sum();
                let x = QuantizedActivations { cols, codes, rows: vec![ActScale { scale: 1.0, sum }; n] };
                let mut want = vec![0f32; n * rows];
                ScalarKernel.gemm(&w, &x, &mut want).unwrap();
                for l in Lut::available() {
                    let mut got = vec![0f32; n * rows];
                    l.gemm(&w, &x, &mut got).unwrap();
                    assert_eq!(got, want, "{} {format:?} {rows}x{cols}, {n} tokens", l.name());
                }
            }
        }
    }
}
