//! f32 ops (attention, norms) and dense rows (F16, Q8_0, Q6_K heads and embeddings) on base
//! NEON, the same at every level: four f32 lanes per vector, `fmla` into independent
//! accumulators. F16 is widened with `fcvtl`/`fcvtl2` (base ARMv8 floating point; the intrinsic
//! `vcvt_f32_f16` needs the unstable `f16` type, so it is one `asm!` instruction).
//!
//! Sums run in several lanes, so results differ from the sequential reference by float rounding
//! only (the conformance tests bound it relative to Σ|w·x|).

use std::arch::aarch64::*;

use bitnet_quant::isa::{tail_f16, tail_f32};
use bitnet_quant::vecops::{F32Ops, KvBlock};

/// Four f32 from the front of `s`.
#[target_feature(enable = "neon")]
#[inline]
fn ldf(s: &[f32]) -> float32x4_t {
    assert!(s.len() >= 4);
    // SAFETY: the slice holds at least four floats.
    unsafe { vld1q_f32(s.as_ptr()) }
}

/// Stores four f32 at the front of `d`.
#[target_feature(enable = "neon")]
#[inline]
fn stf(d: &mut [f32], v: float32x4_t) {
    assert!(d.len() >= 4);
    // SAFETY: the slice holds at least four writable floats.
    unsafe { vst1q_f32(d.as_mut_ptr(), v) }
}

/// Eight little-endian f16 (16 bytes) from the front of `s`, widened: (elements 0..4, 4..8).
#[target_feature(enable = "neon")]
#[inline]
fn ld_f16x8(s: &[u8]) -> (float32x4_t, float32x4_t) {
    assert!(s.len() >= 16);
    // SAFETY: the slice holds at least 16 bytes; byte loads need no alignment.
    let h = unsafe { vld1q_u8(s.as_ptr()) };
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: `fcvtl`/`fcvtl2` only read and write these registers (base ARMv8 FP).
    unsafe {
        std::arch::asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    (lo, hi)
}

/// 16 signed bytes widened to four f32 vectors.
#[target_feature(enable = "neon")]
#[inline]
fn widen_i8(q: int8x16_t) -> [float32x4_t; 4] {
    let (lo, hi) = (vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q));
    [
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
        vcvtq_f32_s32(vmovl_high_s16(lo)),
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
        vcvtq_f32_s32(vmovl_high_s16(hi)),
    ]
}

/// Σ w·x over `n` elements, `w(i)` giving weights `i .. i + 8` as two vectors: four
/// accumulators; the tail (< 8) is left to the caller.
#[target_feature(enable = "neon")]
#[inline]
fn dot_lanes(n: usize, x: &[f32], w: impl Fn(usize) -> (float32x4_t, float32x4_t)) -> (f32, usize) {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        let (a, b) = w(i);
        let (c, d) = w(i + 8);
        acc[0] = vfmaq_f32(acc[0], a, ldf(&x[i..]));
        acc[1] = vfmaq_f32(acc[1], b, ldf(&x[i + 4..]));
        acc[2] = vfmaq_f32(acc[2], c, ldf(&x[i + 8..]));
        acc[3] = vfmaq_f32(acc[3], d, ldf(&x[i + 12..]));
        i += 16;
    }
    if i + 8 <= n {
        let (a, b) = w(i);
        acc[0] = vfmaq_f32(acc[0], a, ldf(&x[i..]));
        acc[1] = vfmaq_f32(acc[1], b, ldf(&x[i + 4..]));
        i += 8;
    }
    (vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]))), i)
}

#[target_feature(enable = "neon")]
pub(crate) fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (s, i) = dot_lanes(n, x, |i| (ldf(&w[i..]), ldf(&w[i + 4..])));
    s + tail_f32(&w[i..n], &x[i..n])
}

#[target_feature(enable = "neon")]
pub(crate) fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(w.len() / 2);
    let (s, i) = dot_lanes(n, x, |i| ld_f16x8(&w[2 * i..]));
    s + tail_f16(&w[2 * i..2 * n], &x[i..n])
}

/// Σ w·q over a Q8_0 row (34-byte blocks: f16 d, 32 int8) and a token's activations quantized
/// per block: each block's exact integer sum by widening multiplies (`smull`, pairwise adds into
/// i32 lanes), then scaled by `d_w·d_x` into alternating accumulators.
#[target_feature(enable = "neon")]
pub(crate) fn dot_q8_0(w: &[u8], x: bitnet_quant::Q8Row<'_>) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 2];
    let blocks = w.chunks_exact(34).zip(x.codes.chunks_exact(32)).zip(x.scales);
    for (b, ((block, q), &dx)) in blocks.enumerate() {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32() * dx;
        let mut s = vdupq_n_s32(0);
        for h in 0..2 {
            let wv = vreinterpretq_s8_u8(crate::codes::ld(&block[2 + 16 * h..]));
            // SAFETY: `q` is a whole block of 32 codes; the load is unaligned.
            let qv = unsafe { vld1q_s8(q[16 * h..].as_ptr()) };
            s = vpadalq_s16(s, vmull_s8(vget_low_s8(wv), vget_low_s8(qv)));
            s = vpadalq_s16(s, vmull_high_s8(wv, qv));
        }
        acc[b % 2] = vfmaq_f32(acc[b % 2], vcvtq_f32_s32(s), vdupq_n_f32(d));
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// Σ w·x over a Q6_K row (210-byte blocks of 256: `ql[128]`, `qh[64]`, `scales[16]`, f16 `d`):
/// per half `h` and 16 lanes `l`, the four codes `ql & 15 | (qh & 3) << 4`, … minus 32, one
/// scale per 16 weights.
#[target_feature(enable = "neon")]
pub(crate) fn dot_q6_k(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 2];
    let ld = crate::codes::ld;
    let (m4, m3) = (vdupq_n_u8(0x0F), vdupq_n_u8(3));
    for (block, xb) in w.chunks_exact(210).zip(x.chunks_exact(256)) {
        let d = half::f16::from_le_bytes([block[208], block[209]]).to_f32();
        for h in 0..2 {
            for l in [0, 16] {
                let (la, lb, qh) =
                    (ld(&block[64 * h + l..]), ld(&block[64 * h + 32 + l..]), ld(&block[128 + 32 * h + l..]));
                let hi = |v: uint8x16_t| vshlq_n_u8::<4>(vandq_u8(v, m3));
                let q = [
                    vorrq_u8(vandq_u8(la, m4), hi(qh)),
                    vorrq_u8(vandq_u8(lb, m4), hi(vshrq_n_u8::<2>(qh))),
                    vorrq_u8(vshrq_n_u8::<4>(la), hi(vshrq_n_u8::<4>(qh))),
                    vorrq_u8(vshrq_n_u8::<4>(lb), hi(vshrq_n_u8::<6>(qh))),
                ];
                for (k, q) in q.into_iter().enumerate() {
                    let codes = vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32));
                    let scale = vdupq_n_f32(d * f32::from(block[192 + 8 * h + l / 16 + 2 * k] as i8));
                    let xi = &xb[128 * h + 32 * k + l..];
                    for (j, v) in widen_i8(codes).into_iter().enumerate() {
                        acc[j % 2] = vfmaq_f32(acc[j % 2], vmulq_f32(v, scale), ldf(&xi[4 * j..]));
                    }
                }
            }
        }
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// Implements `bitnet_quant::isa::DenseIsa` for a level's token on these row dot products.
macro_rules! dense_isa {
    ($token:ty) => {
        impl bitnet_quant::isa::DenseIsa for $token {
            fn dot_f32(self, w: &[f32], x: &[f32]) -> f32 {
                // SAFETY: NEON is part of every aarch64 CPU (and the token proves detection).
                unsafe { crate::vecops::dot_f32(w, x) }
            }

            fn dot_f16(self, w: &[u8], x: &[f32]) -> f32 {
                // SAFETY: NEON is part of every aarch64 CPU (and the token proves detection).
                unsafe { crate::vecops::dot_f16(w, x) }
            }

            fn dot_q8_0(self, w: &[u8], x: bitnet_quant::Q8Row<'_>) -> f32 {
                // SAFETY: NEON is part of every aarch64 CPU (and the token proves detection).
                unsafe { crate::vecops::dot_q8_0(w, x) }
            }

            fn dot_q6_k(self, w: &[u8], x: &[f32]) -> f32 {
                // SAFETY: NEON is part of every aarch64 CPU (and the token proves detection).
                unsafe { crate::vecops::dot_q6_k(w, x) }
            }
        }
    };
}
pub(crate) use dense_isa;

/// y += a·x.
#[target_feature(enable = "neon")]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let va = vdupq_n_f32(a);
    let mut i = 0;
    while i + 4 <= n {
        let v = vfmaq_f32(ldf(&y[i..]), va, ldf(&x[i..]));
        stf(&mut y[i..], v);
        i += 4;
    }
    for (y, x) in y[i..n].iter_mut().zip(&x[i..n]) {
        *y += a * x;
    }
}

/// Attention scores: one query against keys `stride` apart.
#[target_feature(enable = "neon")]
fn scores(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
    let hd = q.len();
    for (p, o) in out.iter_mut().enumerate() {
        *o = dot_f32(q, &k[p * stride..p * stride + hd]);
    }
}

/// [`scores`] over f16 keys (little-endian bytes, `stride` in elements).
#[target_feature(enable = "neon")]
fn scores_f16(q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
    let hd = q.len();
    for (p, o) in out.iter_mut().enumerate() {
        *o = dot_f16(&k[2 * p * stride..2 * (p * stride + hd)], q);
    }
}

/// `out += Σ_p w[p]·v_p`, `val(p, e)` giving elements `e .. e + 8` of value `p` as two
/// vectors: 32 columns held in eight registers while every position streams past, then 8 at a
/// time; the columns after the last 8 go to `tail(j0, rest)`.
#[target_feature(enable = "neon")]
#[inline]
fn weighted_sum_by(
    w: &[f32],
    out: &mut [f32],
    val: impl Fn(usize, usize) -> (float32x4_t, float32x4_t),
    tail: impl FnOnce(usize, &mut [f32]),
) {
    let hd = out.len();
    let mut j0 = 0;
    while j0 + 32 <= hd {
        let mut acc: [float32x4_t; 8] = std::array::from_fn(|i| ldf(&out[j0 + 4 * i..]));
        for (p, &wp) in w.iter().enumerate() {
            let b = vdupq_n_f32(wp);
            for i in 0..4 {
                let (x, y) = val(p, j0 + 8 * i);
                acc[2 * i] = vfmaq_f32(acc[2 * i], b, x);
                acc[2 * i + 1] = vfmaq_f32(acc[2 * i + 1], b, y);
            }
        }
        for (i, a) in acc.into_iter().enumerate() {
            stf(&mut out[j0 + 4 * i..], a);
        }
        j0 += 32;
    }
    while j0 + 8 <= hd {
        let mut acc = [ldf(&out[j0..]), ldf(&out[j0 + 4..])];
        for (p, &wp) in w.iter().enumerate() {
            let (x, y) = val(p, j0);
            acc[0] = vfmaq_f32(acc[0], vdupq_n_f32(wp), x);
            acc[1] = vfmaq_f32(acc[1], vdupq_n_f32(wp), y);
        }
        stf(&mut out[j0..], acc[0]);
        stf(&mut out[j0 + 4..], acc[1]);
        j0 += 8;
    }
    if j0 < hd {
        tail(j0, &mut out[j0..]);
    }
}

#[target_feature(enable = "neon")]
fn weighted_sum(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    let hd = out.len();
    weighted_sum_by(
        w,
        out,
        |p, e| (ldf(&v[p * stride + e..p * stride + hd]), ldf(&v[p * stride + e + 4..p * stride + hd])),
        |j0, rest| {
            for (p, &wp) in w.iter().enumerate() {
                axpy(rest, wp, &v[p * stride + j0..p * stride + hd]);
            }
        },
    )
}

#[target_feature(enable = "neon")]
fn weighted_sum_f16(w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
    let hd = out.len();
    weighted_sum_by(
        w,
        out,
        |p, e| ld_f16x8(&v[2 * (p * stride + e)..2 * (p * stride + hd)]),
        |j0, rest| bitnet_quant::vecops::weighted_sum_f16(w, &v[2 * j0..], stride, rest),
    )
}

/// The 32 codes of a KV block as two vectors of 16 signed bytes (elements 0..16, 16..32): Q8_0's
/// as stored, Q4_0's low and high nibbles minus 8.
#[target_feature(enable = "neon")]
#[inline]
fn kv_codes(ty: KvBlock, b: &[u8]) -> [int8x16_t; 2] {
    let ld = crate::codes::ld;
    match ty {
        KvBlock::Q8_0 => [vreinterpretq_s8_u8(ld(&b[2..])), vreinterpretq_s8_u8(ld(&b[18..]))],
        KvBlock::Q4_0 => {
            let (x, eight) = (ld(&b[2..]), vdupq_n_s8(8));
            [
                vsubq_s8(vreinterpretq_s8_u8(vandq_u8(x, vdupq_n_u8(15))), eight),
                vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(x)), eight),
            ]
        }
    }
}

/// Attention scores over block-quantized keys (`bitnet_quant::vecops::scores_kv`): per block the
/// products in two vectors of lanes, then scaled by `d` into alternating accumulators.
#[target_feature(enable = "neon")]
fn scores_kv(ty: KvBlock, q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
    let (bb, nb) = (ty.bytes(), q.len() / 32);
    for (p, o) in out.iter_mut().enumerate() {
        let mut acc = [vdupq_n_f32(0.0); 2];
        for b in 0..nb {
            let blk = &k[p * stride + b * bb..p * stride + (b + 1) * bb];
            let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            let mut s = [vdupq_n_f32(0.0); 2];
            for (h, c) in kv_codes(ty, blk).into_iter().enumerate() {
                for (j, v) in widen_i8(c).into_iter().enumerate() {
                    s[j % 2] = vfmaq_f32(s[j % 2], v, ldf(&q[32 * b + 16 * h + 4 * j..]));
                }
            }
            acc[b % 2] = vfmaq_f32(acc[b % 2], vaddq_f32(s[0], s[1]), vdupq_n_f32(d));
        }
        *o = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    }
}

/// Attention output over block-quantized values (`bitnet_quant::vecops::weighted_sum_kv`): one
/// block (eight vectors of columns) at a time while every position streams past, each
/// position's weight times the block's `d` broadcast.
#[target_feature(enable = "neon")]
fn weighted_sum_kv(ty: KvBlock, w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
    let bb = ty.bytes();
    for (b, ob) in out.chunks_exact_mut(32).enumerate() {
        let mut acc: [float32x4_t; 8] = std::array::from_fn(|i| ldf(&ob[4 * i..]));
        for (p, &wp) in w.iter().enumerate() {
            let blk = &v[p * stride + b * bb..p * stride + (b + 1) * bb];
            let coef = vdupq_n_f32(wp * half::f16::from_le_bytes([blk[0], blk[1]]).to_f32());
            for (h, c) in kv_codes(ty, blk).into_iter().enumerate() {
                for (j, x) in widen_i8(c).into_iter().enumerate() {
                    acc[4 * h + j] = vfmaq_f32(acc[4 * h + j], coef, x);
                }
            }
        }
        for (i, a) in acc.into_iter().enumerate() {
            stf(&mut ob[4 * i..], a);
        }
    }
}

/// The f32 ops of every level (base NEON: any level's token will do).
pub(crate) fn ops<T>(_: T) -> F32Ops {
    bitnet_quant::f32_ops!(
        "neon",
        dot_f32,
        axpy,
        scores,
        weighted_sum,
        scores_f16,
        weighted_sum_f16,
        scores_kv,
        weighted_sum_kv
    )
}
