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
}

/// The portable versions: sixteen independent partial sums, which LLVM vectorizes for the
/// baseline instruction set (a single sequential f32 sum runs one add per 4 cycles).
pub const SCALAR: F32Ops = F32Ops { name: "scalar", dot, axpy, scores, weighted_sum, scores_f16, weighted_sum_f16 };

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_f64_sum() {
        for n in [0, 1, 15, 16, 17, 64, 100, 129] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!((f64::from(dot(&a, &b)) - want).abs() < 1e-4, "n = {n}");
        }
    }
}
