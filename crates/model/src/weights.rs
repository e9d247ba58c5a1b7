//! Weight matrices as the file holds them (memory-mapped), and the matmuls over them.

use std::ops::Range;

use bitnet_format::{GgufFile, TensorInfo, TensorType};
use bitnet_quant::{I2sLayout, PackedTernary, QuantizedActivations, TernaryFormat, TernaryKernel};
use half::{bf16, f16};

use crate::error::{ModelError, Result};
use crate::threads::Pool;

/// How a matrix's bytes are interpreted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MatrixKind {
    /// Ternary weights; `extra_scale` is bitnet.cpp 1.0's optional `<name>.scale` multiplier.
    Ternary { format: TernaryFormat, extra_scale: Option<f32> },
    /// Float or block-quantized weights, dequantized row by row.
    Dense(TensorType),
}

/// A `rows × cols` weight matrix whose bytes live in the model file.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub kind: MatrixKind,
    range: Range<usize>,
}

/// Dense types we can dequantize.
const DENSE: &[TensorType] = &[TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0, TensorType::Q6_K];

fn info<'a>(file: &'a GgufFile, name: &str) -> Result<&'a TensorInfo> {
    file.tensor_info(name).ok_or_else(|| ModelError::MissingTensor(name.into()))
}

fn bad(name: &str, message: impl Into<String>) -> ModelError {
    ModelError::BadTensor { name: name.into(), message: message.into() }
}

/// A one-element F32 tensor's value, if the tensor exists.
fn scalar(file: &GgufFile, name: &str) -> Result<Option<f32>> {
    let Some(t) = file.tensor_info(name) else { return Ok(None) };
    if t.ty != TensorType::F32 || t.numel() != 1 {
        return Err(bad(name, format!("expected one F32 value, found {} {:?}", t.ty, t.shape)));
    }
    let b = file.tensor_data(t);
    Ok(Some(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
}

impl Matrix {
    /// Looks up a 2-D weight `name` (ggml shape `[cols, rows]`) and checks its shape.
    pub fn load(file: &GgufFile, name: &str, rows: usize, cols: usize, i2s_layout: I2sLayout) -> Result<Matrix> {
        let t = info(file, name)?;
        let (ne0, ne1) =
            (t.shape.first().copied().unwrap_or(1) as usize, t.shape.get(1).copied().unwrap_or(1) as usize);
        if t.shape.len() > 2 || ne0 != cols || ne1 != rows {
            return Err(bad(name, format!("shape {:?}, expected [{cols}, {rows}]", t.shape)));
        }
        let base = name.strip_suffix(".weight").unwrap_or(name);
        let kind = match t.ty {
            TensorType::I2_S => MatrixKind::Ternary {
                format: TernaryFormat::I2s(i2s_layout),
                extra_scale: scalar(file, &format!("{base}.scale"))?,
            },
            TensorType::TQ1_0 | TensorType::TQ2_0 => MatrixKind::Ternary {
                format: if t.ty == TensorType::TQ1_0 { TernaryFormat::Tq1_0 } else { TernaryFormat::Tq2_0 },
                extra_scale: scalar(file, &format!("{base}.scale"))?,
            },
            TensorType::TL1 | TensorType::TL2 => {
                return Err(bad(
                    name,
                    "TL1/TL2 files are laid out for the tile sizes of the bitnet.cpp build that made them, \
                     which the file does not record; convert the model to I2_S or TQ2_0 instead",
                ));
            }
            ty if DENSE.contains(&ty) => MatrixKind::Dense(ty),
            ty => return Err(bad(name, format!("type {ty} is not supported for weights"))),
        };
        let start = (file.data_offset() + t.offset) as usize;
        Ok(Matrix { name: name.into(), rows, cols, kind, range: start..start + t.size as usize })
    }

    fn bytes<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[self.range.clone()]
    }

    /// Dequantizes row `r` of a dense matrix into `out`.
    pub fn dense_row(&self, file: &[u8], r: usize, out: &mut [f32]) {
        let MatrixKind::Dense(ty) = self.kind else { unreachable!("dense_row on a ternary matrix") };
        let row_bytes = (self.cols as u64 / ty.block_size()) as usize * block_bytes(ty);
        dequantize_row(ty, &self.bytes(file)[r * row_bytes..(r + 1) * row_bytes], out);
    }

    /// `out[n·rows + r] = Σ_c W[r, c] · x[n·cols + c]` for each of the `x.len() / cols` rows of x.
    pub fn matmul(
        &self,
        file: &[u8],
        kernel: &dyn TernaryKernel,
        pool: &Pool,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let n = x.len() / self.cols;
        debug_assert_eq!(out.len(), n * self.rows);
        match self.kind {
            MatrixKind::Ternary { format, extra_scale } => {
                let acts = QuantizedActivations::quantize(x, self.cols)?;
                let w = PackedTernary::new(format, self.rows, self.cols, self.bytes(file), None)?;
                pool.rows(self.rows, n, out, |rows, part| kernel.gemm_rows(&w, &acts, rows, part))?;
                if let Some(s) = extra_scale {
                    out.iter_mut().for_each(|v| *v *= s);
                }
            }
            MatrixKind::Dense(_) => {
                pool.rows(self.rows, n, out, |rows, part| {
                    let mut w = vec![0f32; self.cols];
                    let len = rows.len();
                    for (i, r) in rows.enumerate() {
                        self.dense_row(file, r, &mut w);
                        for (j, xr) in x.chunks_exact(self.cols).enumerate() {
                            part[j * len + i] = w.iter().zip(xr).map(|(a, b)| a * b).sum();
                        }
                    }
                    Ok::<(), ModelError>(())
                })?;
            }
        }
        Ok(())
    }
}

fn block_bytes(ty: TensorType) -> usize {
    match ty.layout() {
        bitnet_format::Layout::Blocks { bytes, .. } => bytes as usize,
        _ => unreachable!("dense types are block types"),
    }
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

/// A 1-D F32 tensor (norm weights).
pub fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = info(file, name)?;
    if t.numel() as usize != len {
        return Err(bad(name, format!("has {} elements, expected {len}", t.numel())));
    }
    let mut out = vec![0f32; len];
    match t.ty {
        TensorType::F32 | TensorType::F16 | TensorType::BF16 => dequantize_row(t.ty, file.tensor_data(t), &mut out),
        ty => return Err(bad(name, format!("type {ty}, expected F32, F16 or BF16"))),
    }
    Ok(out)
}
