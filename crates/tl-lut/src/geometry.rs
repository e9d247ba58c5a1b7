//! The per-token tables of the lookup-table kernels: for each group of activations, the exact
//! signed sum each 4-bit index stands for. Where the indices lie is
//! [`bitnet_quant::tl_layout`] (re-exported here).

pub use bitnet_quant::tl_layout::*;

/// Digits of every index, per weight of the group: `DIGITS[kind][j][i]` is the weight `j` that
/// index `i` stands for (0 for indices no weight can have). Pairs: `i = 3·w0 + w1 + 4` (i < 9);
/// triples: `i = 9·w0 + 3·w1 + w2` (the magnitude, i < 14; the sign bit negates the sum).
const DIGITS: [[[i16; 16]; 3]; 2] = {
    let mut d = [[[0i16; 16]; 3]; 2];
    let mut i = 0;
    while i < 16 {
        if i < 9 {
            d[0][0][i] = (i / 3) as i16 - 1;
            d[0][1][i] = (i % 3) as i16 - 1;
        }
        if i < 14 {
            // Balanced ternary: i + 13 = 9·(w0+1) + 3·(w1+1) + (w2+1).
            let u = i + 13;
            d[1][0][i] = (u / 9) as i16 - 1;
            d[1][1][i] = (u / 3 % 3) as i16 - 1;
            d[1][2][i] = (u % 3) as i16 - 1;
        }
        i += 1;
    }
    d
};

/// The exact signed sums one index stands for, for a group of activations `a` (2 or 3 values):
/// `T[i] = Σ_j DIGITS[j][i]·a[j]`, at most 3·128 in magnitude. Pairs: `T[n] = (n/3 − 1)·a0 +
/// (n mod 3 − 1)·a1` for n < 9; triples: `T[m] = d0·a0 + d1·a1 + d2·a2` with `m = 9·d0 + 3·d1
/// + d2`, digits in {−1, 0, 1}, m < 14. Indices no weight can have are 0.
pub fn table(kind: Kind, a: &[i8]) -> [i16; 16] {
    let d = &DIGITS[usize::from(kind == Kind::Triples)];
    let mut t = [0i16; 16];
    for (j, &aj) in a.iter().enumerate().take(3) {
        for (v, &dj) in t.iter_mut().zip(&d[j]) {
            *v += dj * i16::from(aj);
        }
    }
    t
}

/// How a table's 16-bit entries are kept as two byte planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Low byte, then high byte: interleaving the two looked-up planes gives the 16-bit entry.
    Bytes,
    /// `v = 31·p + q` with `q` in [−15, 15] and `p` in [−12, 12] (|v| ≤ 384): planes `q` then
    /// `p`, both small signed bytes, so a sign applies to each plane on its own and eight
    /// lookups add up in bytes before one multiply-add by (1, 31) widens them (the AVX2 and NEON
    /// walks).
    Base31,
}

/// The two planes' bytes of entry `v` kept `how`.
pub fn split(v: i16, how: Split) -> (u8, u8) {
    match how {
        Split::Bytes => (v as u8, (v >> 8) as u8),
        Split::Base31 => {
            let p = (v + 15).div_euclid(31);
            ((v - 31 * p) as i8 as u8, p as i8 as u8)
        }
    }
}

/// [`table`] for every group of `a` (`a.len() / group` of them), as byte planes: 16 bytes of the
/// first plane then 16 of the second per group.
pub fn byte_planes(kind: Kind, a: &[i8], how: Split, out: &mut Vec<[u8; 32]>) {
    let g = if kind == Kind::Triples { 3 } else { 2 };
    out.clear();
    out.extend(a.chunks_exact(g).map(|grp| {
        let t = table(kind, grp);
        let mut p = [0u8; 32];
        for (i, &v) in t.iter().enumerate() {
            (p[i], p[16 + i]) = split(v, how);
        }
        p
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_every_signed_sum() {
        let a = [-128i8, 127, 5];
        let t = table(Kind::Triples, &a);
        // m = 13 = 9 + 3 + 1; m = 5 = 9 − 3 − 1; m = 0.
        assert_eq!(t[13], -128 + 127 + 5);
        assert_eq!(t[5], -128 - 127 - 5);
        assert_eq!(t[0], 0);
        let t = table(Kind::Pairs, &a[..2]);
        assert_eq!(t[0], 128 - 127);
        assert_eq!(t[8], -128 + 127);
        assert_eq!(t[4], 0);
    }

    #[test]
    fn base31_planes_rebuild_every_entry_within_their_bounds() {
        for v in -384i16..=384 {
            let (q, p) = split(v, Split::Base31);
            let (q, p) = (i16::from(q as i8), i16::from(p as i8));
            assert!(q.abs() <= 15 && p.abs() <= 12, "{v}: q {q}, p {p}");
            assert_eq!(31 * p + q, v);
            let (lo, hi) = split(v, Split::Bytes);
            assert_eq!(i16::from_le_bytes([lo, hi]), v);
        }
    }
}
