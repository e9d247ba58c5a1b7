//! Every ternary and dense kernel this CPU runs, at 2B-4T and 7B shapes: one token (GEMV, the
//! decoding case, reported as GB/s of weights streamed) and 128 tokens (GEMM, prompt
//! processing); decoding attention over each KV cache type. Single-threaded: the kernels
//! themselves, not the pool.
//!
//! `cargo bench -p bitnet-benches` (add `-- 2B-4T` to filter).

use std::hint::black_box;

use bitnet_benches::{Aligned, B2B4T, B7, HEAD_2B4T, I2S, TL2, activations, dense, for_shape, packed, scale_of};
use bitnet_format::TensorType;
use bitnet_kernels::Kernels;
use bitnet_quant::{PackedTernary, TernaryFormat};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The ternary types benched (TL2 runs on the set's lookup-table loops).
const FORMATS: [(&str, TernaryFormat); 4] =
    [("i2_s", I2S), ("tq2_0", TernaryFormat::Tq2_0), ("tq1_0", TernaryFormat::Tq1_0), ("tl2", TL2)];

fn ternary(c: &mut Criterion) {
    for (fname, format) in FORMATS {
        for &(name, rows, cols) in B2B4T.iter().chain(B7) {
            let format = for_shape(format, rows, cols);
            let data = packed(format, rows, cols);
            let w = PackedTernary::new(format, rows, cols, &data, scale_of(format)).expect("packed");
            for n in [1usize, 2, 4, 8, 128] {
                let (_, x) = activations(n, cols);
                let mut out = vec![0f32; n * rows];
                let mut g = c.benchmark_group(format!("{fname} {name} n={n}"));
                g.throughput(Throughput::Bytes(data.len() as u64));
                g.sample_size(10);
                for set in Kernels::available() {
                    // The scalar reference at 128 tokens takes seconds per call.
                    if set.name() == "scalar" && n > 1 {
                        continue;
                    }
                    let k = set.ternary();
                    g.bench_function(set.name(), |b| b.iter(|| k.gemm(&w, black_box(&x), &mut out).expect("gemm")));
                }
                g.finish();
            }
        }
    }
}

fn heads(c: &mut Criterion) {
    let (name, rows, cols) = HEAD_2B4T;
    for ty in [TensorType::F16, TensorType::Q8_0, TensorType::Q6_K] {
        let data = dense(ty, rows, cols);
        let (x, _) = activations(1, cols);
        let mut out = vec![0f32; rows];
        let mut g = c.benchmark_group(format!("{ty} {name} n=1"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.sample_size(10);
        for set in Kernels::available() {
            let k = set.dense();
            g.bench_function(set.name(), |b| {
                b.iter(|| k.gemm_rows(ty, &data, cols, black_box(&x), 0..rows, &mut out).expect("gemv"))
            });
        }
        g.finish();
    }
}

/// GEMV over more weights than the L3 holds (16 FFN matrices of 2B-4T, 71 MB), as decoding
/// streams them from memory: the figure the token-generation roofline is about.
fn streaming(c: &mut Criterion) {
    let (rows, cols) = (6912, 2560);
    for (fname, format) in FORMATS {
        let format = for_shape(format, rows, cols);
        let data = packed(format, rows, cols);
        let copies: Vec<Aligned> = (0..16).map(|_| Aligned::new(&data, 0)).collect();
        let (_, x) = activations(1, cols);
        let mut out = vec![0f32; rows];
        let mut g = c.benchmark_group(format!("{fname} stream 16x{rows}x{cols} n=1"));
        g.throughput(Throughput::Bytes((data.len() * copies.len()) as u64));
        g.sample_size(10);
        for set in Kernels::available().into_iter().filter(|k| k.name() != "scalar") {
            let k = set.ternary();
            g.bench_function(set.name(), |b| {
                b.iter(|| {
                    for d in &copies {
                        let w = PackedTernary::new(format, rows, cols, d.bytes(), scale_of(format)).expect("packed");
                        k.gemm(&w, black_box(&x), &mut out).expect("gemv");
                    }
                })
            });
        }
        g.finish();
    }
}

/// Decoding attention of one 128-wide head over 4096 cached positions of a 2B-4T layer (5 KV
/// heads: positions 640 elements apart), each KV cache type: the scores against the keys, then
/// the weighted sum of the values. Throughput is the cache bytes read (keys and values).
fn attention(c: &mut Criterion) {
    use bitnet_quant::vecops::KvBlock;
    let (hd, kv_dim, n) = (128usize, 640usize, 4096usize);
    let (q, _) = activations(1, hd);
    let x: Vec<f32> = (0..n * kv_dim).map(|i| ((i * 7919 % 2001) as f32 - 1000.0) / 1000.0).collect();
    let f16 = bitnet_quant::dense::quantize_row(TensorType::F16, &x).expect("f16 row");
    let w: Vec<f32> = (0..n).map(|i| 1.0 / (1.0 + i as f32)).collect();
    let mut scores = vec![0f32; n];
    let mut out = vec![0f32; hd];
    // f16 (no block type) and each block type; throughput counts one head's keys and values.
    for ty in [None, Some(KvBlock::Q8_0), Some(KvBlock::Q4_0)] {
        let (name, data, head_bytes) = match ty {
            None => ("f16".to_owned(), f16.clone(), 2 * n * hd),
            Some(t) => {
                let mut data = vec![0u8; t.bytes_of(n * kv_dim)];
                t.quantize(&x, &mut data);
                (format!("{t:?}").to_lowercase(), data, n * t.bytes_of(hd))
            }
        };
        let mut g = c.benchmark_group(format!("attention {name} hd{hd} d{n}"));
        g.throughput(Throughput::Bytes(2 * head_bytes as u64));
        g.sample_size(20);
        for set in Kernels::available() {
            let ops = set.f32();
            g.bench_function(set.name(), |b| {
                b.iter(|| match ty {
                    None => {
                        (ops.scores_f16)(black_box(&q), &data, kv_dim, &mut scores);
                        (ops.weighted_sum_f16)(&w, &data, kv_dim, &mut out);
                    }
                    Some(t) => {
                        let stride = t.bytes_of(kv_dim);
                        (ops.scores_kv)(t, black_box(&q), &data, stride, &mut scores);
                        (ops.weighted_sum_kv)(t, &w, &data, stride, &mut out);
                    }
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, streaming, ternary, heads, attention);
criterion_main!(benches);
