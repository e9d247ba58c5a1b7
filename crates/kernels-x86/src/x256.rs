//! 256-bit integer helpers every x86 instruction set uses: unaligned loads and stores, the
//! horizontal sum, TQ1_0's base-3 decoding into codes (byte operations; the AVX2 GEMV and every
//! many-token GEMM use it, while the `vpdpbusd` GEMVs never extract a digit) and Q6_K's code
//! assembly. AVX-512 code calls them too (AVX-512 F implies AVX2).

use std::arch::x86_64::*;

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

/// Eight floats from the start of `s`.
#[target_feature(enable = "avx2")]
fn load_f32x8(s: &[f32]) -> __m256 {
    assert!(s.len() >= 8);
    // SAFETY: the slice holds at least eight floats; the load is unaligned.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// `bitnet_quant::act::row_i8s` (bitnet.cpp's activation quantization) in 256-bit registers,
/// bit-identical: the same max (NaN skipped: `vmaxps` returns its second operand, the running
/// max, when the first is NaN), the same f64 scale, each product with NaN made 0, clamped to
/// −128..127 and rounded half to even by `vcvtps2dq` (the default rounding mode, as the
/// reference's 1.5·2²³ trick), 32 codes packed per store. On the baseline ISA (SSE2) the
/// reference ran about two cycles per element, 5% of a 125M-shape prompt.
#[target_feature(enable = "avx2")]
pub(crate) fn quantize_row(x: &[f32], out: &mut [i8]) -> bitnet_quant::ActScale {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    let whole = n / 8 * 8;
    for i in (0..whole).step_by(8) {
        m = _mm256_max_ps(_mm256_and_ps(load_f32x8(&x[i..]), abs), m);
    }
    let mut lanes = [0f32; 8];
    store_f32x8(&mut lanes, m);
    let max = x[whole..].iter().chain(&lanes).fold(0f32, |a, v| a.max(v.abs()));
    let scale = (127.0 / 0.00001f64.max(f64::from(max))) as f32;
    let (s, lo, hi) = (_mm256_set1_ps(scale), _mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    let code = |i: usize| {
        let v = _mm256_mul_ps(load_f32x8(&x[i..]), s);
        let v = _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi))
    };
    let mut sum = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= n {
        let q = [code(i), code(i + 8), code(i + 16), code(i + 24)];
        sum = _mm256_add_epi32(_mm256_add_epi32(sum, _mm256_add_epi32(q[0], q[1])), _mm256_add_epi32(q[2], q[3]));
        // i32 → i16 → i8 within 128-bit lanes, then the 32-bit groups back in order.
        let b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `out[i..]` holds at least 32 bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(out[i..i + 32].as_mut_ptr().cast(), b) };
        i += 32;
    }
    let mut total = hsum(sum);
    for (o, &v) in out[i..].iter_mut().zip(&x[i..]) {
        let q = bitnet_quant::act::round_to_i32(v * scale);
        total += q;
        *o = q as i8;
    }
    bitnet_quant::ActScale { scale, sum: total }
}

#[target_feature(enable = "avx2")]
pub(crate) fn store(dst: &mut [u8], v: __m256i) {
    assert!(dst.len() >= 32);
    // SAFETY: the slice holds at least 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

/// How far ahead of a GEMV's loads the weights are prefetched into L1, in bytes. One core
/// streaming a matrix from memory keeps too few misses in flight on its own (the hardware
/// prefetchers stop at 4 KiB pages, and the ternary loops spend many operations per byte): a
/// prefetch into L1 this far ahead per 64 bytes, and one into L2 [`PREFETCH_L2`] ahead, took a 7B
/// token from 11.6 to ~18 GB/s at one thread (`bitnet bench --profile`; L1 alone: 14.1; L1 at
/// 512 B–8 KiB and L2 at 8–32 KiB tried, interleaved runs, Zen 4).
pub(crate) const PREFETCH: usize = 2048;

/// How far ahead the weights are prefetched into L2.
pub(crate) const PREFETCH_L2: usize = 32 << 10;

/// Prefetches the cache lines [`PREFETCH`] (into L1) and [`PREFETCH_L2`] (into L2) bytes past
/// byte `off` of `s` (hints: they read nothing and cannot fault, whatever the address, so `off`
/// is not checked against `s` and costs no bounds test). Always
/// inlined, so without a target feature (which `#[inline(always)]` refuses): LLVM once left a
/// caller of these out of line and the call per 64 bytes cost the F16 head a third of its
/// speed (Zen 3).
#[inline(always)]
pub(crate) fn prefetch_ahead(s: &[u8], off: usize) {
    hint::<_MM_HINT_T0>(s.as_ptr().wrapping_add(off + PREFETCH));
    prefetch_l2(s, off);
}

/// The four-row I2_S loop's prefetch distances (L1, L2): reading one stream front to back, a
/// harness read 0.95–1.03 of a pure read of the same bytes with these, 0.91–0.97 with
/// [`prefetch_ahead`]'s (alternated, 1 GB, 2560–28672 columns, Xeon VM; docs/kernels.md).
pub(crate) const PREFETCH_STREAM: (usize, usize) = (512, 8 << 10);

/// Prefetches the lines `d1` bytes past `p + off` into L1 and `d2` bytes past into L2 (hints:
/// any address will do, as for [`prefetch_ahead`]).
#[inline(always)]
pub(crate) fn prefetch_two(p: *const u8, off: usize, d1: usize, d2: usize) {
    hint::<_MM_HINT_T0>(p.wrapping_add(off + d1));
    hint::<_MM_HINT_T1>(p.wrapping_add(off + d2));
}

/// Prefetches the cache line [`PREFETCH_L2`] bytes past byte `off` of `s` into L2 only (a hint,
/// as [`prefetch_ahead`]), for loops that read faster than the L1 hint helps: see the dense
/// rows' `ahead` in vecops.rs.
#[inline(always)]
pub(crate) fn prefetch_l2(s: &[u8], off: usize) {
    hint::<_MM_HINT_T1>(s.as_ptr().wrapping_add(off + PREFETCH_L2));
}

/// One prefetch hint.
#[inline(always)]
fn hint<const STRATEGY: i32>(p: *const u8) {
    // SAFETY: `prefetch` needs SSE, part of every x86-64 CPU; a hint reads nothing and cannot
    // fault, whatever the address.
    unsafe { _mm_prefetch::<STRATEGY>(p.cast()) }
}

/// Prefetches for a loop that reads several rows side by side: the line `next` bytes on (the
/// same place in the next group of rows) into L1 and the one 16 KiB beyond that into L2. With
/// eight rows in flight, [`prefetch_ahead`]'s fixed distances land mostly inside the rows being
/// read: TQ2_0 streamed 14.9 GB/s with it, 17.7 with this at 32 KiB, 19.1 at 16 KiB, 18.0 at
/// 8 KiB (best of four interleaved runs each, Zen 4, `benches/examples/stream.rs`).
#[inline(always)]
pub(crate) fn prefetch_rows(s: &[u8], next: usize) {
    hint::<_MM_HINT_T0>(s.as_ptr().wrapping_add(next));
    hint::<_MM_HINT_T1>(s.as_ptr().wrapping_add(next + PREFETCH_L2 / 2));
}

#[target_feature(enable = "avx2")]
pub(crate) fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Lane `j` of the result is the sum of the eight lanes of `v[j]` (three horizontal adds and one
/// of the halves, for four sums).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum4(v: [__m256i; 4]) -> __m128i {
    let s = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
}

/// The 8 × 8 transpose of 32-bit lanes: lane `r` of result `j` is lane `j` of `c[r]`. Written
/// out without nested calls so that it inlines into the AVX-512 loops too (through a helper
/// that did not inline, the registers went through memory).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn transpose_dwords8(c: [__m256i; 8]) -> [__m256i; 8] {
    let p: [__m256i; 8] = std::array::from_fn(|i| {
        let (a, b) = (c[2 * (i / 2)], c[2 * (i / 2) + 1]);
        if i % 2 == 0 { _mm256_unpacklo_epi32(a, b) } else { _mm256_unpackhi_epi32(a, b) }
    });
    // p[2k]: lanes (r0 j0, r1 j0, r0 j1, r1 j1 | j4, j5) of rows 2k, 2k+1; p[2k+1]: j2, j3 | j6, j7.
    let q: [__m256i; 8] = std::array::from_fn(|i| {
        let (a, b) = if i < 4 { (p[i % 2], p[2 + i % 2]) } else { (p[4 + i % 2], p[6 + i % 2]) };
        if (i / 2) % 2 == 0 { _mm256_unpacklo_epi64(a, b) } else { _mm256_unpackhi_epi64(a, b) }
    });
    // q[i] (i < 4): column (0, 2, 1, 3)[i] of rows 0..4 | that column + 4; q[4 + i]: rows 4..8.
    std::array::from_fn(|j| {
        let m = [0, 2, 1, 3][j % 4];
        if j < 4 {
            _mm256_permute2x128_si256::<0x20>(q[m], q[4 + m])
        } else {
            _mm256_permute2x128_si256::<0x31>(q[m], q[4 + m])
        }
    })
}

/// The f16 scales at the start of block `at` of eight rows `offsets` bytes apart (one gather of
/// the first four bytes per row, their low halves packed), as f32.
///
/// # Safety
/// The four bytes at `at + offsets[r]` must be readable for every lane `r`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn f16_scales8(at: *const u8, offsets: __m256i) -> __m256 {
    let low_halves = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1,
        -1,
    );
    // SAFETY: the caller guarantees each lane's four bytes.
    let d = unsafe { _mm256_i32gather_epi32::<1>(at.cast(), offsets) };
    let d = _mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi8(d, low_halves));
    _mm256_cvtph_ps(_mm256_castsi256_si128(d))
}

/// Lane `j` of the result is the sum of the eight lanes of `v[j]`.
#[target_feature(enable = "avx2")]
pub(crate) fn transpose_sum8(v: [__m256i; 8]) -> __m256i {
    // hadd pairs within 128-bit halves: after two rounds lane j of each half holds v[j]'s
    // (low | high) half sums for four vectors; the halves of the two results are then added.
    let (a, b) = (_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let (c, d) = (_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    let (ab, cd) = (_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(ab, cd), _mm256_permute2x128_si256::<0x31>(ab, cd))
}

/// The sum of the eight lanes of `v`.
#[target_feature(enable = "avx2")]
pub(crate) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Lane `j` of the result is the sum of the eight lanes of `v[j]`: pairs within 128-bit halves,
/// then quads, then the halves (17 operations for eight sums, against 5 for each alone).
#[target_feature(enable = "avx2")]
pub(crate) fn sum_lanes8(v: [__m256; 8]) -> __m256 {
    let a: [__m256; 4] = std::array::from_fn(|j| {
        let (x, y) = (v[2 * j], v[2 * j + 1]);
        _mm256_add_ps(_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y))
    });
    let b: [__m256; 2] = std::array::from_fn(|j| {
        let (x, y) = (a[2 * j], a[2 * j + 1]);
        _mm256_add_ps(_mm256_shuffle_ps::<0b01_00_01_00>(x, y), _mm256_shuffle_ps::<0b11_10_11_10>(x, y))
    });
    _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(b[0], b[1]), _mm256_permute2f128_ps::<0x31>(b[0], b[1]))
}

#[target_feature(enable = "avx2")]
pub(crate) fn store_f32x8(dst: &mut [f32; 8], v: __m256) {
    // SAFETY: the array holds 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
}

/// Eight f16 bit patterns as f32.
#[target_feature(enable = "avx2,f16c")]
pub(crate) fn f16x8(h: &[u16; 8]) -> __m256 {
    // SAFETY: the array holds 16 bytes; the load is unaligned.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr().cast()) })
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

/// Three times the bytes of `x` (`x + x + x`, wrapping): from `q·3^k mod 256` the next digit's
/// `q·3^(k+1) mod 256`. Hidden from the optimizer: LLVM folds chains of these byte adds into
/// 16-bit multiplies of the first register, widened to 512 bits and narrowed back (7.2 against
/// 8.9 GB/s in cache, AVX-512 TQ1_0 loop).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn times3(x: __m256i) -> __m256i {
    let mut y = _mm256_add_epi8(x, _mm256_add_epi8(x, x));
    // SAFETY: the asm block is empty; it reads and writes only the register holding `y`.
    unsafe { std::arch::asm!("/* {0} */", inout(ymm_reg) y, options(pure, nomem, nostack, preserves_flags)) };
    y
}

/// TQ1_0's digit of bytes `x = q·3^k mod 256`, given biased as `y = x ^ 0x80` (see
/// [`biased`]): `(3x) >> 8`, which is 1 from x = 86 and 2 from x = 171 on, so the sum of the
/// signed tests y > 85 − 128 and y > 170 − 128, each −1 or 0, negated: four byte operations (the
/// unsigned form, two saturating subtractions clamped to 1, became six in LLVM's hands:
/// `vpmaxub` + `vpcmpeqb` + `vpand` per threshold).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn digit_of(y: __m256i) -> __m256i {
    let ge86 = _mm256_cmpgt_epi8(y, _mm256_set1_epi8((85_i32 - 128) as i8));
    let ge171 = _mm256_cmpgt_epi8(y, _mm256_set1_epi8((170_i32 - 128) as i8));
    _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), ge86), ge171)
}

/// Bytes `x` as `x ^ 0x80`, the form [`digit_of`] tests with signed compares. The bias survives
/// [`times3`]: (x + 128)·3 = 3x + 384 ≡ 3x + 128 (mod 256), so a chain of digits is biased once.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn biased(x: __m256i) -> __m256i {
    _mm256_xor_si256(x, _mm256_set1_epi8(i8::MIN))
}

/// The 256 codes (0, 1, 2) of one 54-byte TQ1_0 block in element order, 32 per register. Each
/// digit comes from the previous one's bytes by [`times3`] and [`digit_of`] (byte operations; with
/// `trits`' 16-bit multiplies for every register, AVX2's one-token loop read 4.1 GB/s in cache).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn tq1_codes(block: &[u8]) -> [__m256i; 8] {
    let mut out = [_mm256_setzero_si256(); 8];
    // Bytes 0..32: digit k of byte m is element 32k + m.
    let mut x = biased(load(block));
    for (k, out) in out[..5].iter_mut().enumerate() {
        if k > 0 {
            x = times3(x);
        }
        *out = digit_of(x);
    }
    // Bytes 32..48: digit k of byte m is element 160 + 16k + m; bytes 48..52: digit k of byte j
    // is element 240 + 4k + j. So 32 consecutive codes are two digits of the 16 bytes, or the
    // last digit of the 16 bytes and the four bytes repeated with their four powers.
    assert!(block.len() >= 52);
    // SAFETY: the block holds bytes 32..48 (asserted above); the load is unaligned.
    let tail = unsafe { _mm_loadu_si128(block[32..48].as_ptr().cast()) };
    let qh = _mm_set1_epi32(i32::from_le_bytes([block[48], block[49], block[50], block[51]]));
    // Digits 0 | 1 of the 16 bytes, then 2 | 3.
    let both = biased(_mm256_set_m128i(tail, tail));
    let x01 = _mm256_blend_epi32::<0xF0>(both, times3(both));
    out[5] = digit_of(x01);
    out[6] = digit_of(times3(times3(x01)));
    // The last digit of the 16 bytes beside the four `qh` bytes, each dword with its own power
    // of three: the one register left to `trits`' multiplies (by byte operations it needs a chain
    // of both halves, two cross-lane moves and four blends: no fewer operations).
    let last_pow =
        _mm256_set_m128i(_mm_setr_epi8(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27), _mm_set1_epi8(81));
    out[7] = trits(_mm256_set_m128i(qh, tail), last_pow);
    out
}

/// The 52 code bytes of one TQ1_0 block of eight rows, one lane per row: lane `r` of each register
/// holds four bytes of row `r`. `head[m]`: bytes `4m .. 4m + 4` (digit `k` of byte `4m + j` is
/// element `32k + 4m + j`); `tail[m]`: bytes `32 + 4m ..` (element `160 + 16k + 4m + j`); `qh`:
/// bytes 48..52 (element `240 + 4k + j`). So digit `k` of a register meets one dword of
/// activations broadcast to every lane.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn tq1_lanes8(
    blocks: &[&[u8; bitnet_quant::tq::TQ1_0_BLOCK_BYTES]; 8],
) -> ([__m256i; 8], [__m256i; 4], __m256i) {
    // Bytes 0..32: digit k of byte 4m + j is element 32k + 4m + j.
    let head = transpose_dwords8(blocks.map(|b| load(b)));
    // Bytes 32..48: digit k of byte 32 + 4m + j is element 160 + 16k + 4m + j. Rows i and
    // i + 4 share a register (halves), then a 4 × 4 transpose of dwords in each half.
    // SAFETY: every block holds 54 bytes; the loads are unaligned.
    let mid = blocks.map(|b| unsafe { _mm_loadu_si128(b[32..48].as_ptr().cast()) });
    let m: [__m256i; 4] = std::array::from_fn(|i| _mm256_set_m128i(mid[i + 4], mid[i]));
    let t = [
        _mm256_unpacklo_epi32(m[0], m[1]),
        _mm256_unpackhi_epi32(m[0], m[1]),
        _mm256_unpacklo_epi32(m[2], m[3]),
        _mm256_unpackhi_epi32(m[2], m[3]),
    ];
    let tail = [
        _mm256_unpacklo_epi64(t[0], t[2]),
        _mm256_unpackhi_epi64(t[0], t[2]),
        _mm256_unpacklo_epi64(t[1], t[3]),
        _mm256_unpackhi_epi64(t[1], t[3]),
    ];
    // Bytes 48..52 (qh): digit k of byte j is element 240 + 4k + j.
    let qh = blocks.map(|b| i32::from_le_bytes([b[48], b[49], b[50], b[51]]));
    let qh = _mm256_setr_epi32(qh[0], qh[1], qh[2], qh[3], qh[4], qh[5], qh[6], qh[7]);
    (head, tail, qh)
}

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

/// The wrapping sum of `buf` in eight 256-bit accumulators (many loads in flight).
#[target_feature(enable = "avx2")]
pub(crate) fn sum_u64(buf: &[u64]) -> u64 {
    let mut acc = [_mm256_setzero_si256(); 8];
    let blocks = buf.chunks_exact(32);
    let tail = blocks.remainder();
    for b in blocks {
        for (i, a) in acc.iter_mut().enumerate() {
            let v: &[u64; 4] = b[4 * i..4 * i + 4].try_into().expect("4 lanes");
            // SAFETY: `v` is 32 readable bytes; the load is unaligned.
            *a = _mm256_add_epi64(*a, unsafe { _mm256_loadu_si256(v.as_ptr().cast()) });
        }
    }
    let mut s = acc[0];
    for a in &acc[1..] {
        s = _mm256_add_epi64(s, *a);
    }
    let mut lanes = [0u64; 4];
    // SAFETY: `lanes` is 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s) };
    lanes.iter().chain(tail).fold(0u64, |a, &b| a.wrapping_add(b))
}
