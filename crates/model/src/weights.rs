//! Weight matrices as the file holds them (memory-mapped), and the matmuls over them.

use std::ops::Range;

use bitnet_format::{GgufFile, TensorInfo, TensorType};
use bitnet_kernels::Kernels;
use bitnet_quant::dense::{DENSE_TYPES, dequantize_row, row_bytes};
use bitnet_quant::{I2sLayout, PackedTernary, QuantizedActivations, TernaryFormat};

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
    /// Bytes repacked at load (TL1/TL2 → I2_S) instead of the file's.
    owned: Option<std::sync::Arc<Vec<u8>>>,
}

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
            TensorType::TL1 | TensorType::TL2 => return tl_as_i2s(file, t, name, rows, cols),
            ty if DENSE_TYPES.contains(&ty) => {
                row_bytes(ty, cols).map_err(|e| bad(name, e.to_string()))?;
                MatrixKind::Dense(ty)
            }
            ty => return Err(bad(name, format!("type {ty} is not supported for weights"))),
        };
        let start = (file.data_offset() + t.offset) as usize;
        Ok(Matrix { name: name.into(), rows, cols, kind, range: start..start + t.size as usize, owned: None })
    }

    fn bytes<'a>(&'a self, file: &'a [u8]) -> &'a [u8] {
        match &self.owned {
            Some(bytes) => bytes,
            None => &file[self.range.clone()],
        }
    }

    /// Dequantizes row `r` of a dense matrix into `out`.
    pub fn dense_row(&self, file: &[u8], r: usize, out: &mut [f32]) {
        let MatrixKind::Dense(ty) = self.kind else { unreachable!("dense_row on a ternary matrix") };
        let rb = row_bytes(ty, self.cols).expect("checked at load");
        dequantize_row(ty, &self.bytes(file)[r * rb..(r + 1) * rb], out);
    }

    /// `out[n·rows + r] = Σ_c W[r, c] · x[n·cols + c]` for each of the `x.len() / cols` rows of x.
    /// `acts` may hold x already quantized (matrices that share an input quantize it once).
    pub fn matmul(
        &self,
        file: &[u8],
        kernels: &Kernels,
        pool: &Pool,
        x: &[f32],
        acts: Option<&QuantizedActivations>,
        out: &mut [f32],
    ) -> Result<()> {
        let n = x.len() / self.cols;
        debug_assert_eq!(out.len(), n * self.rows);
        match self.kind {
            MatrixKind::Ternary { format, extra_scale } => {
                let owned;
                let acts = match acts {
                    Some(a) => a,
                    None => {
                        owned = QuantizedActivations::quantize(x, self.cols)?;
                        &owned
                    }
                };
                let w = PackedTernary::new(format, self.rows, self.cols, self.bytes(file), None)?;
                pool.rows(self.rows, n, out, |rows, part| kernels.ternary().gemm_rows(&w, acts, rows, part))?;
                if let Some(s) = extra_scale {
                    out.iter_mut().for_each(|v| *v *= s);
                }
            }
            MatrixKind::Dense(ty) => {
                let w = self.bytes(file);
                pool.rows(self.rows, n, out, |rows, part| kernels.dense().gemm_rows(ty, w, self.cols, x, rows, part))?;
            }
        }
        Ok(())
    }
}

/// bitnet.cpp's TL1/TL2 tensors, unpacked with the tiling of its preset kernels for the shape and
/// repacked to I2_S in memory, so the I2_S kernels run them; the scale comes from the separate
/// `<name>_scale` tensor bitnet.cpp's converter writes.
fn tl_as_i2s(file: &GgufFile, t: &TensorInfo, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    use bitnet_quant::{i2s, tl};
    let tl2 = t.ty == TensorType::TL2;
    let tiling = tl::tiling_of_file(file.metadata(), tl2, rows, cols).map_err(|e| bad(name, e.to_string()))?;
    let scale = scalar(file, &format!("{name}_scale"))?
        .ok_or_else(|| bad(name, format!("{} needs its scale tensor {name}_scale", t.ty)))?;
    let format = if tl2 { TernaryFormat::Tl2(tiling) } else { TernaryFormat::Tl1(tiling) };
    let packed = PackedTernary::new(format, rows, cols, file.tensor_data(t), Some(scale))?;
    let (m, _) = packed.unpack()?;
    let bytes = i2s::pack(&m, scale, I2sLayout::X86)?;
    Ok(Matrix {
        name: name.into(),
        rows,
        cols,
        kind: MatrixKind::Ternary { format: TernaryFormat::I2s(I2sLayout::X86), extra_scale: None },
        range: 0..0,
        owned: Some(std::sync::Arc::new(bytes)),
    })
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
