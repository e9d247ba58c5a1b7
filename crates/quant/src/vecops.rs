//! f32 vector operations of the forward pass behind function pointers (so a fast kernel crate
//! can supply AVX-512 or NEON versions), and their portable reference.

/// A set of f32 kernels for one instruction set.
#[derive(Debug, Clone, Copy)]
pub struct F32Ops {
    /// Which instruction set.
    pub name: &'static str,
    /// Σ a·b over the shorter of the two.
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// y += a·x over the shorter of the two.
    pub axpy: fn(&mut [f32], f32, &[f32]),
    /// Attention scores: `out[p] = Σ_j q[j] · k[p·stride + j]` for `p < out.len()`, `j < q.len()`.
    pub scores: fn(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]),
    /// Attention output: `out[j] += Σ_p w[p] · v[p·stride + j]` for `j < out.len()`.
    pub weighted_sum: fn(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]),
    /// [`F32Ops::scores`] over keys stored as f16 (little-endian bytes, `stride` in elements).
    pub scores_f16: fn(q: &[f32], k: &[u8], stride: usize, out: &mut [f32]),
    /// [`F32Ops::weighted_sum`] over values stored as f16 (little-endian bytes, `stride` in elements).
    pub weighted_sum_f16: fn(w: &[f32], v: &[u8], stride: usize, out: &mut [f32]),
    /// [`F32Ops::scores`] over keys stored in 32-element blocks of a [`KvBlock`] type: `stride`
    /// in bytes, `q.len()` a multiple of 32 (see [`scores_kv`]).
    pub scores_kv: fn(ty: KvBlock, q: &[f32], k: &[u8], stride: usize, out: &mut [f32]),
    /// [`F32Ops::weighted_sum`] over values in [`KvBlock`]s: `stride` in bytes, `out.len()` a
    /// multiple of 32 (see [`weighted_sum_kv`]).
    pub weighted_sum_kv: fn(ty: KvBlock, w: &[f32], v: &[u8], stride: usize, out: &mut [f32]),
    /// The gated FFN's activation: `g = act(g) · u` over the shorter of the two ([`glu`]).
    pub glu: fn(act: Activation, g: &mut [f32], u: &[f32]),
    /// In-place softmax ([`softmax`]).
    pub softmax: fn(x: &mut [f32]),
    /// `out[i·out_stride + j] += Σ_d a[i][d] · b[d][j]` ([`matmul_add`]): a prompt's attention
    /// as two small products (queries × transposed keys, weights × values).
    pub matmul_add: fn(a: Mat<'_>, b: Mat<'_>, out: &mut [f32], out_stride: usize),
    /// `dst[j·dst_stride + i] = src[i][j]` ([`transpose`]).
    pub transpose: fn(src: Mat<'_>, dst: &mut [f32], dst_stride: usize),
    /// f16 (little-endian bytes) widened to f32 ([`f16_to_f32`]).
    pub f16_to_f32: fn(src: &[u8], dst: &mut [f32]),
}

/// A row-major f32 matrix: `rows × cols`, row `i` at `data[i·stride..][..cols]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a> Mat<'a> {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.stride..][..self.cols]
    }

    /// Panics (naming the kernel) unless every row lies in `data`.
    pub fn check(&self, what: &str) {
        assert!(
            self.rows == 0 || (self.rows - 1) * self.stride + self.cols <= self.data.len(),
            "{what}: a {}×{} matrix of stride {} does not fit {} floats",
            self.rows,
            self.cols,
            self.stride,
            self.data.len()
        );
    }
}

/// The FFN's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (1bitLLM models, Llama/Falcon3).
    Silu,
    /// Squared ReLU (BitNet b1.58 2B-4T).
    Relu2,
    /// GELU, tanh approximation (Gemma 3).
    GeluTanh,
}

/// Block-quantized element types of a KV cache: llama.cpp's `block_q8_0` (f16 scale `d`, 32
/// int8 codes: 8.5 bits per element) and `block_q4_0` (f16 `d`, 16 bytes holding element `j`
/// in the low nibble of byte `j` and element `j + 16` in its high nibble, code − 8: 4.5 bits).
/// Element = `d · code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvBlock {
    Q8_0,
    Q4_0,
}

impl KvBlock {
    /// Elements per block.
    pub const ELEMENTS: usize = 32;

    /// Bytes per block.
    pub const fn bytes(self) -> usize {
        match self {
            KvBlock::Q8_0 => 34,
            KvBlock::Q4_0 => 18,
        }
    }

    /// Bytes of `n` elements (`n` a multiple of 32).
    pub const fn bytes_of(self, n: usize) -> usize {
        n / Self::ELEMENTS * self.bytes()
    }

    /// A block's scale and its 32 codes.
    pub fn decode(self, block: &[u8]) -> (f32, [i8; 32]) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let mut codes = [0i8; 32];
        match self {
            KvBlock::Q8_0 => codes.iter_mut().zip(&block[2..34]).for_each(|(c, &b)| *c = b as i8),
            KvBlock::Q4_0 => {
                for (j, &b) in block[2..18].iter().enumerate() {
                    codes[j] = (b & 15) as i8 - 8;
                    codes[j + 16] = (b >> 4) as i8 - 8;
                }
            }
        }
        (d, codes)
    }

    /// Dequantizes whole blocks of `bytes` into `out` (`d · code` per element).
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) {
        for (b, o) in bytes.chunks_exact(self.bytes()).zip(out.chunks_exact_mut(32)) {
            let (d, codes) = self.decode(b);
            o.iter_mut().zip(codes).for_each(|(o, c)| *o = d * f32::from(c));
        }
    }

    /// Quantizes `x` (a multiple of 32 elements) into `out` (`x.len() / 32 · bytes()` bytes),
    /// as llama.cpp's `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` do.
    pub fn quantize(self, x: &[f32], out: &mut [u8]) {
        for (b, o) in x.chunks_exact(32).zip(out.chunks_exact_mut(self.bytes())) {
            match self {
                KvBlock::Q8_0 => crate::dense::quantize_block_q8_0(b, o),
                KvBlock::Q4_0 => quantize_block_q4_0(b, o),
            }
        }
    }
}

/// One `block_q4_0`: the element of largest magnitude maps to code −8 exactly (`d = max / −8`),
/// codes are `min(15, trunc(x/d + 8.5))`.
fn quantize_block_q4_0(x: &[f32], out: &mut [u8]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    for j in 0..16 {
        out[2 + j] = code(x[j]) | (code(x[j + 16]) << 4);
    }
}

/// The portable versions: sixteen independent partial sums, which LLVM vectorizes for the
/// baseline instruction set (a single sequential f32 sum runs one add per 4 cycles).
pub const SCALAR: F32Ops = F32Ops {
    name: "scalar",
    dot,
    axpy,
    scores,
    weighted_sum,
    scores_f16,
    weighted_sum_f16,
    scores_kv,
    weighted_sum_kv,
    glu,
    softmax,
    matmul_add,
    transpose,
    f16_to_f32,
};

/// `out[i·out_stride + j] += Σ_d a[i][d] · b[d][j]` for `i < a.rows`, `j < b.cols`, `d <
/// a.cols = b.rows`: each `a[i][d] · b[d]` row added in `d` order (the loop vectorizes along `j`
/// for any CPU).
pub fn matmul_add(a: Mat<'_>, b: Mat<'_>, out: &mut [f32], out_stride: usize) {
    assert_eq!(a.cols, b.rows, "matmul_add: inner dimensions");
    a.check("matmul_add a");
    b.check("matmul_add b");
    for i in 0..a.rows {
        let o = &mut out[i * out_stride..][..b.cols];
        for (d, &x) in a.row(i).iter().enumerate() {
            o.iter_mut().zip(b.row(d)).for_each(|(o, &y)| *o += x * y);
        }
    }
}

/// `dst[j·dst_stride + i] = src[i][j]`.
pub fn transpose(src: Mat<'_>, dst: &mut [f32], dst_stride: usize) {
    src.check("transpose");
    for i in 0..src.rows {
        for (j, &v) in src.row(i).iter().enumerate() {
            dst[j * dst_stride + i] = v;
        }
    }
}

/// `dst[i] = src[2i..2i + 2]` as a little-endian f16, for `i < dst.len()`.
pub fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, h) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = half::f16::from_le_bytes([h[0], h[1]]).to_f32();
    }
}

/// `g = act(g) · u` over the shorter of the two. One loop per activation, so each vectorizes
/// (SiLU and GELU through [`exp`]); element-wise, so any vector width gives the same bits (the
/// kernel crates compile this very code for their wider registers).
#[inline(always)]
pub fn glu(act: Activation, g: &mut [f32], u: &[f32]) {
    match act {
        Activation::Relu2 => g.iter_mut().zip(u).for_each(|(g, &u)| *g = g.max(0.0) * g.max(0.0) * u),
        Activation::Silu => g.iter_mut().zip(u).for_each(|(g, &u)| *g = *g / (1.0 + exp(-*g)) * u),
        Activation::GeluTanh => g.iter_mut().zip(u).for_each(|(g, &u)| *g = gelu_tanh(*g) * u),
    }
}

/// GELU with the tanh approximation (transformers' `gelu_pytorch_tanh`), written as
/// `x · σ(2u)` (= `x · (1 + tanh u) / 2`) through [`exp`] so the loop vectorizes: libm's tanhf was
/// a third of a Gemma prompt.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

/// In-place softmax: the maximum, [`exp`] of each difference, the sum in sixteen lanes (a fixed
/// order, so any vector width gives the same bits), one multiply by its inverse. The maximum too
/// is taken in sixteen lanes: one running `f32::max` does not vectorize.
#[inline(always)]
pub fn softmax(x: &mut [f32]) {
    let mut top = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let mut max = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..16 {
            top[i] = top[i].max(c[i]);
        }
    }
    for t in top {
        max = max.max(t);
    }
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let mut sum: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            lanes[i] += c[i];
        }
    }
    for l in lanes {
        sum += l;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// eˣ within 2 ulp of `f32::exp` over the range softmax uses (x ≤ 0), written without calls or
/// branches so loops over it vectorize (libm's `expf` was a tenth of prompt time): x = n·ln2 + r,
/// a degree-6 polynomial for eʳ (Cephes' coefficients), 2ⁿ put straight into the exponent bits.
/// Below −87.3 the result is e^−87.3 ≈ 1e−38 instead of a denormal or 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.7);
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    // n as an integer, read off the bits (an `as i32` cast does not vectorize on x86-64's
    // baseline: it became one scalar conversion per element).
    let ni = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((ni + 127) << 23) as u32)
}

/// Σ a·b.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = 0.0;
    for v in acc {
        s += v;
    }
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// y += a·x.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Attention scores of one query against `out.len()` keys `stride` apart.
pub fn scores(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
    for (p, o) in out.iter_mut().enumerate() {
        *o = dot(q, &k[p * stride..p * stride + q.len()]);
    }
}

/// `Σ_p w[p] · v[p·stride ..][..out.len()]` added to `out`.
pub fn weighted_sum(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    for (p, &wp) in w.iter().enumerate() {
        axpy(out, wp, &v[p * stride..p * stride + out.len()]);
    }
}

/// `len` f16 values (little-endian bytes) from element `start` of `bytes`, as f32.
fn f16s(bytes: &[u8], start: usize, len: usize) -> impl Iterator<Item = f32> + '_ {
    bytes[2 * start..2 * (start + len)].chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
}

/// [`scores`] with f16 keys.
pub fn scores_f16(q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
    let mut key = vec![0f32; q.len()];
    for (p, o) in out.iter_mut().enumerate() {
        key.iter_mut().zip(f16s(k, p * stride, q.len())).for_each(|(d, v)| *d = v);
        *o = dot(q, &key);
    }
}

/// [`weighted_sum`] with f16 values.
pub fn weighted_sum_f16(w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
    let n = out.len();
    for (p, &wp) in w.iter().enumerate() {
        out.iter_mut().zip(f16s(v, p * stride, n)).for_each(|(o, x)| *o += wp * x);
    }
}

/// [`scores`] over block-quantized keys: key `p`'s blocks start at byte `p · stride`, and its
/// score is `Σ_b d_b · (Σ_j q[32b + j] · code_bj)` over the `q.len() / 32` blocks (each block's
/// sum in f32, then scaled: the order the SIMD kernels keep).
pub fn scores_kv(ty: KvBlock, q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
    let bb = ty.bytes();
    let mut key = [0f32; 32];
    for (p, o) in out.iter_mut().enumerate() {
        let mut s = 0.0;
        for (b, qb) in q.chunks_exact(32).enumerate() {
            let (d, codes) = ty.decode(&k[p * stride + b * bb..][..bb]);
            key.iter_mut().zip(codes).for_each(|(k, c)| *k = f32::from(c));
            s += d * dot(qb, &key);
        }
        *o = s;
    }
}

/// [`weighted_sum`] over block-quantized values: `out[j] += Σ_p (w[p] · d_pb) · code_pj` for the
/// `out.len() / 32` blocks `b` of value `p` (from byte `p · stride`).
pub fn weighted_sum_kv(ty: KvBlock, w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
    let bb = ty.bytes();
    for (p, &wp) in w.iter().enumerate() {
        for (b, ob) in out.chunks_exact_mut(32).enumerate() {
            let (d, codes) = ty.decode(&v[p * stride + b * bb..][..bb]);
            let c = wp * d;
            ob.iter_mut().zip(codes).for_each(|(o, q)| *o += c * f32::from(q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut x = -87.0f32;
        while x <= 10.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(got.to_bits().abs_diff(want.to_bits()) <= 2, "exp({x}) = {got}, want {want}");
            x += 0.001_37;
        }
        assert!(exp(-1000.0) < 1e-37 && exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut v: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
        let want: Vec<f32> = {
            let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        };
        softmax(&mut v);
        for (a, b) in v.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn dot_matches_f64_sum() {
        for n in [0, 1, 15, 16, 17, 64, 100, 129] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!((f64::from(dot(&a, &b)) - want).abs() < 1e-4, "n = {n}");
        }
    }

    /// Round trips stay within half a step of each block (q4_0: a step is |max| / 8, and values
    /// of the sign opposite to the largest one clamp at code 15, so within a whole step), and
    /// the scores and sums are those of the dequantized rows.
    #[test]
    fn kv_blocks_round_trip() {
        let x: Vec<f32> = (0..96).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0).collect();
        for ty in [KvBlock::Q8_0, KvBlock::Q4_0] {
            let mut bytes = vec![0u8; 3 * ty.bytes()];
            ty.quantize(&x, &mut bytes);
            let mut deq = vec![0f32; 96];
            ty.dequantize(&bytes, &mut deq);
            for (b, (xs, ds)) in x.chunks(32).zip(deq.chunks(32)).enumerate() {
                let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let bound = if ty == KvBlock::Q8_0 { 0.5 * amax / 127.0 } else { amax / 8.0 };
                for (a, b2) in xs.iter().zip(ds) {
                    assert!((a - b2).abs() <= bound * 1.01 + 1e-3, "{ty:?} block {b}: {a} vs {b2}");
                }
            }
            let q: Vec<f32> = (0..64).map(|i| (i as f32 * 0.3).sin()).collect();
            let (mut got, mut want) = ([0f32; 1], [0f32; 1]);
            scores_kv(ty, &q, &bytes[ty.bytes()..], 0, &mut got);
            scores(&q, &deq[32..], 0, &mut want);
            assert!((got[0] - want[0]).abs() < 1e-4, "{ty:?}: {got:?} vs {want:?}");
            let (mut got, mut want) = (vec![0f32; 32], vec![0f32; 32]);
            weighted_sum_kv(ty, &[0.5, 2.0], &bytes, 2 * ty.bytes(), &mut got);
            weighted_sum(&[0.5, 2.0], &deq, 64, &mut want);
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 1e-4, "{ty:?}: {g} vs {e}");
            }
        }
    }
}
