//! Shapes and random inputs for the kernel benches (benches/kernels.rs).

#![forbid(unsafe_code)]

use bitnet_format::TensorType;
use bitnet_quant::tq::{self, TqKind};
use bitnet_quant::{I2sLayout, QuantizedActivations, TernaryFormat, TernaryMatrix, TlTiling, i2s, tl};

/// One matrix shape of a real model: name, rows (output features), cols (input features).
pub type Shape = (&'static str, usize, usize);

/// BitNet b1.58 2B-4T: hidden 2560, 20 heads × 128 (5 KV heads), FFN 6912, vocab 128256.
pub const B2B4T: &[Shape] = &[
    ("2B-4T q/o 2560x2560", 2560, 2560),
    ("2B-4T k/v 640x2560", 640, 2560),
    ("2B-4T gate/up 6912x2560", 6912, 2560),
    ("2B-4T down 2560x6912", 2560, 6912),
];
/// The 2B-4T output head (F16 in the official file).
pub const HEAD_2B4T: Shape = ("2B-4T head 128256x2560", 128256, 2560);
/// Llama-7B shapes (bitnet.cpp's 7B benchmark model).
pub const B7: &[Shape] = &[
    ("7B q/k/v/o 4096x4096", 4096, 4096),
    ("7B gate/up 11008x4096", 11008, 4096),
    ("7B down 4096x11008", 4096, 11008),
];

/// TL2 as a bench parameter; [`for_shape`] picks each shape's tiling.
pub const TL2: TernaryFormat = TernaryFormat::Tl2(TlTiling { bm: 0, bk: 0, bmm: 0 });
/// TL1 the same way.
pub const TL1: TernaryFormat = TernaryFormat::Tl1(TlTiling { bm: 0, bk: 0, bmm: 0 });

/// Deterministic pseudo-random bytes (splitmix64).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (s ^ (s >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            (z >> 32) as u8
        })
        .collect()
}

/// `format` for a `rows × cols` matrix: TL1/TL2 (given with any tiling) get the tiling
/// `bitnet convert` would write for the shape.
pub fn for_shape(format: TernaryFormat, rows: usize, cols: usize) -> TernaryFormat {
    match format {
        TernaryFormat::Tl1(_) => TernaryFormat::Tl1(tl::choose_tiling(false, rows, cols).expect("a TL1 tiling")),
        TernaryFormat::Tl2(_) => TernaryFormat::Tl2(tl::choose_tiling(true, rows, cols).expect("a TL2 tiling")),
        other => other,
    }
}

/// The separate scale TL1/TL2 need (the others carry theirs in the bytes).
pub fn scale_of(format: TernaryFormat) -> Option<f32> {
    matches!(format, TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_)).then_some(0.5)
}

/// A random ternary matrix packed in `format` (I2_S in any order, TQ1_0, TQ2_0, or TL1/TL2 with the
/// tiling [`for_shape`] gives).
pub fn packed(format: TernaryFormat, rows: usize, cols: usize) -> Vec<u8> {
    let values = random_bytes(rows * cols, 7).into_iter().map(|b| (b % 3) as i8 - 1).collect();
    let m = TernaryMatrix::new(rows, cols, values).expect("shape");
    match format {
        TernaryFormat::I2s(layout) => i2s::pack(&m, 0.5, layout).expect("pack"),
        TernaryFormat::Tq1_0 => tq::pack(TqKind::Tq1_0, &m, 0.5).expect("pack"),
        TernaryFormat::Tq2_0 => tq::pack(TqKind::Tq2_0, &m, 0.5).expect("pack"),
        TernaryFormat::Tl1(t) => tl::pack_tl1(&m, t).expect("pack"),
        TernaryFormat::Tl2(t) => tl::pack_tl2(&m, t).expect("pack"),
    }
}

/// GB/s of a pure read of `bytes` (`bitnet_kernels::stream_sum`, the best of `reps`): the
/// roofline a kernel streaming the same copy has in the same minute (the VM's bandwidth drifts).
pub fn read_probe(bytes: &[u8], reps: usize) -> f64 {
    let words: &[u64] = bytemuck::cast_slice(&bytes[..bytes.len() / 8 * 8]);
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = std::time::Instant::now();
        std::hint::black_box(bitnet_kernels::stream_sum(words));
        best = best.min(t.elapsed().as_secs_f64());
    }
    (words.len() * 8) as f64 / best / 1e9
}

/// `n` random activation rows quantized to int8.
pub fn activations(n: usize, cols: usize) -> (Vec<f32>, QuantizedActivations) {
    let x: Vec<f32> = random_bytes(n * cols, 3).into_iter().map(|b| (b as f32 - 127.5) / 64.0).collect();
    let q = QuantizedActivations::quantize(&x, cols).expect("activations");
    (x, q)
}

/// Random dense weights of type `ty` (F16, Q8_0 or Q6_K; scales kept small and finite).
pub fn dense(ty: TensorType, rows: usize, cols: usize) -> Vec<u8> {
    let mut b = random_bytes(rows * bitnet_quant::dense::row_bytes(ty, cols).expect("dense type"), 11);
    match ty {
        TensorType::F16 => b.chunks_exact_mut(2).for_each(|h| h[1] = 0x20 | (h[1] & 0x83)),
        TensorType::Q8_0 => b.chunks_exact_mut(34).for_each(|blk| blk[1] = 0x20),
        TensorType::Q6_K => b.chunks_exact_mut(210).for_each(|blk| blk[209] = 0x20),
        _ => {}
    }
    b
}

/// The I2_S x86 format.
pub const I2S: TernaryFormat = TernaryFormat::I2s(I2sLayout::X86);

/// I2_S in the four-row order the AVX-512 loads use (`I2sLayout::X86Rows4`).
pub const I2S4: TernaryFormat = TernaryFormat::I2s(I2sLayout::X86Rows4);

/// Bytes placed at a chosen offset from a 64-byte boundary, as tensors sit in a mapped GGUF
/// file (aligned to 32 bytes: offset 0 or 32).
pub struct Aligned {
    buf: memmap2::MmapMut,
    start: usize,
    len: usize,
}

impl Aligned {
    /// A copy of `data` starting `offset` bytes past a 64-byte boundary, in anonymous memory
    /// advised for 2 MiB pages as the model's weights are mapped (over 4 KiB pages a stream
    /// reads slower, and differently on each CPU: `bitnet_format::pages`).
    pub fn new(data: &[u8], offset: usize) -> Aligned {
        let mut buf = memmap2::MmapMut::map_anon(data.len() + offset + 64).expect("anonymous memory for a bench copy");
        #[cfg(target_os = "linux")]
        let _ = buf.advise(memmap2::Advice::HugePage);
        // A mapping starts on a page boundary, so `offset` is past a 64-byte one.
        buf[offset..offset + data.len()].copy_from_slice(data);
        Aligned { buf, start: offset, len: data.len() }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}
