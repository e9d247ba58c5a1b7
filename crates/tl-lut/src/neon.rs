//! The NEON lookup loop: `tbl` (`vqtbl1q_u8`) on 128 bits, 16 rows per lookup.
//!
//! Same scheme as the x86 loops: per sub-tile, 16-bit sums of table entries (two per lane per
//! vector, each |v| ≤ 384), widened into the 32-bit lane-order sums at least every 32 vectors
//! per position.

use std::arch::aarch64::*;

/// Vectors per position between two widenings of the 16-bit sums.
const FLUSH: usize = 32;

/// NEON loops; only [`Neon::detect`] builds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neon(());

impl Neon {
    pub fn detect() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }

    /// The runs of consecutive sub-tiles of one column tile (see [`crate::Tile`]).
    pub(crate) fn tile(self, sign: bool, v: usize, t: crate::Tile<'_>) {
        let n = t.run / 16;
        let subs = t.bytes.len() / t.run.max(1);
        assert!(t.run.is_multiple_of(16 * v) && t.bytes.len().is_multiple_of(t.run) && t.tables.len() >= n * 64);
        assert!(t.acc16.len() >= subs * 16 * v && t.acc32.len() >= subs * 16 * v);
        assert!(!sign || (v == 2 && t.srun >= n.div_ceil(8) * 32 && t.signs.len() >= subs * t.srun));
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
            while i < end {
                for (q, sum) in sums.iter_mut().enumerate() {
                    let j = i + q;
                    // SAFETY: j < n; the caller checked 16·n index bytes and 64·n table bytes per run
                    // and (signs) 32 bytes per 8 vectors.
                    unsafe {
                        let x = vld1q_u8(b.add(16 * j));
                        let hi = vshrq_n_u8::<4>(x);
                        let lo = vandq_u8(x, m4);
                        let tj = tab.add(64 * j);
                        let hl = vqtbl1q_u8(vld1q_u8(tj), hi);
                        let hh = vqtbl1q_u8(vld1q_u8(tj.add(16)), hi);
                        let ll = vqtbl1q_u8(vld1q_u8(tj.add(32)), lo);
                        let lh = vqtbl1q_u8(vld1q_u8(tj.add(48)), lo);
                        let mut p0 = vreinterpretq_s16_u8(vzip1q_u8(hl, hh));
                        let mut p1 = vreinterpretq_s16_u8(vzip2q_u8(hl, hh));
                        let mut q0 = vreinterpretq_s16_u8(vzip1q_u8(ll, lh));
                        let mut q1 = vreinterpretq_s16_u8(vzip2q_u8(ll, lh));
                        if SIGN {
                            // Vector j is half (rows 8·(j mod 2) + 0..8 and 16 + that) of 6-column
                            // chunk j/2: triples 2·(j/2) mod 8 and the next; the sign of (row r,
                            // triple tr) is bit 15 − (2·tr + r/16) of word r mod 16.
                            let words = vld1q_u16(s.add(32 * (j / 8) + 16 * (j % 2)).cast());
                            let top = 15 - 4 * ((j / 2) % 4) as u16;
                            let neg = |v: int16x8_t, bit: u16| {
                                let m = vreinterpretq_s16_u16(vtstq_u16(words, vdupq_n_u16(1 << bit)));
                                vsubq_s16(veorq_s16(v, m), m)
                            };
                            p0 = neg(p0, top);
                            p1 = neg(p1, top - 1);
                            q0 = neg(q0, top - 2);
                            q1 = neg(q1, top - 3);
                        }
                        sum[0] = vaddq_s16(sum[0], vaddq_s16(p0, q0));
                        sum[1] = vaddq_s16(sum[1], vaddq_s16(p1, q1));
                    }
                }
                i += V;
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
