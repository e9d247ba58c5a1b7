//! Dense kernels against the scalar reference on random shapes and every dense type. The fast
//! paths sum in vector lanes, so they agree to float rounding: |got − want| ≤ 1e-5·Σ|w·x|.

use bitnet_format::TensorType;
use bitnet_kernels_x86::{Avx2Dense, Avx512Dense};
use bitnet_quant::dense::{dequantize_row, row_bytes};
use bitnet_quant::{DenseKernel, ScalarDense};
use proptest::prelude::*;

fn kernels() -> Vec<Box<dyn DenseKernel>> {
    let mut out: Vec<Box<dyn DenseKernel>> = Vec::new();
    match Avx512Dense::detect() {
        Some(k) => out.push(Box::new(k)),
        None => eprintln!("skipped: avx512 dense (this CPU lacks AVX-512 F/BW)"),
    }
    match Avx2Dense::detect() {
        Some(k) => out.push(Box::new(k)),
        None => eprintln!("skipped: avx2-fma dense (this CPU lacks AVX2/FMA/F16C)"),
    }
    out
}

/// Random bytes that decode to finite, moderate values for every dense type.
fn weights(ty: TensorType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        ((s ^ (s >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 24) as u8
    };
    let mut b: Vec<u8> = (0..rows * row_bytes(ty, cols).unwrap()).map(|_| next()).collect();
    match ty {
        TensorType::F32 => b.chunks_exact_mut(4).for_each(|f| f[3] = 0x3e | (f[3] & 0x80)),
        TensorType::F16 | TensorType::BF16 => {
            let hi = if ty == TensorType::F16 { 0x38 } else { 0x3e };
            b.chunks_exact_mut(2).for_each(|h| h[1] = hi | (h[1] & 0x83));
        }
        TensorType::Q8_0 => b.chunks_exact_mut(34).for_each(|blk| blk[1] = 0x20),
        TensorType::Q6_K => b.chunks_exact_mut(210).for_each(|blk| blk[209] = 0x20),
        _ => unreachable!(),
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn dense_matches_reference(rows in 1usize..20, blocks in 1usize..6, n in 1usize..4, extra in 0usize..40, seed: u64) {
        for ty in [TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0, TensorType::Q6_K] {
            // Float types take any width (odd ones exercise the scalar tails); blocks need whole blocks.
            let cols = match ty {
                TensorType::Q8_0 => blocks * 32,
                TensorType::Q6_K => blocks * 256,
                _ => blocks * 32 + extra,
            };
            let w = weights(ty, rows, cols, seed);
            let x: Vec<f32> = (0..n * cols).map(|i| ((i * 7919 + seed as usize) % 201) as f32 / 100.0 - 1.0).collect();
            let start = (seed as usize) % rows;
            for range in [0..rows, start..rows] {
                let mut want = vec![0f32; n * range.len()];
                ScalarDense.gemm_rows(ty, &w, cols, &x, range.clone(), &mut want).unwrap();
                let rb = row_bytes(ty, cols).unwrap();
                for k in kernels() {
                    let mut got = vec![f32::NAN; n * range.len()];
                    k.gemm_rows(ty, &w, cols, &x, range.clone(), &mut got).unwrap();
                    for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                        let r = range.start + j % range.len();
                        let mut row = vec![0f32; cols];
                        dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut row);
                        let xr = &x[(j / range.len()) * cols..][..cols];
                        let mag: f32 = row.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum();
                        prop_assert!((g - e).abs() <= 1e-5 * mag + 1e-30, "{} {ty} {rows}x{cols}: {g} vs {e}", k.name());
                    }
                }
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let w = weights(TensorType::F16, 2, 64, 1);
    for k in kernels() {
        let mut out = [0f32; 2];
        assert!(k.gemm_rows(TensorType::F16, &w, 64, &[0.0; 63], 0..2, &mut out).is_err(), "ragged x");
        assert!(k.gemm_rows(TensorType::F16, &w[..100], 64, &[0.0; 64], 0..2, &mut out).is_err(), "short w");
        assert!(k.gemm_rows(TensorType::Q8_0, &w, 48, &[0.0; 48], 0..1, &mut out[..1]).is_err(), "partial block");
        assert!(k.gemm_rows(TensorType::I2_S, &w, 64, &[0.0; 64], 0..1, &mut out[..1]).is_err(), "not dense");
    }
}

#[test]
fn f32_ops_match_scalar() {
    let all = bitnet_kernels_x86::vecops::available();
    eprintln!("f32 op sets tested: {:?}", all.iter().map(|o| o.name).collect::<Vec<_>>());
    for n in [0usize, 1, 7, 8, 15, 16, 17, 63, 64, 65, 128, 200] {
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
        for ops in &all {
            assert!(((ops.dot)(&a, &b) - want).abs() <= 1e-5 * mag + 1e-30, "{} dot n={n}", ops.name);
            let mut y = b.clone();
            (ops.axpy)(&mut y, 0.5, &a);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() <= 1e-6, "{} axpy n={n} i={i}", ops.name);
            }
        }
    }
}

#[test]
fn attention_ops_match_scalar() {
    use bitnet_quant::vecops::SCALAR;
    for (hd, stride, n) in [
        (128usize, 640usize, 37usize),
        (64, 64, 5),
        (100, 300, 9),
        (7, 7, 3),
        (16, 48, 1),
        (256, 256, 8),
        (48, 48, 4),
        (120, 3840, 13),
    ] {
        let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.31).sin()).collect();
        let k: Vec<f32> = (0..n * stride).map(|i| (i as f32 * 0.07).cos()).collect();
        let w: Vec<f32> = (0..n).map(|i| 1.0 / (1.0 + i as f32)).collect();
        let mut want_s = vec![0f32; n];
        (SCALAR.scores)(&q, &k, stride, &mut want_s);
        let mut want_o = vec![0.25f32; hd];
        (SCALAR.weighted_sum)(&w, &k, stride, &mut want_o);
        // The same keys/values stored as f16 (the f16 KV cache).
        let k16: Vec<u8> = k.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let mut want_s16 = vec![0f32; n];
        (SCALAR.scores_f16)(&q, &k16, stride, &mut want_s16);
        let mut want_o16 = vec![0.25f32; hd];
        (SCALAR.weighted_sum_f16)(&w, &k16, stride, &mut want_o16);
        for (a, b) in want_s16.iter().zip(&want_s) {
            assert!((a - b).abs() <= 2e-2, "scalar f16 scores hd={hd}: {a} vs {b}");
        }
        let close = |got: &[f32], want: &[f32], what: &str, name: &str| {
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() <= 1e-4, "{name} {what} hd={hd}: {a} vs {b}");
            }
        };
        for ops in bitnet_kernels_x86::vecops::available() {
            let mut s = vec![0f32; n];
            (ops.scores)(&q, &k, stride, &mut s);
            close(&s, &want_s, "scores", ops.name);
            let mut o = vec![0.25f32; hd];
            (ops.weighted_sum)(&w, &k, stride, &mut o);
            close(&o, &want_o, "weighted_sum", ops.name);
            (ops.scores_f16)(&q, &k16, stride, &mut s);
            close(&s, &want_s16, "scores_f16", ops.name);
            let mut o = vec![0.25f32; hd];
            (ops.weighted_sum_f16)(&w, &k16, stride, &mut o);
            close(&o, &want_o16, "weighted_sum_f16", ops.name);
        }
    }
}
