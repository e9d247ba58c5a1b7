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

/// Activations quantized for Q8_0 rows, as llama.cpp multiplies them (Q8_0's `vec_dot_type` is
/// Q8_0): each token's row in blocks of 32, `d = max|x| / 127` per block and codes
/// `round(x / d)` (half to even, computed as `x · (127 / max|x|)`), so a row's dot product is
/// `Σ_blocks d_w · d_x · Σ w·q` in exact integer sums per block. Unlike llama.cpp the activation
/// scale stays f32 (not rounded to f16). Integer products are what make the one-token Q8_0 head
/// keep up with memory: widening every weight to f32 had held it to ~14.5 GB/s on one core.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Q8Activations {
    /// Elements per token row (a multiple of 32).
    pub cols: usize,
    /// Row-major int8 codes, each in −127..=127.
    pub codes: Vec<i8>,
    /// `d` of every block, row-major (`cols / 32` per row).
    pub scales: Vec<f32>,
    /// Σ of each block's codes (for kernels that multiply unsigned weight bytes).
    pub sums: Vec<i32>,
}

/// One token's row of [`Q8Activations`].
#[derive(Debug, Clone, Copy)]
pub struct Q8Row<'a> {
    /// The row's codes.
    pub codes: &'a [i8],
    /// Its blocks' scales.
    pub scales: &'a [f32],
    /// Its blocks' code sums.
    pub sums: &'a [i32],
}

impl Q8Activations {
    /// Quantizes the `x.len() / cols` rows of `x` (`cols` a multiple of 32; checked by
    /// [`check_dense`] before any kernel sees them).
    pub fn quantize(x: &[f32], cols: usize) -> Q8Activations {
        let blocks = x.len() / 32;
        let mut q = Q8Activations {
            cols,
            codes: vec![0; blocks * 32],
            scales: Vec::with_capacity(blocks),
            sums: Vec::with_capacity(blocks),
        };
        for (xb, qb) in x.chunks_exact(32).zip(q.codes.chunks_exact_mut(32)) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (d, id) = if amax > 0.0 && amax.is_finite() { (amax / 127.0, 127.0 / amax) } else { (0.0, 0.0) };
            let mut sum = 0;
            for (o, &v) in qb.iter_mut().zip(xb) {
                let c = crate::act::round_to_i32(v * id);
                sum += c;
                *o = c as i8;
            }
            q.scales.push(d);
            q.sums.push(sum);
        }
        q
    }

    /// Token `t`'s row.
    pub fn row(&self, t: usize) -> Q8Row<'_> {
        let b = self.cols / 32;
        Q8Row {
            codes: &self.codes[t * self.cols..(t + 1) * self.cols],
            scales: &self.scales[t * b..(t + 1) * b],
            sums: &self.sums[t * b..(t + 1) * b],
        }
    }

    /// Number of token rows.
    pub fn len(&self) -> usize {
        self.scales.len() / (self.cols / 32).max(1)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }
}

/// The reference Q8_0 row product: block by block, `(Σ w·q) as f32 · (d_w · d_x)` added in order.
/// Kernels may add in another order (float rounding only: the block sums are exact).
pub fn dot_q8_0(w: &[u8], x: Q8Row<'_>) -> f32 {
    let mut sum = 0f32;
    for ((b, q), &dx) in w.chunks_exact(34).zip(x.codes.chunks_exact(32)).zip(x.scales) {
        let dw = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let s: i32 = b[2..34].iter().zip(q).map(|(&w, &q)| i32::from(w as i8) * i32::from(q)).sum();
        sum += s as f32 * (dw * dx);
    }
    sum
}

/// The reference: dequantize each row, then a sequential f32 dot product per token; Q8_0 rows
/// multiply [`Q8Activations`] ([`dot_q8_0`]).
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
        let len = rows.len();
        if ty == TensorType::Q8_0 {
            let q = Q8Activations::quantize(x, cols);
            for (i, r) in rows.enumerate() {
                for t in 0..q.len() {
                    out[t * len + i] = dot_q8_0(&w[r * rb..(r + 1) * rb], q.row(t));
                }
            }
            return Ok(());
        }
        let mut row = vec![0f32; cols];
        for (i, r) in rows.enumerate() {
            dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut row);
            for (j, xr) in x.chunks_exact(cols).enumerate() {
                out[j * len + i] = row.iter().zip(xr).map(|(a, b)| a * b).sum();
            }
        }
        Ok(())
    }
}

/// ggml's `nearest_int`: round half to even through the 1.5·2²³ trick (valid for |v| < 2²²).
fn nearest_int(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Quantizes one row to a dense type, as llama.cpp's reference quantizers do
/// (`quantize_row_q8_0_ref`, `quantize_row_q6_K_ref`), so files match llama-quantize's.
pub fn quantize_row(ty: TensorType, x: &[f32]) -> Result<Vec<u8>, QuantError> {
    let rb = row_bytes(ty, x.len())?;
    let mut out = Vec::with_capacity(rb);
    match ty {
        TensorType::F32 => x.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        TensorType::F16 => x.iter().for_each(|&v| out.extend_from_slice(&f16::from_f32(v).to_le_bytes())),
        TensorType::BF16 => x.iter().for_each(|&v| out.extend_from_slice(&bf16::from_f32(v).to_le_bytes())),
        TensorType::Q8_0 => {
            out.resize(rb, 0);
            for (b, o) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
                quantize_block_q8_0(b, o);
            }
        }
        TensorType::Q6_K => {
            for b in x.chunks_exact(256) {
                quantize_block_q6_k(b, &mut out);
            }
        }
        other => unreachable!("{other} passed row_bytes"),
    }
    Ok(out)
}

/// One `block_q8_0` (34 bytes: f16 `d = amax / 127`, 32 codes `round(x / d)`).
pub fn quantize_block_q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    // C's roundf: half away from zero.
    for (o, &v) in out[2..34].iter_mut().zip(x) {
        *o = (v * id).round() as i8 as u8;
    }
}

/// ggml's `make_qx_quants` with `rmse_type` 1 (weights x²): the scale of a group minimizing the
/// weighted squared error, trying 19 candidate reciprocal scales around `nmax / max`; `l` gets the
/// group's codes offset by `nmax`.
fn make_qx_quants(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let q = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (o, &v) in l.iter_mut().zip(x) {
        *o = (code(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&i| i != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l.iter_mut().zip(x) {
                *o = (code(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// One 256-element Q6_K block (`ql[128]`, `qh[64]`, `scales[16]`, f16 `d`), as ggml writes it.
fn quantize_block_q6_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for (ib, s) in scales.iter_mut().enumerate() {
        *s = make_qx_quants(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..16 * ib + 16]);
        if s.abs() > max_abs {
            max_abs = s.abs();
            max_scale = *s;
        }
    }
    if max_abs < 1e-15 {
        out.extend_from_slice(&[0u8; 210]);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    let sc: Vec<i8> = scales.iter().map(|&s| nearest_int(iscale * s).min(127) as i8).collect();
    for (j, &s) in sc.iter().enumerate() {
        let dj = d.to_f32() * f32::from(s);
        if dj == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dj).clamp(-32, 31) + 32) as i8;
        }
    }
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for (half, j) in [0usize, 128].into_iter().enumerate() {
        for i in 0..32 {
            let q = |k: usize| l[j + i + 32 * k] as u8;
            ql[64 * half + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
            ql[64 * half + i + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
            qh[32 * half + i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&s| s as u8));
    out.extend_from_slice(&d.to_le_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn q8_0_products_stay_near_the_float_ones() {
        // Activations quantized per 32 (llama.cpp's Q8_0 x Q8_0 product): within half a code
        // per element of the float product, and exact for activations that are codes already.
        let cols = 320;
        let x: Vec<f32> = (0..cols).map(|i| ((i * 7919 % 211) as f32 / 105.0 - 1.0) * 3.0).collect();
        let row: Vec<f32> = (0..cols).map(|i| ((i * 104_729 % 301) as f32 / 150.0 - 1.0) * 0.05).collect();
        let w = super::quantize_row(TensorType::Q8_0, &row).unwrap();
        let mut deq = vec![0f32; cols];
        super::dequantize_row(TensorType::Q8_0, &w, &mut deq);
        let exact: f32 = deq.iter().zip(&x).map(|(a, b)| a * b).sum();
        let q = super::Q8Activations::quantize(&x, cols);
        let got = super::dot_q8_0(&w, q.row(0));
        let bound: f32 =
            deq.chunks(32).zip(&q.scales).map(|(w, d)| w.iter().map(|v| v.abs()).sum::<f32>() * d / 2.0).sum();
        assert!((got - exact).abs() <= bound * 1.001, "{got} vs {exact} (bound {bound})");
        // A block whose largest magnitude is 127 keeps its integers.
        let ints: Vec<f32> = (0..32).map(|i| i as f32 * 8.0 - 127.0).collect();
        let qi = super::Q8Activations::quantize(&ints, 32);
        assert_eq!(qi.codes.iter().map(|&c| f32::from(c)).collect::<Vec<_>>(), ints);
        // Zero and non-finite blocks quantize to zero codes rather than NaN scales.
        let odd = super::Q8Activations::quantize(&[[0f32; 32], [f32::INFINITY; 32]].concat(), 64);
        assert_eq!((odd.scales.clone(), odd.sums.clone()), (vec![0.0, 0.0], vec![0, 0]));
    }

    use super::*;

    fn wave(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i / 256) as f32)).collect()
    }

    #[test]
    fn quantized_rows_round_trip_within_their_step() {
        let x = wave(1024);
        for (ty, tol) in [(TensorType::Q8_0, 1.0 / 127.0), (TensorType::Q6_K, 1.0 / 20.0), (TensorType::F16, 1e-3)] {
            let bytes = quantize_row(ty, &x).unwrap();
            assert_eq!(bytes.len(), row_bytes(ty, x.len()).unwrap());
            let mut back = vec![0f32; x.len()];
            dequantize_row(ty, &bytes, &mut back);
            for (blk, (a, b)) in x.chunks(256).zip(back.chunks(256)).enumerate() {
                let amax = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (u, v) in a.iter().zip(b) {
                    assert!((u - v).abs() <= tol * amax, "{ty} block {blk}: {u} -> {v}");
                }
            }
        }
    }

    #[test]
    fn zero_rows_quantize_to_zero() {
        for ty in [TensorType::Q8_0, TensorType::Q6_K] {
            let bytes = quantize_row(ty, &[0.0; 256]).unwrap();
            let mut back = vec![1f32; 256];
            dequantize_row(ty, &bytes, &mut back);
            assert!(back.iter().all(|&v| v == 0.0), "{ty}");
        }
        assert!(quantize_row(TensorType::Q6_K, &[0.0; 100]).is_err());
    }
}
