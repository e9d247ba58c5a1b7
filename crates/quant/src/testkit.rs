//! The conformance harness every fast kernel is tested with (feature `testkit`): any
//! [`TernaryKernel`], [`DenseKernel`] or [`F32Ops`] against this crate's scalar reference, with
//! proptest, over row counts, lengths (every tail: I2_S half chunks, dense widths that are not
//! whole vectors), token counts, row sub-ranges and the start offset of the input (0..64 bytes:
//! dense rows come from the memory map unaligned, so inputs are placed at every offset inside a
//! buffer padded on both sides, as memchr tests its inputs).
//!
//! Ternary kernels must be bit-identical to the reference (integer sums are exact and the float
//! steps the reference's); dense and f32 kernels agree to float rounding, bounded relative to
//! Σ|w·x|. Each check panics with the kernel's name and the failing case.
//!
//! ```
//! # #[cfg(feature = "testkit")] {
//! bitnet_quant::testkit::ternary(&bitnet_quant::ScalarKernel, 8);
//! bitnet_quant::testkit::dense(&bitnet_quant::ScalarDense, 8);
//! bitnet_quant::testkit::f32_ops(&bitnet_quant::vecops::SCALAR, 8);
//! # }
//! ```

use bitnet_format::TensorType;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::dense::{DenseKernel, ScalarDense, dequantize_row, row_bytes};
use crate::i2s::{self, I2sLayout};
use crate::reference::{PackedTernary, ScalarKernel, TernaryFormat, TernaryKernel};
use crate::tq::{self, TqKind};
use crate::vecops::{Activation, F32Ops, KvBlock, Mat, SCALAR};
use crate::{ActScale, QuantizedActivations, TernaryMatrix};

/// Bytes of padding on both sides of every input; inputs start at offset 0..PAD inside it.
const PAD: usize = 64;

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

/// The bit patterns of `v`, so that comparing them counts a NaN or a signed zero too.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// `data` copied to offset `offset` of a buffer with garbage on both sides.
fn padded(data: &[u8], offset: usize) -> Vec<u8> {
    let mut buf = vec![0xA5u8; offset + data.len() + PAD];
    buf[offset..offset + data.len()].copy_from_slice(data);
    buf
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
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

fn ternary_matrix(rng: &mut Rng, rows: usize, cols: usize) -> TernaryMatrix {
    TernaryMatrix::new(rows, cols, (0..rows * cols).map(|_| rng.below(3) as i8 - 1).collect())
        .expect("the values fit the shape")
}

/// `kernel` against the reference on one matrix: every token count given, the whole matrix and a
/// random row range, the weights at byte offset `offset`.
#[allow(clippy::too_many_arguments)]
fn ternary_case(
    kernel: &dyn TernaryKernel,
    format: TernaryFormat,
    rows: usize,
    cols: usize,
    data: &[u8],
    n: usize,
    offset: usize,
    rng: &mut Rng,
) -> Result<(), TestCaseError> {
    let x = activations(rng, n, cols);
    let buf = padded(data, offset);
    // TL1/TL2 keep their scale in a separate tensor.
    let scale =
        matches!(format, TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_)).then(|| 0.25 + rng.below(100) as f32 / 64.0);
    let w = PackedTernary::new(format, rows, cols, &buf[offset..offset + data.len()], scale)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let start = rng.below(rows as u64) as usize;
    let end = start + 1 + rng.below((rows - start) as u64) as usize;
    for range in [0..rows, start..end] {
        let mut want = vec![0f32; n * range.len()];
        ScalarKernel.gemm_rows(&w, &x, range.clone(), &mut want).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut got = vec![f32::NAN; n * range.len()];
        kernel.gemm_rows(&w, &x, range.clone(), &mut got).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            bits(&got),
            bits(&want),
            "{} {:?} {}x{}, {} tokens, rows {:?}, offset {}",
            kernel.name(),
            format,
            rows,
            cols,
            n,
            range,
            offset
        );
    }
    Ok(())
}

/// Runs the three checks below on one kernel set (ternary, dense, f32 ops) with `cases` cases
/// each and prints `tested: NAME`, or prints `skipped: NAME (this CPU lacks LACKS)` when `set`
/// is `None` (the CPU does not run it): a kernel crate's conformance test per set.
pub fn kernel_set<K: TernaryKernel + DenseKernel>(name: &str, set: Option<(K, F32Ops)>, lacks: &str, cases: u32) {
    match set {
        Some((k, ops)) => {
            quantize(&k, cases);
            ternary(&k, cases);
            dense(&k, cases);
            f32_ops(&ops, cases);
            eprintln!("tested: {name}");
        }
        None => eprintln!("skipped: {name} (this CPU lacks {lacks})"),
    }
}

/// Checks a kernel's activation quantization against [`QuantizedActivations::quantize`], bit for
/// bit, on random rows of every length up to 200 (whole 32-element steps, 8-element steps and a
/// scalar tail), with zeros, infinities, NaN, halfway products and values far past the clamp.
pub fn quantize(kernel: &dyn TernaryKernel, cases: u32) {
    let shape = (1usize..200, 1usize..4, any::<u64>());
    runner(cases)
        .run(&shape, |(cols, n, seed)| {
            let mut rng = Rng(seed);
            let special = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-30, 1e30, 0.5, -1.5, 2.5];
            let x: Vec<f32> = (0..cols * n)
                .map(|_| match rng.below(12) {
                    0 => special[rng.below(special.len() as u64) as usize],
                    // Integers and halves: at a max of 127 their products round half to even.
                    1 => (rng.below(255) as f32 - 127.0) / if rng.below(2) == 0 { 1.0 } else { 2.0 },
                    _ => (rng.below(20001) as f32 - 10000.0) / (1 + rng.below(1000)) as f32,
                })
                .collect();
            let want = QuantizedActivations::quantize(&x, cols).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = kernel.quantize(&x, cols).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got.codes, &want.codes, "{} codes, {} x {}", kernel.name(), n, cols);
            for (g, w) in got.rows.iter().zip(&want.rows) {
                prop_assert!(
                    g.scale.to_bits() == w.scale.to_bits() && g.sum == w.sum,
                    "{}: {g:?} vs {w:?}",
                    kernel.name()
                );
            }
            // Rows whose max is exactly 127: codes equal the (rounded) values.
            let ints: Vec<f32> = (0..cols).map(|i| if i == 0 { 127.0 } else { (i % 255) as f32 - 127.0 }).collect();
            prop_assert_eq!(
                kernel.quantize(&ints, cols).map(|q| q.codes).ok(),
                QuantizedActivations::quantize(&ints, cols).map(|q| q.codes).ok()
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
    assert!(kernel.quantize(&[1.0; 10], 3).is_err(), "{}: a ragged batch is an error", kernel.name());
}

/// Checks a ternary kernel against [`ScalarKernel`] over `cases` random cases per format: I2_S
/// (x86 order with whole and half 256-chunks, and in the four-row order; the ARM and interleaved orders and rows that are
/// not whole blocks, which fast kernels hand to the reference), TQ2_0 and TQ1_0 with real
/// per-block scales; then that bad arguments are errors, not panics.
pub fn ternary(kernel: &dyn TernaryKernel, cases: u32) {
    let fail = |what: &str, e| panic!("{} ({what}): {e}", kernel.name());
    // Up to 19 tokens: x86's few-token loops take up to 16, in blocks of 8.
    let shape = (1usize..40, 1usize..12, 1usize..20, 0usize..PAD, any::<u64>());
    runner(cases)
        .run(&shape, |(rows, blocks, n, offset, seed)| {
            let mut rng = Rng(seed);
            let cols = blocks * 128;
            let scale = 0.37 + rng.below(100) as f32 / 50.0;
            let m = ternary_matrix(&mut rng, rows, cols);
            let bytes = i2s::pack(&m, scale, I2sLayout::X86).expect("packable");
            ternary_case(kernel, TernaryFormat::I2s(I2sLayout::X86), rows, cols, &bytes, n, offset, &mut rng)?;
            // The four-row order (what AVX-512 reads; rows in whole fours, whole 256-chunks).
            let (r4, c4) = (rows.next_multiple_of(4), cols.next_multiple_of(256));
            let m = ternary_matrix(&mut rng, r4, c4);
            let bytes = i2s::pack(&m, scale, I2sLayout::X86Rows4).expect("packable");
            ternary_case(kernel, TernaryFormat::I2s(I2sLayout::X86Rows4), r4, c4, &bytes, n, offset, &mut rng)?;
            // Rows of 64 (not whole 128-blocks) and the other I2_S orders.
            let small = ternary_matrix(&mut rng, rows * 2, 64);
            let bytes = i2s::pack(&small, 1.5, I2sLayout::X86).expect("packable");
            ternary_case(kernel, TernaryFormat::I2s(I2sLayout::X86), rows * 2, 64, &bytes, n.min(3), offset, &mut rng)?;
            // The ARM order's 64-blocks, rows of any number of them (kernels-arm runs it).
            let arm_cols = 64 * (1 + rng.below(12) as usize);
            let m = ternary_matrix(&mut rng, rows, arm_cols);
            let bytes = i2s::pack(&m, 0.5, I2sLayout::Arm).expect("packable");
            ternary_case(kernel, TernaryFormat::I2s(I2sLayout::Arm), rows, arm_cols, &bytes, n, offset, &mut rng)?;
            // The interleaved order packs rows in fours.
            let m = ternary_matrix(&mut rng, rows * 4, 256);
            let bytes = i2s::pack(&m, 0.5, I2sLayout::X86Interleaved4).expect("packable");
            let format = TernaryFormat::I2s(I2sLayout::X86Interleaved4);
            ternary_case(kernel, format, rows * 4, 256, &bytes, n.min(3), offset, &mut rng)?;
            Ok(())
        })
        .unwrap_or_else(|e| fail("I2_S", e));
    // Up to 19 blocks a row: the one-token loops take blocks eight at a time, whole groups and not.
    let shape = (1usize..24, 1usize..20, 1usize..10, 0usize..PAD, any::<u64>());
    runner(cases)
        .run(&shape, |(rows, blocks, n, offset, seed)| {
            let mut rng = Rng(seed);
            let cols = blocks * 256;
            let floats: Vec<f32> = (0..rows * cols).map(|_| (rng.below(2001) as f32 - 1000.0) / 300.0).collect();
            for (kind, format) in [(TqKind::Tq2_0, TernaryFormat::Tq2_0), (TqKind::Tq1_0, TernaryFormat::Tq1_0)] {
                let bytes: Vec<u8> =
                    floats.chunks_exact(cols).flat_map(|r| tq::quantize_row(kind, r).expect("whole blocks")).collect();
                ternary_case(kernel, format, rows, cols, &bytes, n, offset, &mut rng)?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| fail("TQ1_0/TQ2_0", e));

    extremes(kernel);

    // Bad arguments are errors.
    let bytes =
        i2s::pack(&TernaryMatrix::new(2, 128, vec![1; 256]).expect("shape"), 1.0, I2sLayout::X86).expect("packable");
    let w = PackedTernary::new(TernaryFormat::I2s(I2sLayout::X86), 2, 128, &bytes, None).expect("valid");
    let x = QuantizedActivations::quantize(&[0.5; 128], 128).expect("valid");
    let name = kernel.name();
    assert!(kernel.gemm_rows(&w, &x, 0..2, &mut [0.0; 3]).is_err(), "{name}: wrong output length");
    assert!(kernel.gemm_rows(&w, &x, 0..3, &mut [0.0; 3]).is_err(), "{name}: rows past the end");
    let short = PackedTernary { data: &bytes[..40], ..w };
    assert!(kernel.gemm_rows(&short, &x, 0..2, &mut [0.0; 2]).is_err(), "{name}: short buffer");
}

/// The sums a kernel may keep in 16 bits at their largest: every weight +1 (or every other row
/// −1) against activations all −128 or all 127, for token counts that take each x86 path (one
/// token, the few-token tiles, the interleaved GEMM), in I2_S, TQ2_0 and TQ1_0.
fn extremes(kernel: &dyn TernaryKernel) {
    let (rows, cols) = (16, 2560);
    let mixed: Vec<i8> = (0..rows * cols).map(|i| if (i / cols) % 2 == 0 { 1 } else { -1 }).collect();
    let mut formats: Vec<(TernaryFormat, Vec<u8>)> = Vec::new();
    for values in [vec![1; rows * cols], mixed] {
        let floats: Vec<f32> = values.iter().map(|&v| f32::from(v)).collect();
        let m = TernaryMatrix::new(rows, cols, values).expect("shape");
        formats.push((TernaryFormat::I2s(I2sLayout::X86), i2s::pack(&m, 1.0, I2sLayout::X86).expect("packable")));
        for (kind, format) in [(TqKind::Tq2_0, TernaryFormat::Tq2_0), (TqKind::Tq1_0, TernaryFormat::Tq1_0)] {
            let bytes =
                floats.chunks_exact(cols).flat_map(|r| tq::quantize_row(kind, r).expect("whole blocks")).collect();
            formats.push((format, bytes));
        }
    }
    for (format, bytes) in &formats {
        let w = PackedTernary::new(*format, rows, cols, bytes, None).expect("valid");
        for a in [-128i8, 127] {
            for n in [1, 4, 9, 20] {
                let rows_of = |_| ActScale { scale: 1.0, sum: i32::from(a) * cols as i32 };
                let x = QuantizedActivations { cols, codes: vec![a; n * cols], rows: (0..n).map(rows_of).collect() };
                let mut want = vec![0f32; n * rows];
                ScalarKernel.gemm_rows(&w, &x, 0..rows, &mut want).expect("reference");
                let mut got = vec![f32::NAN; n * rows];
                kernel.gemm_rows(&w, &x, 0..rows, &mut got).expect("kernel");
                assert_eq!(bits(&got), bits(&want), "{} {format:?}, activations all {a}, {n} tokens", kernel.name());
            }
        }
    }
}

/// Checks a TL1/TL2 kernel against [`ScalarKernel`] over `cases` random cases per format, each
/// with a random tiling bitnet.cpp's packer accepts (TL1: sub-tiles of 16, 32 or 64 rows; TL2:
/// column tiles of 24 to 192 and 0 to 8 trailing 32-column pair tiles), token counts 1..5, whole
/// matrices and row sub-ranges, weights at byte offsets 0..64.
pub fn tl(kernel: &dyn TernaryKernel, cases: u32) {
    use crate::tl::{TlTiling, pack_tl1, pack_tl2};
    let fail = |what: &str, e: String| panic!("{} ({what}): {e}", kernel.name());
    // Up to 19 tokens: the panel products take blocks of up to 16.
    let shape = (0usize..3, 1usize..4, 1usize..7, 1usize..5, 1usize..20, 0usize..PAD, any::<u64>());
    runner(cases)
        .run(&shape, |(sub, tiles_m, sub_per_tile, tiles_k, n, offset, seed)| {
            let mut rng = Rng(seed);
            let bmm = [16, 32, 64][sub];
            let by = 256 / bmm;
            let t = TlTiling { bm: bmm * sub_per_tile, bk: by * (1 + rng.below(3) as usize), bmm };
            let (rows, cols) = (t.bm * tiles_m, t.bk * tiles_k);
            let m = ternary_matrix(&mut rng, rows, cols);
            let bytes = pack_tl1(&m, t).expect("valid tiling");
            ternary_case(kernel, TernaryFormat::Tl1(t), rows, cols, &bytes, n, offset, &mut rng)
        })
        .unwrap_or_else(|e| fail("TL1", e.to_string()));
    let shape = (0usize..4, 1usize..4, 1usize..7, 0usize..4, 0usize..9, 1usize..5, (0usize..PAD, any::<u64>()));
    runner(cases)
        .run(&shape, |(bk, tiles_m, sub_per_tile, tiles_k, pairs, n, (offset, seed))| {
            let mut rng = Rng(seed);
            let t = TlTiling { bm: 32 * sub_per_tile, bk: [24, 48, 96, 192][bk], bmm: 32 };
            let rows = t.bm * tiles_m;
            // At least 256 columns; the pair part must fit bitnet.cpp's byte count (≤ 256).
            let triples = (256usize.saturating_sub(32 * pairs)).div_ceil(t.bk).max(tiles_k) * t.bk;
            let cols = triples + 32 * pairs;
            let m = ternary_matrix(&mut rng, rows, cols);
            let Ok(bytes) = pack_tl2(&m, t) else { return Ok(()) };
            ternary_case(kernel, TernaryFormat::Tl2(t), rows, cols, &bytes, n, offset, &mut rng)
        })
        .unwrap_or_else(|e| fail("TL2", e.to_string()));
}

/// Random bytes that decode to finite, moderate values for every dense type.
fn dense_weights(ty: TensorType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let rb = row_bytes(ty, cols).expect("whole blocks");
    let mut b: Vec<u8> = (0..rows * rb).map(|_| (rng.next() >> 24) as u8).collect();
    match ty {
        TensorType::F32 => b.chunks_exact_mut(4).for_each(|f| f[3] = 0x3e | (f[3] & 0x80)),
        TensorType::F16 | TensorType::BF16 => {
            let hi = if ty == TensorType::F16 { 0x38 } else { 0x3e };
            b.chunks_exact_mut(2).for_each(|h| h[1] = hi | (h[1] & 0x83));
        }
        TensorType::Q8_0 => b.chunks_exact_mut(34).for_each(|blk| blk[1] = 0x20),
        TensorType::Q6_K => b.chunks_exact_mut(210).for_each(|blk| blk[209] = 0x20),
        other => unreachable!("{other} is not a dense type"),
    }
    b
}

/// The dense types a [`DenseKernel`] takes.
pub const DENSE: [TensorType; 5] =
    [TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0, TensorType::Q6_K];

/// Checks a dense kernel against [`ScalarDense`] over `cases` random cases of every dense type:
/// |got − want| ≤ 1e-5·Σ|w·x| for each output; float widths that are not whole vectors; weights
/// at every byte offset 0..64; then that bad arguments are errors.
pub fn dense(kernel: &dyn DenseKernel, cases: u32) {
    // Up to 9 tokens: the instruction sets' row products take tiles of 4 and 2 tokens.
    let shape = (1usize..20, 1usize..6, 1usize..10, 0usize..40, 0usize..PAD, any::<u64>());
    runner(cases)
        .run(&shape, |(rows, blocks, n, extra, offset, seed)| {
            for ty in DENSE {
                let cols = match ty {
                    // 4–23 blocks: one-token loops take Q8_0 blocks eight at a time.
                    TensorType::Q8_0 => (4 * blocks + extra % 4) * 32,
                    TensorType::Q6_K => blocks * 256,
                    _ => blocks * 32 + extra,
                };
                let data = dense_weights(ty, rows, cols, seed);
                let buf = padded(&data, offset);
                let w = &buf[offset..offset + data.len()];
                let x: Vec<f32> =
                    (0..n * cols).map(|i| ((i * 7919 + seed as usize) % 201) as f32 / 100.0 - 1.0).collect();
                let start = (seed as usize) % rows;
                let rb = row_bytes(ty, cols).expect("whole blocks");
                for range in [0..rows, start..rows] {
                    let mut want = vec![0f32; n * range.len()];
                    ScalarDense
                        .gemm_rows(ty, w, cols, &x, range.clone(), &mut want)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut got = vec![f32::NAN; n * range.len()];
                    kernel
                        .gemm_rows(ty, w, cols, &x, range.clone(), &mut got)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                        let r = range.start + j % range.len();
                        let mut row = vec![0f32; cols];
                        dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut row);
                        let xr = &x[(j / range.len()) * cols..][..cols];
                        let mag: f32 = row.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum();
                        prop_assert!(
                            (g - e).abs() <= 1e-5 * mag + 1e-30,
                            "{} {} {}x{} offset {}: {} vs {}",
                            kernel.name(),
                            ty,
                            rows,
                            cols,
                            offset,
                            g,
                            e
                        );
                    }
                    // A token's results do not depend on the batch it came in (a server's
                    // answers must not change with its other requests).
                    for (j, xr) in x.chunks_exact(cols).enumerate() {
                        let mut alone = vec![f32::NAN; range.len()];
                        kernel
                            .gemm_rows(ty, w, cols, xr, range.clone(), &mut alone)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let batch = &got[j * range.len()..(j + 1) * range.len()];
                        prop_assert!(
                            alone.iter().zip(batch).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{} {} {}x{}: token {} of {} differs from the same token alone",
                            kernel.name(),
                            ty,
                            rows,
                            cols,
                            j,
                            n
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));

    let w = dense_weights(TensorType::F16, 2, 64, 1);
    let name = kernel.name();
    let mut out = [0f32; 2];
    assert!(kernel.gemm_rows(TensorType::F16, &w, 64, &[0.0; 63], 0..2, &mut out).is_err(), "{name}: ragged x");
    assert!(kernel.gemm_rows(TensorType::F16, &w[..100], 64, &[0.0; 64], 0..2, &mut out).is_err(), "{name}: short w");
    assert!(
        kernel.gemm_rows(TensorType::Q8_0, &w, 48, &[0.0; 48], 0..1, &mut out[..1]).is_err(),
        "{name}: partial block"
    );
    assert!(kernel.gemm_rows(TensorType::I2_S, &w, 64, &[0.0; 64], 0..1, &mut out[..1]).is_err(), "{name}: not dense");
}

/// Checks f32 ops against [`SCALAR`] over `cases` random cases: `dot` and `axpy` at every length
/// 0..200 and element offset 0..16, `glu` (every activation) and `softmax` there bit for bit; attention `scores` and `weighted_sum` (f32 and f16 keys and
/// values) for head sizes that are and are not whole vectors, strides above the head size, and
/// every offset.
pub fn f32_ops(ops: &F32Ops, cases: u32) {
    let close = |got: f32, want: f32, mag: f32| (got - want).abs() <= 1e-5 * mag + 1e-6;
    runner(cases)
        .run(&(0usize..200, 0usize..16, any::<u64>()), |(n, off, seed)| {
            let mut rng = Rng(seed);
            let mut val = || (rng.below(2001) as f32 - 1000.0) / 500.0;
            let a: Vec<f32> = (0..n + off).map(|_| val()).collect();
            let b: Vec<f32> = (0..n + off).map(|_| val()).collect();
            let (a, b) = (&a[off..], &b[off..]);
            let mag: f32 = a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum();
            let (got, want) = ((ops.dot)(a, b), (SCALAR.dot)(a, b));
            prop_assert!(close(got, want, mag), "{} dot n={} off={}: {} vs {}", ops.name, n, off, got, want);
            let mut y = b.to_vec();
            (ops.axpy)(&mut y, 0.5, a);
            for i in 0..n {
                prop_assert!((y[i] - (b[i] + 0.5 * a[i])).abs() <= 1e-6, "{} axpy n={} i={}", ops.name, n, i);
            }
            // Element-wise and fixed-order: the same bits as the reference, at any width. Gate
            // values up to ±40 reach exp's clamp.
            let g: Vec<f32> = a.iter().map(|v| v * 20.0).collect();
            for act in [Activation::Silu, Activation::Relu2, Activation::GeluTanh] {
                let (mut got, mut want) = (g.clone(), g.clone());
                (ops.glu)(act, &mut got, b);
                (SCALAR.glu)(act, &mut want, b);
                prop_assert!(bits(&got) == bits(&want), "{} glu {:?} n={} off={}", ops.name, act, n, off);
            }
            let (mut got, mut want) = (g.clone(), g);
            (ops.softmax)(&mut got);
            (SCALAR.softmax)(&mut want);
            prop_assert!(bits(&got) == bits(&want), "{} softmax n={} off={}", ops.name, n, off);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", ops.name));
    runner(cases)
        .run(&(1usize..300, 0usize..64, 1usize..40, 0usize..16, any::<u64>()), |(hd, more, n, off, seed)| {
            let stride = hd + more;
            let mut rng = Rng(seed);
            let mut val = || (rng.below(2001) as f32 - 1000.0) / 1000.0;
            let q: Vec<f32> = (0..hd).map(|_| val()).collect();
            let k: Vec<f32> = (0..off + n * stride).map(|_| val()).collect();
            let w: Vec<f32> = (0..n).map(|i| 1.0 / (1.0 + i as f32)).collect();
            let k = &k[off..];
            let k16: Vec<u8> = k.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
            // Every output is bounded by Σ|q|·max|k| (scores) or Σw·max|v| (weighted sums): ≤ 1e-4.
            let near = |got: &[f32], want: &[f32], what: &str| -> Result<(), TestCaseError> {
                for (g, e) in got.iter().zip(want) {
                    prop_assert!(
                        (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{} {} hd={}: {} vs {}",
                        ops.name,
                        what,
                        hd,
                        g,
                        e
                    );
                }
                Ok(())
            };
            let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
            (ops.scores)(&q, k, stride, &mut got);
            (SCALAR.scores)(&q, k, stride, &mut want);
            near(&got, &want, "scores")?;
            (ops.scores_f16)(&q, &k16, stride, &mut got);
            (SCALAR.scores_f16)(&q, &k16, stride, &mut want);
            near(&got, &want, "scores_f16")?;
            let (mut got, mut want) = (vec![0.25f32; hd], vec![0.25f32; hd]);
            (ops.weighted_sum)(&w, k, stride, &mut got);
            (SCALAR.weighted_sum)(&w, k, stride, &mut want);
            near(&got, &want, "weighted_sum")?;
            let (mut got, mut want) = (vec![0.25f32; hd], vec![0.25f32; hd]);
            (ops.weighted_sum_f16)(&w, &k16, stride, &mut got);
            (SCALAR.weighted_sum_f16)(&w, &k16, stride, &mut want);
            near(&got, &want, "weighted_sum_f16")
        })
        .unwrap_or_else(|e| panic!("{}: {e}", ops.name));
    // Small products (a prompt's attention): every shape up to 20 × 70 × 70, rows of `a`, `b`
    // and `out` wider than the matrix, `out` added to; transposes and f16 widening bit for bit.
    runner(cases)
        .run(&(0usize..20, 0usize..70, 0usize..70, 0usize..5, any::<u64>()), |(m, k, n, more, seed)| {
            let mut rng = Rng(seed);
            let mut val = || (rng.below(2001) as f32 - 1000.0) / 1000.0;
            let (sa, sb, so) = (k + more, n + 2 * more, n + 3 * more);
            let a: Vec<f32> = (0..m * sa).map(|_| val()).collect();
            let b: Vec<f32> = (0..k * sb).map(|_| val()).collect();
            let init: Vec<f32> = (0..m * so).map(|_| val()).collect();
            let (a, b) =
                (Mat { data: &a, rows: m, cols: k, stride: sa }, Mat { data: &b, rows: k, cols: n, stride: sb });
            let (mut got, mut want) = (init.clone(), init);
            (ops.matmul_add)(a, b, &mut got, so);
            (SCALAR.matmul_add)(a, b, &mut want, so);
            for (g, e) in got.iter().zip(&want) {
                // Each sum: k products of magnitude ≤ 1, summed in another order (FMA).
                prop_assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + k as f32),
                    "{} matmul_add {}x{}x{}: {} vs {}",
                    ops.name,
                    m,
                    k,
                    n,
                    g,
                    e
                );
            }
            let ds = k + more;
            let (mut got, mut want) = (vec![0f32; n * ds], vec![0f32; n * ds]);
            (ops.transpose)(b, &mut got, ds);
            (SCALAR.transpose)(b, &mut want, ds);
            prop_assert!(bits(&got) == bits(&want), "{} transpose {}x{}", ops.name, k, n);
            let halves: Vec<u8> = a.data.iter().flat_map(|&x| half::f16::from_f32(x * 70.0).to_le_bytes()).collect();
            let (mut got, mut want) = (vec![0f32; a.data.len()], vec![0f32; a.data.len()]);
            (ops.f16_to_f32)(&halves, &mut got);
            (SCALAR.f16_to_f32)(&halves, &mut want);
            prop_assert!(bits(&got) == bits(&want), "{} f16_to_f32 n={}", ops.name, got.len());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", ops.name));
    // Block-quantized keys and values: heads of 1..10 blocks, positions `stride` bytes apart
    // (a whole row of several heads, plus an odd byte offset: blocks are not aligned).
    runner(cases)
        .run(&(1usize..10, 0usize..3, 1usize..40, 0usize..16, any::<u64>()), |(blocks, more, n, off, seed)| {
            let mut rng = Rng(seed);
            let mut val = || (rng.below(2001) as f32 - 1000.0) / 1000.0;
            let hd = 32 * blocks;
            let q: Vec<f32> = (0..hd).map(|_| val()).collect();
            let w: Vec<f32> = (0..n).map(|i| 1.0 / (1.0 + i as f32)).collect();
            let x: Vec<f32> = (0..n * (hd + 32 * more)).map(|_| val()).collect();
            for ty in [KvBlock::Q8_0, KvBlock::Q4_0] {
                let stride = ty.bytes_of(hd + 32 * more);
                let mut bytes = vec![0u8; off + n * stride];
                ty.quantize(&x, &mut bytes[off..]);
                let kv = &bytes[off..];
                let near = |got: &[f32], want: &[f32], what: &str| -> Result<(), TestCaseError> {
                    for (g, e) in got.iter().zip(want) {
                        let ok = (g - e).abs() <= 1e-4 * (1.0 + e.abs());
                        prop_assert!(ok, "{} {} {:?} hd={}: {} vs {}", ops.name, what, ty, hd, g, e);
                    }
                    Ok(())
                };
                let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
                (ops.scores_kv)(ty, &q, kv, stride, &mut got);
                (SCALAR.scores_kv)(ty, &q, kv, stride, &mut want);
                near(&got, &want, "scores_kv")?;
                let (mut got, mut want) = (vec![0.25f32; hd], vec![0.25f32; hd]);
                (ops.weighted_sum_kv)(ty, &w, kv, stride, &mut got);
                (SCALAR.weighted_sum_kv)(ty, &w, kv, stride, &mut want);
                near(&got, &want, "weighted_sum_kv")?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", ops.name));
}
