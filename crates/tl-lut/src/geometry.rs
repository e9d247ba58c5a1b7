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

/// [`table`] for every group of `a` (`a.len() / group` of them), as byte planes: 16 low bytes
/// then 16 high bytes per group.
pub fn byte_planes(kind: Kind, a: &[i8], out: &mut Vec<[u8; 32]>) {
    let g = if kind == Kind::Triples { 3 } else { 2 };
    out.clear();
    out.extend(a.chunks_exact(g).map(|grp| {
        let t = table(kind, grp);
        let mut p = [0u8; 32];
        for (i, v) in t.iter().enumerate() {
            p[i] = *v as u8;
            p[16 + i] = (*v >> 8) as u8;
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
}
