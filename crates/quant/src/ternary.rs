//! Absmean ternary weight quantization, as BitNet b1.58 and Hugging Face transformers define it.
//!
//! transformers (`integrations/bitnet.py`, `weight_quant`): `s = 1 / clamp(mean(|W|), min=1e-5)`,
//! `W_t = clamp(round(W·s), -1, 1)` with torch's round-half-to-even, over the whole tensor; the
//! fake-quantized weight it multiplies with is `W_t / s`.

use half::bf16;

use crate::error::{QuantError, check_len};

/// The epsilon transformers clamps the mean absolute value to.
pub const ABSMEAN_EPS: f32 = 1e-5;

/// A row-major matrix of ternary values in {-1, 0, +1}: `rows` outputs × `cols` inputs
/// (a GGUF tensor of shape `[cols, rows]` in ggml order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    values: Vec<i8>,
}

impl TernaryMatrix {
    /// Wraps values, checking the length and that each is -1, 0 or +1.
    pub fn new(rows: usize, cols: usize, values: Vec<i8>) -> Result<TernaryMatrix, QuantError> {
        check_len("ternary matrix", rows * cols, values.len())?;
        if let Some((index, &value)) = values.iter().enumerate().find(|&(_, v)| !(-1..=1).contains(v)) {
            return Err(QuantError::NotTernary { value, index });
        }
        Ok(TernaryMatrix { rows, cols, values })
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// All values, row-major.
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// One row.
    pub fn row(&self, r: usize) -> &[i8] {
        &self.values[r * self.cols..(r + 1) * self.cols]
    }

    /// The value at (`r`, `c`).
    pub fn get(&self, r: usize, c: usize) -> i8 {
        self.values[r * self.cols + c]
    }
}

/// Ternary weights with the scale transformers computes.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryWeights {
    /// The ternary values.
    pub matrix: TernaryMatrix,
    /// transformers' `s = 1 / clamp(mean|W|, 1e-5)`: the quantized weight is `W_t / s`.
    pub inv_scale: f32,
}

impl TernaryWeights {
    /// The value that multiplies each ternary entry on dequantization, `1 / s` rounded to f32
    /// (what bitnet.cpp's I2_S stores as the tensor scale: the max |w| of the fake-quantized weight).
    pub fn scale(&self) -> f32 {
        1.0 / self.inv_scale
    }

    /// The dequantization multiplier of a bf16 model: transformers rounds `±1 / s` to bf16.
    pub fn scale_bf16(&self) -> f32 {
        bf16::from_f32(self.scale()).to_f32()
    }

    /// The fake-quantized weight transformers uses, `W_t / s`, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        self.matrix.values.iter().map(|&t| f32::from(t) / self.inv_scale).collect()
    }
}

/// Mean of |w| over f32 weights, accumulated in f64 and rounded once to f32.
fn mean_abs(len: usize, abs_values: impl Iterator<Item = f64>) -> f32 {
    let sum: f64 = abs_values.sum();
    (sum / len as f64) as f32
}

/// Absmean-quantizes a row-major `rows × cols` f32 matrix as transformers does in f32.
///
/// The mean is accumulated in f64 and rounded once, i.e. the correctly rounded f32 mean,
/// independent of any thread count. torch sums f32 in its own vectorized, thread-dependent order,
/// so its mean can be an ulp off that (seen on a 7 × 129 fixture); ternary values agree unless a
/// weight sits within that ulp of a rounding boundary. [`absmean_quantize_torch`] reproduces
/// torch's order; tests/reference.rs checks both against transformers' `WeightQuant`.
pub fn absmean_quantize(weights: &[f32], rows: usize, cols: usize) -> Result<TernaryWeights, QuantError> {
    check_len("weights", rows * cols, weights.len())?;
    let mean = mean_abs(weights.len(), weights.iter().map(|w| f64::from(w.abs())));
    Ok(ternarize(weights, rows, cols, mean))
}

/// `s = 1 / clamp(mean, 1e-5)`, then `clamp(round(w·s), −1, 1)`.
fn ternarize(weights: &[f32], rows: usize, cols: usize, mean: f32) -> TernaryWeights {
    let inv_scale = 1.0f32 / mean.max(ABSMEAN_EPS);
    let values = weights.iter().map(|&w| ternary_round(w * inv_scale)).collect();
    TernaryWeights { matrix: TernaryMatrix { rows, cols, values }, inv_scale }
}

/// [`absmean_quantize`] with the mean computed exactly as torch does on the CPU with `threads`
/// threads ([`crate::torch_sum`]), so that the scale equals transformers' bit for bit when torch ran
/// with that many threads. The correctly rounded mean of [`absmean_quantize`] is within an ulp or
/// so of it for any thread count.
pub fn absmean_quantize_torch(
    weights: &[f32],
    rows: usize,
    cols: usize,
    threads: usize,
) -> Result<TernaryWeights, QuantError> {
    check_len("weights", rows * cols, weights.len())?;
    let abs: Vec<f32> = weights.iter().map(|w| w.abs()).collect();
    Ok(ternarize(weights, rows, cols, crate::torch_sum::torch_mean(&abs, threads)))
}

/// Absmean-quantizes bf16 weights as transformers does for a bf16 model: its `WeightQuant`
/// converts to f32 first, so this is [`absmean_quantize`] on the widened values. (The fake-quantized
/// weight it then multiplies with is `W_t / s` rounded back to bf16: see [`TernaryWeights::scale_bf16`].)
pub fn absmean_quantize_bf16(weights: &[bf16], rows: usize, cols: usize) -> Result<TernaryWeights, QuantError> {
    let widened: Vec<f32> = weights.iter().map(|w| w.to_f32()).collect();
    absmean_quantize(&widened, rows, cols)
}

/// round-half-to-even, then clamp to [-1, 1].
fn ternary_round(x: f32) -> i8 {
    x.round_ties_even().clamp(-1.0, 1.0) as i8
}

/// Recovers ternary values and the scale from already fake-quantized weights `t · scale`, the way
/// bitnet.cpp's `quantize_i2_s` does: the scale is max |w|, and each weight is 0 when
/// |w| < 1e-6, else its sign.
pub fn ternarize_fake_quantized(weights: &[f32], rows: usize, cols: usize) -> Result<(TernaryMatrix, f32), QuantError> {
    check_len("weights", rows * cols, weights.len())?;
    let scale = weights.iter().fold(0.0f64, |m, w| m.max(f64::from(w.abs()))) as f32;
    let values = weights
        .iter()
        .map(|&w| {
            if f64::from(w.abs()) < 1e-6 {
                0
            } else if w > 0.0 {
                1
            } else {
                -1
            }
        })
        .collect();
    Ok((TernaryMatrix { rows, cols, values }, scale))
}
