//! bitnet.cpp's lookup-table types TL1 and TL2, byte for byte as its converter
//! (`utils/convert-hf-to-gguf-bitnet.py`, `preprocess_weights_tl1/tl2`) writes them.
//!
//! * TL1: pairs of weights along a row become a 4-bit index `3·w0 + w1 + 4` (0..8); indices are
//!   permuted into tiles of `BM` rows × `BK` columns (sub-tiles `bm` × `256/bm`) and two indices
//!   share a byte (first in the high nibble). `M·K/4` bytes.
//! * TL2: triples become `9·w0 + 3·w1 + w2` (−13..13), stored as a 4-bit magnitude plane (two per
//!   byte, tiled like TL1 with `bm = 32`, 6 columns per sub-tile, and byte groups 1 and 2 of each
//!   32-byte row swapped) and a sign plane (1 bit per triple, 16 per little-endian u16). The last
//!   `K mod BK` columns are packed as TL1-style pairs with tile 32 × 32. Zero padding brings the
//!   total to `(K−256)·M/3·5/8 + 256·M/2·4/8` bytes.
//!
//! The tiling (`BM`, `BK`, `bm`) comes from bitnet.cpp's per-model code generation
//! (`kernel_config.ini`); the same matrix packs differently under different tilings, so a TL file
//! is only readable with the tiling it was made for. The scale is not in these bytes: bitnet.cpp
//! writes it as a separate F32 tensor `<name>_scale`.
//!
//! The permutations are written as the converter's reshape/transpose chains over an index array
//! (`Nd`), so that packing is a gather and unpacking the matching scatter.

use crate::TernaryFormat;
use crate::error::{QuantError, check_len, check_multiple};
use crate::ternary::TernaryMatrix;
use crate::tl_layout::{Geometry, Kind, Plane};

/// A TL tile configuration (bitnet.cpp's `bm`, `bk`, `bmm` in kernel_config.ini).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlTiling {
    /// Rows per tile (`BM`).
    pub bm: usize,
    /// Columns per tile (`BK`, bitnet.cpp's `BY`).
    pub bk: usize,
    /// Rows per sub-tile (`bmm`, the converter's lower-case `bm`).
    pub bmm: usize,
}

impl TlTiling {
    /// The tiling bitnet.cpp's codegen uses for bitnet_b1_58-large's 1536 × 4096 matrices in TL1.
    pub const TL1_EXAMPLE: TlTiling = TlTiling { bm: 256, bk: 128, bmm: 32 };
    /// The TL2 tiling of the same model.
    pub const TL2_EXAMPLE: TlTiling = TlTiling { bm: 256, bk: 96, bmm: 32 };
}

/// (TL2?, rows M, cols K, BM, BK, bmm) of bitnet.cpp's preset kernels
/// (`preset_kernels/*/kernel_config_tl{1,2}.ini`): bitnet_b1_58-large, bitnet_b1_58-3B and
/// Llama3-8B-1.58-100B-tokens. TL files record no tiling, so these are the files we can read.
const PRESETS: &[(bool, usize, usize, usize, usize, usize)] = &[
    (false, 1536, 4096, 256, 128, 32),
    (false, 1536, 1536, 128, 64, 64),
    (false, 4096, 1536, 256, 128, 32),
    (true, 1536, 4096, 256, 96, 32),
    (true, 1536, 1536, 128, 192, 32),
    (true, 4096, 1536, 256, 96, 64),
    (false, 3200, 8640, 160, 64, 32),
    (false, 3200, 3200, 320, 128, 64),
    (false, 8640, 3200, 320, 64, 32),
    (true, 3200, 8640, 160, 96, 32),
    (true, 3200, 3200, 320, 96, 32),
    (true, 8640, 3200, 320, 96, 32),
    (false, 14336, 4096, 256, 128, 64),
    (false, 4096, 14336, 256, 128, 32),
    (false, 1024, 4096, 128, 64, 64),
    (false, 4096, 4096, 128, 64, 32),
    (true, 14336, 4096, 256, 96, 32),
    (true, 4096, 14336, 128, 96, 32),
    (true, 1024, 4096, 256, 96, 32),
    (true, 4096, 4096, 128, 96, 32),
];

/// The tiling bitnet.cpp's preset kernels use for a `rows × cols` TL1 (`tl2` false) or TL2
/// matrix, if the shape is one of theirs.
pub fn preset_tiling(tl2: bool, rows: usize, cols: usize) -> Option<TlTiling> {
    PRESETS.iter().find(|p| p.0 == tl2 && p.1 == rows && p.2 == cols).map(|&(_, _, _, bm, bk, bmm)| TlTiling {
        bm,
        bk,
        bmm,
    })
}

/// Where files we write record the tiling of each TL1/TL2 shape: a flat `u32` array of
/// `(rows, cols, BM, BK, bmm)` quintuples. bitnet.cpp's files have no such key; for them the
/// preset tiling of the shape ([`preset_tiling`]) is the only one that can be assumed.
pub const TILINGS_KEY: &str = "bitnet_rs.tl.tilings";

/// The tiling to pack a `rows × cols` matrix with: bitnet.cpp's preset one when the shape has one
/// (so that its preset kernels read the file), else the first of a few candidate tilings (the
/// sizes its code generator is typically given) that divides the shape.
pub fn choose_tiling(tl2: bool, rows: usize, cols: usize) -> Result<TlTiling, QuantError> {
    if let Some(t) = preset_tiling(tl2, rows, cols) {
        return Ok(t);
    }
    let bks: &[usize] = if tl2 { &[96, 192, 48, 24] } else { &[128, 64, 256, 32] };
    for bm in [256, 128, 320, 160, 64, 32] {
        for &bk in bks {
            for bmm in [32, 64] {
                let t = TlTiling { bm, bk, bmm };
                let fits = if tl2 { check_tl2(rows, cols, t).is_ok() } else { check_tl1(rows, cols, t).is_ok() };
                if fits {
                    return Ok(t);
                }
            }
        }
    }
    Err(QuantError::Unsupported {
        format: if tl2 { "TL2" } else { "TL1" },
        reason: format!(
            "no tiling fits a {rows}x{cols} matrix (rows must be a multiple of 32{})",
            if tl2 {
                ", at least 256 columns and a column remainder that TL1-style pairs can hold"
            } else {
                ", columns a multiple of 32"
            }
        ),
    })
}

/// Encodes tilings for [`TILINGS_KEY`].
pub fn encode_tilings(entries: &[(usize, usize, TlTiling)]) -> Vec<u32> {
    entries.iter().flat_map(|&(r, c, t)| [r, c, t.bm, t.bk, t.bmm].map(|v| v as u32)).collect()
}

/// The tiling [`TILINGS_KEY`]'s value records for a `rows × cols` matrix, if any.
pub fn find_tiling(values: &[u64], rows: usize, cols: usize) -> Option<TlTiling> {
    values.chunks_exact(5).find(|e| e[0] as usize == rows && e[1] as usize == cols).map(|e| TlTiling {
        bm: e[2] as usize,
        bk: e[3] as usize,
        bmm: e[4] as usize,
    })
}

/// The tiling a GGUF file's `rows × cols` TL1 (`tl2` false) or TL2 tensor was packed with: the one
/// [`TILINGS_KEY`] records (files we write), else bitnet.cpp's preset tiling for the shape (its own
/// files record none, so other shapes cannot be read).
pub fn tiling_of_file(
    metadata: &bitnet_format::Metadata,
    tl2: bool,
    rows: usize,
    cols: usize,
) -> Result<TlTiling, QuantError> {
    let format = if tl2 { "TL2" } else { "TL1" };
    let recorded: Option<Vec<u64>> = metadata
        .get(TILINGS_KEY)
        .and_then(|v| v.as_array())
        .map(|a| a.values().iter().filter_map(|v| v.as_u64()).collect());
    let tiling = match &recorded {
        Some(values) => find_tiling(values, rows, cols),
        None => preset_tiling(tl2, rows, cols),
    };
    tiling.ok_or_else(|| {
        let why = if recorded.is_some() {
            format!("{TILINGS_KEY} lists no tiling for this shape")
        } else {
            "bitnet.cpp's TL files do not record the tile sizes they were packed for, and this shape is not one \
             of its preset kernels (bitnet_b1_58-large, bitnet_b1_58-3B, Llama3-8B-1.58); convert the model \
             with `bitnet convert`, which records them, or to I2_S"
                .to_owned()
        };
        QuantError::Unsupported { format, reason: format!("{rows}x{cols}: {why}") }
    })
}

fn check_tl1(m: usize, k: usize, t: TlTiling) -> Result<(), QuantError> {
    const F: &str = "TL1";
    check_multiple(F, "sub-tile rows (bmm) dividing 256", 256, t.bmm)?;
    let by = 256 / t.bmm;
    check_multiple(F, "rows", m, t.bm)?;
    check_multiple(F, "tile rows (BM)", t.bm, t.bmm)?;
    check_multiple(F, "sub-tile rows (bmm)", t.bmm, 16)?;
    check_multiple(F, "cols", k, t.bk)?;
    check_multiple(F, "tile cols (BK)", t.bk, by)?;
    check_multiple(F, "sub-tile cols (256/bmm)", by, 4)
}

/// Calls `f(byte, row, first_col_hi, first_col_lo, plane)` for every index byte of a TL tensor
/// (the walk of [`crate::tl_layout`]): the byte's offset, the row it belongs to, and the first
/// columns of the groups its high and low nibbles index.
fn walk(geo: &Geometry, mut f: impl FnMut(usize, usize, usize, usize, &Plane)) {
    for plane in &geo.planes {
        let (run, g) = (plane.run_bytes(), plane.group());
        for rt in 0..geo.rows / geo.bm {
            for kt in 0..plane.ktiles {
                let col = plane.col0 + kt * plane.bk;
                for st in 0..plane.subs() {
                    let base = plane.offset + plane.run_index(rt, kt, st) * run;
                    let row = rt * geo.bm + st * plane.sub;
                    for b in 0..run {
                        let (gh, gl) = plane.groups_of(b);
                        f(base + b, row + plane.row_of(b), col + gh * g, col + gl * g, plane);
                    }
                }
            }
        }
    }
}

/// The sign bit of (sub-tile row `r`, triple `g` of the run) in a TL2 run's sign bytes:
/// (byte offset from the run's first sign byte, bit) — the inverse of [`Plane::negative`].
fn sign_bit(r: usize, g: usize) -> (usize, u16) {
    (g / 8 * 32 + (r % 16) * 2, 15 - (2 * (g % 8) + r / 16) as u16)
}

/// Calls `f(sign byte offset, bit, row, first column)` for every triple of a TL2 tensor.
fn walk_signs(geo: &Geometry, mut f: impl FnMut(usize, u16, usize, usize)) {
    for plane in geo.planes.iter().filter(|p| p.kind == Kind::Triples) {
        let srun = plane.run_sign_bytes();
        for rt in 0..geo.rows / geo.bm {
            for kt in 0..plane.ktiles {
                for st in 0..plane.subs() {
                    let base = plane.signs + plane.run_index(rt, kt, st) * srun;
                    for r in 0..plane.sub {
                        for g in 0..plane.bk / 3 {
                            let (at, bit) = sign_bit(r, g);
                            f(base + at, bit, rt * geo.bm + st * plane.sub + r, plane.col0 + kt * plane.bk + 3 * g);
                        }
                    }
                }
            }
        }
    }
}

fn geometry(format: TernaryFormat, m: usize, k: usize) -> Result<Geometry, QuantError> {
    Geometry::of(format, m, k).expect("a TL format")
}

/// A pair's index `3·w0 + w1 + 4`.
fn pair_index(w: &TernaryMatrix, r: usize, c: usize) -> u8 {
    (3 * w.get(r, c) + w.get(r, c + 1) + 4) as u8
}

/// Packs a ternary matrix into TL1 bytes (`M·K/4`).
pub fn pack_tl1(w: &TernaryMatrix, t: TlTiling) -> Result<Vec<u8>, QuantError> {
    let (m, k) = (w.rows(), w.cols());
    check_tl1(m, k, t)?;
    let mut out = vec![0u8; m * k / 4];
    walk(&geometry(TernaryFormat::Tl1(t), m, k)?, |at, row, ch, cl, _| {
        out[at] = (pair_index(w, row, ch) << 4) | pair_index(w, row, cl);
    });
    Ok(out)
}

/// Unpacks TL1 bytes of an `m × k` matrix.
pub fn unpack_tl1(bytes: &[u8], m: usize, k: usize, t: TlTiling) -> Result<TernaryMatrix, QuantError> {
    check_tl1(m, k, t)?;
    check_len("TL1 bytes", m * k / 4, bytes.len())?;
    let mut values = vec![0i8; m * k];
    let mut bad = None;
    walk(&geometry(TernaryFormat::Tl1(t), m, k)?, |at, row, ch, cl, _| {
        for (nibble, c) in [(bytes[at] >> 4, ch), (bytes[at] & 15, cl)] {
            match decode_pair(nibble) {
                Some((w0, w1)) => {
                    values[row * k + c] = w0;
                    values[row * k + c + 1] = w1;
                }
                None => {
                    bad.get_or_insert(QuantError::InvalidCode { format: "TL1", code: nibble, byte: at });
                }
            }
        }
    });
    match bad {
        Some(e) => Err(e),
        None => TernaryMatrix::new(m, k, values),
    }
}

fn decode_pair(nibble: u8) -> Option<(i8, i8)> {
    (nibble <= 8).then(|| ((nibble / 3) as i8 - 1, (nibble % 3) as i8 - 1))
}

/// Columns packed as triples under tiling `t` (the rest, `K mod BK`, as pairs).
fn tl2_split(k: usize, t: TlTiling) -> (usize, usize) {
    (k - k % t.bk, k % t.bk)
}

fn check_tl2(m: usize, k: usize, t: TlTiling) -> Result<usize, QuantError> {
    const F: &str = "TL2";
    if t.bmm != 32 {
        return Err(QuantError::Unsupported {
            format: F,
            reason: format!("sub-tile rows (bmm) must be 32, got {}", t.bmm),
        });
    }
    let total = tl2_bytes(m, k)
        .ok_or_else(|| QuantError::Unsupported { format: F, reason: format!("needs at least 256 columns, got {k}") })?;
    check_multiple(F, "rows", m, t.bm)?;
    check_multiple(F, "tile rows (BM)", t.bm, 32)?;
    check_multiple(F, "tile cols (BK)", t.bk, 24)?;
    let (kt, k2) = tl2_split(k, t);
    check_multiple(F, "cols mod BK", k2, 32)?;
    let used = m * kt / 6 + m * kt / 24 + m * k2 / 4;
    if used > total {
        return Err(QuantError::Unsupported {
            format: F,
            reason: format!("{} remainder columns do not fit bitnet.cpp's byte count (at most 256 fit)", k2),
        });
    }
    Ok(total)
}

/// Bytes of a TL2 tensor: `(K−256)·M/3·5/8 + 256·M/2·4/8` (integer arithmetic, left to right).
pub fn tl2_bytes(m: usize, k: usize) -> Option<usize> {
    Some((k.checked_sub(256)? * m / 3 * 5 / 8) + 256 * m / 2 * 4 / 8)
}

/// Packs a ternary matrix into TL2 bytes.
pub fn pack_tl2(w: &TernaryMatrix, t: TlTiling) -> Result<Vec<u8>, QuantError> {
    let mut out = vec![0; check_tl2(w.rows(), w.cols(), t)?];
    pack_tl2_rows(w.rows(), w.cols(), t, 1, &mut out, |row0, out| {
        for r in 0..32 {
            for (c, &v) in w.row(row0 + r).iter().enumerate() {
                out[32 * c + r] = v;
            }
        }
    })?;
    Ok(out)
}

/// TQ1_0 bytes of a `rows × cols` matrix repacked to TL2 under tiling `t` into `out` (zeroed,
/// [`tl2_bytes`] long), on `threads` threads; returns the one scale TL2 has, or `Ok(None)` (and
/// `out` untouched) when the blocks' scales differ (llama.cpp's scale
/// is per 256-weight block; for a ternarized model every block has the tensor's scale, or 0 for
/// an all-zero block). A block whose scale is 0 packs as zeros whatever its trits say, so that
/// `scale · unpack_tl2(...)` equals every block's `d · values`.
///
/// Loading runs TQ1_0 models this way where the lookup-table kernels run (the table walk reads
/// 1.67 bits per weight faster than the base-3 digits decode), so this is written to take well
/// under a second per billion weights: rows decoded once, a sub-tile at a time.
pub fn tq1_to_tl2(
    bytes: &[u8],
    rows: usize,
    cols: usize,
    t: TlTiling,
    threads: usize,
    out: &mut [u8],
) -> Result<Option<f32>, QuantError> {
    use crate::tq::{QK_K, TQ1_0_BLOCK_BYTES, TqKind};
    check_multiple("TQ1_0", "cols", cols, QK_K)?;
    let row_bytes = cols / QK_K * TQ1_0_BLOCK_BYTES;
    check_len("TQ1_0 bytes", rows * row_bytes, bytes.len())?;
    let Some(scale) = crate::tq::shared_scale(TqKind::Tq1_0, bytes) else { return Ok(None) };
    pack_tl2_rows(rows, cols, t, threads, out, |row0, values| {
        crate::tq::tq1_sub_tile(&bytes[row0 * row_bytes..(row0 + 32) * row_bytes], row_bytes, values);
    })?;
    Ok(Some(scale))
}

/// Writes a run's 32-byte periods from its groups' 4-bit values, group-major (32 rows per group):
/// period `c` holds group `2c` in its high nibbles and `2c + 1` in its low ones, rows in
/// [`PERIOD_ROWS`] order. Fixed-size arrays, so that the loop vectorizes.
fn write_periods<T: Copy>(run: &mut [u8], groups: &[T], nibble: impl Fn(T) -> u8) {
    for (period, two) in run.chunks_exact_mut(32).zip(groups.chunks_exact(64)) {
        let (period, two): (&mut [u8; 32], &[T; 64]) = (period.try_into().unwrap(), two.try_into().unwrap());
        for (q, &r0) in PERIOD_ROWS.iter().enumerate() {
            for i in 0..8 {
                period[8 * q + i] = (nibble(two[r0 + i]) << 4) | nibble(two[32 + r0 + i]);
            }
        }
    }
}

/// The sub-tile rows of the four 8-byte quarters of a TL2 period (bytes 8..16 and 16..24 of
/// each 32 swapped: [`Plane::row_of`]).
const PERIOD_ROWS: [usize; 4] = [0, 16, 8, 24];

/// TL2 bytes of an `m × k` matrix, packed 32 rows (one sub-tile) at a time: `sub_tile(row0,
/// out)` writes the ternary values of rows `row0..row0 + 32` column-major (`out[32·c + r]`), so
/// that every group of a column tile is computed for the 32 rows at once and each 32-byte period
/// of a run is two such groups in the period's row order. Row tiles are spread over `threads`
/// threads (each writes its own slices of the three planes). `out` is zeroed (the padding is
/// left as it is).
fn pack_tl2_rows(
    m: usize,
    k: usize,
    t: TlTiling,
    threads: usize,
    out: &mut [u8],
    sub_tile: impl Fn(usize, &mut [i8]) + Sync,
) -> Result<(), QuantError> {
    let total = check_tl2(m, k, t)?;
    check_len("TL2 bytes", total, out.len())?;
    let geo = geometry(TernaryFormat::Tl2(t), m, k)?;
    let (kt, k2) = tl2_split(k, t);
    let triples = geo.planes.iter().find(|p| p.kind == Kind::Triples);
    let pairs = geo.planes.iter().find(|p| p.kind == Kind::Pairs);
    for plane in [triples, pairs].into_iter().flatten() {
        // The order the period loops below assume (`Plane::row_of`, `Plane::groups_of`).
        debug_assert!((0..32).all(|b| plane.row_of(b) == PERIOD_ROWS[b / 8] + b % 8 && plane.groups_of(b) == (0, 1)));
    }
    // Each row tile's slices of the triple, sign and pair planes.
    let per_tile = [t.bm * kt / 6, t.bm * kt / 24, t.bm * k2 / 4];
    let mut jobs = Vec::with_capacity(m / t.bm);
    {
        let (tri, rest) = out.split_at_mut(m * kt / 6);
        let (sgn, rest) = rest.split_at_mut(m * kt / 24);
        let (mut tri, mut sgn, mut par) = (tri, sgn, &mut rest[..m * k2 / 4]);
        for rt in 0..m / t.bm {
            let (a, b) = std::mem::take(&mut tri).split_at_mut(per_tile[0]);
            let (c, d) = std::mem::take(&mut sgn).split_at_mut(per_tile[1]);
            let (e, f) = std::mem::take(&mut par).split_at_mut(per_tile[2]);
            (tri, sgn, par) = (b, d, f);
            jobs.push((rt, a, c, e));
        }
    }
    let tile = |(rt, tri, sgn, par): (usize, &mut [u8], &mut [u8], &mut [u8])| {
        // One sub-tile's groups, group-major (`[g][row]`): a period of a run is two groups of
        // 32 rows, so it is built from two 32-byte slices with the rows in the period's order.
        let mut values = vec![0i8; 32 * k];
        let mut groups = vec![0i8; kt / 3 * 32];
        let mut pair_idx = vec![0u8; k2 / 2 * 32];
        for st in 0..t.bm / 32 {
            sub_tile(rt * t.bm + st * 32, &mut values);
            let (three, two) = values.split_at(32 * kt);
            // Fixed-size arrays, so that these loops vectorize.
            for (g, w) in groups.chunks_exact_mut(32).zip(three.chunks_exact(96)) {
                let (g, w): (&mut [i8; 32], &[i8; 96]) = (g.try_into().unwrap(), w.try_into().unwrap());
                for r in 0..32 {
                    g[r] = 9 * w[r] + 3 * w[32 + r] + w[64 + r];
                }
            }
            for (p, w) in pair_idx.chunks_exact_mut(32).zip(two.chunks_exact(64)) {
                let (p, w): (&mut [u8; 32], &[i8; 64]) = (p.try_into().unwrap(), w.try_into().unwrap());
                for r in 0..32 {
                    p[r] = (3 * w[r] + w[32 + r] + 4) as u8;
                }
            }
            if let Some(plane) = triples {
                let (run, srun, per) = (plane.run_bytes(), plane.run_sign_bytes(), plane.bk / 3);
                for ktile in 0..plane.ktiles {
                    let at = ktile * plane.subs() + st;
                    let tile_groups = &groups[32 * ktile * per..32 * (ktile + 1) * per];
                    write_periods(&mut tri[at * run..(at + 1) * run], tile_groups, i8::unsigned_abs);
                    // Sign words (`sign_bit`'s order): word `16·(g / 8) + r mod 16`, bit
                    // `15 − 2·(g mod 8) − r / 16`.
                    let words = sgn[at * srun..(at + 1) * srun].chunks_exact_mut(32);
                    for (sixteen, eight) in words.zip(tile_groups.chunks_exact(8 * 32)) {
                        let mut w = [0u16; 16];
                        for (j, g) in eight.chunks_exact(32).enumerate() {
                            for (r, w) in w.iter_mut().enumerate() {
                                *w |= u16::from(g[r] < 0) << (15 - 2 * j) | u16::from(g[16 + r] < 0) << (14 - 2 * j);
                            }
                        }
                        for (o, w) in sixteen.chunks_exact_mut(2).zip(w) {
                            o.copy_from_slice(&w.to_le_bytes());
                        }
                    }
                }
            }
            if let Some(plane) = pairs {
                let run = plane.run_bytes();
                for ktile in 0..plane.ktiles {
                    let at = ktile * plane.subs() + st;
                    let tile_pairs = &pair_idx[32 * 16 * ktile..32 * 16 * (ktile + 1)];
                    write_periods(&mut par[at * run..(at + 1) * run], tile_pairs, |p| p);
                }
            }
        }
    };
    let threads = threads.clamp(1, jobs.len().max(1));
    if threads == 1 {
        jobs.into_iter().for_each(tile);
    } else {
        let queue = std::sync::Mutex::new(jobs.into_iter());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while let Some(job) = queue.lock().ok().and_then(|mut q| q.next()) {
                        tile(job);
                    }
                });
            }
        });
    }
    Ok(())
}

/// Unpacks TL2 bytes of an `m × k` matrix.
pub fn unpack_tl2(bytes: &[u8], m: usize, k: usize, t: TlTiling) -> Result<TernaryMatrix, QuantError> {
    let total = check_tl2(m, k, t)?;
    check_len("TL2 bytes", total, bytes.len())?;
    let geo = geometry(TernaryFormat::Tl2(t), m, k)?;
    let mut values = vec![0i8; m * k];
    let mut bad = None;
    walk(&geo, |at, row, ch, cl, plane| {
        for (nibble, c) in [(bytes[at] >> 4, ch), (bytes[at] & 15, cl)] {
            let fail = || QuantError::InvalidCode { format: "TL2", code: nibble, byte: at };
            if plane.kind == Kind::Triples {
                if nibble > 13 {
                    bad.get_or_insert_with(fail);
                }
                // Magnitudes for now; the signs are applied below.
                values[row * k + c] = nibble as i8;
            } else {
                match decode_pair(nibble) {
                    Some((w0, w1)) => {
                        values[row * k + c] = w0;
                        values[row * k + c + 1] = w1;
                    }
                    None => {
                        bad.get_or_insert_with(fail);
                    }
                }
            }
        }
    });
    if let Some(e) = bad {
        return Err(e);
    }
    walk_signs(&geo, |at, bit, row, c| {
        let negative = u16::from_le_bytes([bytes[at], bytes[at + 1]]) >> bit & 1 == 1;
        let mag = values[row * k + c];
        let v = if negative { -mag } else { mag };
        // v = 9·w0 + 3·w1 + w2 with digits in {-1, 0, 1}: shift by 13 to base-3 digits.
        let u = (v + 13) as u8;
        values[row * k + c] = (u / 9) as i8 - 1;
        values[row * k + c + 1] = (u / 3 % 3) as i8 - 1;
        values[row * k + c + 2] = (u % 3) as i8 - 1;
    });
    TernaryMatrix::new(m, k, values)
}

/// The converter's reshape/transpose chains, replayed as index permutations: the oracle the
/// walk of [`crate::tl_layout`] is checked against.
#[cfg(test)]
mod oracle {
    use super::*;

    /// A row-major n-dimensional array of element indices, for replaying numpy reshape/transpose
    /// chains.
    #[derive(Debug, Clone)]
    struct Nd {
        shape: Vec<usize>,
        data: Vec<u32>,
    }

    impl Nd {
        fn iota(len: usize) -> Nd {
            Nd { shape: vec![len], data: (0..len as u32).collect() }
        }

        fn reshape(mut self, shape: &[usize]) -> Nd {
            debug_assert_eq!(shape.iter().product::<usize>(), self.data.len(), "reshape {:?} -> {shape:?}", self.shape);
            self.shape = shape.to_vec();
            self
        }

        /// numpy's `transpose(axes)`, materialized in row-major order.
        fn transpose(self, axes: &[usize]) -> Nd {
            let nd = self.shape.len();
            let mut strides = vec![1usize; nd];
            for i in (0..nd.saturating_sub(1)).rev() {
                strides[i] = strides[i + 1] * self.shape[i + 1];
            }
            let new_shape: Vec<usize> = axes.iter().map(|&a| self.shape[a]).collect();
            let new_strides: Vec<usize> = axes.iter().map(|&a| strides[a]).collect();
            let mut out = Vec::with_capacity(self.data.len());
            let mut idx = vec![0usize; nd];
            for _ in 0..self.data.len() {
                let src: usize = idx.iter().zip(&new_strides).map(|(i, s)| i * s).sum();
                out.push(self.data[src]);
                for d in (0..nd).rev() {
                    idx[d] += 1;
                    if idx[d] < new_shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            Nd { shape: new_shape, data: out }
        }
    }

    /// The converter's tile permutation shared by TL1 and the TL2 planes, over `m × kg` group
    /// indices, up to the point where the chains diverge. Returns the array shaped
    /// `(M/BM, K/BK, BM/bm, BK/by, bm, by/g)` where `g` is the group size.
    fn tile_groups(m: usize, kg: usize, g: usize, bm: usize, bk: usize, bmm: usize, by: usize) -> Nd {
        let k = kg * g;
        Nd::iota(m * kg)
            .reshape(&[m / bm, bm, kg])
            .transpose(&[0, 2, 1])
            .reshape(&[m / bm, k / bk, bk / g, bm])
            .transpose(&[0, 1, 3, 2])
            .reshape(&[m / bm, k / bk, bm / bmm, bmm, bk / g])
            .transpose(&[0, 1, 2, 4, 3])
            .reshape(&[m / bm, k / bk, bm / bmm, bk / by, by / g, bmm])
            .transpose(&[0, 1, 2, 3, 5, 4])
    }

    /// TL1's byte order: for each output byte, the indices (into the `M × K/2` pair array) of its
    /// high and low nibble.
    fn tl1_order(m: usize, k: usize, t: TlTiling) -> Vec<[u32; 2]> {
        let (bm, bk, bmm) = (t.bm, t.bk, t.bmm);
        let by = 256 / bmm;
        let w = tile_groups(m, k / 2, 2, bm, bk, bmm, by)
            .reshape(&[m / bm, k / bk, bm / bmm, bk / by, bmm / 16, 16, by / 2])
            .transpose(&[0, 1, 2, 3, 4, 6, 5])
            .reshape(&[m / bm, k / bk, bm / bmm, bk / by, bmm / 16, by / 4, 2, 16])
            .transpose(&[0, 1, 2, 3, 4, 5, 7, 6]);
        w.data.chunks_exact(2).map(|p| [p[0], p[1]]).collect()
    }

    /// The magnitude/pair plane shared by TL2's two parts: 4-bit groups `(m, kg)` tiled with
    /// `bmm = 32` rows per sub-tile and two groups per sub-tile row, bytes 8..16 and 16..24 of each
    /// 32 swapped. Returns (high, low) nibble sources per byte.
    fn tl2_plane_order(m: usize, kg: usize, g: usize, bm: usize, bk: usize, bmm: usize, by: usize) -> Vec<[u32; 2]> {
        let w = tile_groups(m, kg, g, bm, bk, bmm, by);
        // Shape (..., bmm, by/g = 2): pairs along the last axis become bytes.
        let pairs: Vec<[u32; 2]> = w.data.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
        // Rows of bmm bytes, viewed as (bmm/8, 8), rows 1 and 2 swapped.
        let mut out = Vec::with_capacity(pairs.len());
        for row in pairs.chunks_exact(bmm) {
            for group in [0, 2, 1, 3] {
                out.extend_from_slice(&row[group * 8..group * 8 + 8]);
            }
        }
        out
    }

    /// TL2's sign plane: for each little-endian u16 (16 sign bits, bit 15 first), the triple indices.
    fn tl2_sign_order(m: usize, kt: usize, bm: usize, bk: usize, bmm: usize, by: usize) -> Vec<[u32; 16]> {
        let kg = kt / 3;
        let w = Nd::iota(m * kg)
            .reshape(&[m / bm, bm, kg])
            .transpose(&[0, 2, 1])
            .reshape(&[m / bm, kt / bk, bk / 3, bm])
            .transpose(&[0, 1, 3, 2])
            .reshape(&[m / bm, kt / bk, bm / bmm, bmm, bk / 3])
            .transpose(&[0, 1, 2, 4, 3])
            .reshape(&[m / bm, kt / bk, bm / bmm, bk / (by * 4), by / 3 * 4, bmm])
            .transpose(&[0, 1, 2, 3, 5, 4])
            .reshape(&[m / bm, kt / bk, bm / bmm, bk / (by * 4), bmm, by / 3 * 4])
            .transpose(&[0, 1, 2, 3, 5, 4])
            .reshape(&[m / bm, kt / bk, bm / bmm, bk / (by * 4), by / 3 * 8, bmm / 2]);
        // For each (outer, j): bits i = 0..16 from element [.., i, j], bit position 15 - i.
        let inner = (by / 3 * 8) * (bmm / 2);
        let mut out = Vec::with_capacity(w.data.len() / 16);
        for outer in w.data.chunks_exact(inner) {
            for j in 0..bmm / 2 {
                let mut word = [0u32; 16];
                for (i, slot) in word.iter_mut().enumerate() {
                    *slot = outer[i * (bmm / 2) + j];
                }
                out.push(word);
            }
        }
        out
    }

    /// Packs a ternary matrix into TL1 bytes (`M·K/4`).
    pub(super) fn pack_tl1(w: &TernaryMatrix, t: TlTiling) -> Result<Vec<u8>, QuantError> {
        let (m, k) = (w.rows(), w.cols());
        check_tl1(m, k, t)?;
        let idx = |p: u32| {
            let (r, c) = (p as usize / (k / 2), p as usize % (k / 2));
            (3 * w.get(r, 2 * c) + w.get(r, 2 * c + 1) + 4) as u8
        };
        Ok(tl1_order(m, k, t).into_iter().map(|[hi, lo]| (idx(hi) << 4) | idx(lo)).collect())
    }

    /// Unpacks TL1 bytes of an `m × k` matrix.
    pub(super) fn unpack_tl1(bytes: &[u8], m: usize, k: usize, t: TlTiling) -> Result<TernaryMatrix, QuantError> {
        check_tl1(m, k, t)?;
        check_len("TL1 bytes", m * k / 4, bytes.len())?;
        let mut values = vec![0i8; m * k];
        for (byte, (&b, [hi, lo])) in bytes.iter().zip(tl1_order(m, k, t)).enumerate() {
            for (nibble, p) in [(b >> 4, hi), (b & 15, lo)] {
                let (w0, w1) =
                    decode_pair(nibble).ok_or(QuantError::InvalidCode { format: "TL1", code: nibble, byte })?;
                values[2 * p as usize] = w0;
                values[2 * p as usize + 1] = w1;
            }
        }
        TernaryMatrix::new(m, k, values)
    }

    struct Tl2Order {
        /// Bytes of the triple magnitude plane: (high, low) triple indices into `M × Kt/3`.
        three: Vec<[u32; 2]>,
        /// u16 words of the sign plane: triple indices, bit 15 first.
        signs: Vec<[u32; 16]>,
        /// Bytes of the pair plane: (high, low) pair indices into `M × K2/2`.
        two: Vec<[u32; 2]>,
    }

    fn tl2_order(m: usize, k: usize, t: TlTiling) -> Tl2Order {
        let (kt, k2) = tl2_split(k, t);
        let by = 192 / t.bmm;
        Tl2Order {
            three: if kt > 0 { tl2_plane_order(m, kt / 3, 3, t.bm, t.bk, t.bmm, by) } else { vec![] },
            signs: if kt > 0 { tl2_sign_order(m, kt, t.bm, t.bk, t.bmm, by) } else { vec![] },
            two: if k2 > 0 { tl2_plane_order(m, k2 / 2, 2, t.bm, 32, 32, 4) } else { vec![] },
        }
    }

    /// Packs a ternary matrix into TL2 bytes.
    pub(super) fn pack_tl2(w: &TernaryMatrix, t: TlTiling) -> Result<Vec<u8>, QuantError> {
        let (m, k) = (w.rows(), w.cols());
        let total = check_tl2(m, k, t)?;
        let (kt, k2) = tl2_split(k, t);
        let triple = |p: u32| {
            let (r, c) = (p as usize / (kt / 3), 3 * (p as usize % (kt / 3)));
            9 * w.get(r, c) + 3 * w.get(r, c + 1) + w.get(r, c + 2)
        };
        let pair = |p: u32| {
            let (r, c) = (p as usize / (k2 / 2), kt + 2 * (p as usize % (k2 / 2)));
            (3 * w.get(r, c) + w.get(r, c + 1) + 4) as u8
        };
        let order = tl2_order(m, k, t);
        let mut out = Vec::with_capacity(total);
        out.extend(order.three.iter().map(|&[hi, lo]| (triple(hi).unsigned_abs() << 4) | triple(lo).unsigned_abs()));
        for word in &order.signs {
            let bits = word.iter().enumerate().fold(0u16, |acc, (i, &p)| acc | (u16::from(triple(p) < 0) << (15 - i)));
            out.extend_from_slice(&bits.to_le_bytes());
        }
        out.extend(order.two.iter().map(|&[hi, lo]| (pair(hi) << 4) | pair(lo)));
        out.resize(total, 0);
        Ok(out)
    }

    /// Unpacks TL2 bytes of an `m × k` matrix.
    pub(super) fn unpack_tl2(bytes: &[u8], m: usize, k: usize, t: TlTiling) -> Result<TernaryMatrix, QuantError> {
        let total = check_tl2(m, k, t)?;
        check_len("TL2 bytes", total, bytes.len())?;
        let (kt, k2) = tl2_split(k, t);
        let order = tl2_order(m, k, t);
        let mut mags = vec![0u8; m * kt / 3];
        for (byte, (&b, [hi, lo])) in bytes.iter().zip(&order.three).enumerate() {
            for (nibble, p) in [(b >> 4, hi), (b & 15, lo)] {
                if nibble > 13 {
                    return Err(QuantError::InvalidCode { format: "TL2", code: nibble, byte });
                }
                mags[*p as usize] = nibble;
            }
        }
        let mut values = vec![0i8; m * k];
        let sign_start = order.three.len();
        for (wi, word) in order.signs.iter().enumerate() {
            let at = sign_start + 2 * wi;
            let bits = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
            for (i, &p) in word.iter().enumerate() {
                let negative = bits >> (15 - i) & 1 == 1;
                let v = if negative { -i8::try_from(mags[p as usize]).unwrap_or(0) } else { mags[p as usize] as i8 };
                // v = 9·w0 + 3·w1 + w2 with digits in {-1, 0, 1}: shift by 13 to base-3 digits.
                let u = (v + 13) as u8;
                let (r, c) = (p as usize / (kt / 3), 3 * (p as usize % (kt / 3)));
                values[r * k + c] = (u / 9) as i8 - 1;
                values[r * k + c + 1] = (u / 3 % 3) as i8 - 1;
                values[r * k + c + 2] = (u % 3) as i8 - 1;
            }
        }
        let two_start = sign_start + 2 * order.signs.len();
        for (i, [hi, lo]) in order.two.iter().enumerate() {
            let b = bytes[two_start + i];
            for (nibble, p) in [(b >> 4, hi), (b & 15, lo)] {
                let byte = two_start + i;
                let (w0, w1) =
                    decode_pair(nibble).ok_or(QuantError::InvalidCode { format: "TL2", code: nibble, byte })?;
                let (r, c) = (*p as usize / (k2 / 2), kt + 2 * (*p as usize % (k2 / 2)));
                values[r * k + c] = w0;
                values[r * k + c + 1] = w1;
            }
        }
        TernaryMatrix::new(m, k, values)
    }

    /// The walk packs and unpacks exactly as the converter's chains, on random tilings.
    #[test]
    fn the_walk_matches_the_converter_chains() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: usize| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % n as u64) as usize
        };
        for case in 0..40 {
            let tl2 = case % 2 == 1;
            let t = if tl2 {
                TlTiling { bm: 32 * (1 + rnd(3)), bk: [24, 48, 96, 192][rnd(4)], bmm: 32 }
            } else {
                let bmm = [16, 32, 64][rnd(3)];
                TlTiling { bm: bmm * (1 + rnd(3)), bk: 256 / bmm * (1 + rnd(3)), bmm }
            };
            let m = t.bm * (1 + rnd(2));
            let k = if tl2 {
                let pairs = rnd(t.bk / 32 + 1).min(8);
                (256usize.saturating_sub(32 * pairs)).div_ceil(t.bk).max(1 + rnd(3)) * t.bk + 32 * pairs
            } else {
                t.bk * (1 + rnd(3))
            };
            let w = TernaryMatrix::new(m, k, (0..m * k).map(|_| rnd(3) as i8 - 1).collect()).unwrap();
            let (ours, theirs) = if tl2 {
                let Ok(theirs) = pack_tl2(&w, t) else { continue };
                (super::pack_tl2(&w, t).unwrap(), theirs)
            } else {
                (super::pack_tl1(&w, t).unwrap(), pack_tl1(&w, t).unwrap())
            };
            assert_eq!(ours, theirs, "{} {m}x{k} {t:?}", if tl2 { "TL2" } else { "TL1" });
            let back = if tl2 { super::unpack_tl2(&ours, m, k, t) } else { super::unpack_tl1(&ours, m, k, t) };
            assert_eq!(back.unwrap(), w);
            let chain = if tl2 { unpack_tl2(&ours, m, k, t) } else { unpack_tl1(&ours, m, k, t) };
            assert_eq!(chain.unwrap(), w);
        }
    }
}
