//! AVX-512 BW + VNNI inner loop: one 64-byte load holds 256 weights (two 128-blocks of I2_S, or
//! one TQ2_0 block's two halves), decoded with four shift/mask pairs, multiplied by `vpdpbusd`.
//!
//! Lane `l` of the low 256 bits of a decoded group belongs to the first 128-block and lane `l`
//! of the high 256 bits to the second, so activations are prepared per 256 weights as
//! `[blk0 g0 | blk1 g0 | blk0 g1 | blk1 g1 | ...]` (32 bytes each), zero-padded.

use std::arch::x86_64::*;

use crate::Avx512;
use crate::x256;
use bitnet_quant::isa::{Codes, Job, TernaryIsa, take_scratch};

impl TernaryIsa for Avx512 {
    fn accepts(self, codes: Codes) -> bool {
        codes != Codes::I2sArm
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
                Codes::I2s | Codes::I2sArm => gemm_i2s(job, rows, acts, stride, sums, dots),
                Codes::Tq2 | Codes::Tq1 => gemm_tq(job, rows, acts, stride, sums, dots),
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

/// Most tokens for [`gemm_few`]; more go to [`gemm_i2s`].
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

/// Rows decoded per block of the many-token path: 16 rows of 6912 codes is 108 KiB, in L2.
const GEMM_ROWS: usize = 16;

/// Many tokens (prompt processing): compute-bound, so each block of rows is decoded once into
/// unsigned bytes laid out like the prepared activations, and a 4-row × 4-token micro-kernel
/// runs over it: per 64-byte step 4 + 4 loads feed 16 `vpdpbusd` with no decoding in the loop.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn gemm_i2s(job: &Job<'_>, rows: std::ops::Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]) {
    let n = acts.len() / stride;
    let len = rows.len();
    let full = if job.half_tail { job.chunks - 1 } else { job.chunks };
    let mut decoded = take_scratch(&DECODED, GEMM_ROWS * stride);
    let mut b0 = rows.start;
    while b0 < rows.end {
        let nb = GEMM_ROWS.min(rows.end - b0);
        for (i, dst) in decoded.chunks_exact_mut(stride).take(nb).enumerate() {
            let row = job.row(b0 + i);
            for c in 0..job.chunks {
                let v = if c < full { load(&row[c * 64..]) } else { load_half(&row[c * 64..]) };
                for (g, q) in decode(v, Codes::I2s).into_iter().enumerate() {
                    store(&mut dst[c * 256 + g * 64..c * 256 + g * 64 + 64], q);
                }
            }
        }
        tiles(n, nb, |t0, nt, r, nr| {
            let w = &decoded[r * stride..];
            let a = &acts[t0 * stride..];
            let out = |rr: usize, tt: usize| (t0 + tt) * len + (b0 - rows.start) + r + rr;
            let mut emit = |rr: usize, tt: usize, v: i32| dots[out(rr, tt)] = (v - sums[t0 + tt]) as f32;
            match (nr, nt) {
                (4, 4) => micro::<4, 4>(w, a, stride, &mut emit),
                (4, _) => {
                    for tt in 0..nt {
                        micro::<4, 1>(w, &a[tt * stride..], stride, |rr, _, v| emit(rr, tt, v));
                    }
                }
                (_, 4) => {
                    for rr in 0..nr {
                        micro::<1, 4>(&w[rr * stride..], a, stride, |_, tt, v| emit(rr, tt, v));
                    }
                }
                _ => {
                    for rr in 0..nr {
                        for tt in 0..nt {
                            micro::<1, 1>(&w[rr * stride..], &a[tt * stride..], stride, |_, _, v| emit(rr, tt, v));
                        }
                    }
                }
            }
        });
        b0 += nb;
    }
    DECODED.set(decoded);
}

/// Calls `f(t0, nt, r, nr)` for every tile of up to 4 tokens × 4 rows of an `n`-token,
/// `rows`-row block, tokens outermost.
fn tiles(n: usize, rows: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    for t0 in (0..n).step_by(4) {
        for r in (0..rows).step_by(4) {
            f(t0, (n - t0).min(4), r, (rows - r).min(4));
        }
    }
}

/// Many tokens on TQ2_0 / TQ1_0. Every 256-weight block has its own scale, so each block's
/// dot product of each row and token must be finished on its own (exact sum, scaled, added in
/// block order); in [`gemm_i2s`]'s layout that is a 16-lane reduction per row, token and block,
/// which cost this loop a quarter of its time. Here 16 rows are decoded once (codes in the order
/// the activations are read: prepared for TQ2_0, element order for TQ1_0) and interleaved four
/// codes at a time ([`transpose16`]: `[block][k][row]` holds each row's codes `4k .. 4k + 4`
/// side by side), so one `vpdpbusd` against four activations broadcast to every lane advances
/// all 16 rows: after a block's 64 steps lane `i` holds row `i`'s exact block sum, with nothing
/// to reduce. The block sum is subtracted, the 16 rows' scales applied and the products added
/// lane by lane in block order (the reference's roundings). `sums[t·chunks + c]` is token t's
/// activation sum over block c (the code offset).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn gemm_tq(job: &Job<'_>, rows: std::ops::Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]) {
    let (n, len, chunks) = (acts.len() / stride, rows.len(), job.chunks);
    let block_bytes = job.row_bytes / chunks;
    let mut decoded = take_scratch(&DECODED, GEMM_ROWS * stride);
    let mut inter = take_scratch(&INTER, GEMM_ROWS * stride);
    // Block scales of the decoded rows, `[chunk][row]`.
    let mut scales = take_scratch(&SCALES, chunks * GEMM_ROWS);
    // Activation sums block-major, `[chunk][token]`.
    let mut bsums = take_scratch(&BSUMS, chunks * n);
    for t in 0..n {
        for c in 0..chunks {
            bsums[c * n + t] = sums[t * chunks + c];
        }
    }
    let mut b0 = rows.start;
    while b0 < rows.end {
        let nb = GEMM_ROWS.min(rows.end - b0);
        for (i, dst) in decoded.chunks_exact_mut(stride).enumerate() {
            if i >= nb {
                // Lanes of rows past the end are computed and dropped: give them zeros.
                dst.fill(0);
                for c in 0..chunks {
                    scales[c * GEMM_ROWS + i] = 0.0;
                }
                continue;
            }
            let row = job.row(b0 + i);
            for c in 0..chunks {
                let block = &row[c * block_bytes..(c + 1) * block_bytes];
                let out = &mut dst[c * 256..(c + 1) * 256];
                let d = match job.codes {
                    Codes::Tq2 => {
                        for (g, q) in decode(load(block), Codes::Tq2).into_iter().enumerate() {
                            store(&mut out[g * 64..], q);
                        }
                        [block[64], block[65]]
                    }
                    Codes::Tq1 => {
                        for (g, q) in x256::tq1_codes(block).into_iter().enumerate() {
                            x256::store(&mut out[g * 32..], q);
                        }
                        [block[52], block[53]]
                    }
                    Codes::I2s | Codes::I2sArm => unreachable!("I2_S runs through gemm_i2s"),
                };
                scales[c * GEMM_ROWS + i] = half::f16::from_le_bytes(d).to_f32();
            }
        }
        // Interleave: 16 rows × 16 dwords at a time.
        for k in (0..stride).step_by(64) {
            let t = transpose16(std::array::from_fn(|i| load(&decoded[i * stride + k..])));
            for (j, v) in t.into_iter().enumerate() {
                store(&mut inter[(k / 4 + j) * 64..], v);
            }
        }
        for t0 in (0..n).step_by(8) {
            let a = &acts[t0 * stride..];
            let (s, sc) = (&bsums[t0..], &scales[..]);
            let mut out = |t: usize, v: __m512| {
                let mut lanes = [0f32; 16];
                // SAFETY: `lanes` holds 16 floats; the store is unaligned.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
                let at = (t0 + t) * len + (b0 - rows.start);
                dots[at..at + nb].copy_from_slice(&lanes[..nb]);
            };
            // One monomorphised tile per token count, so the accumulators stay in registers.
            macro_rules! tile {
                ($($t:literal)*) => {
                    match n - t0 {
                        $($t => micro_tq::<$t>(&inter, a, stride, sc, s, n).into_iter().enumerate().for_each(|(t, v)| out(t, v)),)*
                        _ => micro_tq::<8>(&inter, a, stride, sc, s, n).into_iter().enumerate().for_each(|(t, v)| out(t, v)),
                    }
                };
            }
            tile!(1 2 3 4 5 6 7);
        }
        b0 += nb;
    }
    DECODED.set(decoded);
    INTER.set(inter);
    SCALES.set(scales);
    BSUMS.set(bsums);
}

/// 16 interleaved rows ([`gemm_tq`]'s layout, `w`) × `T` prepared tokens (`stride` apart from
/// `a`): lane `i` of result `t` is row `i`'s `Σ_block ((Σ code·a − sum) as f32) · d`, blocks in
/// order. `scales` is `[chunk][16]`, `bsums[c·n + t]` token `t`'s sum over block `c`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn micro_tq<const T: usize>(w: &[u8], a: &[i8], stride: usize, scales: &[f32], bsums: &[i32], n: usize) -> [__m512; T] {
    let mut total = [_mm512_setzero_ps(); T];
    for (c, wb) in w[..GEMM_ROWS * stride].chunks_exact(256 * GEMM_ROWS).enumerate() {
        // Fixed-length views: the loads below need no bounds checks.
        let at: [&[i8; 256]; T] =
            std::array::from_fn(|t| a[t * stride + c * 256..][..256].try_into().expect("256 activations"));
        let mut acc = [_mm512_setzero_si512(); T];
        for k in 0..64 {
            let wv = load(&wb[k * 64..k * 64 + 64]);
            for t in 0..T {
                let q = [at[t][4 * k], at[t][4 * k + 1], at[t][4 * k + 2], at[t][4 * k + 3]];
                let av = _mm512_set1_epi32(i32::from_le_bytes(q.map(|b| b as u8)));
                acc[t] = _mm512_dpbusd_epi32(acc[t], wv, av);
            }
        }
        let d = load_f32(&scales[c * GEMM_ROWS..c * GEMM_ROWS + 16]);
        for t in 0..T {
            let dot = _mm512_sub_epi32(acc[t], _mm512_set1_epi32(bsums[c * n + t]));
            // Not fused: the reference rounds the product, then the sum.
            total[t] = _mm512_add_ps(total[t], _mm512_mul_ps(_mm512_cvtepi32_ps(dot), d));
        }
    }
    total
}

/// The 16 × 16 transpose of 32-bit lanes: lane `i` of result `j` is lane `j` of `r[i]`.
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    // Within 128-bit lanes: pairs of rows, then quads: u[4q + m]'s 128-bit lane L holds
    // column 4L + m of rows 4q .. 4q + 4.
    let t: [__m512i; 16] = std::array::from_fn(|j| {
        let (x, y) = (r[j / 2 * 2], r[j / 2 * 2 + 1]);
        if j % 2 == 0 { _mm512_unpacklo_epi32(x, y) } else { _mm512_unpackhi_epi32(x, y) }
    });
    let u: [__m512i; 16] = std::array::from_fn(|j| {
        let (q, m) = (j / 4, j % 4);
        let (x, y) = (t[4 * q + m / 2], t[4 * q + 2 + m / 2]);
        if m % 2 == 0 { _mm512_unpacklo_epi64(x, y) } else { _mm512_unpackhi_epi64(x, y) }
    });
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

thread_local! {
    /// Decoded rows of [`gemm_i2s`], kept per thread between calls.
    static DECODED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// [`gemm_tq`]'s interleaved rows.
    static INTER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// Block scales of the rows [`gemm_tq`] decoded.
    static SCALES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Block-major activation sums of [`gemm_tq`].
    static BSUMS: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `R` decoded rows × `T` prepared tokens, all `stride` bytes long and `stride` apart:
/// `emit(r, t, Σ code·a)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn micro<const R: usize, const T: usize>(w: &[u8], a: &[i8], stride: usize, mut emit: impl FnMut(usize, usize, i32)) {
    let mut acc = [[_mm512_setzero_si512(); T]; R];
    for k in (0..stride).step_by(64) {
        let mut wr = [_mm512_setzero_si512(); R];
        for (r, reg) in wr.iter_mut().enumerate() {
            *reg = load(&w[r * stride + k..r * stride + k + 64]);
        }
        for t in 0..T {
            let at = load_i8(&a[t * stride + k..t * stride + k + 64]);
            for r in 0..R {
                acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], wr[r], at);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (t, &v) in row.iter().enumerate() {
            emit(r, t, _mm512_reduce_add_epi32(v));
        }
    }
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

/// One token against many rows (decoding): memory-bound, so each row is read front to back
/// with four independent accumulators (the `vpdpbusd` latency chain never limits the stream)
/// and the whole row range runs in this one function (a call per row costs a third of the time).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c")]
fn gemv(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    match job.codes {
        Codes::I2s | Codes::I2sArm => {
            // Masking each 2-bit field in place (no shift) leaves code·4^k, k = 3 − g; the four
            // groups accumulate apart and are shifted back once per row, exactly. Products stay
            // within u8 × i8 (192·127) and the sums far within i32 for any row length.
            //
            // 256-bit registers although AVX-512 is there: on Zen 4 this stream runs at ~16 GB/s
            // with 32-byte loads and `vpdpbusd ymm` against ~10 GB/s with the same loop in 512-bit
            // registers (measured in C and here; docs/kernels.md). Each 64-byte step is the two
            // 128-weight blocks of the prepared activations' 256-chunk: block 0's group g is at
            // `64·g`, block 1's at `64·g + 32`; eight accumulators keep the chains short.
            let masks = [0xC0u8, 0x30, 0x0C, 0x03].map(|m| _mm256_set1_epi8(m as i8));
            let full = job.row_bytes / 64;
            let zero = _mm256_setzero_si256();
            for (r, dot) in rows.zip(dots.iter_mut()) {
                let row = job.row(r);
                let mut acc = [[zero; 4]; 2];
                for (w, a) in row.chunks_exact(64).zip(act.chunks_exact(256)) {
                    x256::prefetch_ahead(w);
                    for (half, acc) in acc.iter_mut().enumerate() {
                        let v = x256::load(&w[half * 32..]);
                        for g in 0..4 {
                            let x = x256::load_i8(&a[g * 64 + half * 32..]);
                            // Into a zero register, then added: the loop-carried chain is a 1-cycle
                            // add instead of `vpdpbusd`'s latency, which streams faster.
                            let p = _mm256_dpbusd_epi32(zero, _mm256_and_si256(v, masks[g]), x);
                            acc[g] = _mm256_add_epi32(acc[g], p);
                        }
                    }
                }
                if job.half_tail {
                    let v = x256::load(&row[full * 64..]);
                    let a = &act[full * 256..];
                    for g in 0..4 {
                        acc[0][g] =
                            _mm256_dpbusd_epi32(acc[0][g], _mm256_and_si256(v, masks[g]), x256::load_i8(&a[g * 64..]));
                    }
                }
                let g: [__m256i; 4] = std::array::from_fn(|g| _mm256_add_epi32(acc[0][g], acc[1][g]));
                let s = _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_srai_epi32::<6>(g[0]), _mm256_srai_epi32::<4>(g[1])),
                    _mm256_add_epi32(_mm256_srai_epi32::<2>(g[2]), g[3]),
                );
                *dot = (x256::hsum(s) - sums[0]) as f32;
            }
        }
        Codes::Tq2 => gemv_tq2(job, rows, act, sums, dots),
        Codes::Tq1 => gemv_tq1(job, rows, act, sums, dots),
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
crate::ternary::tq_gemv!(
    gemv_tq1,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c",
    bitnet_quant::tq::TQ1_0_BLOCK_BYTES,
    tq1_block_dot,
    _mm256_srai_epi32::<8>
);

/// Σ code·a over one 54-byte TQ1_0 block and 256 activations in element order, without
/// extracting a single digit. TQ1_0's digit of `x = q·3^k mod 256` is `(3x) >> 8`, and
/// `3x = 256·digit + x'` where `x' = q·3^(k+1) mod 256` is the next digit's `x`: so
/// `Σ a·digit = (3·Σ a·x − Σ a·x') / 256`, exactly. Both sums are `vpdpbusd` of bytes we have
/// anyway (each `x'` is two wrapping byte adds away from `x`: `x + x + x`), which makes a digit
/// cost two adds and two `vpdpbusd` instead of the 16-bit multiplies of [`x256::tq1_codes`]. Lanes stay
/// below 2^22 (8 planes × 4 × 255 × 128 × 3), so the i32 sums never overflow. Returns the lanes
/// of `3·Σ a·x − Σ a·x'`: only their total is a multiple of 256 (the caller shifts it). `a[k]`
/// holds activations `32k .. 32k + 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn tq1_block_dot(block: &[u8], a: &[__m256i; 8]) -> __m256i {
    assert!(block.len() >= 52);
    // Each step is hidden from the optimizer (an empty asm block claiming to change the value):
    // otherwise LLVM folds chains of these byte adds into 16-bit multiplies of the first
    // register, widened to 512 bits and narrowed back (7.2 against 8.9 GB/s in cache).
    let t128 = |x: __m128i| {
        let mut y = _mm_add_epi8(x, _mm_add_epi8(x, x));
        // SAFETY: the asm block is empty; it reads and writes only the register holding `y`.
        unsafe { std::arch::asm!("/* {0} */", inout(xmm_reg) y, options(pure, nomem, nostack, preserves_flags)) };
        y
    };
    let t256 = |x: __m256i| {
        let mut y = _mm256_add_epi8(x, _mm256_add_epi8(x, x));
        // SAFETY: as above.
        unsafe { std::arch::asm!("/* {0} */", inout(ymm_reg) y, options(pure, nomem, nostack, preserves_flags)) };
        y
    };
    // Two accumulators each, planes alternating: chains of four `vpdpbusd`, not eight.
    let (mut p, mut q) = ([_mm256_setzero_si256(); 2], [_mm256_setzero_si256(); 2]);
    let mut n = 0;
    // One plane of 32 elements; returns the register of the next digits.
    let mut plane = |x: __m256i, act: __m256i| {
        let next = t256(x);
        p[n % 2] = _mm256_dpbusd_epi32(p[n % 2], x, act);
        q[n % 2] = _mm256_dpbusd_epi32(q[n % 2], next, act);
        n += 1;
        next
    };
    // Bytes 0..32: digit k of byte m is element 32k + m.
    let mut x = x256::load(block);
    for &a in &a[..5] {
        x = plane(x, a);
    }
    // Bytes 32..48: digit k of byte m is element 160 + 16k + m, so a register holds digits
    // (k, k + 1) of the 16 bytes in its halves; bytes 48..52: digit k of byte j is element
    // 240 + 4k + j, beside digit 4 of the 16 bytes.
    // SAFETY: the block holds bytes 32..48 (asserted above); the load is unaligned.
    let tail = unsafe { _mm_loadu_si128(block[32..48].as_ptr().cast()) };
    let y12 = plane(_mm256_set_m128i(t128(tail), tail), a[5]);
    let y34 = plane(t256(y12), a[6]);
    let qh = _mm_set1_epi32(i32::from_le_bytes([block[48], block[49], block[50], block[51]]));
    let (qh3, qh9) = (t128(qh), t128(t128(qh)));
    let qh_pow =
        _mm_blend_epi32::<0b1100>(_mm_blend_epi32::<0b0010>(qh, qh3), _mm_blend_epi32::<0b1000>(qh9, t128(qh9)));
    plane(_mm256_set_m128i(qh_pow, _mm256_extracti128_si256::<1>(y34)), a[7]);
    let (p, q) = (_mm256_add_epi32(p[0], p[1]), _mm256_add_epi32(q[0], q[1]));
    _mm256_sub_epi32(_mm256_add_epi32(p, _mm256_add_epi32(p, p)), q)
}

/// Signed bytes `16j .. 16j + 16` of `q`, widened to f32.
#[target_feature(enable = "avx512f")]
fn widen_q6(q: __m256i, j: usize) -> __m512 {
    let bytes = if j == 0 { _mm256_castsi256_si128(q) } else { _mm256_extracti128_si256::<1>(q) };
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
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
    _mm512_loadu_ps,
    __m256i,
    _mm256_loadu_si256,
    _mm256_set1_epi16,
    _mm512_cvtph_ps,
    _mm_loadu_si128,
    _mm512_cvtepi8_epi32,
    _mm512_cvtepi32_ps
);
