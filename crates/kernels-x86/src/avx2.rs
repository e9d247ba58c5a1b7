//! AVX2 inner loop: one 32-byte load holds a 128-weight I2_S block (or half a TQ2_0 block) whose
//! four code groups line up with 32 consecutive activations each, so activations stay in their
//! natural order. `vpmaddubsw` multiplies unsigned codes by int8 activations into i16 pairs
//! (|sum| ≤ 2·2·128, four groups ≤ 2048: no saturation), `vpmaddwd` widens to i32.

use std::arch::x86_64::*;

use crate::ternary::{Codes, Isa, Job};

pub(crate) struct Avx2;

impl Isa for Avx2 {
    fn prepare(a: &[i8], out: &mut [i8]) {
        out[..a.len()].copy_from_slice(a);
        out[a.len()..].fill(0);
    }

    unsafe fn tile<const R: usize, const T: usize>(
        job: &Job<'_>,
        row0: usize,
        acts: [&[i8]; T],
        sums: [&[i32]; T],
    ) -> [[f32; T]; R] {
        // SAFETY: the caller guarantees AVX2.
        unsafe { tile::<R, T>(job, row0, acts, sums) }
    }

    unsafe fn gemv(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
        // SAFETY: the caller guarantees AVX2.
        unsafe { gemv(job, rows, act, sums, dots) }
    }
}

#[target_feature(enable = "avx2")]
pub(crate) fn load(s: &[u8]) -> __m256i {
    assert!(s.len() >= 32);
    // SAFETY: the slice holds at least 32 bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
pub(crate) fn load_i8(s: &[i8]) -> __m256i {
    assert!(s.len() >= 32);
    // SAFETY: the slice holds at least 32 bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
pub(crate) fn store(dst: &mut [u8], v: __m256i) {
    assert!(dst.len() >= 32);
    // SAFETY: the slice holds at least 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// The four 2-bit code groups of 32 bytes, in element order.
#[target_feature(enable = "avx2")]
fn decode(v: __m256i, codes: Codes) -> [__m256i; 4] {
    let m = _mm256_set1_epi8(3);
    let (s2, s4, s6) = (_mm256_srli_epi16::<2>(v), _mm256_srli_epi16::<4>(v), _mm256_srli_epi16::<6>(v));
    match codes {
        Codes::I2s => {
            [_mm256_and_si256(s6, m), _mm256_and_si256(s4, m), _mm256_and_si256(s2, m), _mm256_and_si256(v, m)]
        }
        Codes::Tq2 => {
            [_mm256_and_si256(v, m), _mm256_and_si256(s2, m), _mm256_and_si256(s4, m), _mm256_and_si256(s6, m)]
        }
        Codes::Tq1 => unreachable!("TQ1_0 is decoded by tq1_block_dot"),
    }
}

/// Base-3 digit of each byte of `q` picked by the per-byte power of three in `pow`, as TQ1_0
/// stores it: `((q·3^k mod 256)·3) >> 8` (a digit 0..2 = ternary value + 1), in 16-bit lanes.
#[target_feature(enable = "avx2")]
fn trits(q: __m256i, pow: __m256i) -> __m256i {
    let zero = _mm256_setzero_si256();
    let digit = |q16: __m256i, p16: __m256i| {
        let m = _mm256_and_si256(_mm256_mullo_epi16(q16, p16), _mm256_set1_epi16(0xFF));
        _mm256_srli_epi16::<8>(_mm256_mullo_epi16(m, _mm256_set1_epi16(3)))
    };
    let lo = digit(_mm256_unpacklo_epi8(q, zero), _mm256_unpacklo_epi8(pow, zero));
    let hi = digit(_mm256_unpackhi_epi8(q, zero), _mm256_unpackhi_epi8(pow, zero));
    _mm256_packus_epi16(lo, hi)
}

/// The 256 codes (0, 1, 2) of one 54-byte TQ1_0 block in element order, 32 per register.
#[target_feature(enable = "avx2")]
pub(crate) fn tq1_codes(block: &[u8]) -> [__m256i; 8] {
    let mut out = [_mm256_setzero_si256(); 8];
    // Bytes 0..32: digit k of byte m is element 32k + m.
    let qs = load(block);
    for (k, p) in [1i8, 3, 9, 27, 81].into_iter().enumerate() {
        out[k] = trits(qs, _mm256_set1_epi8(p));
    }
    // Bytes 32..48: digit k of byte m is element 160 + 16k + m; bytes 48..52: digit k of byte j
    // is element 240 + 4k + j. So 32 consecutive codes are two digits of the 16 bytes, or the
    // last digit of the 16 bytes and the four bytes repeated with their four powers.
    assert!(block.len() >= 52);
    // SAFETY: the block holds bytes 32..48 (asserted above); the load is unaligned.
    let tail = unsafe { _mm_loadu_si128(block[32..48].as_ptr().cast()) };
    let qh = _mm_set1_epi32(i32::from_le_bytes([block[48], block[49], block[50], block[51]]));
    let both = _mm256_set_m128i(tail, tail);
    let pair = |lo: i8, hi: i8| _mm256_set_m128i(_mm_set1_epi8(hi), _mm_set1_epi8(lo));
    out[5] = trits(both, pair(1, 3));
    out[6] = trits(both, pair(9, 27));
    let last_pow =
        _mm256_set_m128i(_mm_setr_epi8(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27), _mm_set1_epi8(81));
    out[7] = trits(_mm256_set_m128i(qh, tail), last_pow);
    out
}

/// Σ code·a over one 54-byte TQ1_0 block and 256 activations in element order.
#[target_feature(enable = "avx2")]
fn tq1_block_dot(block: &[u8], a: &[i8]) -> i32 {
    let ones = _mm256_set1_epi16(1);
    assert!(a.len() >= 256);
    let mut acc = _mm256_setzero_si256();
    for (i, codes) in tq1_codes(block).into_iter().enumerate() {
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(codes, load_i8(&a[32 * i..])), ones));
    }
    hsum(acc)
}

/// TQ1_0 rows against one token's activations (element order): `dots[i] = Σ_block (Σ t·a)·d`.
#[target_feature(enable = "avx2")]
pub(crate) fn gemv_tq1(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    const B: usize = bitnet_quant::tq::TQ1_0_BLOCK_BYTES;
    for (r, dot) in rows.zip(dots.iter_mut()) {
        let row = job.row(r);
        let mut sum = 0f32;
        for c in 0..job.chunks {
            let block = &row[c * B..(c + 1) * B];
            let d = half::f16::from_le_bytes([block[52], block[53]]).to_f32();
            sum += (tq1_block_dot(block, &act[c * 256..]) - sums[c]) as f32 * d;
        }
        *dot = sum;
    }
}

/// Σ code·a over one 128-weight block, as eight i32 lanes.
#[target_feature(enable = "avx2")]
fn block_dot(q: &[__m256i; 4], a: &[i8]) -> __m256i {
    let mut s = _mm256_setzero_si256();
    for (g, &qg) in q.iter().enumerate() {
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(qg, load_i8(&a[g * 32..])));
    }
    _mm256_madd_epi16(s, _mm256_set1_epi16(1))
}

/// One token against many rows, each read front to back, two accumulators (see avx512.rs).
#[target_feature(enable = "avx2")]
fn gemv(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    let zero = _mm256_setzero_si256();
    match job.codes {
        Codes::I2s => {
            // Two 128-weight blocks per step into two accumulators (an index computed from the
            // block number kept them in memory); each block's i16 sums are widened at once, so
            // no i16 sum can overflow.
            for (r, dot) in rows.zip(dots.iter_mut()) {
                let row = job.row(r);
                let (mut acc0, mut acc1) = (zero, zero);
                let mut pairs = row.chunks_exact(64);
                for (w, a) in (&mut pairs).zip(act.chunks_exact(256)) {
                    acc0 = _mm256_add_epi32(acc0, block_dot(&decode(load(w), Codes::I2s), a));
                    acc1 = _mm256_add_epi32(acc1, block_dot(&decode(load(&w[32..]), Codes::I2s), &a[128..]));
                }
                if !pairs.remainder().is_empty() {
                    let b = row.len() / 64 * 64;
                    acc0 = _mm256_add_epi32(acc0, block_dot(&decode(load(&row[b..]), Codes::I2s), &act[b * 4..]));
                }
                *dot = (hsum(_mm256_add_epi32(acc0, acc1)) - sums[0]) as f32;
            }
        }
        Codes::Tq2 => {
            for (r, dot) in rows.zip(dots.iter_mut()) {
                let row = job.row(r);
                let mut sum = 0f32;
                for c in 0..job.chunks {
                    let block = &row[c * 66..c * 66 + 66];
                    let a = &act[c * 256..];
                    let lo = block_dot(&decode(load(block), Codes::Tq2), a);
                    let hi = block_dot(&decode(load(&block[32..]), Codes::Tq2), &a[128..]);
                    let d = half::f16::from_le_bytes([block[64], block[65]]).to_f32();
                    sum += (hsum(_mm256_add_epi32(lo, hi)) - sums[c]) as f32 * d;
                }
                *dot = sum;
            }
        }
        Codes::Tq1 => gemv_tq1(job, rows, act, sums, dots),
    }
}

#[target_feature(enable = "avx2")]
fn tile<const R: usize, const T: usize>(
    job: &Job<'_>,
    row0: usize,
    acts: [&[i8]; T],
    sums: [&[i32]; T],
) -> [[f32; T]; R] {
    let zero = _mm256_setzero_si256();
    let mut acc = [[zero; T]; R];
    let mut dots = [[0f32; T]; R];
    for r in 0..R {
        let row = job.row(row0 + r);
        for c in 0..job.chunks {
            match job.codes {
                Codes::I2s => {
                    let halves = if job.half_tail && c + 1 == job.chunks { 1 } else { 2 };
                    for h in 0..halves {
                        let q = decode(load(&row[c * 64 + h * 32..]), Codes::I2s);
                        for t in 0..T {
                            let d = block_dot(&q, &acts[t][c * 256 + h * 128..]);
                            acc[r][t] = _mm256_add_epi32(acc[r][t], d);
                        }
                    }
                }
                Codes::Tq2 => {
                    let block = &row[c * 66..c * 66 + 66];
                    let q = [decode(load(block), Codes::Tq2), decode(load(&block[32..]), Codes::Tq2)];
                    let d = half::f16::from_le_bytes([block[64], block[65]]).to_f32();
                    for t in 0..T {
                        let a = &acts[t][c * 256..];
                        let s = _mm256_add_epi32(block_dot(&q[0], a), block_dot(&q[1], &a[128..]));
                        dots[r][t] += (hsum(s) - sums[t][c]) as f32 * d;
                    }
                }
                Codes::Tq1 => unreachable!("TQ1_0 runs through gemv"),
            }
        }
        if job.codes == Codes::I2s {
            for t in 0..T {
                dots[r][t] = (hsum(acc[r][t]) - sums[t][0]) as f32;
            }
        }
    }
    dots
}

#[target_feature(enable = "avx2,fma,f16c")]
fn load_f32(s: &[f32]) -> __m256 {
    assert!(s.len() >= 8);
    // SAFETY: the slice holds at least 8 floats; the load is unaligned.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// 8 halves from 16 bytes, widened to f32.
#[target_feature(enable = "avx2,fma,f16c")]
fn load_f16(s: &[u8]) -> __m256 {
    assert!(s.len() >= 16);
    // SAFETY: the slice holds at least 16 bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(s.as_ptr().cast()) })
}

/// 8 int8 from 8 bytes, widened to f32.
#[target_feature(enable = "avx2,fma,f16c")]
fn load_q8(s: &[u8]) -> __m256 {
    assert!(s.len() >= 8);
    // SAFETY: the slice holds at least 8 bytes; `_mm_loadl_epi64` reads exactly 8.
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(s.as_ptr().cast()) }))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    for (b, (block, xb)) in w.chunks_exact(34).zip(x.chunks_exact(32)).enumerate() {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let mut p = _mm256_mul_ps(load_q8(&block[2..]), load_f32(xb));
        for k in 1..4 {
            p = _mm256_fmadd_ps(load_q8(&block[2 + 8 * k..]), load_f32(&xb[8 * k..]), p);
        }
        acc[b % 2] = _mm256_fmadd_ps(p, _mm256_set1_ps(d), acc[b % 2]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

crate::vecops::f32_kernels!(
    "avx2,fma,f16c",
    "avx2-fma",
    8,
    __m256,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_storeu_ps,
    hsum_ps
);

/// The 128 six-bit codes of half `h` (0 or 1) of a Q6_K block, minus 32, as four registers of 32
/// signed bytes: register `k` holds elements `32k .. 32k + 32` of the half. Each code is its low
/// nibble (`ql`) or'd with two high bits (`qh`), assembled with byte operations.
#[target_feature(enable = "avx2")]
pub(crate) fn q6k_codes(block: &[u8], h: usize) -> [__m256i; 4] {
    let (m4, m3, off) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3), _mm256_set1_epi8(32));
    let (l0, l1, hh) = (load(&block[h * 64..]), load(&block[h * 64 + 32..]), load(&block[128 + h * 32..]));
    let hi = |v: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(v, m3));
    let q = [
        _mm256_or_si256(_mm256_and_si256(l0, m4), hi(hh)),
        _mm256_or_si256(_mm256_and_si256(l1, m4), hi(_mm256_srli_epi16::<2>(hh))),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l0), m4), hi(_mm256_srli_epi16::<4>(hh))),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4), hi(_mm256_srli_epi16::<6>(hh))),
    ];
    q.map(|v| _mm256_sub_epi8(v, off))
}

/// Σ w·x over a Q6_K row: codes from [`q6k_codes`], widened 8 at a time, one scale per 16.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q6_k(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    for (block, xb) in w.chunks_exact(210).zip(x.chunks_exact(256)) {
        let d = half::f16::from_le_bytes([block[208], block[209]]).to_f32();
        for h in 0..2 {
            for (k, qk) in q6k_codes(block, h).into_iter().enumerate() {
                let halves = [_mm256_castsi256_si128(qk), _mm256_extracti128_si256::<1>(qk)];
                for j in 0..4 {
                    let src = halves[j / 2];
                    let bytes = if j % 2 == 0 { src } else { _mm_srli_si128::<8>(src) };
                    let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                    let scale = d * f32::from(block[192 + h * 8 + j / 2 + 2 * k] as i8);
                    let xi = &xb[h * 128 + 32 * k + 8 * j..];
                    acc[j % 2] = _mm256_fmadd_ps(_mm256_mul_ps(v, _mm256_set1_ps(scale)), load_f32(xi), acc[j % 2]);
                }
            }
        }
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

impl crate::dense::DenseIsa for Avx2 {
    unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        // SAFETY: the caller guarantees AVX2, FMA and F16C.
        unsafe { dot_f32(w, x) }
    }
    unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: the caller guarantees AVX2, FMA and F16C.
        unsafe { dot_f16(w, x) }
    }
    unsafe fn dot_q8_0(w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: the caller guarantees AVX2, FMA and F16C.
        unsafe { dot_q8_0(w, x) }
    }

    unsafe fn dot_q6_k(w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: the caller guarantees AVX2, FMA and F16C.
        unsafe { dot_q6_k(w, x) }
    }
}
