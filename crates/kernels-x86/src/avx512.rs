//! AVX-512 BW + VNNI inner loop: one 64-byte load holds 256 weights (two 128-blocks of I2_S, or
//! one TQ2_0 block's two halves), decoded with four shift/mask pairs, multiplied by `vpdpbusd`.
//!
//! Lane `l` of the low 256 bits of a decoded group belongs to the first 128-block and lane `l`
//! of the high 256 bits to the second, so activations are prepared per 256 weights as
//! `[blk0 g0 | blk1 g0 | blk0 g1 | blk1 g1 | ...]` (32 bytes each), zero-padded.

use std::arch::x86_64::*;

use crate::Avx512;
use crate::ternary::Interleaved;
use crate::x256;
use bitnet_quant::isa::{Codes, Job, TernaryIsa};

impl TernaryIsa for Avx512 {
    fn accepts(self, codes: Codes) -> bool {
        codes != Codes::I2sArm
    }

    fn quantize_row(self, x: &[f32], out: &mut [i8]) -> bitnet_quant::ActScale {
        // SAFETY: the token exists only if `detect` found AVX-512 (which includes AVX2).
        unsafe { crate::x256::quantize_row(x, out) }
    }

    fn scale_dots(self, dots: &mut [f32], acts: &[bitnet_quant::ActScale], w_scale: Option<f32>) {
        // SAFETY: the token exists only if `detect` found AVX-512.
        unsafe { scale_dots_512(dots, acts, w_scale) }
    }

    fn prepare(self, a: &[i8], out: &mut [i8]) {
        for (c, chunk) in out.chunks_exact_mut(256).enumerate() {
            for (i, dst) in chunk.chunks_exact_mut(32).enumerate() {
                let (g, half) = (i / 2, i % 2);
                let src = c * 256 + half * 128 + g * 32;
                match a.get(src..src + 32) {
                    Some(s) => dst.copy_from_slice(s),
                    None => dst.fill(0),
                }
            }
        }
    }

    fn gemv(self, job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
        // SAFETY: the token exists only if `detect` found AVX-512 F/BW/VL/VNNI.
        unsafe { gemv(job, rows, act, sums, dots) }
    }

    fn gemm(
        self,
        job: &Job<'_>,
        rows: std::ops::Range<usize>,
        acts: &[i8],
        stride: usize,
        sums: &[i32],
        dots: &mut [f32],
    ) {
        // SAFETY: the token exists only if `detect` found AVX-512 F/BW/VL/VNNI.
        unsafe {
            match job.codes {
                // A few tokens (a server's decoding batch): decoded in registers, every row read
                // once for all of them; the many-token path's stored decode costs more than it
                // saves until the rows are shared by many tokens.
                Codes::I2s | Codes::I2sArm | Codes::I2sRows4 if acts.len() / stride <= FEW_TOKENS => {
                    gemm_few(job, rows, acts, stride, sums, dots)
                }
                _ => gemm_many(job, rows, acts, stride, sums, dots),
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn load(s: &[u8]) -> __m512i {
    assert!(s.len() >= 64);
    // SAFETY: the slice holds at least 64 bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn load_i8(s: &[i8]) -> __m512i {
    assert!(s.len() >= 64);
    // SAFETY: the slice holds at least 64 bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

/// Most tokens for [`gemm_few`]; more go to [`gemm_many`].
const FEW_TOKENS: usize = 16;

/// A few tokens against I2_S rows, the codes decoded in registers: two rows × up to eight
/// tokens at a time (16 accumulators, 8 code vectors), so each row is read from memory once per
/// eight tokens and decoded once per 256 weights, and the 16 dot products of a tile are reduced
/// together by [`transpose_sum`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn gemm_few(job: &Job<'_>, rows: std::ops::Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]) {
    let n = acts.len() / stride;
    for t0 in (0..n).step_by(8) {
        let a = &acts[t0 * stride..];
        match n - t0 {
            1 => few::<1>(job, rows.clone(), a, stride, &sums[t0..], t0, dots),
            2 => few::<2>(job, rows.clone(), a, stride, &sums[t0..], t0, dots),
            3 => few::<3>(job, rows.clone(), a, stride, &sums[t0..], t0, dots),
            4 => few::<4>(job, rows.clone(), a, stride, &sums[t0..], t0, dots),
            5 => few::<5>(job, rows.clone(), a, stride, &sums[t0..], t0, dots),
            6 => few::<6>(job, rows.clone(), a, stride, &sums[t0..], t0, dots),
            7 => few::<7>(job, rows.clone(), a, stride, &sums[t0..], t0, dots),
            _ => few::<8>(job, rows.clone(), a, stride, &sums[t0..], t0, dots),
        }
    }
}

/// [`gemm_few`]'s loop for `T` tokens from `t0` (`acts` and `sums` start at token `t0`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn few<const T: usize>(
    job: &Job<'_>,
    rows: std::ops::Range<usize>,
    acts: &[i8],
    stride: usize,
    sums: &[i32],
    t0: usize,
    dots: &mut [f32],
) {
    let len = rows.len();
    let full = if job.half_tail { job.chunks - 1 } else { job.chunks };
    let zero = _mm512_setzero_si512();
    for r in rows.clone().step_by(2) {
        let pair = (rows.end - r).min(2);
        let w = [job.chunk_at(r), job.chunk_at(r + pair - 1)];
        let mut acc = [[zero; T]; 2];
        for c in 0..job.chunks {
            let q: [[__m512i; 4]; 2] = std::array::from_fn(|i| decode(i2s_chunk(job, w[i], c, full), Codes::I2s));
            for (first, step) in w {
                x256::prefetch_ahead(job.data, first + c * step);
            }
            for g in 0..4 {
                for t in 0..T {
                    let x = load_i8(&acts[t * stride + c * 256 + g * 64..]);
                    acc[0][t] = _mm512_dpbusd_epi32(acc[0][t], q[0][g], x);
                    acc[1][t] = _mm512_dpbusd_epi32(acc[1][t], q[1][g], x);
                }
            }
        }
        // Lane k of the reduced vector is row k / 8, token k % 8.
        let v: [[__m512i; 4]; 4] = std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let k = 4 * i + j;
                if k % 8 < T { acc[k / 8][k % 8] } else { zero }
            })
        });
        let mut lanes = [0i32; 16];
        // SAFETY: `lanes` holds 16 i32; the store is unaligned.
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), transpose_sum(&v)) };
        for i in 0..pair {
            for t in 0..T {
                dots[(t0 + t) * len + (r - rows.start) + i] = (lanes[i * 8 + t] - sums[t]) as f32;
            }
        }
    }
}

/// Rows of [`gemm_many`]'s interleaved groups: one 64-byte load holds four codes of each.
const GEMM_ROWS: usize = 16;

/// Many tokens (prompt processing) on every format, through [`crate::ternary::interleaved_gemm`]: 16 rows
/// decoded once (I2_S and TQ2_0 into the prepared activations' order, TQ1_0 into element
/// order), interleaved by [`transpose16`], then up to 16 tokens (TQ, and rows of whole 4 KiB:
/// 8) per load of the interleaved codes, one `vpdpbusd` per token against four broadcast
/// activations. 16 read a group half as often as 8 (`benches/examples/gemm.rs`, Xeon VM, I2_S
/// 6912 × 2560: 213-226 -> 222-240 G multiply-adds/s, 2560 × 6912: 215-231 -> 228-250);
/// TQ2_0, whose float sums take 16 more registers, gained nothing. I2_S keeps one integer
/// sum per row and token; TQ subtracts each block's activation sum, applies the 16 rows' scales
/// and adds the products lane by lane in block order (the reference's roundings).
///
/// The 2-bit formats are interleaved before they are decoded ([`interleave_packed`]): the
/// transpose then moves a quarter of the bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn gemm_many(job: &Job<'_>, rows: std::ops::Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]) {
    let chunks = job.chunks;
    let block_bytes = job.row_bytes / chunks;
    let full = if job.half_tail { chunks - 1 } else { chunks };
    if job.codes != Codes::Tq1 {
        // Nothing to decode but TQ2_0's scales: the interleaving reads the rows.
        let scales_of = |r: usize, _: &mut [u8], scales: &mut [f32]| {
            if job.codes == Codes::Tq2 {
                for (d, block) in scales.iter_mut().zip(job.row(r).chunks_exact(block_bytes)) {
                    *d = half::f16::from_le_bytes([block[block_bytes - 2], block[block_bytes - 1]]).to_f32();
                }
            }
        };
        let inter = |first: usize, _: &[u8], out: &mut [u8]| {
            let n = GEMM_ROWS.min(rows.end - first);
            let group: [Option<usize>; GEMM_ROWS] = std::array::from_fn(|i| (i < n).then_some(first + i));
            interleave_packed(&group, out, job, full)
        };
        return gemm_interleaved(job, rows.clone(), acts, stride, sums, dots, (scales_of, Some(inter)));
    }
    // TQ1_0: base-3 digits decoded to codes in element order, then interleaved.
    let decode_row = |r: usize, dst: &mut [u8], scales: &mut [f32]| {
        for (c, (out, block)) in dst.chunks_exact_mut(256).zip(job.row(r).chunks_exact(block_bytes)).enumerate() {
            for (g, q) in x256::tq1_codes(block).into_iter().enumerate() {
                x256::store(&mut out[g * 32..], q);
            }
            scales[c] = half::f16::from_le_bytes([block[block_bytes - 2], block[block_bytes - 1]]).to_f32();
        }
    };
    gemm_interleaved(job, rows, acts, stride, sums, dots, (decode_row, None::<fn(usize, &[u8], &mut [u8])>));
}

crate::ternary::interleaved_parts!(
    "avx512f,avx512bw,avx512vnni",
    GEMM_ROWS,
    __m512i,
    __m512,
    transpose16,
    load,
    store,
    _mm512_setzero_si512,
    _mm512_setzero_ps,
    _mm512_set1_epi32,
    _mm512_sub_epi32,
    _mm512_cvtepi32_ps,
    _mm512_add_ps,
    _mm512_mul_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    16;
    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15;
    8;
    1 2 3 4 5 6 7
);

/// [`gemm_many`]'s interleaving of a group of rows of 2-bit codes (empty rows past the end are
/// zero codes), transposed as 32-bit words, then decoded: word `j` of a 256-column chunk holds
/// four bytes whose codes `g` are columns `4j .. 4j + 4` of the chunk's decoded vector `g`, so
/// decoding the transposed words gives what transposing the decoded vectors would, at a quarter
/// of the shuffles. Step `64c + 16g + j` of `out` (64 bytes: four codes of each row). I2_S
/// chunks come from [`i2s_chunk`] (either x86 order; the last `full..` one half, zero-padded: its
/// activations are zero); TQ2_0's blocks start with their 64.
#[target_feature(enable = "avx512f,avx512bw")]
fn interleave_packed(group: &[Option<usize>; GEMM_ROWS], out: &mut [u8], job: &Job<'_>, full: usize) {
    let block_bytes = job.row_bytes / job.chunks;
    for c in 0..job.chunks {
        let t = transpose16(std::array::from_fn(|i| match group[i] {
            None => _mm512_setzero_si512(),
            Some(r) if job.codes == Codes::Tq2 => load(&job.row(r)[c * block_bytes..]),
            Some(r) => i2s_chunk(job, job.chunk_at(r), c, full),
        }));
        for (j, &w) in t.iter().enumerate() {
            for (g, v) in decode(w, job.codes).into_iter().enumerate() {
                store(&mut out[(64 * c + 16 * g + j) * 64..], v);
            }
        }
    }
}

/// One 256-block of [`gemm_many`]'s interleaved rows `wb` against `T` tokens' activations,
/// added into `acc`: 64 steps of one load and one `vpdpbusd` per token against four of its
/// activations broadcast to every lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn block_sums<const T: usize>(wb: &[u8], at: &[&[i8; 256]; T], mut acc: [__m512i; T]) -> [__m512i; T] {
    for k in 0..64 {
        let wv = load(&wb[k * 64..k * 64 + 64]);
        for t in 0..T {
            let q = [at[t][4 * k], at[t][4 * k + 1], at[t][4 * k + 2], at[t][4 * k + 3]];
            let av = _mm512_set1_epi32(i32::from_le_bytes(q.map(|b| b as u8)));
            acc[t] = _mm512_dpbusd_epi32(acc[t], wv, av);
        }
    }
    acc
}

crate::ternary::transpose_quads!(
    "avx512f",
    __m512i,
    16,
    _mm512_unpacklo_epi32,
    _mm512_unpackhi_epi32,
    _mm512_unpacklo_epi64,
    _mm512_unpackhi_epi64
);

/// The 16 × 16 transpose of 32-bit lanes: lane `i` of result `j` is lane `j` of `r[i]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    let u = quads(r);
    // Then the 4 × 4 transpose of 128-bit lanes among u[m], u[4 + m], u[8 + m], u[12 + m].
    let mut out = [_mm512_setzero_si512(); 16];
    for m in 0..4 {
        let even = |x, y| _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y);
        let odd = |x, y| _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y);
        let (v0, v1) = (even(u[m], u[4 + m]), odd(u[m], u[4 + m]));
        let (v2, v3) = (even(u[8 + m], u[12 + m]), odd(u[8 + m], u[12 + m]));
        out[m] = even(v0, v2);
        out[8 + m] = odd(v0, v2);
        out[4 + m] = even(v1, v3);
        out[12 + m] = odd(v1, v3);
    }
    out
}

/// Lane `4·r + t` = the sum of all lanes of `v[r][t]` (exact: integer adds).
#[target_feature(enable = "avx512f")]
fn transpose_sum(v: &[[__m512i; 4]; 4]) -> __m512i {
    // Per 128-bit lane: pairs, then quads of vectors.
    let pair = |x: __m512i, y: __m512i| _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y));
    let quad = |x: __m512i, y: __m512i| _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y));
    // q[r]: 128-bit lane k holds lane k's partial sums of v[r][0..4], in order.
    let q: [__m512i; 4] = std::array::from_fn(|r| quad(pair(v[r][0], v[r][1]), pair(v[r][2], v[r][3])));
    // Then across the four 128-bit lanes.
    let lanes = |x: __m512i, y: __m512i| {
        _mm512_add_epi32(_mm512_shuffle_i32x4::<0b10_00_10_00>(x, y), _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y))
    };
    lanes(lanes(q[0], q[1]), lanes(q[2], q[3]))
}

#[target_feature(enable = "avx512f,avx512bw")]
fn store(dst: &mut [u8], v: __m512i) {
    assert!(dst.len() >= 64);
    // SAFETY: the slice holds at least 64 writable bytes; the store is unaligned.
    unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) }
}

/// The low 32 bytes of a register from a 32-byte slice, the rest zero.
#[target_feature(enable = "avx512f,avx512bw")]
fn load_half(s: &[u8]) -> __m512i {
    assert!(s.len() >= 32);
    // SAFETY: only the 32 bytes selected by the mask are read (AVX-512 masked loads do not
    // touch masked-off memory), and the slice holds them.
    unsafe { _mm512_maskz_loadu_epi8(0xFFFF_FFFF, s.as_ptr().cast()) }
}

/// The codes of 256-chunk `c` of the I2_S row whose chunks start at `(first, step)`
/// ([`Job::chunk_at`], either x86 order; a chunk at or past `full`, the row's last half one,
/// zero-padded).
#[target_feature(enable = "avx512f,avx512bw")]
fn i2s_chunk(job: &Job<'_>, (first, step): (usize, usize), c: usize, full: usize) -> __m512i {
    if c >= full { load_half(&job.data[first + c * step..]) } else { load(&job.data[first + c * step..]) }
}

crate::ternary::decode_2bit!("avx512f,avx512bw", __m512i, _mm512_set1_epi8, _mm512_srli_epi16, _mm512_and_si512);

/// Which of a prepared 256-chunk's 32-byte activation vectors meets code group `g` of 128-block
/// `h` ([`TernaryIsa::prepare`] above: `[blk0 g0 | blk1 g0 | blk0 g1 | ...]`).
const fn prepared_slot(g: usize, h: usize) -> usize {
    2 * g + h
}

// The one-token loops and the Q8_0 dot products: 256-bit `vpdpbusd` (vnni.rs), four I2_S rows
// side by side in AVX-512 VL's 32 registers.
crate::vnni::vnni_gemv!(
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    _mm256_dpbusd_epi32,
    prepared_slot,
    4,
    4,
    true
);

/// Signed bytes `16j .. 16j + 16` of `q`, widened to f32.
#[target_feature(enable = "avx512f")]
fn widen_q6(q: __m256i, j: usize) -> __m512 {
    let bytes = if j == 0 { _mm256_castsi256_si128(q) } else { _mm256_extracti128_si256::<1>(q) };
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
}

/// Lane `j` of the result is the sum of the sixteen lanes of `v[j]`: pairs within 128-bit lanes,
/// then quads, then the four 128-bit lanes (45 operations for sixteen sums, against ~8 each).
#[target_feature(enable = "avx512f")]
fn sum_lanes16(v: [__m512; 16]) -> __m512 {
    let a: [__m512; 8] = std::array::from_fn(|j| {
        let (x, y) = (v[2 * j], v[2 * j + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
    });
    // b[j]'s 128-bit lane L: lane L's sums of rows 4j .. 4j + 4.
    let b: [__m512; 4] = std::array::from_fn(|j| {
        let (x, y) = (a[2 * j], a[2 * j + 1]);
        _mm512_add_ps(_mm512_shuffle_ps::<0b01_00_01_00>(x, y), _mm512_shuffle_ps::<0b11_10_11_10>(x, y))
    });
    let c: [__m512; 2] = std::array::from_fn(|j| {
        let (x, y) = (b[2 * j], b[2 * j + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(x, y), _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y))
    });
    _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(c[0], c[1]), _mm512_shuffle_f32x4::<0b11_01_11_01>(c[0], c[1]))
}

/// [`transpose16`] of floats.
#[target_feature(enable = "avx512f")]
fn transpose16_ps(r: [__m512; 16]) -> [__m512; 16] {
    let t = transpose16(std::array::from_fn(|i| _mm512_castps_si512(r[i])));
    std::array::from_fn(|i| _mm512_castsi512_ps(t[i]))
}

/// The sum of a vector's 16 lanes: the halves added, then [`x256::hsum_ps`] (the same order as
/// `_mm512_reduce_add_ps`, checked on a million random vectors; written out so that
/// [`dot_f16_stream`] can repeat it on the halves).
#[target_feature(enable = "avx512f,avx2")]
fn reduce16(v: __m512) -> f32 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    x256::hsum_ps(_mm256_add_ps(_mm512_castps512_ps256(v), hi))
}

/// Σ w·x over an F16 row for one token (`w` holds at least `x.len()` little-endian halves; the
/// shorter decides), bit-identical to the 512-bit `dot_f16_many` (the lanes 0–7 and 8–15 of each
/// of its four accumulators are two 256-bit ones here; every multiply-add is per lane; the final
/// sum adds the halves first, as [`reduce16`]).
///
/// Why 256-bit and one row with prefetch hints: the head is the largest matrix of a small model
/// (55% of a 2B-4T token with an F16 head), and on the Xeon VM (AVX-512 F16C, 2 MiB pages, 1 GB of
/// rows, alternated with a pure read of the same bytes) a loop of 512-bit float operations read
/// 0.73–0.85 of a pure read whatever its layout, rows or hints (a bare `vfmadd` sum of the bytes
/// 0.73), the two-row 512-bit loop 0.78–0.85, and this loop, one row after another (one stream)
/// with the I2_S four-row loop's hints, 0.97–1.07 at 2560, 4096 and 8192 columns
/// (docs/kernels.md, "2026-12-07 (night)").
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
pub(crate) fn dot_f16_stream(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len().min(w.len() / 2);
    // acc[2k + h]: lanes 8h .. 8h + 8 of the 512-bit loop's accumulator k (elements 16k + 8h ..
    // of each 64).
    let mut acc = [_mm256_setzero_ps(); 8];
    let (d1, d2) = x256::PREFETCH_STREAM;
    // Pointers bumped per 64 elements and each line's hints ahead of its loads: written with
    // indices and the hints of two lines at once, the same loop read 0.88 of a pure read, not
    // 0.97 (the harness of the doc comment above).
    let (mut wp, mut xp) = (w.as_ptr(), x.as_ptr());
    for _ in 0..n / 64 {
        for line in 0..2 {
            // SAFETY: 64 elements are left from `wp` (2 bytes each) and `xp` (n / 64 rounds of
            // 64 from the starts of `w`, at least 2n bytes, and `x`, at least n floats), so the
            // 64 bytes of this line and its 32 floats are inside; unaligned loads; the features
            // are this function's.
            unsafe {
                let (lw, lx) = (wp.add(64 * line), xp.add(32 * line));
                x256::prefetch_two(lw, 0, d1, d2);
                for h in 0..4 {
                    let v = _mm256_cvtph_ps(_mm_loadu_si128(lw.add(16 * h).cast()));
                    acc[4 * line + h] = _mm256_fmadd_ps(v, _mm256_loadu_ps(lx.add(8 * h)), acc[4 * line + h]);
                }
            }
        }
        // SAFETY: still inside or one past the end of `w` and `x` (as above).
        unsafe {
            wp = wp.add(128);
            xp = xp.add(64);
        }
    }
    let mut i = n / 64 * 64;
    while i + 16 <= n {
        for (h, acc) in acc[..2].iter_mut().enumerate() {
            // SAFETY: `i + 16 <= n`: 16 bytes of `w` and 8 floats of `x` at `8h` past `i`;
            // unaligned loads.
            unsafe {
                let v = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(2 * (i + 8 * h)).cast()));
                *acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(x.as_ptr().add(i + 8 * h)), *acc);
            }
        }
        i += 16;
    }
    let half = |h: usize| _mm256_add_ps(_mm256_add_ps(acc[h], acc[2 + h]), _mm256_add_ps(acc[4 + h], acc[6 + h]));
    x256::hsum_ps(_mm256_add_ps(half(0), half(1))) + bitnet_quant::isa::tail_f16(&w[2 * i..2 * n], &x[i..n])
}

crate::vecops::f32_kernels!(
    crate::Avx512,
    "avx512f",
    "avx512",
    16,
    2,
    __m512,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_mul_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps,
    reduce16,
    sum_lanes16,
    transpose16_ps,
    8,
    _mm512_loadu_ps,
    __m256i,
    _mm256_loadu_si256,
    _mm256_set1_epi16,
    _mm512_cvtph_ps,
    _mm_loadu_si128,
    _mm512_cvtepi8_epi32,
    _mm512_cvtepi32_ps,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    q8_dot,
    dot_q8_0_wide,
    true,
    dot_f16_stream,
    true
);

/// The reference's float step after the integer products ([`bitnet_quant::isa::scale_dots`],
/// a division per output) compiled for AVX-512's registers: the same bits. On baseline SSE2 it was
/// 3% of a 125M-shape prompt.
#[target_feature(enable = "avx512f")]
fn scale_dots_512(dots: &mut [f32], acts: &[bitnet_quant::ActScale], w_scale: Option<f32>) {
    bitnet_quant::isa::scale_dots(dots, acts, w_scale)
}
