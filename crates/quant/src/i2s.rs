//! bitnet.cpp's I2_S: 2-bit codes (code = ternary + 1) and one f32 scale in a 32-byte tail.
//!
//! Layouts of the codes (element index `i` over the row-major matrix):
//! * [`I2sLayout::X86`] (QK_I2_S = 128, what the official GGUF files hold): block `i / 128` takes
//!   32 bytes; `j = i % 128` goes to byte `j % 32` at bit shift `6 − 2·(j / 32)`.
//! * [`I2sLayout::Arm`] (QK_I2_S = 64): block `i / 64` takes 16 bytes; `j` goes to byte `j % 16`
//!   at shift `6 − 2·(j / 16)`.
//! * [`I2sLayout::X86Interleaved4`] (bitnet.cpp's x86 variant without `ACT_PARALLEL`): byte
//!   `(r / 4)·cols + c` holds column `c` of rows `4·(r/4) .. +4` at shifts 6, 4, 2, 0.
//! * [`I2sLayout::X86Rows4`] (ours, for memory; bitnet.cpp reads no such file): the X86 order's
//!   64-byte chunks (two 128-blocks, 256 weights) of four rows taken in turn, chunk `k` of row
//!   `4g + i` at byte `4g·cols/4 + (4k + i)·64`, so a loop that reads four rows side by side
//!   reads one stream front to back (a one-core GEMV over wide rows read 0.75–0.89 of a pure read
//!   of the same bytes from four streams, 0.91–1.0 from one: docs/kernels.md). Rows are whole
//!   256-chunks, in groups of four.
//!
//! bitnet.cpp's files do not say which layout they hold, and no byte pattern tells them apart; the
//! official ones are X86. Files we write record it under [`LAYOUT_KEY`] (absent = X86), and the
//! loader repacks with [`repack`] when a kernel wants another.

use crate::error::{QuantError, check_len, check_multiple};
use crate::ternary::TernaryMatrix;

/// The bytes after the codes: the f32 scale and padding.
pub const TAIL_BYTES: usize = 32;

/// GGUF metadata key (string) naming the I2_S code order of a file: `"x86"`, `"arm"` or
/// `"x86-interleaved4"`. Absent in bitnet.cpp's files, which are `"x86"`.
pub const LAYOUT_KEY: &str = "bitnet_rs.i2_s.layout";

/// How I2_S codes are ordered inside the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum I2sLayout {
    /// 128-element blocks of 32 bytes (bitnet.cpp x86 builds, the official files).
    X86,
    /// 64-element blocks of 16 bytes (bitnet.cpp ARM builds).
    Arm,
    /// Four rows interleaved per byte (bitnet.cpp x86 without ACT_PARALLEL).
    X86Interleaved4,
    /// The X86 order's 64-byte chunks of four rows in turn (what the AVX-512 kernels read fastest:
    /// the loader repacks files to it, see [`x86_to_rows4`]).
    X86Rows4,
}

impl I2sLayout {
    /// The value stored under [`LAYOUT_KEY`].
    pub fn as_str(self) -> &'static str {
        match self {
            I2sLayout::X86 => "x86",
            I2sLayout::Arm => "arm",
            I2sLayout::X86Interleaved4 => "x86-interleaved4",
            I2sLayout::X86Rows4 => "x86-rows4",
        }
    }

    /// Parses a [`LAYOUT_KEY`] value.
    pub fn parse(s: &str) -> Result<I2sLayout, QuantError> {
        [I2sLayout::X86, I2sLayout::Arm, I2sLayout::X86Interleaved4, I2sLayout::X86Rows4]
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| QuantError::Unsupported {
                format: "I2_S",
                reason: format!("unknown layout {s:?} in {LAYOUT_KEY}"),
            })
    }

    /// The layout a GGUF file's I2_S tensors use: [`LAYOUT_KEY`] if present, else X86.
    pub fn of_file(metadata: &bitnet_format::Metadata) -> Result<I2sLayout, QuantError> {
        match metadata.get(LAYOUT_KEY) {
            None => Ok(I2sLayout::X86),
            Some(v) => v.as_str().map_or_else(
                || Err(QuantError::Unsupported { format: "I2_S", reason: format!("{LAYOUT_KEY} must be a string") }),
                I2sLayout::parse,
            ),
        }
    }

    /// Byte index and bit shift of element (`r`, `c`) of a `rows × cols` matrix.
    pub fn position(self, r: usize, c: usize, cols: usize) -> (usize, u32) {
        match self {
            I2sLayout::X86 | I2sLayout::Arm => {
                let block = if self == I2sLayout::X86 { 128 } else { 64 };
                let group = block / 4;
                let i = r * cols + c;
                let (b, j) = (i / block, i % block);
                (b * group + j % group, 6 - 2 * (j / group) as u32)
            }
            I2sLayout::X86Interleaved4 => ((r / 4) * cols + c, 6 - 2 * (r % 4) as u32),
            I2sLayout::X86Rows4 => {
                let (k, j) = (c / 256, c % 256);
                let (b, j) = (j / 128, j % 128);
                ((r / 4) * cols + (4 * k + r % 4) * 64 + 32 * b + j % 32, 6 - 2 * (j / 32) as u32)
            }
        }
    }

    fn check_shape(self, rows: usize, cols: usize) -> Result<(), QuantError> {
        match self {
            I2sLayout::X86 => check_multiple("I2_S (x86)", "rows·cols", rows * cols, 128),
            I2sLayout::Arm => check_multiple("I2_S (ARM)", "rows·cols", rows * cols, 64),
            I2sLayout::X86Interleaved4 => check_multiple("I2_S (interleaved)", "rows", rows, 4),
            I2sLayout::X86Rows4 => check_multiple("I2_S (x86, rows in fours)", "rows", rows, 4).and(check_multiple(
                "I2_S (x86, rows in fours)",
                "cols",
                cols,
                256,
            )),
        }
    }
}

/// Bytes of an I2_S tensor with `numel` elements.
pub fn i2s_bytes(numel: usize) -> usize {
    numel / 4 + TAIL_BYTES
}

/// Packs ternary values and a scale into I2_S bytes.
pub fn pack(m: &TernaryMatrix, scale: f32, layout: I2sLayout) -> Result<Vec<u8>, QuantError> {
    layout.check_shape(m.rows(), m.cols())?;
    let n = m.rows() * m.cols();
    let mut out = vec![0u8; i2s_bytes(n)];
    for r in 0..m.rows() {
        for c in 0..m.cols() {
            let (byte, shift) = layout.position(r, c, m.cols());
            out[byte] |= ((m.get(r, c) + 1) as u8) << shift;
        }
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    Ok(out)
}

/// Unpacks I2_S bytes of a `rows × cols` matrix into ternary values and the scale.
pub fn unpack(bytes: &[u8], rows: usize, cols: usize, layout: I2sLayout) -> Result<(TernaryMatrix, f32), QuantError> {
    layout.check_shape(rows, cols)?;
    let n = rows * cols;
    check_len("I2_S bytes", i2s_bytes(n), bytes.len())?;
    let mut values = vec![0i8; n];
    for r in 0..rows {
        for c in 0..cols {
            let (byte, shift) = layout.position(r, c, cols);
            let code = (bytes[byte] >> shift) & 3;
            if code == 3 {
                return Err(QuantError::InvalidCode { format: "I2_S", code, byte });
            }
            values[r * cols + c] = code as i8 - 1;
        }
    }
    Ok((TernaryMatrix::new(rows, cols, values)?, scale_of(bytes, n)))
}

/// Copies the codes of four-row groups `groups` of an X86-order `rows × cols` I2_S tensor
/// (`src`: the whole tensor) into `dst`, which holds the same groups' codes in the
/// [`I2sLayout::X86Rows4`] order (`groups.len()·cols` bytes: a caller may split the groups
/// across threads). Whole 64-byte chunks move, so this runs at copying speed; the scale and the
/// bytes after the codes are the caller's to copy.
pub fn x86_to_rows4(
    src: &[u8],
    rows: usize,
    cols: usize,
    groups: std::ops::Range<usize>,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    I2sLayout::X86Rows4.check_shape(rows, cols)?;
    check_len("I2_S bytes", i2s_bytes(rows * cols), src.len())?;
    let group_bytes = cols; // four rows of cols / 4 bytes
    if groups.end > rows / 4 {
        return Err(QuantError::Unsupported {
            format: "I2_S",
            reason: format!("groups up to {} of a {rows}-row matrix (four rows each)", groups.end),
        });
    }
    check_len("I2_S groups", groups.len() * group_bytes, dst.len())?;
    let row_bytes = cols / 4;
    for (g, out) in groups.zip(dst.chunks_exact_mut(group_bytes)) {
        let group = &src[g * group_bytes..(g + 1) * group_bytes];
        for (k, chunks) in out.chunks_exact_mut(256).enumerate() {
            for (i, chunk) in chunks.chunks_exact_mut(64).enumerate() {
                chunk.copy_from_slice(&group[i * row_bytes + 64 * k..][..64]);
            }
        }
    }
    Ok(())
}

/// The scale stored after the codes of an `numel`-element I2_S tensor.
pub fn scale_of(bytes: &[u8], numel: usize) -> f32 {
    f32::from_le_bytes(bytes[numel / 4..numel / 4 + 4].try_into().expect("4 bytes"))
}

/// Converts I2_S bytes from one layout to another (e.g. an x86 file for an ARM kernel).
pub fn repack(bytes: &[u8], rows: usize, cols: usize, from: I2sLayout, to: I2sLayout) -> Result<Vec<u8>, QuantError> {
    if from == to {
        check_len("I2_S bytes", i2s_bytes(rows * cols), bytes.len())?;
        return Ok(bytes.to_vec());
    }
    if (from, to) == (I2sLayout::X86, I2sLayout::X86Rows4) {
        let mut out = vec![0u8; i2s_bytes(rows * cols)];
        x86_to_rows4(bytes, rows, cols, 0..rows / 4, &mut out[..rows * cols / 4])?;
        out[rows * cols / 4..].copy_from_slice(&bytes[rows * cols / 4..]);
        return Ok(out);
    }
    let (m, scale) = unpack(bytes, rows, cols, from)?;
    pack(&m, scale, to)
}
