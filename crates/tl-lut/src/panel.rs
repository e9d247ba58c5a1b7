//! Many tokens at once: each 32-row (or `bmm`-row) sub-tile is decoded once into a *panel* of
//! 2-bit codes (`t + 1`, one byte per weight), laid out so that `vpdpbusd` multiplies 16 rows ×
//! 4 columns by one token's four activations in one instruction, and then every token runs over
//! the panel. Decoding costs about as much as one token's table walk, so from a few tokens on
//! this beats the lookup loop (which pays the whole walk per token), as the I2_S GEMM beats its
//! GEMV.
//!
//! Panel layout: per *row group* (16 rows: the rows of one 16-byte lane of the plane's period,
//! in the lane's byte order), per 4-column group, 64 bytes: row `k` of the group at bytes
//! `4k..4k+4` holding the codes of the 4 columns. The row group of lane `L` of a period holds
//! rows [`Plane::row_of`]`(16·L + k)`; TL1 has `bmm / 16` row groups per sub-tile, TL2 two
//! (lane 0: rows 0-7 and 16-23; lane 1: rows 8-15 and 24-31).
//!
//! Exactness: codes × activations summed in 32 bits, minus the activation sum (`Σ (t+1)·a − Σ a
//! = Σ t·a`), the same integer as the reference's; an index no weight can have decodes to three
//! zero weights, as the lookup tables give it 0.

use bitnet_quant::ActScale;

use crate::geometry::{Kind, Plane};

/// Row groups of one sub-tile.
pub(crate) fn groups(plane: &Plane) -> usize {
    match plane.kind {
        Kind::Tl1 { bmm } => bmm / 16,
        Kind::Triples | Kind::Pairs => 2,
    }
}

/// The row group of byte `b` of a run.
pub(crate) fn row_group(plane: &Plane, b: usize) -> usize {
    let lane = (b % plane.period()) / 16;
    match plane.kind {
        Kind::Tl1 { bmm } => lane / (256 / bmm / 4),
        Kind::Triples | Kind::Pairs => lane,
    }
}

/// The row group and 4-column group (relative to the run's first column) of the 16-byte lane at
/// byte `b` of a pair-plane run (TL1 or TL2's trailing pairs): its bytes' high nibbles index
/// the pair at the group's first two columns, the low nibbles the next two.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn pair_lane(plane: &Plane, b: usize) -> (usize, usize) {
    (row_group(plane, b), plane.groups_of(b).0 / 2)
}

/// Codes (`t + 1` per byte, little-endian) of the balanced-ternary digits of `v`, 0 in the
/// fourth byte: `v = 9·d0 + 3·d1 + d2`.
const fn triple_codes(v: i32) -> u32 {
    let u = (v + 13) as u32;
    (u / 9) | ((u / 3 % 3) << 8) | ((u % 3) << 16)
}

/// Triple decode table, indexed by `sign << 4 | magnitude`: codes of the three weights, 0 in
/// the fourth byte; magnitudes 14 and 15 (no weight has them) decode to zeros.
pub(crate) const TRIPLES: [u32; 32] = {
    let mut t = [0u32; 32];
    let mut i = 0;
    while i < 32 {
        let m = (i & 15) as i32;
        let v = if m > 13 {
            0
        } else if i >= 16 {
            -m
        } else {
            m
        };
        t[i] = triple_codes(v);
        i += 1;
    }
    t
};

/// Pair decode table, indexed by `3·w0 + w1 + 4`: codes of the two weights in the low two
/// bytes; indices 9..15 (no weight has them) decode to zeros.
pub(crate) const PAIRS: [u32; 16] = {
    let mut t = [0x0101u32; 16];
    let mut i = 0;
    while i < 9 {
        t[i] = (i as u32 / 3) | ((i as u32 % 3) << 8);
        i += 1;
    }
    t
};

/// The portable decoder of one run into `panel` (the reference for the vector ones): `cols`
/// is the panel's column count, `col` the run's first column.
pub(crate) fn decode_run(plane: &Plane, bytes: &[u8], signs: &[u8], panel: &mut [u8], cols: usize, col: usize) {
    let groups_per_row = cols / 4;
    let mut put = |group: usize, k: usize, c: usize, code: u8| {
        let at = (group * groups_per_row + c / 4) * 64 + 4 * k + c % 4;
        panel[at] = code;
    };
    for (b, &byte) in bytes.iter().enumerate() {
        let group = row_group(plane, b);
        let k = b % 16;
        let (gh, gl) = plane.groups_of(b);
        for (g, idx) in [(gh, byte >> 4), (gl, byte & 15)] {
            if plane.kind == Kind::Triples {
                let row = plane.row_of(b);
                let neg = Plane::negative(signs, row, g);
                let codes = TRIPLES[usize::from(neg) << 4 | usize::from(idx)];
                for d in 0..3 {
                    put(group, k, col + 3 * g + d, (codes >> (8 * d)) as u8);
                }
            } else {
                let codes = PAIRS[usize::from(idx)];
                for d in 0..2 {
                    put(group, k, col + 2 * g + d, (codes >> (8 * d)) as u8);
                }
            }
        }
    }
}

/// The order a panel product visits its work in: per row group `g`, tokens in blocks (their
/// sums kept in registers), each block as wide as the first of `widths` (widest first, the last
/// 1) that the tokens left fill: `f(g, t0, w)` runs tokens `t0..t0 + w`.
pub(crate) fn token_blocks(groups: usize, n: usize, widths: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    debug_assert_eq!(widths.last(), Some(&1));
    for g in 0..groups {
        let mut t0 = 0;
        while t0 < n {
            let w = widths.iter().copied().find(|&w| w <= n - t0).unwrap_or(1);
            f(g, t0, w);
            t0 += w;
        }
    }
}

/// The bounds every panel product relies on (`acts` whole tokens of `cols`, `cols` a multiple
/// of 4, `panel` and `dots` large enough for `groups` row groups): asserted by the SIMD products
/// before their unchecked loads.
pub(crate) fn check_gemm(panel: &[u8], groups: usize, cols: usize, acts: &[i8], dots: &[i32]) {
    let n = acts.len() / cols;
    assert!(cols.is_multiple_of(4) && panel.len() >= groups * cols / 4 * 64);
    assert!(acts.len() == n * cols && dots.len() >= n * groups * 16);
}

/// The portable panel product: `dots[(t·groups + g)·16 + k] = Σ code·a` of row `k` of row group
/// `g` with token `t` (`acts` holds `n` tokens of `cols` activations).
pub(crate) fn gemm(panel: &[u8], groups: usize, cols: usize, acts: &[i8], dots: &mut [i32]) {
    let n = acts.len() / cols;
    for g in 0..groups {
        let base = &panel[g * cols / 4 * 64..(g + 1) * cols / 4 * 64];
        for t in 0..n {
            let a = &acts[t * cols..(t + 1) * cols];
            for k in 0..16 {
                let mut s = 0i32;
                for (c4, block) in base.chunks_exact(64).enumerate() {
                    for d in 0..4 {
                        s += i32::from(block[4 * k + d]) * i32::from(a[4 * c4 + d]);
                    }
                }
                dots[(t * groups + g) * 16 + k] = s;
            }
        }
    }
}

/// A row's result from its dot product (codes times activations): the reference's formula and
/// operation order, so every placement gives the same bits.
pub(crate) fn result(dot: i32, act: &ActScale, scale: f32) -> f32 {
    (dot - act.sum) as f32 / act.scale * scale
}

/// Where one whole sub-tile's results go: row `r` of token `t` (at `out[t·len + at + r]`) comes
/// from dot `order[r]` of the token's `order.len()` dots (16, 32 or 64: the sub-tile's rows, a
/// permutation), with the token's activation scale and sum and the tensor's `scale`.
pub(crate) struct Place<'a> {
    pub order: &'a [u32],
    pub acts: &'a [ActScale],
    pub scale: f32,
    pub len: usize,
    pub at: usize,
}

impl Place<'_> {
    /// The bounds every placement relies on: the sub-tile's size, its permutation, `dots`
    /// holding its dots for every token and `out` its rows of every token.
    pub(crate) fn check(&self, dots: &[i32], out: &[f32]) {
        let (g, n) = (self.order.len(), self.acts.len());
        assert!(matches!(g, 16 | 32 | 64) && self.order.iter().all(|&l| (l as usize) < g));
        assert!(dots.len() >= n * g && self.at + g <= self.len && out.len() >= n * self.len);
    }
}

/// The portable placement: results computed in dot order first (a plain loop LLVM vectorizes,
/// divisions included), then placed in row order (`vals` holds one token's).
pub(crate) fn place(p: &Place<'_>, dots: &[i32], out: &mut [f32], vals: &mut [f32]) {
    p.check(dots, out);
    let g = p.order.len();
    let vals = &mut vals[..g];
    for (t, act) in p.acts.iter().enumerate() {
        vals.iter_mut().zip(&dots[t * g..(t + 1) * g]).for_each(|(v, &dot)| *v = result(dot, act, p.scale));
        let at = t * p.len + p.at;
        for (o, &l) in out[at..at + g].iter_mut().zip(p.order) {
            *o = vals[l as usize];
        }
    }
}
