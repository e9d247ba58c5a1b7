//! The NEON lookup loop: `tbl` (`vqtbl1q_u8`) on 128 bits, 16 rows per lookup.
//!
//! Same scheme as the x86 loops: per sub-tile, 16-bit sums of table entries (two per lane per
//! vector, each |v| ≤ 384), widened into the 32-bit lane-order sums at least every 32 vectors
//! per position.

use std::arch::aarch64::*;

use crate::geometry::{Kind, Plane};

/// Vectors per position between two widenings of the 16-bit sums.
const FLUSH: usize = 32;

/// NEON loops; only [`Neon::detect`] builds one. `dotprod` says whether the panel GEMM (which
/// multiplies with `sdot`) runs too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neon {
    dotprod: bool,
}

impl Neon {
    pub fn detect() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon")
            .then(|| Neon { dotprod: std::arch::is_aarch64_feature_detected!("dotprod") })
    }

    /// Whether the many-token panel path runs (NEON with dotprod: without `sdot`, widening
    /// multiplies cost about as much per token as the table walk).
    pub fn panel(self) -> bool {
        self.dotprod
    }

    /// Decodes one run of `plane` into `panel` (see [`crate::panel`]): indices to codes with
    /// `tbl`, four columns interleaved per row with `st4`.
    pub(crate) fn decode(self, plane: &Plane, bytes: &[u8], signs: &[u8], panel: &mut [u8], cols: usize, col: usize) {
        assert!(col.is_multiple_of(4) && cols.is_multiple_of(4));
        assert!(panel.len() >= crate::panel::groups(plane) * cols / 4 * 64 && col + plane.bk <= cols);
        // SAFETY: the token proves NEON; the asserts and the run's geometry bound every access
        // (each run writes 4-column groups col/4 .. (col + bk)/4 of its row groups).
        unsafe {
            if plane.kind == Kind::Triples {
                assert!(bytes.len() == plane.run_bytes() && signs.len() >= plane.run_sign_bytes());
                decode_triples128(bytes, signs, panel, cols, col);
            } else {
                decode_pairs128(plane, bytes, panel, cols, col);
            }
        }
    }

    /// The panel product (see [`crate::panel::gemm`]) with `sdot`.
    pub(crate) fn gemm(self, panel: &[u8], groups: usize, cols: usize, acts: &[i8], dots: &mut [i32]) {
        assert!(self.dotprod);
        crate::panel::check_gemm(panel, groups, cols, acts, dots);
        // SAFETY: the token proves NEON and dotprod; the checks bound every access.
        unsafe { gemm_panel128(panel, groups, cols, acts, dots) }
    }

    /// The runs of consecutive sub-tiles of one column tile (see [`crate::Tile`]).
    pub(crate) fn tile(self, sign: bool, v: usize, t: crate::Tile<'_>) {
        let n = t.run / 16;
        let subs = t.bytes.len() / t.run.max(1);
        assert!(t.run.is_multiple_of(16 * v) && t.bytes.len().is_multiple_of(t.run) && t.tables.len() >= n * 64);
        assert!(t.acc16.len() >= subs * 16 * v && t.acc32.len() >= subs * 16 * v);
        // TL2 column tiles are multiples of 24 columns (`tl::check_tl2`), so a run is whole groups
        // of eight vectors and 32 sign bytes.
        assert!(!sign || (v == 2 && n.is_multiple_of(8) && t.srun >= n / 8 * 32 && t.signs.len() >= subs * t.srun));
        // SAFETY: the token proves NEON; the asserts above bound every load and store.
        unsafe {
            match (sign, v) {
                (true, _) => tile128::<true, 2>(t),
                (false, 2) => tile128::<false, 2>(t),
                (false, 4) => tile128::<false, 4>(t),
                _ => unreachable!("periods are 32 or 64 bytes"),
            }
        }
    }
}

/// Adds byte sums of base-31 entries (`q` and `p` planes, wrapping bytes whose true values fit
/// in i8) to a position's two 16-bit sums: `q + 31·p` per lane, low and high eight lanes.
#[inline]
#[target_feature(enable = "neon")]
fn widen31(sum: &mut [int16x8_t; 2], q: uint8x16_t, p: uint8x16_t) {
    let (q, p) = (vreinterpretq_s8_u8(q), vreinterpretq_s8_u8(p));
    let c31 = vdupq_n_s8(31);
    sum[0] = vaddq_s16(sum[0], vmlal_s8(vmovl_s8(vget_low_s8(q)), vget_low_s8(p), vget_low_s8(c31)));
    sum[1] = vaddq_s16(sum[1], vmlal_high_s8(vmovl_high_s8(q), p, c31));
}

// Not inlined: one call per column tile costs nothing, and `tools/arm-mca.py --lut` finds each
// instance's loop by its symbol.
#[inline(never)]
#[target_feature(enable = "neon")]
unsafe fn tile128<const SIGN: bool, const V: usize>(t: crate::Tile<'_>) {
    let n = t.run / 16;
    let m4 = vdupq_n_u8(0x0F);
    let tab = t.tables.as_ptr();
    for sub in 0..t.bytes.len() / t.run {
        // SAFETY: the caller checked `subs` runs of index and sign bytes and 16·V 16- and 32-bit
        // sums per sub-tile.
        let (b, s, p16, p32) = unsafe {
            (
                t.bytes.as_ptr().add(sub * t.run),
                t.signs.as_ptr().wrapping_add(sub * t.srun),
                t.acc16.as_mut_ptr().add(sub * 16 * V),
                t.acc32.as_mut_ptr().add(sub * 16 * V),
            )
        };
        let mut sums = [[vdupq_n_s16(0); 2]; V];
        for (q, sum) in sums.iter_mut().enumerate() {
            for (h, v) in sum.iter_mut().enumerate() {
                // SAFETY: within this sub-tile's 16·V 16-bit sums.
                *v = unsafe { vld1q_s16(p16.add(16 * q + 8 * h)) };
            }
        }
        let mut i = 0;
        while i < n {
            // At most FLUSH vectors per position between widenings, in a loop of its own so
            // that the hot loop carries no widening branch.
            let end = n.min(i + FLUSH * V);
            if SIGN {
                // Eight vectors (one 32-byte group of sign words) at a time. Vector j is half
                // (rows 8·(j mod 2) + 0..8 and 16 + that) of 6-column chunk j/2: triples
                // 2·(j/2) mod 8 and the next; the sign of (row r, triple tr) is bit 15 − (2·tr +
                // r/16) of word r mod 16, so vector i + 2m + h reads word half h. The tables are
                // in base 31 (`Split::Base31`, as the AVX2 walk's): both planes are small signed
                // bytes, so a lookup is negated in bytes, `(x ^ m) − m` with the subtraction of
                // every `m` summed once per group, and a row's eight lookups of the group add up
                // in bytes (|Σq| ≤ 120, |Σp| ≤ 96) before one `smlal` by 31 per 8 rows widens
                // them (the 16-bit walk spent a shift, a test, an `eor` and a `sub` per 8 rows
                // and lookup, and two `zip` per lookup). The high (triples 0–3) or low (4–7)
                // bytes of a half's eight words, twice (`uzp`), meet one mask per triple: bit
                // 7 − 2·tr for rows r < 16, 6 − 2·tr for the rest.
                let bit = |tr: i32| -> uint8x16_t {
                    let lo = vdup_n_u8(1 << (7 - 2 * tr));
                    vcombine_u8(lo, vdup_n_u8(1 << (6 - 2 * tr)))
                };
                let bits = [bit(0), bit(1), bit(2), bit(3)];
                while i < end {
                    // SAFETY: i + 7 < n (vectors of this run), the group's 32 sign bytes; 16·n
                    // index bytes and 64·n table bytes per run (checked by the caller).
                    unsafe {
                        let mut q = [vdupq_n_u8(0); 2];
                        let mut p = [vdupq_n_u8(0); 2];
                        let mut neg = [vdupq_n_u8(0); 2];
                        for h in 0..2 {
                            let w = vld1q_u8(s.add(4 * i + 16 * h));
                            let (hib, lob) = (vuzp2q_u8(w, w), vuzp1q_u8(w, w));
                            for m in 0..4 {
                                let j = i + 2 * m + h;
                                let x = vld1q_u8(b.add(16 * j));
                                let (hi, lo) = (vshrq_n_u8::<4>(x), vandq_u8(x, m4));
                                let src = if m < 2 { hib } else { lob };
                                let mh = vtstq_u8(src, bits[(2 * m) % 4]);
                                let ml = vtstq_u8(src, bits[(2 * m + 1) % 4]);
                                let t = vld1q_u8_x4(tab.add(64 * j));
                                let hq = veorq_u8(vqtbl1q_u8(t.0, hi), mh);
                                let hp = veorq_u8(vqtbl1q_u8(t.1, hi), mh);
                                let lq = veorq_u8(vqtbl1q_u8(t.2, lo), ml);
                                let lp = veorq_u8(vqtbl1q_u8(t.3, lo), ml);
                                q[h] = vaddq_u8(q[h], vaddq_u8(hq, lq));
                                p[h] = vaddq_u8(p[h], vaddq_u8(hp, lp));
                                neg[h] = vaddq_u8(neg[h], vaddq_u8(mh, ml));
                            }
                        }
                        for (h, sum) in sums.iter_mut().enumerate() {
                            widen31(sum, vsubq_u8(q[h], neg[h]), vsubq_u8(p[h], neg[h]));
                        }
                    }
                    i += 8;
                }
            }
            // Unsigned runs (TL1 and TL2's pairs, base-31 tables as the triples'): up to four
            // steps of a vector per position (eight lookups per row, |Σq| ≤ 120, |Σp| ≤ 64) add
            // up in bytes, then one `smlal` by 31 per 8 rows widens them.
            // One group of `steps` vectors per position (whole groups take a literal 4, which
            // LLVM unrolls).
            macro_rules! unsigned_group {
                ($steps:expr) => {{
                    let steps = $steps;
                    let mut q = [vdupq_n_u8(0); V];
                    let mut p = [vdupq_n_u8(0); V];
                    for g in 0..steps {
                        for k in 0..V {
                            let j = i + g * V + k;
                            // SAFETY: j < n; the caller checked 16·n index bytes and 64·n table
                            // bytes per run.
                            unsafe {
                                let x = vld1q_u8(b.add(16 * j));
                                let (hi, lo) = (vshrq_n_u8::<4>(x), vandq_u8(x, m4));
                                let t = vld1q_u8_x4(tab.add(64 * j));
                                q[k] = vaddq_u8(q[k], vaddq_u8(vqtbl1q_u8(t.0, hi), vqtbl1q_u8(t.2, lo)));
                                p[k] = vaddq_u8(p[k], vaddq_u8(vqtbl1q_u8(t.1, hi), vqtbl1q_u8(t.3, lo)));
                            }
                        }
                    }
                    for (k, sum) in sums.iter_mut().enumerate() {
                        widen31(sum, q[k], p[k]);
                    }
                    i += steps * V;
                }};
            }
            while end - i >= 4 * V {
                unsigned_group!(4);
            }
            if i < end {
                unsigned_group!((end - i) / V);
            }
            if end < n || t.flush {
                for (q, sum) in sums.iter_mut().enumerate() {
                    for (h, v) in sum.iter_mut().enumerate() {
                        // SAFETY: within this sub-tile's 16·V 32-bit sums.
                        unsafe {
                            let p = p32.add(16 * q + 8 * h);
                            vst1q_s32(p, vaddq_s32(vld1q_s32(p), vmovl_s16(vget_low_s16(*v))));
                            vst1q_s32(p.add(4), vaddq_s32(vld1q_s32(p.add(4)), vmovl_high_s16(*v)));
                        }
                        *v = vdupq_n_s16(0);
                    }
                }
            }
        }
        for (q, sum) in sums.iter().enumerate() {
            for (h, v) in sum.iter().enumerate() {
                // SAFETY: within this sub-tile's 16·V 16-bit sums.
                unsafe { vst1q_s16(p16.add(16 * q + 8 * h), *v) };
            }
        }
    }
}

/// Byte `k` of each entry of a decode table (`crate::panel::TRIPLES` / `PAIRS`): the code of the
/// group's weight `k`, as a `tbl` table.
const fn digit_table<const N: usize>(t: &[u32; N], k: u32) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = (t[i] >> (8 * k)) as u8;
        i += 1;
    }
    out
}

const TRIPLE_DIGITS: [[u8; 32]; 3] = [
    digit_table(&crate::panel::TRIPLES, 0),
    digit_table(&crate::panel::TRIPLES, 1),
    digit_table(&crate::panel::TRIPLES, 2),
];
const PAIR_DIGITS: [[u8; 16]; 2] = [digit_table(&crate::panel::PAIRS, 0), digit_table(&crate::panel::PAIRS, 1)];

/// A TL2 triple run: per pair of 6-column chunks and per row group (one 16-byte lane), the 16
/// rows' four triples become `sign << 4 | magnitude` (the sign shifted to bit 4 from the row's
/// word), each weight's code comes from a 32-byte `tbl`, and `st4` writes 4-column rows.
#[target_feature(enable = "neon")]
unsafe fn decode_triples128(bytes: &[u8], signs: &[u8], panel: &mut [u8], cols: usize, col: usize) {
    let m4 = vdupq_n_u8(15);
    let s4 = vdupq_n_u16(16);
    // SAFETY: each table is 32 bytes.
    let t = TRIPLE_DIGITS.map(|d| unsafe { uint8x16x2_t(vld1q_u8(d.as_ptr()), vld1q_u8(d.as_ptr().add(16))) });
    let per_row = cols / 4;
    let p = panel.as_mut_ptr();
    for cp in 0..bytes.len() / 64 {
        let tr0 = 4 * (cp % 2) as i16;
        for h in 0..2 {
            // SAFETY: cp < run / 64: 64 index bytes and (32 per 4 chunks) sign bytes each; every
            // index is < 32; the 3 column groups are inside the panel (checked by the caller).
            unsafe {
                let xa = vld1q_u8(bytes.as_ptr().add(64 * cp + 16 * h));
                let xb = vld1q_u8(bytes.as_ptr().add(64 * cp + 32 + 16 * h));
                let w = vld1q_u16(signs.as_ptr().add(32 * (cp / 2) + 16 * h).cast());
                // Bytes 0-7 are rows 8h + i (sign bit 15 − 2·tr of word i), bytes 8-15 rows
                // 16 + 8h + i (bit 14 − 2·tr of the same word).
                let sgn = |tr: i16| {
                    let lo = vandq_u16(vshlq_u16(w, vdupq_n_s16(4 - (15 - 2 * tr))), s4);
                    let hi = vandq_u16(vshlq_u16(w, vdupq_n_s16(4 - (14 - 2 * tr))), s4);
                    vcombine_u8(vmovn_u16(lo), vmovn_u16(hi))
                };
                let i0 = vorrq_u8(vshrq_n_u8::<4>(xa), sgn(tr0));
                let i1 = vorrq_u8(vandq_u8(xa, m4), sgn(tr0 + 1));
                let i2 = vorrq_u8(vshrq_n_u8::<4>(xb), sgn(tr0 + 2));
                let i3 = vorrq_u8(vandq_u8(xb, m4), sgn(tr0 + 3));
                let d = |k: usize, i: uint8x16_t| vqtbl2q_u8(t[k], i);
                let out = p.add((h * per_row + col / 4 + 3 * cp) * 64);
                vst4q_u8(out, uint8x16x4_t(d(0, i0), d(1, i0), d(2, i0), d(0, i1)));
                vst4q_u8(out.add(64), uint8x16x4_t(d(1, i1), d(2, i1), d(0, i2), d(1, i2)));
                vst4q_u8(out.add(128), uint8x16x4_t(d(2, i2), d(0, i3), d(1, i3), d(2, i3)));
            }
        }
    }
}

/// A pair run (TL1, TL2's trailing columns): each 16-byte lane is 16 rows × two pairs, one
/// 4-column row each.
#[target_feature(enable = "neon")]
unsafe fn decode_pairs128(plane: &Plane, bytes: &[u8], panel: &mut [u8], cols: usize, col: usize) {
    let m4 = vdupq_n_u8(15);
    // SAFETY: each table is 16 bytes.
    let [d0, d1] = PAIR_DIGITS.map(|d| unsafe { vld1q_u8(d.as_ptr()) });
    let per_row = cols / 4;
    let p = panel.as_mut_ptr();
    for lane in 0..bytes.len() / 16 {
        let (group, cg) = crate::panel::pair_lane(plane, 16 * lane);
        // SAFETY: lane < run / 16; the lane's row group and column group are inside the panel
        // (checked by the caller).
        unsafe {
            let x = vld1q_u8(bytes.as_ptr().add(16 * lane));
            let (hi, lo) = (vshrq_n_u8::<4>(x), vandq_u8(x, m4));
            let rows = uint8x16x4_t(vqtbl1q_u8(d0, hi), vqtbl1q_u8(d1, hi), vqtbl1q_u8(d0, lo), vqtbl1q_u8(d1, lo));
            vst4q_u8(p.add((group * per_row + col / 4 + cg) * 64), rows);
        }
    }
}

/// `acc` plus the 16 products of `c` and `a` (`sdot`; `vdotq_s32` is not stable in Rust
/// 1.95/1.96, so it is one `asm!` instruction, as in kernels-arm, which this crate does not
/// depend on).
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn sdot(mut acc: int32x4_t, c: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` only reads and writes these registers; the enclosing target feature
    // guarantees the CPU has the instruction.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {c:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            c = in(vreg) c,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Tokens per pass over a panel row group.
const TOKENS: usize = 4;

#[target_feature(enable = "neon,dotprod")]
unsafe fn gemm_panel128(panel: &[u8], groups: usize, cols: usize, acts: &[i8], dots: &mut [i32]) {
    crate::panel::token_blocks(groups, acts.len() / cols, &[TOKENS, 1], |g, t0, w| {
        // SAFETY: the tokens of the block exist, the caller checked the panel, acts and dots
        // sizes, and the enclosing function's target features hold.
        unsafe {
            if w == TOKENS {
                gemm_tokens128::<TOKENS>(panel, g, groups, cols, acts, t0, dots)
            } else {
                gemm_tokens128::<1>(panel, g, groups, cols, acts, t0, dots)
            }
        }
    });
}

/// Tokens `t0..t0 + T` over row group `g` (rows in fours: 16 bytes = 4 rows × 4 columns).
#[target_feature(enable = "neon,dotprod")]
unsafe fn gemm_tokens128<const T: usize>(
    panel: &[u8],
    g: usize,
    groups: usize,
    cols: usize,
    acts: &[i8],
    t0: usize,
    dots: &mut [i32],
) {
    let mut acc = [[vdupq_n_s32(0); 4]; T];
    let per_row = cols / 4;
    // SAFETY: the caller checked per_row·64 bytes per row group, T tokens of `cols`
    // activations from t0, and 16 dots per (token, group).
    unsafe {
        let base = panel.as_ptr().add(g * per_row * 64).cast::<i8>();
        let a = acts.as_ptr().add(t0 * cols);
        for c in 0..per_row {
            let codes = [0, 1, 2, 3].map(|q| vld1q_s8(base.add(64 * c + 16 * q)));
            for (t, s) in acc.iter_mut().enumerate() {
                let four = vreinterpretq_s8_s32(vdupq_n_s32(a.add(t * cols + 4 * c).cast::<i32>().read_unaligned()));
                for (q, v) in s.iter_mut().enumerate() {
                    *v = sdot(*v, codes[q], four);
                }
            }
        }
        for (t, s) in acc.iter().enumerate() {
            let out = dots.as_mut_ptr().add(((t0 + t) * groups + g) * 16);
            for (q, v) in s.iter().enumerate() {
                vst1q_s32(out.add(4 * q), *v);
            }
        }
    }
}
