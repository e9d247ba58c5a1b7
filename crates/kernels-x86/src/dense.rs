//! Dense GEMV/GEMM for output heads and other float or block-quantized matrices: F16 and Q8_0
//! rows are converted in registers (`vcvtph2ps`, sign-extend + convert) and multiplied with FMA;
//! Q6_K codes are assembled from their nibbles and high bits in registers (both ISAs); F32 and
//! BF16 rows are decoded into a scratch row first (the reference dequantizer; file bytes need
//! not be f32-aligned) and then take the F32 path.
//!
//! Sums run in several vector lanes, so results differ from the sequential reference by float
//! rounding only (the tests bound it relative to Σ|w·x|).

use std::ops::Range;

use bitnet_format::TensorType;
use bitnet_quant::QuantError;
use bitnet_quant::dense::{check_dense, dequantize_row};

/// One instruction set's row dot products.
pub(crate) trait DenseIsa {
    /// Σ w·x over an f32 row.
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32;
    /// Σ w·x over an F16 row (`w` holds `x.len()` little-endian halves).
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32;
    /// Σ w·x over a Q8_0 row (34-byte blocks: f16 d, 32 int8).
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn dot_q8_0(w: &[u8], x: &[f32]) -> f32;
    /// Σ w·x over a Q6_K row (210-byte blocks of 256).
    ///
    /// # Safety
    /// The CPU must support the ISA.
    unsafe fn dot_q6_k(w: &[u8], x: &[f32]) -> f32;
}

/// # Safety
/// The CPU must support `I`.
pub(crate) unsafe fn gemm_rows<I: DenseIsa>(
    ty: TensorType,
    w: &[u8],
    cols: usize,
    x: &[f32],
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let rb = check_dense(ty, w, cols, x, &rows, out)?;
    let len = rows.len();
    let mut scratch = vec![0f32; cols];
    for (i, r) in rows.enumerate() {
        let row = &w[r * rb..(r + 1) * rb];
        if matches!(ty, TensorType::BF16 | TensorType::F32) {
            dequantize_row(ty, row, &mut scratch);
        }
        for (j, xr) in x.chunks_exact(cols).enumerate() {
            // SAFETY: the caller guarantees the CPU supports I.
            out[j * len + i] = unsafe {
                match ty {
                    TensorType::F16 => I::dot_f16(row, xr),
                    TensorType::Q8_0 => I::dot_q8_0(row, xr),
                    TensorType::Q6_K => I::dot_q6_k(row, xr),
                    _ => I::dot_f32(&scratch, xr),
                }
            };
        }
    }
    Ok(())
}

/// Scalar tails shared by both ISAs (the elements after the last whole vector).
pub(crate) fn tail_f32(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// F16 tail.
pub(crate) fn tail_f16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2).zip(x).map(|(h, b)| half::f16::from_le_bytes([h[0], h[1]]).to_f32() * b).sum()
}
