//! Dense weights (float and llama.cpp block types) for embeddings and output heads: row
//! dequantization, the dense kernel interface, and its scalar reference.

use std::ops::Range;

use bitnet_format::{Layout, TensorType};
use half::{bf16, f16};

use crate::error::{QuantError, check_len};

/// Dense types with a row dequantizer.
pub const DENSE_TYPES: &[TensorType] =
    &[TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0, TensorType::Q6_K];

/// Bytes of one `cols`-wide row of a dense type, or an error naming what does not fit.
pub fn row_bytes(ty: TensorType, cols: usize) -> Result<usize, QuantError> {
    if !DENSE_TYPES.contains(&ty) {
        return Err(QuantError::Unsupported { format: "dense", reason: format!("type {ty} is not a dense type") });
    }
    let Layout::Blocks { block: elements, bytes } = ty.layout() else { unreachable!("dense types are block types") };
    let (elements, bytes) = (elements as usize, bytes as usize);
    if !cols.is_multiple_of(elements) {
        return Err(QuantError::NotMultiple { format: "dense", dim: "columns", multiple: elements, value: cols });
    }
    Ok(cols / elements * bytes)
}

/// Dequantizes one row of a dense type (`bytes` hold exactly the row).
pub fn dequantize_row(ty: TensorType, bytes: &[u8], out: &mut [f32]) {
    match ty {
        TensorType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        TensorType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        TensorType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        TensorType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (v, &q) in o.iter_mut().zip(&b[2..]) {
                    *v = d * f32::from(q as i8);
                }
            }
        }
        TensorType::Q6_K => {
            for (o, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(210)) {
                dequantize_q6_k(b, o);
            }
        }
        other => unreachable!("{other} is not a dense type"),
    }
}

/// ggml's block_q6_K: `ql[128]` (low 4 bits), `qh[64]` (high 2 bits), `scales[16]` (i8), f16 `d`.
/// Each 128-element half uses 64 bytes of ql, 32 of qh and 8 scales (one per 16 elements).
fn dequantize_q6_k(b: &[u8], out: &mut [f32]) {
    let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let y = &mut out[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 15) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let scale = f32::from(sc[is + 2 * k] as i8);
                y[l + 32 * k] = d * scale * f32::from(qk as i8 - 32);
            }
        }
    }
}

/// The interface of dense matmul kernels (output heads): like [`crate::TernaryKernel`], row
/// ranges of `out[n·len + i] = Σ_c W[rows.start + i, c] · x[n·cols + c]`, `len = rows.len()`.
pub trait DenseKernel: Send + Sync {
    /// A short name for logs and test reports.
    fn name(&self) -> &'static str;

    /// Computes rows `rows` of `W · x` for every `cols`-wide row of `x`; `w` holds the whole
    /// matrix of type `ty`.
    fn gemm_rows(
        &self,
        ty: TensorType,
        w: &[u8],
        cols: usize,
        x: &[f32],
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError>;
}

/// Checks the arguments of [`DenseKernel::gemm_rows`]; returns the bytes per row.
pub fn check_dense(
    ty: TensorType,
    w: &[u8],
    cols: usize,
    x: &[f32],
    rows: &Range<usize>,
    out: &[f32],
) -> Result<usize, QuantError> {
    let rb = row_bytes(ty, cols)?;
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(QuantError::Length {
            what: "activation batch (a whole number of rows)",
            expected: cols,
            got: x.len(),
        });
    }
    check_len("output", x.len() / cols * rows.len(), out.len())?;
    if rows.start > rows.end || rows.end * rb > w.len() {
        return Err(QuantError::Length { what: "dense weight bytes", expected: rows.end * rb, got: w.len() });
    }
    Ok(rb)
}

/// The reference: dequantize each row, then a sequential f32 dot product per token.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScalarDense;

impl DenseKernel for ScalarDense {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn gemm_rows(
        &self,
        ty: TensorType,
        w: &[u8],
        cols: usize,
        x: &[f32],
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let rb = check_dense(ty, w, cols, x, &rows, out)?;
        let mut row = vec![0f32; cols];
        let len = rows.len();
        for (i, r) in rows.enumerate() {
            dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut row);
            for (j, xr) in x.chunks_exact(cols).enumerate() {
                out[j * len + i] = row.iter().zip(xr).map(|(a, b)| a * b).sum();
            }
        }
        Ok(())
    }
}
