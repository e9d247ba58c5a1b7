//! AVX2 inner loop: one 32-byte load holds a 128-weight I2_S block (or half a TQ2_0 block) whose
//! four code groups line up with 32 consecutive activations each, so activations stay in their
//! natural order. `vpmaddubsw` multiplies unsigned codes by int8 activations into i16 pairs
//! (|sum| ≤ 2·2·128, four groups ≤ 2048: no saturation), `vpmaddwd` widens to i32.

use std::arch::x86_64::*;

use std::ops::Range;

use crate::ternary::Interleaved;
use crate::x256::{hsum, hsum_ps, load, load_i8, store, sum_lanes8, tq1_codes, transpose_dwords8};
use bitnet_quant::isa::{Codes, Job, TernaryIsa};

crate::avx2::avx2_family!(crate::Avx2, "avx2,fma,f16c", dot_q8_0_eight, true, 4; 1 2 3);

/// Σ code·a over one 128-weight block, as eight i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
fn block_dot(q: &[__m256i; 4], a: &[i8]) -> __m256i {
    let mut s = _mm256_setzero_si256();
    for (g, &qg) in q.iter().enumerate() {
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(qg, load_i8(&a[g * 32..])));
    }
    _mm256_madd_epi16(s, _mm256_set1_epi16(1))
}

/// One token against many rows, each read front to back, one at a time. (Two rows side by side,
/// each activation vector loaded once for both, ran 5% faster in L2 but 25% slower from memory
/// on Zen 3: 11–12 against 14–18 GB/s, the two streams defeating the prefetchers.)
#[target_feature(enable = "avx2,fma,f16c")]
fn gemv(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    let zero = _mm256_setzero_si256();
    match job.codes {
        Codes::I2s | Codes::I2sArm => {
            // Four 128-weight blocks per step (`i2s_block`), their i16 sums widened once per
            // step: `lo` ≤ 4 · 1024 and `hi` ≤ 4 · 4096 in magnitude, inside i16. Every line is
            // prefetched (one hint per 128 bytes left the other line to memory: 8 GB/s).
            let widen = |acc, s| _mm256_add_epi32(acc, widen_lo_hi(s));
            for (r, dot) in rows.zip(dots.iter_mut()) {
                let row = job.row(r);
                let mut acc = zero;
                let mut steps = row.chunks_exact(128);
                for (w, a) in (&mut steps).zip(act.chunks_exact(512)) {
                    crate::x256::prefetch_ahead(w, 0);
                    crate::x256::prefetch_ahead(w, 64);
                    let mut s = (zero, zero);
                    for k in 0..4 {
                        s = i2s_block(load(&w[32 * k..]), &a[128 * k..], s);
                    }
                    acc = widen(acc, s);
                }
                // The last one to three blocks (2B-4T's FFN down rows end in two).
                let done = row.len() / 128 * 128;
                let mut s = (zero, zero);
                for (w, a) in row[done..].chunks_exact(32).zip(act[4 * done..].chunks_exact(128)) {
                    s = i2s_block(load(w), a, s);
                }
                acc = widen(acc, s);
                // `acc` holds 4 · Σ code·a (see `i2s_block`): exact, shifted back.
                *dot = ((hsum(acc) >> 2) - sums[0]) as f32;
            }
        }
        Codes::I2sRows4 => unreachable!("not accepted: rows in fours"),
        Codes::Tq2 => gemv_tq2(job, rows, act, sums, dots),
        Codes::Tq1 => gemv_tq1(job, rows, act, sums, dots),
    }
}

/// Four `vpmaddubsw` of the 2-bit fields of `v` masked in place, against the activation vectors
/// `a` of the fields `v & 3`, `v & 12`, `(v >> 4) & 3`, `(v >> 4) & 12` (16-bit shift), added
/// to i16 lanes `(lo, hi)`: the fields at bits 0–1 into `lo`, those at bits 2–3 (code·4: the mask
/// saves a shift) into `hi`, so one shift decodes 32 bytes instead of three and `4·lo + hi`
/// ([`widen_lo_hi`]) is 4 · Σ code·a. Every pair sum is at most 2·8·128 in magnitude: per call
/// `lo` gains ≤ 1024 and `hi` ≤ 4096. The I2_S and TQ2_0 one-token loops share it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn masked_dots(v: __m256i, a: [__m256i; 4], (lo, hi): (__m256i, __m256i)) -> (__m256i, __m256i) {
    let (m3, m12) = (_mm256_set1_epi8(3), _mm256_set1_epi8(12));
    let v4 = _mm256_srli_epi16::<4>(v);
    let lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(_mm256_and_si256(v, m3), a[0]));
    let hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(_mm256_and_si256(v, m12), a[1]));
    let lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(_mm256_and_si256(v4, m3), a[2]));
    let hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(_mm256_and_si256(v4, m12), a[3]));
    (lo, hi)
}

/// `4·lo + hi` of [`masked_dots`]' sums, widened to eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen_lo_hi((lo, hi): (__m256i, __m256i)) -> __m256i {
    _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_set1_epi16(4)), _mm256_madd_epi16(hi, _mm256_set1_epi16(1)))
}

/// [`masked_dots`] of one 128-weight I2_S block: group `g` of its 32 bytes, at shift `6 − 2g`,
/// meets `a[32g ..]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn i2s_block(v: __m256i, a: &[i8], s: (__m256i, __m256i)) -> (__m256i, __m256i) {
    masked_dots(v, [3, 2, 1, 0].map(|g| load_i8(&a[32 * g..])), s)
}

/// One TQ2_0 block against its activations in element order (half `h`'s group `g`, at shift
/// `2g`, meets `a[4h + g]`) by [`masked_dots`], as eight i32 lanes of 4 · Σ code·a (`lo` ≤ 2048
/// and `hi` ≤ 8192 over the block); the caller shifts the rows' totals back by 2 (exact).
#[target_feature(enable = "avx2,fma,f16c")]
fn tq2_block_dot(block: &[u8], a: &[__m256i; 8]) -> __m256i {
    let mut s = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for h in 0..2 {
        s = masked_dots(load(&block[h * 32..]), [a[4 * h], a[4 * h + 1], a[4 * h + 2], a[4 * h + 3]], s);
    }
    widen_lo_hi(s)
}

crate::ternary::tq_gemv!(gemv_tq2, "avx2,fma,f16c", bitnet_quant::tq::TQ2_0_BLOCK_BYTES, tq2_block_dot, |v| {
    _mm256_srai_epi32::<2>(v)
});

/// One transposed TQ1_0 register's digits (see [`crate::ternary::tq1_gemv`]): from its bytes
/// biased once ([`crate::x256::biased`]), each digit by [`crate::x256::digit_of`] and the next
/// digit's bytes by [`crate::x256::times3`], multiplied by `vpmaddubsw` against the activations
/// at element offsets `$e` broadcast, into i16 accumulator `$t[$i % $acc]` (`$acc` = 2). The
/// pair sums lie in [−512, 508] and each accumulator takes at most 34 of them per block (no
/// saturation). Against one row at a time in its own registers (the tail bytes' last digits by
/// 16-bit multiplies, a transposing sum per block): in L2 5.6 → 6.5 GB/s, from memory 5.4 → 6.1
/// (medians, Zen 3).
macro_rules! tq1_digits {
    ($acc:expr, $a:ident, $t:ident, $i:expr, $x:expr, [$first:expr $(, $e:expr)*]) => {{
        let av = |e: usize| _mm256_set1_epi32(i32::from_le_bytes([$a[e], $a[e + 1], $a[e + 2], $a[e + 3]].map(|v| v as u8)));
        let mut x = crate::x256::biased($x);
        $t[$i % $acc] = _mm256_add_epi16($t[$i % $acc], _mm256_maddubs_epi16(crate::x256::digit_of(x), av($first)));
        $(
            x = crate::x256::times3(x);
            $t[$i % $acc] = _mm256_add_epi16($t[$i % $acc], _mm256_maddubs_epi16(crate::x256::digit_of(x), av($e)));
        )*
    }};
}

/// A TQ1_0 block's `Σ a·code` per lane from [`tq1_digits`]' two i16 accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tq1_block_sum(t: [__m256i; 8]) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    _mm256_add_epi32(_mm256_madd_epi16(t[0], ones), _mm256_madd_epi16(t[1], ones))
}

crate::ternary::tq1_gemv!("avx2,fma,f16c", tq1_digits(2), tq1_block_sum);

/// One 256-block of [`gemm_many`]'s interleaved rows `wb` against `T` tokens' activations (in
/// element order), added into `acc`: 64 steps of one load and one `vpmaddubsw` per token against
/// four of its activations broadcast to every lane. The i16 pair sums are at most 2·2·128 = 512
/// in magnitude, so 32 steps of them (≤ 16384) add up in i16 before `vpmaddwd` widens them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_sums<const T: usize>(wb: &[u8], at: &[&[i8; 256]; T], mut acc: [__m256i; T]) -> [__m256i; T] {
    let ones = _mm256_set1_epi16(1);
    for half in 0..2 {
        let mut acc16 = [_mm256_setzero_si256(); T];
        for k in 32 * half..32 * half + 32 {
            let wv = load(&wb[k * 32..k * 32 + 32]);
            for t in 0..T {
                let q = [at[t][4 * k], at[t][4 * k + 1], at[t][4 * k + 2], at[t][4 * k + 3]];
                let av = _mm256_set1_epi32(i32::from_le_bytes(q.map(|b| b as u8)));
                acc16[t] = _mm256_add_epi16(acc16[t], _mm256_maddubs_epi16(wv, av));
            }
        }
        for t in 0..T {
            acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(acc16[t], ones));
        }
    }
    acc
}

/// Σ w·q of one Q8_0 block: `|w|·(q·sign w)` through `vpmaddubsw` (pair sums at most
/// 2·128·127, inside i16) and `vpmaddwd` by ones, eight i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_dot(w: __m256i, q: __m256i, _bias: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(q, w));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// The AVX2-register kernel set around an instruction set's multiply-adds (`$token`: its
/// detection token, `$feat`: its features): the [`TernaryIsa`] impl, the many-token product
/// (tiles for a few tokens, [`crate::ternary::interleaved_gemm`] for many), the f32 ops and the
/// dense kernels. The invoking module provides the loops that differ: `gemv` (one token),
/// `block_dot` (one 128-block of decoded codes against 128 activations in element order, as
/// eight i32 lanes), `block_sums` (the interleaved product's 256-block against `T` tokens),
/// `q8_dot` (one Q8_0 block) and `$q8_wide` (eight Q8_0 rows against several tokens). AVX2 makes
/// them of `vpmaddubsw` + `vpmaddwd` (this module), AVX-VNNI of `vpdpbusd` (vnni.rs).
macro_rules! avx2_family {
    ($token:path, $feat:literal, $q8_wide:ident, $q8_wide8:literal, $max:literal; $($t:literal)*) => {
        impl TernaryIsa for $token {
            fn accepts(self, codes: Codes) -> bool {
                // The four-row I2_S order is AVX-512's (the loader keeps the x86 order for these).
                !matches!(codes, Codes::I2sArm | Codes::I2sRows4)
            }

            fn quantize_row(self, x: &[f32], out: &mut [i8]) -> bitnet_quant::ActScale {
                // SAFETY: the token exists only if `detect` found AVX2.
                unsafe { $crate::x256::quantize_row(x, out) }
            }

            fn scale_dots(self, dots: &mut [f32], acts: &[bitnet_quant::ActScale], w_scale: Option<f32>) {
                // SAFETY: the token exists only if `detect` found AVX2.
                unsafe { scale_dots_256(dots, acts, w_scale) }
            }

            fn gemv(self, job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
                // SAFETY: the token exists only if `detect` found AVX2.
                unsafe { gemv(job, rows, act, sums, dots) }
            }

            fn gemm(self, job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]) {
                // SAFETY: the token exists only if `detect` found AVX2.
                unsafe { gemm(job, rows, acts, stride, sums, dots) }
            }
        }

        /// The many-token product.
        ///
        /// # Safety
        /// The CPU must support AVX2.
        unsafe fn gemm(job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]) {
            let per = job.sums_per_token();
            let n = sums.len() / per;
            // TQ1_0's tiles would decode its digits again per token.
            let few = match job.codes {
                Codes::I2s | Codes::I2sArm | Codes::I2sRows4 => FEW_I2S,
                Codes::Tq2 => FEW_TQ2,
                Codes::Tq1 => 1,
            };
            if n > few {
                // SAFETY: the caller guarantees AVX2 (with FMA and F16C, which every AVX2 CPU has).
                unsafe { gemm_many(job, rows, acts, stride, sums, dots) };
                return;
            }
            let tiles = Tiles { job, acts, stride, sums, per, rows: rows.clone() };
            // Blocks of rows small enough to stay in L1/L2 while every token passes over them.
            let mut r0 = rows.start;
            while r0 < rows.end {
                let block = r0..(r0 + ROW_BLOCK).min(rows.end);
                let mut t0 = 0;
                while t0 < n {
                    let tt = (n - t0).min(4);
                    // SAFETY: the caller guarantees AVX2.
                    unsafe {
                        match tt {
                            1 => tiles.rows_of::<4, 1>(t0, block.clone(), dots),
                            2 => tiles.rows_of::<2, 2>(t0, block.clone(), dots),
                            3 => tiles.rows_of::<2, 3>(t0, block.clone(), dots),
                            _ => tiles.rows_of::<2, 4>(t0, block.clone(), dots),
                        }
                    }
                    t0 += tt;
                }
                r0 = block.end;
            }
        }

        /// Rows per cache block of the many-token path (64 rows of 2560 I2_S weights: 40 KiB).
        const ROW_BLOCK: usize = 64;

        /// What the tiles of one many-token product share.
        struct Tiles<'a, 'b> {
            job: &'a Job<'b>,
            acts: &'a [i8],
            stride: usize,
            sums: &'a [i32],
            per: usize,
            rows: Range<usize>,
        }

        impl Tiles<'_, '_> {
            /// Tokens `t0..t0+T` against every row of `block`, `R` rows at a time.
            ///
            /// # Safety
            /// The CPU must support AVX2.
            unsafe fn rows_of<const R: usize, const T: usize>(&self, t0: usize, block: Range<usize>, dots: &mut [f32]) {
                let acts: [&[i8]; T] = std::array::from_fn(|i| &self.acts[(t0 + i) * self.stride..][..self.stride]);
                let sums: [&[i32]; T] = std::array::from_fn(|i| &self.sums[(t0 + i) * self.per..][..self.per]);
                let len = self.rows.len();
                let mut store = |r: usize, v: &[[f32; T]]| {
                    for (i, row) in v.iter().enumerate() {
                        for (t, &dot) in row.iter().enumerate() {
                            dots[(t0 + t) * len + r + i - self.rows.start] = dot;
                        }
                    }
                };
                let mut r = block.start;
                while r < block.end {
                    if r + R <= block.end {
                        // SAFETY: the caller guarantees AVX2.
                        store(r, &unsafe { tile::<R, T>(self.job, r, acts, sums) });
                        r += R;
                    } else {
                        // SAFETY: the caller guarantees AVX2.
                        store(r, &unsafe { tile::<1, T>(self.job, r, acts, sums) });
                        r += 1;
                    }
                }
            }
        }

        $crate::ternary::decode_2bit!($feat, __m256i, _mm256_set1_epi8, _mm256_srli_epi16, _mm256_and_si256);

        #[target_feature(enable = $feat)]
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
                        Codes::I2s | Codes::I2sArm => {
                            let halves = if job.half_tail && c + 1 == job.chunks { 1 } else { 2 };
                            for h in 0..halves {
                                let q = decode(load(&row[c * 64 + h * 32..]), Codes::I2s);
                                for t in 0..T {
                                    let d = block_dot(&q, &acts[t][c * 256 + h * 128..]);
                                    acc[r][t] = _mm256_add_epi32(acc[r][t], d);
                                }
                            }
                        }
                        Codes::I2sRows4 => unreachable!("not accepted: rows in fours"),
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
                        Codes::Tq1 => unreachable!("TQ1_0 runs through gemm_many"),
                    }
                }
                if job.codes.is_i2s() {
                    for t in 0..T {
                        dots[r][t] = (hsum(acc[r][t]) - sums[t][0]) as f32;
                    }
                }
            }
            dots
        }

        /// Most tokens for the I2_S tiles, which decode in registers; more go to [`gemm_many`]. At 2B-4T
        /// (1 thread, `bitnet bench --parallel`), 5 / 8 sequences decoding together ran 11.3 / 14.1
        /// tokens/s through `gemm_many` against the tiles' 15.1 / 15.5, 12 and 16 ran 1–9% faster.
        const FEW_I2S: usize = 8;

        /// The same for TQ2_0: 2 / 4 sequences ran 8.3 / 12.3 tokens/s through `gemm_many` against the
        /// tiles' 12.8 / 14.2, 6 about the same, 8 15.5 against 14.3.
        const FEW_TQ2: usize = 4;

        /// Rows of [`gemm_many`]'s interleaved groups: one 32-byte load holds four codes of each.
        const GEMM_ROWS: usize = 8;

        /// Many tokens on every format, as the AVX-512 `gemm_many` at half width through
        /// [`$crate::ternary::interleaved_gemm`]: eight rows decoded once into codes in element order, interleaved by
        /// [`transpose_dwords8`](crate::x256::transpose_dwords8), then one `vpmaddubsw` per token against four broadcast activations advances
        /// all eight rows. Before, TQ2_0's tiles ended every block of every row and token in a
        /// horizontal sum, and TQ1_0 ran one token at a time through the GEMV (its digits decoded again
        /// for every token).
        #[target_feature(enable = $feat)]
        fn gemm_many(job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, sums: &[i32], dots: &mut [f32]) {
            let (chunks, block_bytes) = (job.chunks, job.row_bytes / job.chunks);
            let decode_row = |r: usize, dst: &mut [u8], scales: &mut [f32]| {
                let row = job.row(r);
                for c in 0..chunks {
                    let out = &mut dst[c * 256..(c + 1) * 256];
                    let codes: [__m256i; 8] = match job.codes {
                        Codes::I2s | Codes::I2sArm => {
                            // A 256-block is two 128-blocks of 32 bytes; a row's last may be one.
                            let lo = decode(load(&row[c * 64..]), Codes::I2s);
                            let hi = if job.half_tail && c + 1 == chunks {
                                [_mm256_setzero_si256(); 4]
                            } else {
                                decode(load(&row[c * 64 + 32..]), Codes::I2s)
                            };
                            std::array::from_fn(|k| if k < 4 { lo[k] } else { hi[k - 4] })
                        }
                        Codes::I2sRows4 => unreachable!("not accepted: rows in fours"),
                        Codes::Tq2 | Codes::Tq1 => {
                            let block = &row[c * block_bytes..(c + 1) * block_bytes];
                            // Both formats end their blocks with the f16 scale.
                            scales[c] = half::f16::from_le_bytes([block[block_bytes - 2], block[block_bytes - 1]]).to_f32();
                            if job.codes == Codes::Tq2 {
                                let halves = [decode(load(block), Codes::Tq2), decode(load(&block[32..]), Codes::Tq2)];
                                std::array::from_fn(|k| halves[k / 4][k % 4])
                            } else {
                                tq1_codes(block)
                            }
                        }
                    };
                    for (k, q) in codes.into_iter().enumerate() {
                        store(&mut out[k * 32..], q);
                    }
                }
            };
            gemm_interleaved(job, rows, acts, stride, sums, dots, (decode_row, None::<fn(usize, &[u8], &mut [u8])>));
        }

        $crate::ternary::interleaved_parts!(
            $feat,
            GEMM_ROWS,
            __m256i,
            __m256,
            transpose_dwords8,
            load,
            store,
            _mm256_setzero_si256,
            _mm256_setzero_ps,
            _mm256_set1_epi32,
            _mm256_sub_epi32,
            _mm256_cvtepi32_ps,
            _mm256_add_ps,
            _mm256_mul_ps,
            _mm256_loadu_ps,
            _mm256_storeu_ps,
            $max;
            $($t)*;
            $max;
            $($t)*
        );

        /// Signed bytes `8j .. 8j + 8` of `q`, widened to f32.
        #[target_feature(enable = "avx2,fma,f16c")]
        fn widen_q6(q: __m256i, j: usize) -> __m256 {
            let half = if j < 2 { _mm256_castsi256_si128(q) } else { _mm256_extracti128_si256::<1>(q) };
            let bytes = if j.is_multiple_of(2) { half } else { _mm_srli_si128::<8>(half) };
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
        }

        /// [`transpose_dwords8`](crate::x256::transpose_dwords8) of floats.
        #[target_feature(enable = "avx2,fma,f16c")]
        fn transpose8_ps(r: [__m256; 8]) -> [__m256; 8] {
            let t = transpose_dwords8(std::array::from_fn(|i| _mm256_castps_si256(r[i])));
            std::array::from_fn(|i| _mm256_castsi256_ps(t[i]))
        }

        $crate::vecops::f32_kernels!(
            $token,
            "avx2,fma,f16c",
            "avx2-fma",
            8,
            1,
            __m256,
            _mm256_setzero_ps,
            _mm256_set1_ps,
            _mm256_mul_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps,
            _mm256_storeu_ps,
            hsum_ps,
            sum_lanes8,
            transpose8_ps,
            4,
            _mm256_loadu_ps,
            __m128i,
            _mm_loadu_si128,
            _mm_set1_epi16,
            _mm256_cvtph_ps,
            _mm_loadl_epi64,
            _mm256_cvtepi8_epi32,
            _mm256_cvtepi32_ps,
            $feat,
            q8_dot,
            $q8_wide,
            $q8_wide8,
            dot_f16,
            false
        );

        /// The reference's float step after the integer products ([`bitnet_quant::isa::scale_dots`],
        /// a division per output) compiled for AVX2's registers: the same bits. On baseline SSE2 it was
        /// 3% of a 125M-shape prompt.
        #[target_feature(enable = $feat)]
        fn scale_dots_256(dots: &mut [f32], acts: &[bitnet_quant::ActScale], w_scale: Option<f32>) {
            bitnet_quant::isa::scale_dots(dots, acts, w_scale)
        }
    };
}
pub(crate) use avx2_family;
