//! What every level shares: loads, decoding of each ternary packing into vectors of 16 codes in
//! element order, the many-token driver (rows decoded once into a scratch block, then a
//! rows × tokens micro-kernel), and `ternary_loops!`, which writes a level's one-token loop from
//! its multiply-accumulate.
//!
//! Every packing puts 16 consecutive weights in the 16 byte lanes of one vector:
//! * I2_S x86 order, a 128-block of 32 bytes: vector `h` (bytes `16h..`) at shift `6 − 2g` holds
//!   elements `32g + 16h ..`;
//! * I2_S ARM order, a 64-block of 16 bytes: at shift `6 − 2g`, elements `16g ..`;
//! * TQ2_0, half `h` of a 256-block (32 bytes): vector `k` at shift `2g`, elements `128h + 32g + 16k ..`;
//! * TQ1_0: base-3 digits read with a multiply and the high byte of `·3` (ggml's trick), 16 lanes
//!   at a time; the four `qh` bytes are spread over the lanes with one `tbl`.
//!
//! so activations are used in element order and no level reorders them.

use std::arch::aarch64::*;
use std::ops::Range;

use bitnet_quant::isa::{Codes, Job, take_scratch, tq_scale};

/// 16 bytes from the front of `s`.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) fn ld(s: &[u8]) -> uint8x16_t {
    assert!(s.len() >= 16);
    // SAFETY: the slice holds at least 16 bytes; NEON loads need no alignment.
    unsafe { vld1q_u8(s.as_ptr()) }
}

/// 16 signed bytes from the front of `s`.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) fn ld_i8(s: &[i8]) -> int8x16_t {
    assert!(s.len() >= 16);
    // SAFETY: the slice holds at least 16 bytes; NEON loads need no alignment.
    unsafe { vld1q_s8(s.as_ptr()) }
}

/// 16 signed bytes (no bounds check: the array is exactly that).
#[target_feature(enable = "neon")]
#[inline]
pub(crate) fn ld16(s: &[i8; 16]) -> int8x16_t {
    // SAFETY: the array holds 16 bytes; NEON loads need no alignment.
    unsafe { vld1q_s8(s.as_ptr()) }
}

/// Elements `k` of the row (or token, or pair) starting at `start` of `v`, as 16-byte arrays
/// (`k.len()` a multiple of 16; a shorter slice panics here, once, not in the loop).
#[inline]
pub(crate) fn blocks16<'a>(v: &'a [i8], start: usize, k: &Range<usize>) -> &'a [[i8; 16]] {
    v[start + k.start..start + k.end].as_chunks::<16>().0
}

/// Stores 16 signed bytes at the front of `d`.
#[target_feature(enable = "neon")]
#[inline]
fn st_i8(d: &mut [i8], v: int8x16_t) {
    assert!(d.len() >= 16);
    // SAFETY: the slice holds at least 16 writable bytes; NEON stores need no alignment.
    unsafe { vst1q_s8(d.as_mut_ptr(), v) }
}

/// `v >> s` per byte, for the four 2-bit field positions.
#[target_feature(enable = "neon")]
#[inline]
fn shr(v: uint8x16_t, s: u32) -> uint8x16_t {
    match s {
        0 => v,
        2 => vshrq_n_u8::<2>(v),
        4 => vshrq_n_u8::<4>(v),
        _ => vshrq_n_u8::<6>(v),
    }
}

/// The 2-bit field at shift `s` of every byte: codes 0..=2.
#[target_feature(enable = "neon")]
#[inline]
fn field(v: uint8x16_t, s: u32) -> uint8x16_t {
    vandq_u8(shr(v, s), vdupq_n_u8(3))
}

/// Base-3 digit `n` (0 = most significant) of each byte's `ceil(q·256/243)` encoding, as ggml
/// reads it: `((byte · 3^n mod 256) · 3) >> 8`; `mul` holds `3^n` per lane.
#[target_feature(enable = "neon")]
#[inline]
fn trits(v: uint8x16_t, mul: uint8x16_t) -> uint8x16_t {
    let q = vmulq_u8(v, mul);
    let three = vdupq_n_u8(3);
    let lo = vmull_u8(vget_low_u8(q), vget_low_u8(three));
    let hi = vmull_high_u8(q, three);
    // The high byte of each 16-bit product.
    vuzp2q_u8(vreinterpretq_u8_u16(lo), vreinterpretq_u8_u16(hi))
}

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Element 240 + 4n + j of a TQ1_0 block is digit n of qh[j]: lane 4n + j of a vector takes
/// byte `TQ1_QH_LANES[lane]` of the block's last 16 bytes (its four `qh` bytes are lanes 10..14)
/// and multiplies it by `TQ1_QH_POW3[lane]` (3^n).
pub(crate) const TQ1_QH_LANES: [u8; 16] = [10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13];
pub(crate) const TQ1_QH_POW3: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];

/// The 256 codes of a TQ1_0 block (54 bytes) in element order, 16 per vector.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) fn tq1_codes(block: &[u8]) -> [uint8x16_t; 16] {
    let (x0, x1, x2) = (ld(block), ld(&block[16..]), ld(&block[32..]));
    // Bytes 38..54: the four `qh` bytes are lanes 10..14.
    let xq = ld(&block[block.len() - 16..]);
    let mut out = [vdupq_n_u8(0); 16];
    for (n, &p) in POW3.iter().enumerate() {
        let mul = vdupq_n_u8(p);
        out[2 * n] = trits(x0, mul);
        out[2 * n + 1] = trits(x1, mul);
        out[10 + n] = trits(x2, mul);
    }
    out[15] = trits(vqtbl1q_u8(xq, ld(&TQ1_QH_LANES)), ld(&TQ1_QH_POW3));
    out
}

/// The codes (0..=2) of 256-weight chunk `c` of `row`, 16 per vector in element order, and how
/// many vectors are real (fewer in the last chunk of an I2_S row that is not whole 256-chunks).
#[target_feature(enable = "neon")]
#[inline]
pub(crate) fn chunk_codes(job: &Job<'_>, row: &[u8], c: usize) -> ([uint8x16_t; 16], usize) {
    let mut out = [vdupq_n_u8(0); 16];
    let count = match job.codes {
        Codes::I2s => {
            let blocks = if job.half_tail && c + 1 == job.chunks { 1 } else { 2 };
            for b in 0..blocks {
                let v = [ld(&row[c * 64 + 32 * b..]), ld(&row[c * 64 + 32 * b + 16..])];
                for g in 0..4 {
                    for (h, &v) in v.iter().enumerate() {
                        out[8 * b + 2 * g + h] = field(v, 6 - 2 * g as u32);
                    }
                }
            }
            8 * blocks
        }
        Codes::I2sArm => {
            let blocks = ((job.cols - 256 * c) / 64).min(4);
            for b in 0..blocks {
                let v = ld(&row[c * 64 + 16 * b..]);
                for g in 0..4 {
                    out[4 * b + g] = field(v, 6 - 2 * g as u32);
                }
            }
            4 * blocks
        }
        Codes::Tq2 => {
            let block = &row[c * 66..(c + 1) * 66];
            for h in 0..2 {
                for k in 0..2 {
                    let v = ld(&block[32 * h + 16 * k..]);
                    for g in 0..4 {
                        out[8 * h + 2 * g + k] = field(v, 2 * g as u32);
                    }
                }
            }
            16
        }
        Codes::Tq1 => {
            out = tq1_codes(&row[c * 54..(c + 1) * 54]);
            16
        }
        Codes::I2sRows4 => unreachable!("not accepted: rows in fours"),
    };
    (out, count)
}

/// Row `r` as signed ternary values (code − 1) in element order, zero-padded to `out.len()`
/// (a whole number of 256-chunks), and its per-chunk TQ scales into `scales`.
#[target_feature(enable = "neon")]
pub(crate) fn decode_row(job: &Job<'_>, r: usize, out: &mut [i8], scales: &mut [f32]) {
    let row = job.row(r);
    let one = vdupq_n_u8(1);
    for c in 0..job.chunks {
        let (codes, count) = chunk_codes(job, row, c);
        let dst = &mut out[c * 256..(c + 1) * 256];
        for (i, &v) in codes.iter().enumerate().take(count) {
            st_i8(&mut dst[16 * i..], vreinterpretq_s8_u8(vsubq_u8(v, one)));
        }
        dst[16 * count..].fill(0);
        if !job.codes.is_i2s() {
            let bytes = job.row_bytes / job.chunks;
            scales[c] = tq_scale(&row[c * bytes..(c + 1) * bytes]);
        }
    }
}

/// Rows are decoded this many at a time for the many-token product (16 rows of 6912 codes are
/// 108 KiB: they stay in L2 while every token passes over them).
const GEMM_ROWS: usize = 16;

/// How a micro-kernel wants rows (and tokens) laid out in the scratch block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Each row in element order, `stride` bytes apart.
    Plain,
    /// Rows in pairs (`2·stride` bytes per pair): per 16 elements 32 bytes, the first row's
    /// elements 0..8, the second's 0..8, the first's 8..16, the second's 8..16 (two 2×8 int8
    /// matrices, as `smmla` reads them).
    Pairs,
}

/// Writes rows `src[i·stride ..]` (`count` of them, a multiple of 2) into `dst` in
/// [`Layout::Pairs`].
#[target_feature(enable = "neon")]
fn pair_up(src: &[i8], stride: usize, count: usize, dst: &mut [i8]) {
    for p in 0..count / 2 {
        let (a, b) = (&src[2 * p * stride..][..stride], &src[(2 * p + 1) * stride..][..stride]);
        let out = &mut dst[2 * p * stride..][..2 * stride];
        for (k, o) in out.chunks_exact_mut(32).enumerate() {
            o[..8].copy_from_slice(&a[16 * k..16 * k + 8]);
            o[8..16].copy_from_slice(&b[16 * k..16 * k + 8]);
            o[16..24].copy_from_slice(&a[16 * k + 8..16 * k + 16]);
            o[24..].copy_from_slice(&b[16 * k + 8..16 * k + 16]);
        }
    }
}

thread_local! {
    static ROWS: std::cell::Cell<Vec<i8>> = const { std::cell::Cell::new(Vec::new()) };
    static PLAIN: std::cell::Cell<Vec<i8>> = const { std::cell::Cell::new(Vec::new()) };
    static TOKENS: std::cell::Cell<Vec<i8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The many-token product on a micro-kernel `tile(w, a, stride, k)` that returns the exact
/// `Σ_{e ∈ k} w_r[e]·a_t[e]` of `R` rows and `T` tokens laid out as `layout` says, starting at
/// `w` and `a`. Rows are decoded once per block of [`GEMM_ROWS`] to signed ternary values (so no
/// code offset is left to undo), tokens are padded with zeros to a multiple of `T`, rows to a
/// multiple of `R`. I2_S sums the whole row in i32; the TQ formats take `tile` per 256-block and
/// sum `dot as f32 · d` in block order, the reference's float steps.
#[target_feature(enable = "neon")]
pub(crate) fn gemm_tiled<const R: usize, const T: usize>(
    layout: Layout,
    job: &Job<'_>,
    rows: Range<usize>,
    acts: &[i8],
    stride: usize,
    dots: &mut [f32],
    tile: impl Fn(&[i8], &[i8], usize, Range<usize>) -> [[i32; T]; R],
) {
    let n = acts.len() / stride;
    let len = rows.len();
    let padded = n.div_ceil(T) * T;
    let mut tokens = take_scratch(&TOKENS, padded * stride);
    if layout == Layout::Plain {
        tokens[..n * stride].copy_from_slice(&acts[..n * stride]);
    } else {
        pair_up(acts, stride, n & !1, &mut tokens);
        if n % 2 == 1 {
            // The last token pairs with a zero token.
            let mut pair = vec![0i8; 2 * stride];
            pair[..stride].copy_from_slice(&acts[(n - 1) * stride..n * stride]);
            pair_up(&pair, stride, 2, &mut tokens[(n - 1) * stride..]);
        }
    }
    let first_pad = if layout == Layout::Pairs { n.next_multiple_of(2) } else { n };
    tokens[first_pad * stride..].fill(0);

    let mut plain = take_scratch(&PLAIN, GEMM_ROWS * stride);
    let paired = if layout == Layout::Pairs { GEMM_ROWS * stride } else { 0 };
    let mut block = take_scratch(&ROWS, paired);
    let mut scales = vec![0f32; GEMM_ROWS * job.chunks];
    let tq = !job.codes.is_i2s();
    let mut b0 = rows.start;
    while b0 < rows.end {
        let nb = GEMM_ROWS.min(rows.end - b0);
        let nbp = nb.div_ceil(R) * R;
        for i in 0..nb {
            let sc = &mut scales[i * job.chunks..(i + 1) * job.chunks];
            decode_row(job, b0 + i, &mut plain[i * stride..(i + 1) * stride], sc);
        }
        plain[nb * stride..nbp * stride].fill(0);
        // Plain rows are used as decoded; pairs are interleaved into a second buffer.
        let w_block: &[i8] = if layout == Layout::Plain {
            &plain
        } else {
            pair_up(&plain, stride, nbp, &mut block);
            &block
        };
        for t0 in (0..padded).step_by(T) {
            for r0 in (0..nbp).step_by(R) {
                let (w, a) = (&w_block[r0 * stride..], &tokens[t0 * stride..]);
                let mut out = [[0f32; T]; R];
                if tq {
                    for c in 0..job.chunks {
                        let d = tile(w, a, stride, c * 256..(c + 1) * 256);
                        for (r, (o, d)) in out.iter_mut().zip(&d).enumerate() {
                            let s = scales[(r0 + r) * job.chunks + c];
                            for (o, &d) in o.iter_mut().zip(d) {
                                *o += d as f32 * s;
                            }
                        }
                    }
                } else {
                    let d = tile(w, a, stride, 0..stride);
                    for (o, d) in out.iter_mut().zip(&d) {
                        for (o, &d) in o.iter_mut().zip(d) {
                            *o = d as f32;
                        }
                    }
                }
                for (r, o) in out.iter().enumerate().take(nb.saturating_sub(r0)) {
                    for (t, &v) in o.iter().enumerate().take(n.saturating_sub(t0)) {
                        dots[(t0 + t) * len + (b0 - rows.start) + r0 + r] = v;
                    }
                }
            }
        }
        b0 += nb;
    }
    TOKENS.set(tokens);
    PLAIN.set(plain);
    ROWS.set(block);
}

/// Rows longer than this take the exact-code path in one-token loops: the masked fields of
/// `ternary_loops!` carry codes times up to 16, which keeps i32 lanes exact only below it.
pub(crate) const MASK_LIMIT: usize = 1 << 22;

/// A level's one-token loop from its `mac(acc, c, a)`, `acc` plus the 16 products of `c` and
/// `a`, and `mac2(acc, c0, a0, c1, a1)`, both pairs' 32 products: exact in four i32 lanes for
/// codes up to 32 in magnitude.
///
/// I2_S and TQ2_0 rows are read with each 2-bit field masked in place (`v & 0x30` is 16× the
/// code): one operation per 16 codes instead of a shift and a mask; fields at different scales
/// go to different accumulators, shifted back once per row (or block), exactly.
macro_rules! ternary_loops {
    ($feat:literal) => {
        use bitnet_quant::isa::{Codes, Job, tq_gemv};
        use std::arch::aarch64::*;
        use std::ops::Range;

        use crate::codes::{MASK_LIMIT, chunk_codes, ld, ld_i8};

        /// The four fields of `v` against the activations of their groups: `act(s)` is the
        /// activation slice of the field at shift `s`. Accumulators by scale: 0 and 3 ×1, 1 ×16,
        /// 2 ×4.
        #[target_feature(enable = $feat)]
        #[inline]
        fn fields(acc: &mut [int32x4_t; 4], v: uint8x16_t, act: impl Fn(u32) -> int8x16_t) {
            let s8 = vreinterpretq_s8_u8;
            acc[0] = mac(acc[0], s8(vshrq_n_u8::<6>(v)), act(6));
            acc[1] = mac(acc[1], s8(vandq_u8(v, vdupq_n_u8(0x30))), act(4));
            acc[2] = mac(acc[2], s8(vandq_u8(v, vdupq_n_u8(0x0C))), act(2));
            acc[3] = mac(acc[3], s8(vandq_u8(v, vdupq_n_u8(0x03))), act(0));
        }

        /// [`fields`] over two vectors whose fields pair up (`act(s, j)` for vector `j`): one
        /// `mac2` per scale, which lets a level keep both in narrow lanes before widening.
        #[target_feature(enable = $feat)]
        #[inline]
        fn fields2(acc: &mut [int32x4_t; 4], v: [uint8x16_t; 2], act: impl Fn(u32, usize) -> int8x16_t) {
            let s8 = vreinterpretq_s8_u8;
            let f = |m: u8, j: usize| s8(vandq_u8(v[j], vdupq_n_u8(m)));
            acc[0] = mac2(acc[0], s8(vshrq_n_u8::<6>(v[0])), act(6, 0), s8(vshrq_n_u8::<6>(v[1])), act(6, 1));
            acc[1] = mac2(acc[1], f(0x30, 0), act(4, 0), f(0x30, 1), act(4, 1));
            acc[2] = mac2(acc[2], f(0x0C, 0), act(2, 0), f(0x0C, 1), act(2, 1));
            acc[3] = mac2(acc[3], f(0x03, 0), act(0, 0), f(0x03, 1), act(0, 1));
        }

        /// The exact sum of what [`fields`] accumulated.
        #[target_feature(enable = $feat)]
        #[inline]
        fn combine(acc: &[int32x4_t; 4]) -> i32 {
            let ones = vaddvq_s32(vaddq_s32(acc[0], acc[3]));
            ones.wrapping_add(vaddvq_s32(acc[1]) >> 4).wrapping_add(vaddvq_s32(acc[2]) >> 2)
        }

        /// Σ code·a over the 256-chunk `c` of `row`, codes decoded exactly (TQ1_0, long rows).
        #[target_feature(enable = $feat)]
        #[inline]
        fn chunk_dot(job: &Job<'_>, row: &[u8], c: usize, a: &[i8]) -> int32x4_t {
            let (codes, count) = chunk_codes(job, row, c);
            let mut acc = [vdupq_n_s32(0); 4];
            for (i, &v) in codes.iter().enumerate().take(count) {
                acc[i % 4] = mac(acc[i % 4], vreinterpretq_s8_u8(v), ld_i8(&a[16 * i..]));
            }
            vaddq_s32(vaddq_s32(acc[0], acc[1]), vaddq_s32(acc[2], acc[3]))
        }

        /// One token against many rows, each read front to back.
        #[target_feature(enable = $feat)]
        pub(crate) fn gemv(job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
            match job.codes {
                Codes::I2s | Codes::I2sArm if job.cols < MASK_LIMIT => {
                    for (r, dot) in rows.zip(dots.iter_mut()) {
                        let row = job.row(r);
                        let mut acc = [vdupq_n_s32(0); 4];
                        if job.codes == Codes::I2s {
                            // Field at shift s of vector h: elements 16·(6 − s) + 16h.
                            for (w, a) in row.chunks_exact(32).zip(act.chunks_exact(128)) {
                                let v = [ld(w), ld(&w[16..])];
                                fields2(&mut acc, v, |s, h| ld_i8(&a[16 * (6 - s) as usize + 16 * h..]));
                            }
                        } else {
                            // ARM order, two 64-blocks at a time: field at shift s of block j,
                            // elements 64j + 8·(6 − s).
                            let pairs = row.chunks_exact(32);
                            let odd = pairs.remainder();
                            for (w, a) in pairs.zip(act.chunks_exact(128)) {
                                let v = [ld(w), ld(&w[16..])];
                                fields2(&mut acc, v, |s, j| ld_i8(&a[64 * j + 8 * (6 - s) as usize..]));
                            }
                            if !odd.is_empty() {
                                let a = &act[(row.len() - 16) * 4..];
                                fields(&mut acc, ld(odd), |s| ld_i8(&a[8 * (6 - s) as usize..]));
                            }
                        }
                        *dot = combine(&acc).wrapping_sub(sums[0]) as f32;
                    }
                }
                Codes::Tq2 => tq_gemv(job, rows, act, sums, dots, |block, a| {
                    let mut acc = [vdupq_n_s32(0); 4];
                    // Field at shift s of vector k of half h: elements 128h + 16s + 16k.
                    for h in 0..2 {
                        let v = [ld(&block[32 * h..]), ld(&block[32 * h + 16..])];
                        fields2(&mut acc, v, |s, k| ld_i8(&a[128 * h + 16 * s as usize + 16 * k..]));
                    }
                    combine(&acc)
                }),
                // The level's own (digits, or the digit-free identity where `mac` is `sdot`).
                Codes::Tq1 => tq1_gemv(job, rows, act, sums, dots),
                Codes::I2sRows4 => unreachable!("not accepted: rows in fours"),
                Codes::I2s | Codes::I2sArm => {
                    for (r, dot) in rows.zip(dots.iter_mut()) {
                        let row = job.row(r);
                        let mut acc = vdupq_n_s32(0);
                        for c in 0..job.chunks {
                            acc = vaddq_s32(acc, chunk_dot(job, row, c, &act[c * 256..]));
                        }
                        *dot = vaddvq_s32(acc).wrapping_sub(sums[0]) as f32;
                    }
                }
            }
        }
    };
}
pub(crate) use ternary_loops;
