//! Small vector operations of the forward pass.

/// `x = x / rms(x) · w` for every `w.len()`-wide row of `x`.
///
/// The sum of squares is the portable reference's (sixteen lanes in a fixed order, which LLVM
/// vectorizes for any CPU), not the kernel set's `dot`: every ternary matmul quantizes an
/// RMSNorm's output to int8, and a last-bit difference in the norm flips a code that sits on a
/// rounding tie, which moved the tiny fixtures' logits by up to 2% of their range between kernel
/// sets. One norm per matmul input costs nothing next to the matmul.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let ms = bitnet_quant::vecops::dot(row, row) / w.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = *v * inv * g;
        }
    }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
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
#[inline]
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
}
