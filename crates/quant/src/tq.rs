//! Upstream llama.cpp's ternary block types, super-blocks of 256 weights per row:
//!
//! * TQ2_0 (66 bytes): `qs[64]` then f16 `d`. Within each 128-element half, byte `m` (0..32) holds
//!   elements `m + 32·n` for n = 0..3 at bits `2n` (code = ternary + 1).
//! * TQ1_0 (54 bytes): `qs[48]`, `qh[4]`, f16 `d`. Five trits per byte in base 3, most significant
//!   first, stored as `ceil(q·256/243)` so that a trit is read back with a multiply and a shift:
//!   bytes 0..32 hold elements `m + 32·n` (n = 0..5) of the first 160, bytes 32..48 hold
//!   `160 + m + 16·n` of the next 80, and `qh[j]` holds `240 + j + 4·n` (n = 0..4, fifth trit 0).
//!
//! `d` is the block's max |x| (for ternarized weights `t·s`, that is `s`, or 0 for an all-zero
//! block). The quantizers follow ggml's `quantize_row_tq*_0_ref` exactly (lroundf: half away
//! from zero).

use half::f16;

use crate::error::{QuantError, check_len, check_multiple};
use crate::ternary::TernaryMatrix;

/// Weights per super-block.
pub const QK_K: usize = 256;
/// Bytes per TQ2_0 block.
pub const TQ2_0_BLOCK_BYTES: usize = 66;
/// Bytes per TQ1_0 block.
pub const TQ1_0_BLOCK_BYTES: usize = 54;

/// Which of the two block formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TqKind {
    Tq1_0,
    Tq2_0,
}

impl TqKind {
    /// Bytes per 256-weight block.
    pub fn block_bytes(self) -> usize {
        match self {
            TqKind::Tq1_0 => TQ1_0_BLOCK_BYTES,
            TqKind::Tq2_0 => TQ2_0_BLOCK_BYTES,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TqKind::Tq1_0 => "TQ1_0",
            TqKind::Tq2_0 => "TQ2_0",
        }
    }

    /// Position of the `d` field inside a block.
    fn d_offset(self) -> usize {
        self.block_bytes() - 2
    }
}

/// The element → (byte, trit index) map of a TQ1_0 block; trit 0 is the most significant.
fn tq1_position(e: usize) -> (usize, usize) {
    match e {
        0..160 => (e % 32, e / 32),
        160..240 => (32 + (e - 160) % 16, (e - 160) / 16),
        _ => (48 + (e - 240) % 4, (e - 240) / 4),
    }
}

/// The elements byte `m` of a TQ1_0 block holds, `tq1_position`'s inverse: elements
/// `first + step·n` for trits `n < trits`.
fn tq1_byte_elements(m: usize) -> (usize, usize, usize) {
    match m {
        0..32 => (m, 32, 5),
        32..48 => (160 + m - 32, 16, 5),
        _ => (240 + m - 48, 4, 4),
    }
}

/// A block's scale `d`, as f16 bits.
fn scale_bits(kind: TqKind, block: &[u8]) -> u16 {
    let d = kind.d_offset();
    u16::from_le_bytes([block[d], block[d + 1]])
}

/// Whether f16 bits are ±0 (an all-zero block's scale).
fn is_zero_scale(bits: u16) -> bool {
    bits & 0x7fff == 0
}

/// The element → (byte, bit shift) map of a TQ2_0 block.
fn tq2_position(e: usize) -> (usize, u32) {
    let (half, j) = (e / 128, e % 128);
    (half * 32 + j % 32, 2 * (j / 32) as u32)
}

/// Quantizes a row (length a multiple of 256) exactly as ggml's `quantize_row_tq*_0_ref`.
pub fn quantize_row(kind: TqKind, x: &[f32]) -> Result<Vec<u8>, QuantError> {
    check_multiple(kind.name(), "row length", x.len(), QK_K)?;
    let mut out = Vec::with_capacity(x.len() / QK_K * kind.block_bytes());
    for block in x.chunks_exact(QK_K) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
        let codes: Vec<u8> = block.iter().map(|&v| ((v * id).round() as i32 + 1) as u8).collect();
        let mut bytes = vec![0u8; kind.block_bytes()];
        match kind {
            TqKind::Tq2_0 => {
                for (e, &code) in codes.iter().enumerate() {
                    let (byte, shift) = tq2_position(e);
                    bytes[byte] |= (code & 3) << shift;
                }
            }
            TqKind::Tq1_0 => {
                let mut q = [0u16; 52];
                for (e, &code) in codes.iter().enumerate() {
                    let (byte, trit) = tq1_position(e);
                    q[byte] += u16::from(code) * 3u16.pow(4 - trit as u32);
                }
                for (b, &v) in bytes.iter_mut().zip(&q) {
                    // Ceiling division by 243/256, so that trits read back with a multiply.
                    *b = (v * 256).div_ceil(243) as u8;
                }
            }
        }
        let d = kind.d_offset();
        bytes[d..d + 2].copy_from_slice(&f16::from_f32(amax).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// Packs a ternary matrix with one scale: each row quantized from `t · scale`.
pub fn pack(kind: TqKind, m: &TernaryMatrix, scale: f32) -> Result<Vec<u8>, QuantError> {
    check_multiple(kind.name(), "cols", m.cols(), QK_K)?;
    let mut out = Vec::with_capacity(m.rows() * m.cols() / QK_K * kind.block_bytes());
    for r in 0..m.rows() {
        let x: Vec<f32> = m.row(r).iter().map(|&t| f32::from(t) * scale).collect();
        out.extend(quantize_row(kind, &x)?);
    }
    Ok(out)
}

/// Reads trit `n` (0 = most significant of 5) of a TQ1_0 byte, as ggml does: multiply, shift.
fn trit(byte: u8, n: usize) -> u8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = byte.wrapping_mul(POW3[n]);
    ((u16::from(q) * 3) >> 8) as u8
}

/// [`trit`] `n` of a byte `q`, given `x = q·3^n mod 256`, which becomes `q·3^(n+1) mod 256`:
/// `(3x) >> 8` is 1 from x = 86 and 2 from x = 171.
fn next_trit(x: &mut u8) -> u8 {
    let t = x.saturating_sub(85).min(1) + x.saturating_sub(170).min(1);
    *x = x.wrapping_add(*x).wrapping_add(*x);
    t
}

/// The 256 ternary values of one TQ1_0 block ([`unpack`]; the load's repack reads 32 rows
/// at once with [`tq1_sub_tile`]).
fn tq1_block_values(block: &[u8], out: &mut [i8; QK_K]) {
    for (m, &q) in block[..52].iter().enumerate() {
        let (first, step, trits) = tq1_byte_elements(m);
        for n in 0..trits {
            out[first + step * n] = trit(q, n) as i8 - 1;
        }
    }
}

/// The values of 32 consecutive rows of TQ1_0 bytes (`bytes`: the rows, `row_bytes` each),
/// column-major: `out[32·c + r]`. Byte `m` of a block is read from all 32 rows at once and each
/// of its trits written as one 32-value column, so the work is vector-wide (TQ1_0 → TL2 at
/// load). A row's block whose scale is 0 reads as zeros (its bytes taken as 128: trits 1 1 1 1 1).
pub(crate) fn tq1_sub_tile(bytes: &[u8], row_bytes: usize, out: &mut [i8]) {
    let bb = TQ1_0_BLOCK_BYTES;
    let blocks = row_bytes / bb;
    // Which rows' blocks have scale 0, found front to back: the 32 rows are one stretch of the
    // file, which this reads into the caches in order. Read block by block across the rows
    // instead (below), the first reads were half of the repack's time (32 strided streams).
    let mut zeros = vec![0u32; blocks];
    for (r, row) in bytes.chunks_exact(row_bytes).take(32).enumerate() {
        for (z, block) in zeros.iter_mut().zip(row.chunks_exact(bb)) {
            *z |= u32::from(is_zero_scale(scale_bits(TqKind::Tq1_0, block))) << r;
        }
    }
    // One block of the 32 rows, byte-major: `cols[32·m + r]` (a zero-scale block as 128s).
    let mut cols = [0u8; 32 * 52];
    for j in 0..blocks {
        for (r, row) in bytes.chunks_exact(row_bytes).take(32).enumerate() {
            let block = &row[j * bb..(j + 1) * bb];
            let zero = zeros[j] >> r & 1 == 1;
            for (m, &q) in block[..52].iter().enumerate() {
                cols[32 * m + r] = if zero { 128 } else { q };
            }
        }
        for (m, col) in cols.chunks_exact(32).enumerate() {
            let (first, step, trits) = tq1_byte_elements(m);
            // Each trit from the previous one's byte ([`next_trit`]): byte operations that
            // vectorize, where `trit`'s 16-bit products did not (with the strided first reads, a third
            // of a TQ1_0 load).
            let mut x: [u8; 32] = col.try_into().expect("32 rows");
            for n in 0..trits {
                let e = j * QK_K + first + step * n;
                let dst: &mut [i8; 32] = (&mut out[32 * e..32 * e + 32]).try_into().expect("32 rows");
                for (o, x) in dst.iter_mut().zip(&mut x) {
                    *o = next_trit(x) as i8 - 1;
                }
            }
        }
    }
}

/// The scale every block of a TQ1_0/TQ2_0 tensor shares, if they share one: blocks whose scale is
/// zero (all-zero blocks) are left out, and a tensor of only those has scale 0.
pub(crate) fn shared_scale(kind: TqKind, bytes: &[u8]) -> Option<f32> {
    let mut shared = None;
    for block in bytes.chunks_exact(kind.block_bytes()) {
        let bits = scale_bits(kind, block);
        if is_zero_scale(bits) {
            continue;
        }
        match shared {
            None => shared = Some(bits),
            Some(s) if s != bits => return None,
            Some(_) => {}
        }
    }
    Some(shared.map_or(0.0, |s| f16::from_bits(s).to_f32()))
}

/// Ternary values and per-block scales (`rows × cols/256`, row-major) of a TQ tensor.
pub fn unpack(kind: TqKind, bytes: &[u8], rows: usize, cols: usize) -> Result<(TernaryMatrix, Vec<f32>), QuantError> {
    check_multiple(kind.name(), "cols", cols, QK_K)?;
    let n_blocks = rows * cols / QK_K;
    check_len("TQ bytes", n_blocks * kind.block_bytes(), bytes.len())?;
    let mut values = Vec::with_capacity(rows * cols);
    let mut scales = Vec::with_capacity(n_blocks);
    let mut one = [0i8; QK_K];
    for (bi, block) in bytes.chunks_exact(kind.block_bytes()).enumerate() {
        match kind {
            TqKind::Tq1_0 => {
                // Every byte reads back as trits 0..=2: no invalid codes.
                tq1_block_values(block, &mut one);
                values.extend_from_slice(&one);
            }
            TqKind::Tq2_0 => {
                for e in 0..QK_K {
                    let (byte, shift) = tq2_position(e);
                    let code = (block[byte] >> shift) & 3;
                    if code > 2 {
                        return Err(QuantError::InvalidCode {
                            format: kind.name(),
                            code,
                            byte: bi * kind.block_bytes() + byte,
                        });
                    }
                    values.push(code as i8 - 1);
                }
            }
        }
        scales.push(f16::from_bits(scale_bits(kind, block)).to_f32());
    }
    Ok((TernaryMatrix::new(rows, cols, values)?, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stepped_trits_are_the_trits_of_every_byte() {
        for q in 0..=255u8 {
            let mut x = q;
            for n in 0..5 {
                assert_eq!(next_trit(&mut x), trit(q, n), "byte {q}, trit {n}");
            }
        }
    }
}
