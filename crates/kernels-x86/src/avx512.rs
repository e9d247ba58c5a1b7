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
                Codes::I2s | Codes::I2sArm if acts.len() / stride <= FEW_TOKENS => {
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
        let w = [job.row(r), job.row(r + pair - 1)];
        let mut acc = [[zero; T]; 2];
        for c in 0..job.chunks {
            let q: [[__m512i; 4]; 2] = std::array::from_fn(|i| {
                let v = if c < full { load(&w[i][c * 64..]) } else { load_half(&w[i][c * 64..]) };
                decode(v, Codes::I2s)
            });
            x256::prefetch_ahead(&w[0][c * 64..]);
            x256::prefetch_ahead(&w[1][c * 64..]);
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
/// order), interleaved by [`transpose16`], then up to eight tokens per load of the interleaved
/// codes, one `vpdpbusd` per token against four broadcast activations. I2_S keeps one integer
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
        let scales_of = |row: &[u8], _: &mut [u8], scales: &mut [f32]| {
            if job.codes == Codes::Tq2 {
                for (d, block) in scales.iter_mut().zip(row.chunks_exact(block_bytes)) {
                    *d = half::f16::from_le_bytes([block[block_bytes - 2], block[block_bytes - 1]]).to_f32();
                }
            }
        };
        let inter = |first: usize, _: &[u8], out: &mut [u8]| {
            let n = GEMM_ROWS.min(rows.end - first);
            let group: [&[u8]; GEMM_ROWS] = std::array::from_fn(|i| if i < n { job.row(first + i) } else { &[] });
            interleave_packed(&group, out, job, full)
        };
        return gemm_interleaved(job, rows.clone(), acts, stride, sums, dots, (scales_of, Some(inter)));
    }
    // TQ1_0: base-3 digits decoded to codes in element order, then interleaved.
    let decode_row = |row: &[u8], dst: &mut [u8], scales: &mut [f32]| {
        for (c, (out, block)) in dst.chunks_exact_mut(256).zip(row.chunks_exact(block_bytes)).enumerate() {
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
    8;
    1 2 3 4 5 6 7
);

/// [`gemm_many`]'s interleaving of a group of rows of 2-bit codes (empty rows past the end are
/// zero codes), transposed as 32-bit words, then decoded: word `j` of a 256-column chunk holds
/// four bytes whose codes `g` are columns `4j .. 4j + 4` of the chunk's decoded vector `g`, so
/// decoding the transposed words gives what transposing the decoded vectors would, at a quarter
/// of the shuffles. Step `64c + 16g + j` of `out` (64 bytes: four codes of each row). I2_S
/// chunks are 64 code bytes apart (the last `full..` one half, zero-padded: its activations are
/// zero); TQ2_0's blocks start with their 64.
#[target_feature(enable = "avx512f,avx512bw")]
fn interleave_packed(group: &[&[u8]; GEMM_ROWS], out: &mut [u8], job: &Job<'_>, full: usize) {
    let block_bytes = job.row_bytes / job.chunks;
    for c in 0..job.chunks {
        let t = transpose16(std::array::from_fn(|i| match group[i] {
            [] => _mm512_setzero_si512(),
            row if job.codes == Codes::Tq2 => load(&row[c * block_bytes..]),
            row if c < full => load(&row[c * 64..]),
            row => load_half(&row[c * 64..]),
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

crate::ternary::decode_2bit!("avx512f,avx512bw", __m512i, _mm512_set1_epi8, _mm512_srli_epi16, _mm512_and_si512);

/// One token against many rows (decoding): rows go a few at a time ([`i2s_rows`], TQ's eight-row
/// loops) and the whole row range runs in this one function (a call per row costs a third of the
/// time).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")]
fn gemv(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    match job.codes {
        Codes::I2s | Codes::I2sArm => {
            for (i, dots) in dots[..rows.len()].chunks_mut(I2S_ROWS).enumerate() {
                let r0 = rows.start + I2S_ROWS * i;
                match dots.len() {
                    4 => i2s_rows::<4>(job, r0, act, sums[0], dots),
                    3 => i2s_rows::<3>(job, r0, act, sums[0], dots),
                    2 => i2s_rows::<2>(job, r0, act, sums[0], dots),
                    _ => i2s_rows::<1>(job, r0, act, sums[0], dots),
                }
            }
        }
        Codes::Tq2 => gemv_tq2(job, rows, act, sums, dots),
        Codes::Tq1 => gemv_tq1(job, rows, act, sums, dots),
    }
}

/// Rows the I2_S one-token loop reads side by side.
const I2S_ROWS: usize = 4;

/// I2_S rows `r0 .. r0 + N` (N ≤ 4) against one token, into `dots[..N]`.
///
/// Masking each 2-bit field in place (no shift) leaves code·4^k, k = 3 − g; the four groups
/// accumulate apart and are shifted back once per row, exactly. Products stay within u8 × i8
/// (192·127) and the sums far within i32 for any row length.
///
/// 256-bit registers although AVX-512 is there: on Zen 4 this stream runs at ~16 GB/s with 32-byte
/// loads and `vpdpbusd ymm` against ~10 GB/s with the same loop in 512-bit registers (measured in
/// C and here; docs/kernels.md). Each 64-byte step is the two 128-weight blocks of the prepared
/// activations' 256-chunk: block 0's group g is at `64·g`, block 1's at `64·g + 32`. Four rows
/// side by side share each chunk's eight activation loads, and AVX-512 VL's 32 vector registers
/// hold their 16 accumulators: one row at a time the loop was bound by its operations (loads,
/// masks, `vpdpbusd`), not by memory.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn i2s_rows<const N: usize>(job: &Job<'_>, r0: usize, act: &[i8], sum: i32, dots: &mut [f32]) {
    let masks = [0xC0u8, 0x30, 0x0C, 0x03].map(|m| _mm256_set1_epi8(m as i8));
    let zero = _mm256_setzero_si256();
    let mut rows: [&[u8]; N] = [&[]; N];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = job.row(r0 + i);
    }
    let full = job.row_bytes / 64;
    // Prefetch the same place in the next group of rows while a group is under 4 KiB; beyond,
    // that line is used a whole group later and L1 (which also holds the activations, 28 KiB
    // for 70B's FFN down) loses it first: a fixed distance within each row instead. 70B FFN
    // down (28672 columns) streamed 21.3 -> 26.7 GB/s in a token, 22 -> 29 in stream.rs.
    let next = N * job.row_bytes;
    let far = next > 4096;
    let mut acc = [[zero; 4]; N];
    for c in 0..full {
        let a = &act[c * 256..c * 256 + 256];
        let mut x = [zero; 8];
        for (k, x) in x.iter_mut().enumerate() {
            *x = x256::load_i8(&a[32 * k..]);
        }
        for (row, acc) in rows.iter().zip(acc.iter_mut()) {
            let w = &row[c * 64..c * 64 + 64];
            if far {
                x256::prefetch_ahead(w);
            } else {
                x256::prefetch_rows(w, next);
            }
            for half in 0..2 {
                let v = x256::load(&w[half * 32..]);
                for g in 0..4 {
                    acc[g] = _mm256_dpbusd_epi32(acc[g], _mm256_and_si256(v, masks[g]), x[2 * g + half]);
                }
            }
        }
    }
    if job.half_tail {
        let a = &act[full * 256..];
        for (row, acc) in rows.iter().zip(acc.iter_mut()) {
            let v = x256::load(&row[full * 64..]);
            for g in 0..4 {
                acc[g] = _mm256_dpbusd_epi32(acc[g], _mm256_and_si256(v, masks[g]), x256::load_i8(&a[g * 64..]));
            }
        }
    }
    for (acc, dot) in acc.iter().zip(dots.iter_mut()) {
        let s = _mm256_add_epi32(
            _mm256_add_epi32(_mm256_srai_epi32::<6>(acc[0]), _mm256_srai_epi32::<4>(acc[1])),
            _mm256_add_epi32(_mm256_srai_epi32::<2>(acc[2]), acc[3]),
        );
        *dot = (x256::hsum(s) - sum) as f32;
    }
}

/// One TQ2_0 block against its prepared activations, in 256-bit registers (the I2_S stream's
/// reason: 512-bit loads of this loop read memory slower on Zen 4): half `h`'s group `g` meets
/// the 32 activations `a[2g + h]` (bytes `64·g + 32·h`); one accumulator per half.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn tq2_block_dot(block: &[u8], a: &[__m256i; 8]) -> __m256i {
    let m = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_si256(); 2];
    for (h, acc) in acc.iter_mut().enumerate() {
        let v = x256::load(&block[h * 32..]);
        let q = [v, _mm256_srli_epi16::<2>(v), _mm256_srli_epi16::<4>(v), _mm256_srli_epi16::<6>(v)];
        for (g, q) in q.into_iter().enumerate() {
            *acc = _mm256_dpbusd_epi32(*acc, _mm256_and_si256(q, m), a[2 * g + h]);
        }
    }
    _mm256_add_epi32(acc[0], acc[1])
}

crate::ternary::tq_gemv!(
    gemv_tq2,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c",
    bitnet_quant::tq::TQ2_0_BLOCK_BYTES,
    tq2_block_dot,
    |v| v
);
/// Three times the next digit's bytes (`x + x + x`, wrapping), hidden from the optimizer: LLVM
/// folds chains of these byte adds into 16-bit multiplies of the first register, widened to 512
/// bits and narrowed back (7.2 against 8.9 GB/s in cache).
#[inline]
#[target_feature(enable = "avx2")]
fn times3(x: __m256i) -> __m256i {
    let mut y = _mm256_add_epi8(x, _mm256_add_epi8(x, x));
    // SAFETY: the asm block is empty; it reads and writes only the register holding `y`.
    unsafe { std::arch::asm!("/* {0} */", inout(ymm_reg) y, options(pure, nomem, nostack, preserves_flags)) };
    y
}

/// One token against TQ1_0 rows, eight rows at a time ([`tq1_eight`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")]
fn gemv_tq1(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    for (i, dots) in dots[..rows.len()].chunks_mut(8).enumerate() {
        let mut out = [0f32; 8];
        tq1_eight(job, rows.start + 8 * i, dots.len(), act, sums, &mut out);
        dots.copy_from_slice(&out[..dots.len()]);
    }
}

/// TQ1_0 rows `r0 .. r0 + n` (n ≤ 8; fewer are padded with the last) against one token, with
/// one lane per row: each block's 52 code bytes of the eight rows are transposed into 13
/// registers whose lane `r` holds four bytes of row `r` (bytes 0..32 by an 8 × 8 transpose of
/// dwords, 32..48 by two 4 × 4 ones, the four `qh` bytes as they are), so that digit `k` of
/// register `m` meets one dword of activations broadcast and every lane's sum is its row's. A
/// digit never leaves its byte: with `x = q·3^k mod 256`, TQ1_0's digit is `(3x) >> 8`, and
/// `3x = 256·digit + x'` where `x'` ([`times3`], two wrapping byte adds) is the next digit's
/// `x`, so `Σ a·digit = (3·Σ a·x − Σ a·x') / 256` exactly: two `vpdpbusd` and two adds per
/// digit and register. Lane by lane this is the same exact integer per row and block as
/// summing each row's lanes, so the float steps (block sum minus the activation sum, times the
/// block's f16 scale, added in block order) are the reference's, bit for bit. Against one row
/// at a time in its own registers (its tail bytes shuffled into place, a transposing sum per
/// block; eight accumulators instead of four spilled): 9.7 → 12.3 GB/s in cache, one core.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")]
fn tq1_eight(job: &Job<'_>, r0: usize, n: usize, act: &[i8], sums: &[i32], out: &mut [f32; 8]) {
    const BLOCK: usize = bitnet_quant::tq::TQ1_0_BLOCK_BYTES;
    let rows: [&[u8]; 8] = std::array::from_fn(|i| job.row(r0 + i.min(n - 1)));
    let mut acc = _mm256_setzero_ps();
    for (c, (a, &s)) in act.chunks_exact(256).zip(&sums[..job.chunks]).enumerate() {
        let a: &[i8; 256] = a.try_into().expect("256 activations");
        let blocks: [&[u8; BLOCK]; 8] =
            std::array::from_fn(|i| rows[i][c * BLOCK..(c + 1) * BLOCK].try_into().expect("one block"));
        for block in &blocks[..n] {
            x256::prefetch_rows(&block[..], 8 * job.row_bytes);
        }
        // Bytes 0..32: digit k of byte 4m + j is element 32k + 4m + j.
        let head = x256::transpose_dwords8(blocks.map(|b| x256::load(b)));
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
        // Four accumulators each, so that no chain of dependent `vpdpbusd` is long; written out
        // by a macro, as closures over them left the arrays in memory.
        let (mut p, mut q) = ([_mm256_setzero_si256(); 4], [_mm256_setzero_si256(); 4]);
        macro_rules! digits {
            ($x:expr, $i:literal, [$($e:expr),*]) => {{
                let mut x = $x;
                $(
                    let av = _mm256_set1_epi32(i32::from_le_bytes([a[$e], a[$e + 1], a[$e + 2], a[$e + 3]].map(|v| v as u8)));
                    let next = times3(x);
                    p[$i] = _mm256_dpbusd_epi32(p[$i], x, av);
                    q[$i] = _mm256_dpbusd_epi32(q[$i], next, av);
                    x = next;
                )*
                let _ = x;
            }};
        }
        digits!(head[0], 0, [0, 32, 64, 96, 128]);
        digits!(head[1], 1, [4, 36, 68, 100, 132]);
        digits!(head[2], 2, [8, 40, 72, 104, 136]);
        digits!(head[3], 3, [12, 44, 76, 108, 140]);
        digits!(head[4], 0, [16, 48, 80, 112, 144]);
        digits!(head[5], 1, [20, 52, 84, 116, 148]);
        digits!(head[6], 2, [24, 56, 88, 120, 152]);
        digits!(head[7], 3, [28, 60, 92, 124, 156]);
        digits!(tail[0], 0, [160, 176, 192, 208, 224]);
        digits!(tail[1], 1, [164, 180, 196, 212, 228]);
        digits!(tail[2], 2, [168, 184, 200, 216, 232]);
        digits!(tail[3], 3, [172, 188, 204, 220, 236]);
        digits!(qh, 0, [240, 244, 248, 252]);
        let sum4 = |v: [__m256i; 4]| _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
        let (p, q) = (sum4(p), sum4(q));
        let total = _mm256_sub_epi32(_mm256_add_epi32(p, _mm256_add_epi32(p, p)), q);
        let dot = _mm256_sub_epi32(_mm256_srai_epi32::<8>(total), _mm256_set1_epi32(s));
        let d = blocks.map(|b| u16::from_le_bytes([b[BLOCK - 2], b[BLOCK - 1]]));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(dot), x256::f16x8(&d)));
    }
    x256::store_f32x8(out, acc);
}

/// Σ w·q of eight consecutive Q8_0 rows and `T` tokens (four or more: a server's batch, a
/// perplexity run), with the one-token loop's float steps (`dot_q8_0_eight`: each (row, token)
/// result is bit-identical to it). That loop sums each row's block in eight lanes and transposes
/// the sums, per token: for eight tokens ~40 operations per 256 products, 45 G products/s on
/// one core. Here the eight rows' block codes (made unsigned, `w + 128`) are transposed once for
/// all tokens, so that lane `r` of register `j` holds codes `4j .. 4j + 4` of row `r`; each
/// token then takes eight `vpdpbusd` against its four activations `4j .. 4j + 4` broadcast, and
/// lane `r` ends with row `r`'s block sum (less `128·Σq`, the accumulator's start). 2B-4T head
/// shape from memory, one core (`benches/examples/dense.rs`, Zen 4): eight tokens 45 → 84–88 G
/// products/s, four 45 → 63–67. The next-but-one group of rows is prefetched into L2 only: into
/// L1 it pushed out the tokens' activations (78 against 88 G/s).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_q8_0_wide<const T: usize>(w: &[u8], row_bytes: usize, x: [bitnet_quant::Q8Row<'_>; T]) -> [[f32; 8]; T] {
    let mut blocks = row_bytes / 34;
    for x in &x {
        blocks = blocks.min(x.scales.len()).min(x.sums.len()).min(x.codes.len() / 32);
    }
    let stride = i32::try_from(row_bytes).ok().filter(|&s| s <= i32::MAX / 8);
    let (Some(stride), true) = (stride, w.len() >= 8 * row_bytes) else {
        // Rows too long for 32-bit gather offsets (or a short slice): the one-token loop's way.
        return std::array::from_fn(|t| dot_q8_0_eight(w, row_bytes, [x[t]])[0]);
    };
    let offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
    let (group, base) = (8 * row_bytes, w.as_ptr());
    let flip = _mm256_set1_epi8(-128);
    // Raw pointers, checked once through `blocks` above: slices indexed per block and token cost
    // a bounds check and two reloads each (~50 of ~260 instructions per block at eight tokens).
    let codes_at = x.map(|x| x.codes.as_ptr());
    let (sums, scales) = (x.map(|x| x.sums.as_ptr()), x.map(|x| x.scales.as_ptr()));
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..blocks {
        let at = base.wrapping_add(34 * b);
        let codes: [__m256i; 8] = std::array::from_fn(|r| {
            // SAFETY: block b of row r, bytes `r·row_bytes + 34·b + 2 ..+ 32`, lies inside `w`
            // (8·row_bytes ≤ w.len(), 34·b + 34 ≤ row_bytes); the load is unaligned.
            _mm256_xor_si256(unsafe { _mm256_loadu_si256(at.add(r * row_bytes + 2).cast()) }, flip)
        });
        let u = x256::transpose_dwords8(codes);
        for k in 0..5 {
            let line = 8 * 34 * b + 64 * k;
            _mm_prefetch::<_MM_HINT_T1>(base.wrapping_add(2 * group + line).cast());
        }
        // SAFETY: each lane reads the four bytes at the start of block b of row r (its f16 scale
        // and two codes), inside `w` as above.
        let dw = unsafe { x256::f16_scales8(at, offsets) };
        // Each token's sum starts from −128·Σq; the tokens' chains interleave.
        let mut s: [__m256i; T] = std::array::from_fn(|t| {
            // SAFETY: b < blocks ≤ every token's block count and codes.len() / 32, as computed
            // above (this read and the two below); the code reads are unaligned.
            let sum = unsafe { *sums[t].add(b) };
            _mm256_set1_epi32(sum.wrapping_mul(-128))
        });
        for (j, &u) in u.iter().enumerate() {
            for (s, q) in s.iter_mut().zip(&codes_at) {
                // SAFETY: as above (bytes 32b + 4j .. + 4, j < 8).
                let quad = unsafe { q.add(32 * b + 4 * j).cast::<i32>().read_unaligned() };
                *s = _mm256_dpbusd_epi32(*s, u, _mm256_set1_epi32(quad));
            }
        }
        for ((acc, s), sc) in acc.iter_mut().zip(s).zip(&scales) {
            let dot = _mm256_cvtepi32_ps(s);
            // SAFETY: as above.
            *acc = _mm256_fmadd_ps(dot, _mm256_mul_ps(dw, _mm256_set1_ps(unsafe { *sc.add(b) })), *acc);
        }
    }
    let mut out = [[0f32; 8]; T];
    for (o, a) in out.iter_mut().zip(acc) {
        x256::store_f32x8(o, a);
    }
    out
}

/// Signed bytes `16j .. 16j + 16` of `q`, widened to f32.
#[target_feature(enable = "avx512f")]
fn widen_q6(q: __m256i, j: usize) -> __m512 {
    let bytes = if j == 0 { _mm256_castsi256_si128(q) } else { _mm256_extracti128_si256::<1>(q) };
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
}

/// Σ w·q of one Q8_0 block: `vpdpbusd` of the codes made unsigned (`w + 128`, one xor) into
/// `bias` (−16·Σq in each of the eight lanes, so the lanes sum to Σ w·q).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_dot(w: __m256i, q: __m256i, bias: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(bias, _mm256_xor_si256(w, _mm256_set1_epi8(-128)), q)
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
    _mm512_reduce_add_ps,
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
    dot_q8_0_wide
);

/// The reference's float step after the integer products ([`bitnet_quant::isa::scale_dots`],
/// a division per output) compiled for AVX-512's registers: the same bits. On baseline SSE2 it was
/// 3% of a 125M-shape prompt.
#[target_feature(enable = "avx512f")]
fn scale_dots_512(dots: &mut [f32], acts: &[bitnet_quant::ActScale], w_scale: Option<f32>) {
    bitnet_quant::isa::scale_dots(dots, acts, w_scale)
}
