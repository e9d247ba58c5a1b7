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
