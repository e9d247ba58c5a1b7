//! Where every weight of a TL1/TL2 tensor lies: the walk the packer, the unpacker and the
//! lookup-table kernels (crate bitnet-tl-lut) share.
//!
//! A TL tensor is one or three *planes* (TL1: the pair plane; TL2: the triple magnitudes, their
//! signs, and the pair plane of the last `K mod BK` columns). Each index plane is a sequence of
//! *runs*, one per (row tile, column tile, sub-tile) in that order, so reading the runs of one row
//! tile column tile by column tile reads the file front to back. A run holds the 4-bit indices of
//! `sub` rows × `bk` columns; its bytes repeat a *period* (64 bytes in TL1, 32 in TL2) whose byte
//! `b` always belongs to the same row of the sub-tile and whose high and low nibbles always index
//! the same two groups (pairs or triples) of the period's columns. bitnet.cpp's converter chose
//! these orders for its 128- and 256-bit shuffles; [`Plane::row_of`] and [`Plane::groups_of`]
//! write them down once (checked against the converter's reshape chains, replayed in the tests of
//! [`crate::tl`]).

use crate::tl::TlTiling;
use crate::{QuantError, TernaryFormat};

/// What a plane's indices mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TL1 pairs (`3·w0 + w1 + 4`), sub-tiles of `bmm` rows × `256 / bmm` columns per 64 bytes.
    Tl1 { bmm: usize },
    /// TL2 triple magnitudes `|9·w0 + 3·w1 + w2|`, with a sign plane.
    Triples,
    /// TL2's trailing columns as pairs (tile 32 × 32).
    Pairs,
}

/// One index plane of a TL tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane {
    pub kind: Kind,
    /// Byte offset of the plane in the tensor.
    pub offset: usize,
    /// Byte offset of the sign plane (TL2 triples only).
    pub signs: usize,
    /// First column the plane covers.
    pub col0: usize,
    /// Rows per row tile (BM).
    pub bm: usize,
    /// Columns per column tile.
    pub bk: usize,
    /// Rows per sub-tile.
    pub sub: usize,
    /// Column tiles.
    pub ktiles: usize,
}

impl Plane {
    /// Columns one index stands for.
    pub fn group(&self) -> usize {
        if self.kind == Kind::Triples { 3 } else { 2 }
    }

    /// Bytes of one period.
    pub fn period(&self) -> usize {
        if let Kind::Tl1 { .. } = self.kind { 64 } else { 32 }
    }

    /// Bytes of one run (sub rows × bk columns, two indices per byte).
    pub fn run_bytes(&self) -> usize {
        self.sub * self.bk / self.group() / 2
    }

    /// Sign bytes of one run (TL2 triples: 32 bytes per 32 rows × 24 columns).
    pub fn run_sign_bytes(&self) -> usize {
        if self.kind == Kind::Triples { self.bk / 24 * 32 } else { 0 }
    }

    /// Sub-tiles per row tile.
    pub fn subs(&self) -> usize {
        self.bm / self.sub
    }

    /// The index of run (row tile `rt`, column tile `kt`, sub-tile `st`) in the plane.
    pub fn run_index(&self, rt: usize, kt: usize, st: usize) -> usize {
        (rt * self.ktiles + kt) * self.subs() + st
    }

    /// The sub-tile row of byte `b` of a run.
    pub fn row_of(&self, b: usize) -> usize {
        let e = b % self.period();
        let (lane, i) = (e / 16, e % 16);
        match self.kind {
            // 16-byte lanes of 16 consecutive rows; `256 / bmm / 4` lanes share a row block.
            Kind::Tl1 { bmm } => lane / (256 / bmm / 4) * 16 + i,
            // Bytes 8..16 and 16..24 of each 32 swapped: lane 0 holds rows 0-7 and 16-23, lane 1
            // rows 8-15 and 24-31, so that unpacking bytes to 16 bits per lane yields rows in order.
            Kind::Triples | Kind::Pairs => {
                if i < 8 {
                    lane * 8 + i
                } else {
                    16 + lane * 8 + i - 8
                }
            }
        }
    }

    /// The groups (pairs or triples, counted from the run's first column) that the high and the
    /// low nibble of byte `b` of a run index.
    pub fn groups_of(&self, b: usize) -> (usize, usize) {
        let (c, e) = (b / self.period(), b % self.period());
        let first = match self.kind {
            Kind::Tl1 { bmm } => {
                let by = 256 / bmm;
                c * (by / 2) + 2 * ((e / 16) % (by / 4))
            }
            Kind::Triples | Kind::Pairs => 2 * c,
        };
        (first, first + 1)
    }

    /// Whether the weight group `g` (counted from the run's first column) of sub-tile row `row`
    /// is negated, from the run's sign bytes: u16 words, word `row mod 16`, bit
    /// `15 − (2·(g mod 8) + row / 16)`, 32 bytes per 8 triples.
    pub fn negative(signs: &[u8], row: usize, g: usize) -> bool {
        let at = g / 8 * 32 + (row % 16) * 2;
        let word = u16::from_le_bytes([signs[at], signs[at + 1]]);
        word >> (15 - (2 * (g % 8) + row / 16)) & 1 == 1
    }
}

/// The planes of a `rows × cols` TL1 or TL2 tensor, checked against bitnet.cpp's byte count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub rows: usize,
    pub cols: usize,
    /// Rows per row tile (every plane's BM).
    pub bm: usize,
    pub planes: Vec<Plane>,
}

impl Geometry {
    /// The planes of `format`; `None` for formats that are not TL1/TL2.
    pub fn of(format: TernaryFormat, rows: usize, cols: usize) -> Option<Result<Geometry, QuantError>> {
        Some(match format {
            TernaryFormat::Tl1(t) => Geometry::tl1(rows, cols, t),
            TernaryFormat::Tl2(t) => Geometry::tl2(rows, cols, t),
            _ => return None,
        })
    }

    fn bad(format: &'static str, reason: String) -> QuantError {
        QuantError::Unsupported { format, reason }
    }

    fn tl1(rows: usize, cols: usize, t: TlTiling) -> Result<Geometry, QuantError> {
        // The packer's own checks (bitnet_quant::tl) decide what is valid; these are the ones the
        // walk relies on, so that a hand-made tiling cannot send it out of bounds.
        let ok = [16, 32, 64].contains(&t.bmm)
            && t.bm.is_multiple_of(t.bmm)
            && rows.is_multiple_of(t.bm)
            && t.bk.is_multiple_of(256 / t.bmm)
            && cols.is_multiple_of(t.bk);
        if !ok || rows == 0 || cols == 0 {
            return Err(Geometry::bad("TL1", format!("tiling {t:?} does not fit a {rows}x{cols} matrix")));
        }
        let plane = Plane {
            kind: Kind::Tl1 { bmm: t.bmm },
            offset: 0,
            signs: 0,
            col0: 0,
            bm: t.bm,
            bk: t.bk,
            sub: t.bmm,
            ktiles: cols / t.bk,
        };
        Ok(Geometry { rows, cols, bm: t.bm, planes: vec![plane] })
    }

    fn tl2(rows: usize, cols: usize, t: TlTiling) -> Result<Geometry, QuantError> {
        let k2 = cols % t.bk.max(1);
        let kt = cols - k2;
        let ok = t.bmm == 32
            && t.bk > 0
            && t.bm.is_multiple_of(32)
            && t.bm > 0
            && rows.is_multiple_of(t.bm)
            && t.bk.is_multiple_of(24)
            && k2.is_multiple_of(32);
        let total = crate::tl::tl2_bytes(rows, cols);
        let three = rows * kt / 6;
        let signs = rows * kt / 24;
        let used = three + signs + rows * k2 / 4;
        if !ok || rows == 0 || total.is_none_or(|total| used > total) {
            return Err(Geometry::bad("TL2", format!("tiling {t:?} does not fit a {rows}x{cols} matrix")));
        }
        let mut planes = Vec::new();
        if kt > 0 {
            planes.push(Plane {
                kind: Kind::Triples,
                offset: 0,
                signs: three,
                col0: 0,
                bm: t.bm,
                bk: t.bk,
                sub: 32,
                ktiles: kt / t.bk,
            });
        }
        if k2 > 0 {
            let offset = three + signs;
            planes.push(Plane {
                kind: Kind::Pairs,
                offset,
                signs: 0,
                col0: kt,
                bm: t.bm,
                bk: 32,
                sub: 32,
                ktiles: k2 / 32,
            });
        }
        Ok(Geometry { rows, cols, bm: t.bm, planes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilings_that_do_not_fit_are_errors_not_panics() {
        let t = |bm, bk, bmm| TlTiling { bm, bk, bmm };
        for (rows, cols, tiling) in
            [(64, 256, t(64, 0, 32)), (64, 256, t(0, 96, 32)), (64, 256, t(64, 96, 16)), (48, 288, t(32, 96, 32))]
        {
            assert!(Geometry::tl2(rows, cols, tiling).is_err(), "TL2 {rows}x{cols} {tiling:?}");
        }
        for (rows, cols, tiling) in
            [(64, 256, t(64, 0, 32)), (64, 256, t(0, 64, 32)), (64, 256, t(64, 64, 48)), (64, 100, t(64, 64, 32))]
        {
            assert!(Geometry::tl1(rows, cols, tiling).is_err(), "TL1 {rows}x{cols} {tiling:?}");
        }
    }
}
