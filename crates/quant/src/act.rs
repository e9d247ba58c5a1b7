//! Per-token absmax int8 activation quantization.
//!
//! Two definitions exist and differ only at the edges:
//!
//! | | bitnet.cpp (`quantize_row_i8_s`) | transformers (`activation_quant`) |
//! |---|---|---|
//! | max | `max(1e-5, max |x|)` in f64 | `clamp(max |x|, min=1e-5)` in the tensor dtype |
//! | scale | `127 / max` in f64, stored as f32 | `127 · (1 / max)` in f32 (torch's `__rtruediv__`) |
//! | round | `nearest_int`: half to even | `torch.round`: half to even |
//! | clamp | [-128, 127] | [-128, 127] |
//! | output | int8 codes, scale, and Σ codes | the fake-quantized `round(x·s) / s` |
//!
//! For f32 input the differences are the epsilon (`1e-5` as f64 vs as f32) and the scale's
//! rounding: bitnet.cpp's is the correctly rounded 127/max, torch's multiplies by a rounded
//! reciprocal and is off by one ulp for about one row in three. A code differs only when `x·s` lies
//! within that ulp of a rounding boundary. The code sum is bitnet.cpp's
//! correction for its unsigned weight codes: Σ(w+1)·a − Σa = Σw·a.

use crate::error::{QuantError, check_len};

/// One quantized activation row's scale and code sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActScale {
    /// `127 / max|x|`: divide an integer dot product by this to get back to the float domain.
    pub scale: f32,
    /// Σ of the int8 codes.
    pub sum: i32,
}

/// Quantizes one row exactly as bitnet.cpp's `quantize_row_i8_s` (I2_S activation path).
pub fn quantize_row_i8s(x: &[f32], out: &mut [i8]) -> Result<ActScale, QuantError> {
    check_len("activation output", x.len(), out.len())?;
    Ok(row_i8s(x, out))
}

/// [`quantize_row_i8s`] of rows already known to be as long as their outputs (the shorter
/// length counts otherwise).
pub fn row_i8s(x: &[f32], out: &mut [i8]) -> ActScale {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    let max = 0.00001f64.max(f64::from(max_abs(x)));
    let scale = (127.0 / max) as f32;
    // Eight independent sums, so that the loop vectorizes (integer adds reassociate exactly).
    let mut sums = [0i32; 8];
    let whole = x.len() / 8 * 8;
    let (xw, xr) = x.split_at(whole);
    let (ow, or) = out.split_at_mut(whole);
    for (xs, os) in xw.chunks_exact(8).zip(ow.chunks_exact_mut(8)) {
        for i in 0..8 {
            let q = round_to_i32(xs[i] * scale);
            sums[i] += q;
            os[i] = q as i8;
        }
    }
    let mut sum: i32 = sums.iter().sum();
    for (o, &v) in or.iter_mut().zip(xr) {
        let q = round_to_i32(v * scale);
        sum += q;
        *o = q as i8;
    }
    ActScale { scale, sum }
}

/// max |x| (0 for an empty row; NaN is skipped as `f32::max` does). Taking the max in f32 and
/// widening after gives bitnet.cpp's f64 result exactly (abs, max and widening are exact); eight
/// lanes let LLVM vectorize it.
fn max_abs(x: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(0f32, |a, v| a.max(v.abs()));
    for c in chunks {
        for i in 0..8 {
            m[i] = m[i].max(c[i].abs());
        }
    }
    m.iter().fold(tail, |a, &v| a.max(v))
}

/// `round_ties_even(v).clamp(-128, 127) as i8` without a libm call: x86-64's baseline has no
/// rounding instruction, so `round_ties_even` calls `rintf`, a tenth of decode time. Adding and
/// subtracting 1.5·2²³ rounds half to even in the default rounding mode for |v| < 2²²; clamping
/// first keeps v there (the bounds are integers, so clamp-then-round equals round-then-clamp;
/// NaN stays NaN and converts to 0 either way).
#[inline]
pub fn round_to_i8(v: f32) -> i8 {
    round_to_i32(v) as i8
}

/// [`round_to_i8`] as an i32 in −128..=127, in operations that vectorize on x86-64's baseline
/// (a float-to-int `as` cast does not: it became one scalar conversion per element, and
/// quantization a thirtieth of prompt time). NaN becomes 0, as `NaN as i8` does; for
/// |c| ≤ 128, c + 1.5·2²³ has an ulp of 1, so its bit pattern is that of 1.5·2²³ plus the
/// rounded integer.
#[inline]
pub fn round_to_i32(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let v = if v.is_nan() { 0.0 } else { v };
    let c = v.clamp(-128.0, 127.0);
    ((c + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32)
}

/// Quantizes one row as transformers' `activation_quant` does in f32, returning the codes' scale
/// and sum like [`quantize_row_i8s`].
pub fn quantize_row_hf(x: &[f32], out: &mut [i8]) -> Result<ActScale, QuantError> {
    check_len("activation output", x.len(), out.len())?;
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-5);
    // torch evaluates `127 / t` as `reciprocal(t) * 127`: two roundings, reproduced here.
    let scale = 127.0f32 * (1.0 / max);
    let mut sum = 0i32;
    for (o, &v) in out.iter_mut().zip(x) {
        let q = (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8;
        sum += i32::from(q);
        *o = q;
    }
    Ok(ActScale { scale, sum })
}

/// A batch of quantized activation rows (one per token), as the kernels take them.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActivations {
    /// Elements per row.
    pub cols: usize,
    /// Row-major int8 codes.
    pub codes: Vec<i8>,
    /// Per-row scale and sum.
    pub rows: Vec<ActScale>,
}

impl QuantizedActivations {
    /// Quantizes `n = x.len() / cols` rows with bitnet.cpp's rule.
    pub fn quantize(x: &[f32], cols: usize) -> Result<QuantizedActivations, QuantError> {
        QuantizedActivations::quantize_by(x, cols, row_i8s)
    }

    /// [`QuantizedActivations::quantize`] with each row quantized by `row(x, codes)`, which must
    /// follow [`quantize_row_i8s`] exactly (an instruction set's faster version).
    pub fn quantize_by(
        x: &[f32],
        cols: usize,
        row: impl Fn(&[f32], &mut [i8]) -> ActScale,
    ) -> Result<QuantizedActivations, QuantError> {
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(QuantError::Length {
                what: "activation batch (a whole number of rows)",
                expected: cols,
                got: x.len(),
            });
        }
        let mut codes = vec![0i8; x.len()];
        let rows = x.chunks_exact(cols).zip(codes.chunks_exact_mut(cols)).map(|(xr, qr)| row(xr, qr)).collect();
        Ok(QuantizedActivations { cols, codes, rows })
    }

    /// Joins batches of the same width quantized separately (consecutive row ranges of one
    /// input, e.g. on several threads) into one, in order.
    pub fn concat(parts: &[QuantizedActivations]) -> Result<QuantizedActivations, QuantError> {
        let Some(first) = parts.first() else {
            return Err(QuantError::Length { what: "activation batches to join", expected: 1, got: 0 });
        };
        let mut all = QuantizedActivations {
            cols: first.cols,
            codes: Vec::with_capacity(parts.iter().map(|p| p.codes.len()).sum()),
            rows: Vec::with_capacity(parts.iter().map(|p| p.rows.len()).sum()),
        };
        for p in parts {
            check_len("activation batch width", all.cols, p.cols)?;
            all.codes.extend_from_slice(&p.codes);
            all.rows.extend_from_slice(&p.rows);
        }
        Ok(all)
    }

    /// Rows `rows` as a batch of their own (a copy): one thread's share of a prompt's tokens.
    pub fn slice(&self, rows: std::ops::Range<usize>) -> QuantizedActivations {
        QuantizedActivations {
            cols: self.cols,
            codes: self.codes[rows.start * self.cols..rows.end * self.cols].to_vec(),
            rows: self.rows[rows].to_vec(),
        }
    }

    /// Number of rows (tokens).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `i`'s codes.
    pub fn row(&self, i: usize) -> &[i8] {
        &self.codes[i * self.cols..(i + 1) * self.cols]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_to_i32_is_round_half_even_then_clamp() {
        let want = |v: f32| if v.is_nan() { 0 } else { v.round_ties_even().clamp(-128.0, 127.0) as i32 };
        // Every quarter step over the range and past it (halves included), and the edges.
        let mut cases: Vec<f32> = (-600..=600).map(|i| i as f32 / 4.0).collect();
        cases.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 127.49999, -128.5, 1e-40, 4194304.5, -1e30]);
        cases.extend((0..2000).map(|i| (i as f32 * 0.7183).sin() * 140.0));
        for v in cases {
            assert_eq!(super::round_to_i32(v), want(v), "{v}");
        }
    }

    #[test]
    fn batches_quantized_in_parts_join_to_the_whole() {
        use super::QuantizedActivations as Q;
        let x: Vec<f32> = (0..7 * 33).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.13).collect();
        let whole = Q::quantize(&x, 33).unwrap();
        let parts = vec![Q::quantize(&x[..3 * 33], 33).unwrap(), Q::quantize(&x[3 * 33..], 33).unwrap()];
        assert_eq!(Q::concat(&parts).unwrap(), whole);
        assert!(Q::concat(&[whole.clone(), Q::quantize(&x[..32], 32).unwrap()]).is_err());
        assert!(Q::concat(&[]).is_err());
    }

    use super::round_to_i8;

    #[test]
    fn magic_rounding_equals_round_ties_even() {
        let mut cases = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e30, -1e30, 4194304.5];
        for i in -600..=600 {
            let h = i as f32 * 0.25;
            cases.extend([
                h,
                h + 1e-6,
                h - 1e-6,
                f32::from_bits(h.to_bits() + 1),
                f32::from_bits(h.to_bits().wrapping_sub(1)),
            ]);
        }
        for v in cases {
            assert_eq!(round_to_i8(v), v.round_ties_even().clamp(-128.0, 127.0) as i8, "{v:e}");
        }
    }
}
