//! The one kernel interface, and the scalar reference every fast kernel is tested against.
//!
//! A kernel multiplies a packed ternary matrix (`rows × cols`) by a batch of int8 activation rows
//! and writes f32 outputs. The reference decodes the packing to ternary values and sums exact
//! integer products, then rescales:
//! * one scale per tensor (I2_S, TL1, TL2): `out = (Σ t·a) as f32 / act_scale · w_scale`;
//! * one scale per 256-block (TQ1_0, TQ2_0): `out = Σ_b ((Σ_b t·a) as f32 · d_b) / act_scale`.
//!
//! Integer sums are exact, so a fast kernel that applies the same final float operations in the
//! same order matches the reference bit for bit.

use crate::act::{ActScale, QuantizedActivations};
use crate::error::{QuantError, check_len};
use crate::i2s::{self, I2sLayout};
use crate::ternary::TernaryMatrix;
use crate::tl::{self, TlTiling};
use crate::tq::{self, QK_K, TqKind};

/// A ternary packing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TernaryFormat {
    /// bitnet.cpp I2_S in the given code order.
    I2s(I2sLayout),
    /// llama.cpp TQ1_0.
    Tq1_0,
    /// llama.cpp TQ2_0.
    Tq2_0,
    /// bitnet.cpp TL1 with its tiling.
    Tl1(TlTiling),
    /// bitnet.cpp TL2 with its tiling.
    Tl2(TlTiling),
}

impl TernaryFormat {
    /// The GGUF type's name ("I2_S", "TQ1_0", "TQ2_0", "TL1", "TL2").
    pub fn type_name(self) -> &'static str {
        match self {
            TernaryFormat::I2s(_) => "I2_S",
            TernaryFormat::Tq1_0 => "TQ1_0",
            TernaryFormat::Tq2_0 => "TQ2_0",
            TernaryFormat::Tl1(_) => "TL1",
            TernaryFormat::Tl2(_) => "TL2",
        }
    }

    /// Bytes of a `rows × cols` matrix in this format.
    pub fn byte_size(self, rows: usize, cols: usize) -> Option<usize> {
        Some(match self {
            TernaryFormat::I2s(_) => i2s::i2s_bytes(rows * cols),
            TernaryFormat::Tq1_0 => rows * cols / QK_K * tq::TQ1_0_BLOCK_BYTES,
            TernaryFormat::Tq2_0 => rows * cols / QK_K * tq::TQ2_0_BLOCK_BYTES,
            TernaryFormat::Tl1(_) => rows * cols / 4,
            TernaryFormat::Tl2(_) => tl::tl2_bytes(rows, cols)?,
        })
    }
}

/// Dequantization scales of a packed matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightScales {
    /// One scale for the whole tensor.
    Tensor(f32),
    /// One scale per `block` consecutive weights of a row, row-major.
    Blocks { block: usize, values: Vec<f32> },
}

/// A packed ternary weight matrix, borrowed from a file or a buffer.
#[derive(Debug, Clone, Copy)]
pub struct PackedTernary<'a> {
    pub format: TernaryFormat,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    pub data: &'a [u8],
    /// The separate scale tensor of TL1/TL2 (I2_S and TQ carry their scales inside `data`).
    pub scale: Option<f32>,
}

impl<'a> PackedTernary<'a> {
    /// The ternary tensor `t` of a GGUF file (`rows × cols`) as the kernels read it: I2_S in the
    /// code order the file's metadata names, TQ1_0, TQ2_0, or TL1/TL2 with the file's tiling for
    /// the shape and the scale from bitnet.cpp's separate `<name>_scale` tensor (one F32). `None`
    /// when the tensor's type is not ternary. The one place that maps a file's tensor to a
    /// format, for the converter and the model loader alike.
    pub fn from_gguf<D: AsRef<[u8]>>(
        file: &'a bitnet_format::Gguf<D>,
        t: &bitnet_format::TensorInfo,
        rows: usize,
        cols: usize,
    ) -> Option<Result<Self, QuantError>> {
        use bitnet_format::TensorType;
        let tl2 = t.ty == TensorType::TL2;
        let format = match t.ty {
            TensorType::I2_S => crate::I2sLayout::of_file(file.metadata()).map(TernaryFormat::I2s),
            TensorType::TQ1_0 => Ok(TernaryFormat::Tq1_0),
            TensorType::TQ2_0 => Ok(TernaryFormat::Tq2_0),
            TensorType::TL1 | TensorType::TL2 => crate::tl::tiling_of_file(file.metadata(), tl2, rows, cols)
                .map(|tiling| if tl2 { TernaryFormat::Tl2(tiling) } else { TernaryFormat::Tl1(tiling) }),
            _ => return None,
        };
        Some(format.and_then(|format| {
            let scale = match format {
                TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_) => {
                    let name = format!("{}_scale", t.name);
                    let s = file
                        .tensor_info(&name)
                        .filter(|s| s.ty == TensorType::F32 && s.numel() == 1)
                        .map(|s| file.tensor_data(s))
                        .ok_or_else(|| QuantError::Unsupported {
                            format: if tl2 { "TL2" } else { "TL1" },
                            reason: format!("{} needs its scale tensor {name} (one F32 value)", t.name),
                        })?;
                    Some(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                }
                _ => None,
            };
            PackedTernary::new(format, rows, cols, file.tensor_data(t), scale)
        }))
    }

    /// Wraps packed bytes, checking their length (and that TL formats have their scale).
    pub fn new(
        format: TernaryFormat,
        rows: usize,
        cols: usize,
        data: &'a [u8],
        scale: Option<f32>,
    ) -> Result<Self, QuantError> {
        let expected = format.byte_size(rows, cols).ok_or_else(|| QuantError::Unsupported {
            format: "TL2",
            reason: format!("needs at least 256 columns, got {cols}"),
        })?;
        check_len("packed bytes", expected, data.len())?;
        if matches!(format, TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_)) && scale.is_none() {
            return Err(QuantError::Unsupported {
                format: "TL1/TL2",
                reason: "the separate scale tensor is required".into(),
            });
        }
        Ok(PackedTernary { format, rows, cols, data, scale })
    }

    /// Decodes row `r` into `out` (length `cols`) without decoding the rest, for the formats whose
    /// rows can be addressed on their own (I2_S, TQ1_0, TQ2_0); `None` for TL1/TL2, whose tiles
    /// span rows. Returns the row's scales.
    pub fn decode_row(&self, r: usize, out: &mut [i8]) -> Option<Result<WeightScales, QuantError>> {
        let cols = self.cols;
        if let Err(e) = check_len("row", cols, out.len()) {
            return Some(Err(e));
        }
        if r >= self.rows {
            return Some(Err(QuantError::Length { what: "row index", expected: self.rows, got: r }));
        }
        match self.format {
            TernaryFormat::I2s(layout) => Some((|| {
                for (c, o) in out.iter_mut().enumerate() {
                    let (byte, shift) = layout.position(r, c, cols);
                    let code = (self.data[byte] >> shift) & 3;
                    if code == 3 {
                        return Err(QuantError::InvalidCode { format: "I2_S", code, byte });
                    }
                    *o = code as i8 - 1;
                }
                Ok(WeightScales::Tensor(i2s::scale_of(self.data, self.rows * cols)))
            })()),
            TernaryFormat::Tq1_0 | TernaryFormat::Tq2_0 => {
                let kind = if self.format == TernaryFormat::Tq1_0 { TqKind::Tq1_0 } else { TqKind::Tq2_0 };
                let row_bytes = cols / QK_K * kind.block_bytes();
                let bytes = &self.data[r * row_bytes..(r + 1) * row_bytes];
                Some(tq::unpack(kind, bytes, 1, cols).map(|(m, values)| {
                    out.copy_from_slice(m.values());
                    WeightScales::Blocks { block: QK_K, values }
                }))
            }
            TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_) => None,
        }
    }

    /// Decodes to ternary values and scales.
    pub fn unpack(&self) -> Result<(TernaryMatrix, WeightScales), QuantError> {
        let (rows, cols) = (self.rows, self.cols);
        let tensor_scale = || self.scale.unwrap_or(1.0);
        Ok(match self.format {
            TernaryFormat::I2s(layout) => {
                let (m, s) = i2s::unpack(self.data, rows, cols, layout)?;
                (m, WeightScales::Tensor(s))
            }
            TernaryFormat::Tq1_0 | TernaryFormat::Tq2_0 => {
                let kind = if self.format == TernaryFormat::Tq1_0 { TqKind::Tq1_0 } else { TqKind::Tq2_0 };
                let (m, values) = tq::unpack(kind, self.data, rows, cols)?;
                (m, WeightScales::Blocks { block: QK_K, values })
            }
            TernaryFormat::Tl1(t) => (tl::unpack_tl1(self.data, rows, cols, t)?, WeightScales::Tensor(tensor_scale())),
            TernaryFormat::Tl2(t) => (tl::unpack_tl2(self.data, rows, cols, t)?, WeightScales::Tensor(tensor_scale())),
        })
    }
}

/// The interface every kernel implements (scalar, AVX2, AVX-512, NEON, LUT).
pub trait TernaryKernel: Send + Sync {
    /// A short name for logs and test reports ("scalar", "avx512-vnni", ...).
    fn name(&self) -> &'static str;

    /// Whether this kernel handles the format.
    fn supports(&self, format: TernaryFormat) -> bool;

    /// Activation rows quantized for this kernel's products: always bit-identical to
    /// [`QuantizedActivations::quantize`] (bitnet.cpp's rule), which instruction sets may compute
    /// in wider registers.
    fn quantize(&self, x: &[f32], cols: usize) -> Result<QuantizedActivations, QuantError> {
        QuantizedActivations::quantize(x, cols)
    }

    /// Output rows `rows` only (so callers can split a matrix across threads):
    /// `out[n·len + (r − rows.start)] = Σ_c W[r, c] · x[n, c]` for every activation row `n`,
    /// where `len = rows.len()`.
    fn gemm_rows(
        &self,
        w: &PackedTernary<'_>,
        x: &QuantizedActivations,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError>;

    /// `out[n·rows + r] = Σ_c W[r, c] · x[n, c]` for every activation row `n`, dequantized.
    fn gemm(&self, w: &PackedTernary<'_>, x: &QuantizedActivations, out: &mut [f32]) -> Result<(), QuantError> {
        self.gemm_rows(w, x, 0..w.rows, out)
    }

    /// The one-token case: `out[r] = Σ_c W[r, c] · x[c]`.
    fn gemv(&self, w: &PackedTernary<'_>, x: &[i8], act: ActScale, out: &mut [f32]) -> Result<(), QuantError> {
        let batch = QuantizedActivations { cols: x.len(), codes: x.to_vec(), rows: vec![act] };
        self.gemm(w, &batch, out)
    }
}

/// Exact ternary × int8 dot product.
pub fn dot(t: &[i8], a: &[i8]) -> i32 {
    t.iter().zip(a).map(|(&t, &a)| i32::from(t) * i32::from(a)).sum()
}

/// The dot product as bitnet.cpp's I2_S kernels compute it: unsigned codes (t + 1) times
/// activations, minus the activation sum. Equal to [`dot`]; kept to document the identity.
pub fn dot_with_code_offset(t: &[i8], a: &[i8], act_sum: i32) -> i32 {
    let biased: i32 = t.iter().zip(a).map(|(&t, &a)| i32::from((t + 1) as u8) * i32::from(a)).sum();
    biased - act_sum
}

/// One output: a decoded ternary row times an activation row, rescaled as the module docs say.
fn row_dot(t: &[i8], a: &[i8], act: ActScale, scales: &WeightScales) -> f32 {
    match scales {
        WeightScales::Tensor(s) => dot(t, a) as f32 / act.scale * s,
        WeightScales::Blocks { block, values } => {
            let sum: f32 =
                t.chunks(*block).zip(a.chunks(*block)).zip(values).map(|((t, a), d)| dot(t, a) as f32 * d).sum();
            sum / act.scale
        }
    }
}

/// The scalar reference kernel: decodes the packing, then integer dot products.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScalarKernel;

impl TernaryKernel for ScalarKernel {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn supports(&self, _format: TernaryFormat) -> bool {
        true
    }

    fn gemm_rows(
        &self,
        w: &PackedTernary<'_>,
        x: &QuantizedActivations,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        // Fields are public, so a hand-built PackedTernary is re-checked like `new` checks it.
        PackedTernary::new(w.format, w.rows, w.cols, w.data, w.scale)?;
        check_len("activation row length", w.cols, x.cols)?;
        check_len("output", x.len() * rows.len(), out.len())?;
        if rows.end > w.rows {
            return Err(QuantError::Length { what: "row range end", expected: w.rows, got: rows.end });
        }
        // Row by row where the format allows it; TL tiles span rows, so those decode whole.
        let whole =
            if matches!(w.format, TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_)) { Some(w.unpack()?) } else { None };
        let mut row = vec![0i8; w.cols];
        let len = rows.len();
        for (i, r) in rows.enumerate() {
            let scales = match &whole {
                Some((m, scales)) => {
                    row.copy_from_slice(m.row(r));
                    scales.clone()
                }
                None => w.decode_row(r, &mut row).expect("row-addressable format")?,
            };
            for n in 0..x.len() {
                out[n * len + i] = row_dot(&row, x.row(n), x.rows[n], &scales);
            }
        }
        Ok(())
    }
}
