//! f32 vector operations of the forward pass (attention dot products, value accumulation) on
//! the widest vector unit, as plain function pointers handed out by each instruction set's
//! kernel type.

pub use bitnet_quant::vecops::F32Ops;

/// The f32 kernels of one instruction set, written once for any vector width `$w` (f32 lanes)
/// from its intrinsics (`$tok`: tokens per tile of the dense row products): `$half` is the integer vector of `$w` halves (`$load_half` loads it,
/// `$set1_half` broadcasts one, `$cvtph` widens it), `$load_q8` loads at least `$w` bytes into the
/// low lanes of an `__m128i`, `$cvt_i8` widens `$w` signed bytes to i32 lanes, `$reduce` sums a
/// vector's lanes and `$sum_lanes` the lanes of each of `$w` vectors at once, `$transpose_ps`
/// transposes `$w` vectors, `$mr` is the rows of a `matmul_add` tile, `$f16_one` is the one-token
/// F16 row dot product (the macro's own `dot_f16`, or AVX-512's `dot_f16_stream`, bit-identical
/// to it) and `$by_row` whether one token's F16 and Q8_0 rows go one after another (through
/// `$f16_one` and `dot_q8_0_stream`) rather than two (F16) or eight (Q8_0) side by side. The invoking
/// module provides only `widen_q6(__m256i, j)` (the `j`-th vector's worth of 32 signed bytes, as
/// f32). The macro writes the loads, the dense row dot products (F32, F16, Q8_0, Q6_K, and the
/// `bitnet_quant::isa::DenseIsa` impl on them), `axpy`, attention `scores` and `weighted_sum`, and `ops()`
/// handing those out as an [`F32Ops`].
#[cfg(target_arch = "x86_64")]
macro_rules! f32_kernels {
    ($token:ty, $feat:literal, $label:literal, $w:literal, $tok:literal, $vec:ty, $zero:ident, $set1:ident, $mul:ident, $fma:ident,
     $add:ident, $store:ident, $reduce:ident, $sum_lanes:ident, $transpose_ps:ident, $mr:literal, $loadu:ident, $half:ty, $load_half:ident, $set1_half:ident,
     $cvtph:ident, $load_q8:ident, $cvt_i8:ident, $cvt_i32:ident, $q8feat:literal, $q8_dot:ident, $q8_wide:ident, $q8_wide8:literal,
     $f16_one:ident, $by_row:literal) => {
        #[target_feature(enable = $feat)]
        fn load_f32(s: &[f32]) -> $vec {
            assert!(s.len() >= $w);
            // SAFETY: the slice holds at least a vector of floats; the load is unaligned.
            unsafe { $loadu(s.as_ptr()) }
        }

        /// `$w` halves from `2·$w` bytes, widened to f32.
        #[target_feature(enable = $feat)]
        fn load_f16(s: &[u8]) -> $vec {
            assert!(s.len() >= 2 * $w);
            // SAFETY: the slice holds at least 2·$w bytes; the load is unaligned.
            $cvtph(unsafe { $load_half(s.as_ptr().cast::<$half>()) })
        }

        /// `$w` int8 from `$w` bytes, widened to f32.
        #[target_feature(enable = $feat)]
        fn load_q8(s: &[u8]) -> $vec {
            assert!(s.len() >= $w);
            // SAFETY: the slice holds the $w bytes `$load_q8` reads; the load is unaligned.
            $cvt_i32($cvt_i8(unsafe { $load_q8(s.as_ptr().cast()) }))
        }

        /// A Q8_0 block's f16 scale, widened and broadcast.
        #[target_feature(enable = $feat)]
        fn q8_scale(b: &[u8]) -> $vec {
            $cvtph($set1_half(i16::from_le_bytes([b[0], b[1]])))
        }

        /// Σ w_r·x_t over `n` elements for `R` rows and `T` tokens, `w(r, i)` loading a vector of
        /// row `r`'s weights at element `i` as f32 (once for all tokens; each token's vector is
        /// loaded once for all rows): per (row, token) four accumulators over four vectors, then
        /// one vector at a time; the tail (< one vector) is left to the caller. Each pair's
        /// operations are the same whatever `R` and `T`, so a batch's results are bit-identical
        /// to its tokens' one at a time.
        /// `ahead(i)` is called once per four vectors, to prefetch.
        #[target_feature(enable = $feat)]
        fn dot_lanes<const R: usize, const T: usize>(
            n: usize,
            x: [&[f32]; T],
            w: impl Fn(usize, usize) -> $vec,
            ahead: impl Fn(usize),
        ) -> ([[f32; T]; R], usize) {
            let mut acc = [[[$zero(); 4]; T]; R];
            let mut i = 0;
            while i + 4 * $w <= n {
                ahead(i);
                for k in 0..4 {
                    let xv: [$vec; T] = std::array::from_fn(|t| load_f32(&x[t][i + $w * k..]));
                    for r in 0..R {
                        let wv = w(r, i + $w * k);
                        for t in 0..T {
                            acc[r][t][k] = $fma(wv, xv[t], acc[r][t][k]);
                        }
                    }
                }
                i += 4 * $w;
            }
            while i + $w <= n {
                for r in 0..R {
                    let wv = w(r, i);
                    for t in 0..T {
                        acc[r][t][0] = $fma(wv, load_f32(&x[t][i..]), acc[r][t][0]);
                    }
                }
                i += $w;
            }
            let sum = |a: &[$vec; 4]| $reduce($add($add(a[0], a[1]), $add(a[2], a[3])));
            (std::array::from_fn(|r| std::array::from_fn(|t| sum(&acc[r][t]))), i)
        }

        /// Prefetches into L2 (`x256::prefetch_l2`) for the `len` bytes of each row from byte
        /// `at`: without it two or more rows read side by side streamed at half the speed of one,
        /// the rows being too short for the hardware prefetchers to follow. Only into L2: an F16
        /// head (2B-4T, 2 MiB pages, `benches/examples/dense.rs`, Zen 3, six alternated rounds)
        /// streamed 16.5–17.1 GB/s with the L1 hint 2 KiB ahead beside the L2 one 32 KiB ahead,
        /// 19.0–21.4 with the L2 one alone (at 8, 16, 32 or 64 KiB alike), 14–15 with none or the
        /// L1 one alone. One row alone is one
        /// sequential stream, which they follow better than these hints (an F16 head at one
        /// token over 4 KiB pages: 13.5 ms with none, 18.4 with them), so it gets none.
        /// (No target feature: `#[inline(always)]` needs none, and where LLVM left it out of
        /// line the call cost the F16 head a third of its speed.)
        #[inline(always)]
        fn ahead<const R: usize>(w: [&[u8]; R], at: usize, len: usize) {
            if R == 1 {
                return;
            }
            // A plain count of lines (`len` is a constant of the caller's): the range
            // `(at..end.min(row.len())).step_by(64)` with a slice per line was a loop of about
            // fifteen instructions per row and line, which bound the F16 head in L2 (17 GB/s).
            for row in w {
                for line in 0..len.div_ceil(64) {
                    crate::x256::prefetch_l2(row, at + 64 * line);
                }
            }
        }

        /// The shortest of the rows' and tokens' lengths.
        fn common_len<const T: usize>(w: usize, x: &[&[f32]; T]) -> usize {
            x.iter().fold(w, |n, x| n.min(x.len()))
        }

        #[target_feature(enable = $feat)]
        fn dot_f32_many<const R: usize, const T: usize>(w: [&[f32]; R], x: [&[f32]; T]) -> [[f32; T]; R] {
            let n = common_len(w.iter().map(|w| w.len()).min().unwrap_or(0), &x);
            let (s, i) = dot_lanes::<R, T>(n, x, |r, i| load_f32(&w[r][i..]), |_| ());
            std::array::from_fn(|r| {
                std::array::from_fn(|t| s[r][t] + bitnet_quant::isa::tail_f32(&w[r][i..n], &x[t][i..n]))
            })
        }

        #[target_feature(enable = $feat)]
        fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
            dot_f32_many([w], [x])[0][0]
        }

        #[target_feature(enable = $feat)]
        fn dot_f16_many<const R: usize, const T: usize>(w: [&[u8]; R], x: [&[f32]; T]) -> [[f32; T]; R] {
            let n = common_len(w.iter().map(|w| w.len() / 2).min().unwrap_or(0), &x);
            let (s, i) = dot_lanes::<R, T>(n, x, |r, i| load_f16(&w[r][2 * i..]), |i| ahead(w, 2 * i, 8 * $w));
            std::array::from_fn(|r| {
                std::array::from_fn(|t| s[r][t] + bitnet_quant::isa::tail_f16(&w[r][2 * i..2 * n], &x[t][i..n]))
            })
        }

        /// One token against consecutive F16 rows with `$f16_one`, one row after another, in one
        /// function (`$q8feat` holds `$f16_one`'s features, so it inlines: no call per row).
        #[target_feature(enable = $q8feat)]
        fn gemv_f16_by_row(w: &[u8], cols: usize, x: &[f32], out: &mut [f32]) {
            for (row, o) in w.chunks_exact(2 * cols.max(1)).zip(out) {
                *o = $f16_one(row, x);
            }
        }

        // (AVX-512 reads one token's F16 rows with its own `dot_f16_stream` instead.)
        #[allow(dead_code)]
        #[target_feature(enable = $feat)]
        fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
            dot_f16_many([w], [x])[0][0]
        }

        /// Σ w·q of one Q8_0 row and one token's quantized activations, bit-identical to that
        /// row's lane of [`dot_q8_0_eight`] (per block the exact integer sum from `$q8_dot`,
        /// converted, times `d_w·d_x`, added with one fused multiply-add, blocks in order):
        /// blocks eight at a time, their sums made one vector by `x256::transpose_sum8`, their
        /// eight f16 scales read one by one (a gather read 2% slower), the hints of the F16
        /// stream (`x256::PREFETCH_STREAM`, five lines per eight blocks). Read one row after
        /// another this is one stream: 0.95–0.96 of a pure read of a 2B-4T Q8_0 head where
        /// the eight rows side by side read 0.77 (Xeon VM; docs/kernels.md, "2026-12-07 (night)").
        #[inline]
        #[target_feature(enable = $q8feat)]
        fn dot_q8_0_stream(w: &[u8], x: bitnet_quant::Q8Row<'_>) -> f32 {
            let blocks = (w.len() / 34).min(x.scales.len()).min(x.sums.len()).min(x.codes.len() / 32);
            let (p, (d1, d2)) = (w.as_ptr(), crate::x256::PREFETCH_STREAM);
            // Block `b`'s 32 codes; `b < blocks`, so its 34 bytes are inside `w`.
            let codes = |b: usize| {
                debug_assert!(b < blocks);
                // SAFETY: bytes `34b + 2 .. 34b + 34` of `w` (`34·blocks ≤ w.len()`); unaligned.
                unsafe { _mm256_loadu_si256(p.add(34 * b + 2).cast()) }
            };
            let scale = |b: usize| {
                debug_assert!(b < blocks);
                // SAFETY: bytes `34b .. 34b + 2` of `w`, as above.
                unsafe { p.add(34 * b).cast::<i16>().read_unaligned() }
            };
            // Block `b`'s activations, code sum and scale, from `blocks` of each (`blocks` is at
            // most their lengths, 32 codes a block): no bounds test per block (with them the
            // loop read a sixth slower).
            let (qp, sp, dp) = (x.codes.as_ptr(), x.sums.as_ptr(), x.scales.as_ptr());
            let block = |b: usize| {
                debug_assert!(b < blocks);
                // SAFETY: `b < blocks`: the 32 codes at `32b` and the sum at `b` are inside `x`;
                // unaligned load.
                let (q, sum) = unsafe { (_mm256_loadu_si256(qp.add(32 * b).cast()), sp.add(b).read()) };
                $q8_dot(codes(b), q, _mm256_set1_epi32(sum.wrapping_mul(-16)))
            };
            let dx = |b: usize| {
                debug_assert!(b < blocks);
                // SAFETY: `b < blocks ≤ x.scales.len()`.
                unsafe { dp.add(b).read() }
            };
            let mut acc = 0f32;
            for g in 0..blocks / 8 {
                for k in 0..5 {
                    crate::x256::prefetch_two(p, 34 * 8 * g + 64 * k, d1, d2);
                }
                let v: [__m256i; 8] = std::array::from_fn(|j| block(8 * g + j));
                let d = _mm256_cvtepi32_ps(crate::x256::transpose_sum8(v));
                let h: [i16; 8] = std::array::from_fn(|j| scale(8 * g + j));
                // SAFETY: `h` is 16 readable bytes; the load is unaligned.
                let dw = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr().cast()) });
                debug_assert!(8 * g + 8 <= blocks);
                // SAFETY: scales `8g .. 8g + 8` of `x`, below `blocks`; unaligned load.
                let c = _mm256_mul_ps(dw, unsafe { _mm256_loadu_ps(dp.add(8 * g)) });
                let (mut ds, mut cs) = ([0f32; 8], [0f32; 8]);
                crate::x256::store_f32x8(&mut ds, d);
                crate::x256::store_f32x8(&mut cs, c);
                for (d, c) in ds.into_iter().zip(cs) {
                    acc = d.mul_add(c, acc);
                }
            }
            for b in blocks / 8 * 8..blocks {
                let s = crate::x256::hsum(block(b)) as f32;
                let dw = half::f16::from_bits(scale(b) as u16).to_f32();
                acc = s.mul_add(dw * dx(b), acc);
            }
            acc
        }

        /// One token against consecutive Q8_0 rows of `row_bytes`, [`dot_q8_0_stream`] one row
        /// after another in one function.
        #[target_feature(enable = $q8feat)]
        fn gemv_q8_0_by_row(w: &[u8], row_bytes: usize, x: bitnet_quant::Q8Row<'_>, out: &mut [f32]) {
            for (row, o) in w.chunks_exact(row_bytes.max(1)).zip(out) {
                *o = dot_q8_0_stream(row, x);
            }
        }

        /// Σ w·q of eight consecutive Q8_0 rows (`w`: `row_bytes` each, 34-byte blocks of f16 d
        /// and 32 int8) and one token's activations quantized per block
        /// (`bitnet_quant::Q8Row`), block by block: `$q8_dot` gives each row eight i32 lanes
        /// adding up to the block's exact integer sum, one transpose (`x256::transpose_sum8`)
        /// makes them one lane per row, one gather fetches the eight rows' f16 scales, and the
        /// conversion, the scales `d_w·d_x` and the float add run once per block for the eight
        /// rows. Each lane's operations are the same whatever the other rows, so a row's result
        /// does not depend on its neighbours. The block's activations are loaded once for the
        /// eight rows, and the next eight rows (into L1) and the eight after them (into L2) are
        /// prefetched front to back while these are read. One row at a time, a float conversion
        /// and scale per row and block, ran 25 GB/s in L2 (2026-12-06, Zen 4).
        #[target_feature(enable = $q8feat)]
        fn dot_q8_0_eight<const T: usize>(
            w: &[u8],
            row_bytes: usize,
            x: [bitnet_quant::Q8Row<'_>; T],
        ) -> [[f32; 8]; T] {
            let mut blocks = row_bytes / 34;
            for x in &x {
                blocks = blocks.min(x.scales.len()).min(x.sums.len()).min(x.codes.len() / 32);
            }
            let stride = i32::try_from(row_bytes).ok().filter(|&s| s <= i32::MAX / 8);
            let (Some(stride), true) = (stride, w.len() >= 8 * row_bytes) else {
                // Rows too long for 32-bit gather offsets (or a short slice): one at a time.
                let mut out = [[0f32; 8]; T];
                for (out, x) in out.iter_mut().zip(x) {
                    for (r, o) in out.iter_mut().enumerate() {
                        let row = w.get(r * row_bytes..(r + 1) * row_bytes).unwrap_or(&[]);
                        *o = bitnet_quant::dense::dot_q8_0(row, x);
                    }
                }
                return out;
            };
            let offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
            let (group, base) = (8 * row_bytes, w.as_ptr());
            let mut acc = [_mm256_setzero_ps(); T];
            for b in 0..blocks {
                let at = base.wrapping_add(34 * b);
                let mut codes = [_mm256_setzero_si256(); 8];
                for (r, c) in codes.iter_mut().enumerate() {
                    // SAFETY: block b of row r, bytes `r·row_bytes + 34·b + 2 ..+ 32`, lies inside
                    // `w` (8·row_bytes ≤ w.len(), 34·b + 34 ≤ row_bytes); the load is unaligned.
                    *c = unsafe { _mm256_loadu_si256(at.add(r * row_bytes + 2).cast()) };
                }
                for k in 0..5 {
                    let line = 8 * 34 * b + 64 * k;
                    _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(group + line).cast());
                    _mm_prefetch::<_MM_HINT_T1>(base.wrapping_add(2 * group + line).cast());
                }
                // SAFETY: each lane reads the four bytes at the start of block b of row r (its f16
                // scale and two codes), inside `w` as above.
                let dw = unsafe { crate::x256::f16_scales8(at, offsets) };
                for (acc, x) in acc.iter_mut().zip(&x) {
                    let q = crate::x256::load_i8(&x.codes[32 * b..]);
                    let bias = _mm256_set1_epi32(x.sums[b].wrapping_mul(-16));
                    let mut v = [_mm256_setzero_si256(); 8];
                    for (v, &c) in v.iter_mut().zip(&codes) {
                        *v = $q8_dot(c, q, bias);
                    }
                    let dot = _mm256_cvtepi32_ps(crate::x256::transpose_sum8(v));
                    *acc = _mm256_fmadd_ps(dot, _mm256_mul_ps(dw, _mm256_set1_ps(x.scales[b])), *acc);
                }
            }
            let mut out = [[0f32; 8]; T];
            for (o, a) in out.iter_mut().zip(acc) {
                crate::x256::store_f32x8(o, a);
            }
            out
        }

        /// Σ w·x over Q6_K rows (210-byte blocks of 256: `ql[128]`, `qh[64]`, `scales[16]`,
        /// f16 `d`) for `R` rows and `T` tokens: codes from `x256::q6k_codes`, widened to f32 a
        /// vector at a time (once for all tokens), one scale per 16 weights, alternate vectors
        /// into two accumulators per (row, token).
        #[target_feature(enable = $feat)]
        fn dot_q6_k_many<const R: usize, const T: usize>(w: [&[u8]; R], x: [&[f32]; T]) -> [[f32; T]; R] {
            let mut acc = [[[$zero(); 2]; T]; R];
            let wlen = w.iter().map(|w| w.len()).min().unwrap_or(0);
            let blocks = (wlen / 210).min(common_len(usize::MAX, &x) / 256);
            for b in 0..blocks {
                ahead(w, 210 * b, 210);
                for r in 0..R {
                    let block = &w[r][210 * b..210 * (b + 1)];
                    let d = half::f16::from_le_bytes([block[208], block[209]]).to_f32();
                    for h in 0..2 {
                        for (k, qk) in crate::x256::q6k_codes(block, h).into_iter().enumerate() {
                            for j in 0..32 / $w {
                                let scale = d * f32::from(block[192 + h * 8 + j * $w / 16 + 2 * k] as i8);
                                let at = 256 * b + h * 128 + 32 * k + $w * j;
                                let v = $mul(widen_q6(qk, j), $set1(scale));
                                for t in 0..T {
                                    acc[r][t][j % 2] = $fma(v, load_f32(&x[t][at..]), acc[r][t][j % 2]);
                                }
                            }
                        }
                    }
                }
            }
            std::array::from_fn(|r| std::array::from_fn(|t| $reduce($add(acc[r][t][0], acc[r][t][1]))))
        }

        #[target_feature(enable = $feat)]
        fn dot_q6_k(w: &[u8], x: &[f32]) -> f32 {
            dot_q6_k_many([w], [x])[0][0]
        }

        impl bitnet_quant::isa::DenseIsa for $token {
            fn dot_f32(self, w: &[f32], x: &[f32]) -> f32 {
                // SAFETY: the token exists only if `detect` found the instruction set.
                unsafe { dot_f32(w, x) }
            }

            fn dot_f16(self, w: &[u8], x: &[f32]) -> f32 {
                // SAFETY: as for `dot_f32`.
                unsafe { $f16_one(w, x) }
            }

            fn dot_q8_0(self, w: &[u8], x: bitnet_quant::Q8Row<'_>) -> f32 {
                bitnet_quant::isa::q8_0_eight(w, w.len(), |g, rb| {
                    // SAFETY: the token exists only if `detect` found the instruction set.
                    unsafe { dot_q8_0_eight(g, rb, [x]) }
                })[0][0]
            }

            fn dot_q6_k(self, w: &[u8], x: &[f32]) -> f32 {
                // SAFETY: as for `dot_f32`.
                unsafe { dot_q6_k(w, x) }
            }

            fn dots_f32(self, w: &[&[f32]], x: &[f32], cols: usize, out: &mut [f32]) {
                // SAFETY: as for `dot_f32`.
                crate::vecops::dense_rows!(w, x, cols, out, $tok, |w, xs| unsafe { dot_f32_many(w, xs) });
            }

            fn dots_f16(self, w: &[&[u8]], x: &[f32], cols: usize, out: &mut [f32]) {
                // SAFETY: as for `dot_f32`.
                crate::vecops::dense_rows!(w, x, cols, out, $tok, |w, xs| unsafe { dot_f16_many(w, xs) });
            }

            fn gemv_f16(self, w: &[u8], cols: usize, x: &[f32], out: &mut [f32]) {
                if !$by_row || !crate::dense_stream() {
                    return bitnet_quant::isa::gemv_f16_in_pairs(self, w, cols, x, out);
                }
                // SAFETY: as for `dot_f32`.
                unsafe { gemv_f16_by_row(w, cols, x, out) }
            }

            fn gemv_q8_0(self, w: &[u8], row_bytes: usize, x: &bitnet_quant::Q8Activations, out: &mut [f32]) {
                if !$by_row || x.len() != 1 || !crate::dense_stream() {
                    return bitnet_quant::isa::gemv_q8_0_in_eights(self, w, row_bytes, x, out);
                }
                // SAFETY: as for `dot_f32`.
                unsafe { gemv_q8_0_by_row(w, row_bytes, x.row(0), out) }
            }

            fn dots_q8_0(self, w: &[u8], row_bytes: usize, x: &bitnet_quant::Q8Activations, out: &mut [f32]) {
                // Several tokens share each block's loads, scales and prefetches (a server's
                // batch, a perplexity run): up to eight (four unless `$q8_wide8`: with 16
                // registers, eight tokens' sums spilled) at a time through `$q8_wide`, a pair or
                // one through the one-token loop; each token's float steps are the one-token
                // loop's. Fewer than eight rows are padded once for all tokens.
                let (n, rows) = (x.len(), (w.len() / row_bytes.max(1)).min(8));
                bitnet_quant::isa::q8_0_eight(w, row_bytes, |g, rb| {
                    let mut t = 0;
                    while t < n {
                        let row = |k: usize| x.row(t + k);
                        let dots: &[[f32; 8]] = match n - t {
                            // SAFETY: as for `dot_f32`.
                            1 => &unsafe { dot_q8_0_eight(g, rb, [row(0)]) },
                            // SAFETY: as for `dot_f32`.
                            2 | 3 => &unsafe { dot_q8_0_eight(g, rb, [row(0), row(1)]) },
                            m if m >= 8 && $q8_wide8 => {
                                // SAFETY: as for `dot_f32`.
                                &unsafe { $q8_wide(g, rb, std::array::from_fn::<_, 8, _>(row)) }
                            }
                            // SAFETY: as for `dot_f32`.
                            _ => &unsafe { $q8_wide(g, rb, [row(0), row(1), row(2), row(3)]) },
                        };
                        for (k, dots) in dots.iter().enumerate() {
                            for (r, &d) in dots[..rows].iter().enumerate() {
                                out[r * n + t + k] = d;
                            }
                        }
                        t += dots.len();
                    }
                });
            }

            fn dots_q6_k(self, w: &[&[u8]], x: &[f32], cols: usize, out: &mut [f32]) {
                // SAFETY: as for `dot_f32`.
                crate::vecops::dense_rows!(w, x, cols, out, $tok, |w, xs| unsafe { dot_q6_k_many(w, xs) });
            }
        }

        /// y += a·x.
        #[target_feature(enable = $feat)]
        fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
            let n = y.len().min(x.len());
            let va = $set1(a);
            let mut i = 0;
            while i + $w <= n {
                let v = $fma(va, load_f32(&x[i..]), load_f32(&y[i..]));
                let dst = &mut y[i..i + $w];
                // SAFETY: `dst` holds a vector's worth of writable floats; the store is unaligned.
                unsafe { $store(dst.as_mut_ptr(), v) };
                i += $w;
            }
            for (y, x) in y[i..n].iter_mut().zip(&x[i..n]) {
                *y += a * x;
            }
        }

        /// Attention scores: one query against keys `stride` apart (see bitnet_quant::vecops);
        /// `key(p, e)` loads a vector of key `p` from its element `e`, and `tail(p, j0)` is the
        /// scalar dot product of elements `j0..` (heads that are not whole vectors, e.g. 120
        /// wide: they had gone to the reference whole, a quarter of a 3.8B-shape prompt), or
        /// longer than 8 vectors (128 wide on AVX2). Every key is a vector load and an FMA per
        /// vector (the query's loads hit L1); a vector's worth of keys at a time, one sum each,
        /// their lanes summed together by `$sum_lanes` (the last few keys: two sums and one
        /// horizontal add each). `false` when the head is shorter than one vector.
        #[target_feature(enable = $feat)]
        fn scores_by(
            q: &[f32],
            out: &mut [f32],
            key: impl Fn(usize, usize) -> $vec,
            tail: impl Fn(usize, usize) -> f32,
        ) -> bool {
            let hd = q.len();
            let vecs = hd / $w;
            if vecs == 0 {
                return false;
            }
            let whole = vecs * $w;
            let qv = |i: usize| load_f32(&q[i * $w..]);
            let lanes = |p: usize| {
                let (mut a0, mut a1) = ($zero(), $zero());
                let mut i = 0;
                while i + 2 <= vecs {
                    a0 = $fma(qv(i), key(p, i * $w), a0);
                    a1 = $fma(qv(i + 1), key(p, (i + 1) * $w), a1);
                    i += 2;
                }
                if i < vecs {
                    a0 = $fma(qv(i), key(p, i * $w), a0);
                }
                $add(a0, a1)
            };
            // A vector's worth of keys at a time, their lanes summed together: one horizontal
            // sum per key was half the operations of a 64-wide head.
            let mut p = 0;
            while p + $w <= out.len() {
                let dst = &mut out[p..p + $w];
                // One sum per key (the keys are the independent chains).
                let mut acc = [$zero(); $w];
                for i in 0..vecs {
                    let qi = qv(i);
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = $fma(qi, key(p + j, i * $w), *a);
                    }
                }
                let s = $sum_lanes(acc);
                // SAFETY: `dst` holds a vector's worth of writable floats; the store is unaligned.
                unsafe { $store(dst.as_mut_ptr(), s) };
                if whole < hd {
                    for (j, o) in dst.iter_mut().enumerate() {
                        *o += tail(p + j, whole);
                    }
                }
                p += $w;
            }
            for (p, o) in out.iter_mut().enumerate().skip(p) {
                let s = $reduce(lanes(p));
                *o = if whole < hd { s + tail(p, whole) } else { s };
            }
            true
        }

        #[target_feature(enable = $feat)]
        fn scores(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
            let hd = q.len();
            let key = |p: usize, e: usize| load_f32(&k[p * stride + e..p * stride + hd]);
            let tail = |p: usize, j0: usize| bitnet_quant::vecops::dot(&q[j0..], &k[p * stride + j0..p * stride + hd]);
            if !scores_by(q, out, key, tail) {
                bitnet_quant::vecops::scores(q, k, stride, out)
            }
        }

        /// [`scores`] over f16 keys (little-endian bytes).
        #[target_feature(enable = $feat)]
        fn scores_f16(q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
            let hd = q.len();
            let key = |p: usize, e: usize| load_f16(&k[2 * (p * stride + e)..2 * (p * stride + hd)]);
            let tail = |p: usize, j0: usize| {
                bitnet_quant::isa::tail_f16(&k[2 * (p * stride + j0)..2 * (p * stride + hd)], &q[j0..])
            };
            if !scores_by(q, out, key, tail) {
                bitnet_quant::vecops::scores_f16(q, k, stride, out)
            }
        }

        /// `out += Σ_p w[p]·v_p` over `B` vectors of columns held in registers while every
        /// position streams past (8 vectors cover a 128-wide head in one pass); `val(p, e)` loads a
        /// vector of value `p` from element `e` of the block.
        #[target_feature(enable = $feat)]
        fn weighted_block<const B: usize>(w: &[f32], out: &mut [f32], val: impl Fn(usize, usize) -> $vec) {
            let mut acc = [$zero(); B];
            for (p, &wp) in w.iter().enumerate() {
                let b = $set1(wp);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = $fma(b, val(p, i * $w), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let dst = &mut out[i * $w..(i + 1) * $w];
                let sum = $add(*a, load_f32(dst));
                // SAFETY: `dst` holds a vector's worth of writable floats; the store is unaligned.
                unsafe { $store(dst.as_mut_ptr(), sum) };
            }
        }

        /// Attention output: `out += Σ_p w[p]·v[p·stride..]`; columns past the last whole vector
        /// go to `tail(j0)`.
        #[target_feature(enable = $feat)]
        fn weighted_sum_by(
            w: &[f32],
            out: &mut [f32],
            val: impl Fn(usize, usize) -> $vec,
            tail: impl FnOnce(usize, &mut [f32]),
        ) {
            let hd = out.len();
            let mut j0 = 0;
            while j0 + 8 * $w <= hd {
                weighted_block::<8>(w, &mut out[j0..], |p, e| val(p, j0 + e));
                j0 += 8 * $w;
            }
            while j0 + $w <= hd {
                weighted_block::<1>(w, &mut out[j0..], |p, e| val(p, j0 + e));
                j0 += $w;
            }
            if j0 < hd {
                tail(j0, &mut out[j0..]);
            }
        }

        #[target_feature(enable = $feat)]
        fn weighted_sum(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
            let hd = out.len();
            weighted_sum_by(
                w,
                out,
                |p, e| load_f32(&v[p * stride + e..p * stride + hd]),
                |j0, rest| {
                    for (p, &wp) in w.iter().enumerate() {
                        axpy(rest, wp, &v[p * stride + j0..p * stride + hd]);
                    }
                },
            )
        }

        /// [`weighted_sum`] over f16 values (little-endian bytes).
        #[target_feature(enable = $feat)]
        fn weighted_sum_f16(w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
            let hd = out.len();
            weighted_sum_by(
                w,
                out,
                |p, e| load_f16(&v[2 * (p * stride + e)..2 * (p * stride + hd)]),
                |j0, rest| bitnet_quant::vecops::weighted_sum_f16(w, &v[2 * j0..], stride, rest),
            )
        }

        /// The 32 codes of a Q8_0 KV block as `32 / $w` f32 vectors.
        #[target_feature(enable = $feat)]
        fn q8_0_codes(b: &[u8]) -> [$vec; 32 / $w] {
            let mut v = [$zero(); 32 / $w];
            for (k, v) in v.iter_mut().enumerate() {
                *v = load_q8(&b[2 + $w * k..]);
            }
            v
        }

        /// The 32 codes of a Q4_0 KV block (low nibbles are elements 0..16, high ones 16..32,
        /// minus 8) as `32 / $w` f32 vectors; the nibbles are split in a 32-byte buffer (which
        /// LLVM does with two 16-byte vector ops) and widened like Q8_0 codes.
        #[target_feature(enable = $feat)]
        fn q4_0_codes(b: &[u8]) -> [$vec; 32 / $w] {
            let mut c = [0u8; 32];
            let (lo, hi) = c.split_at_mut(16);
            for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
                *l = (x & 15).wrapping_sub(8);
                *h = (x >> 4).wrapping_sub(8);
            }
            let mut v = [$zero(); 32 / $w];
            for (k, v) in v.iter_mut().enumerate() {
                *v = load_q8(&c[$w * k..]);
            }
            v
        }

        /// Attention scores over block-quantized keys (`bitnet_quant::vecops::scores_kv`): per
        /// key, each block's products summed in a vector and scaled by the block's `d` into one
        /// of two accumulators (even and odd blocks), one horizontal add per key.
        #[target_feature(enable = $feat)]
        fn scores_kv_by(
            q: &[f32],
            k: &[u8],
            stride: usize,
            bb: usize,
            out: &mut [f32],
            codes: impl Fn(&[u8]) -> [$vec; 32 / $w],
        ) {
            let nb = q.len() / 32;
            let block = |key: &[u8], b: usize| {
                let blk = &key[b * bb..(b + 1) * bb];
                let (c, qb) = (codes(blk), &q[32 * b..32 * (b + 1)]);
                let mut s = $mul(c[0], load_f32(qb));
                for j in 1..32 / $w {
                    s = $fma(c[j], load_f32(&qb[$w * j..]), s);
                }
                (s, q8_scale(blk))
            };
            for (p, o) in out.iter_mut().enumerate() {
                let key = &k[p * stride..];
                let (mut a0, mut a1) = ($zero(), $zero());
                let mut b = 0;
                while b + 2 <= nb {
                    let (s0, d0) = block(key, b);
                    let (s1, d1) = block(key, b + 1);
                    a0 = $fma(s0, d0, a0);
                    a1 = $fma(s1, d1, a1);
                    b += 2;
                }
                if b < nb {
                    let (s0, d0) = block(key, b);
                    a0 = $fma(s0, d0, a0);
                }
                *o = $reduce($add(a0, a1));
            }
        }

        #[target_feature(enable = $feat)]
        fn scores_kv(ty: bitnet_quant::vecops::KvBlock, q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
            match ty {
                bitnet_quant::vecops::KvBlock::Q8_0 => scores_kv_by(q, k, stride, ty.bytes(), out, |b| q8_0_codes(b)),
                bitnet_quant::vecops::KvBlock::Q4_0 => scores_kv_by(q, k, stride, ty.bytes(), out, |b| q4_0_codes(b)),
            }
        }

        /// `out += Σ_p w[p]·value_p` over `NB` blocks of columns held in registers while every
        /// position streams past: per position and block, the weight times the block's `d`
        /// broadcast, then an FMA per vector of codes.
        #[target_feature(enable = $feat)]
        fn weighted_kv_blocks<const NB: usize>(
            w: &[f32],
            v: &[u8],
            stride: usize,
            bb: usize,
            out: &mut [f32],
            codes: &impl Fn(&[u8]) -> [$vec; 32 / $w],
        ) {
            let mut acc = [[$zero(); 32 / $w]; NB];
            for (p, &wp) in w.iter().enumerate() {
                let wv = $set1(wp);
                for (b, a) in acc.iter_mut().enumerate() {
                    let blk = &v[p * stride + b * bb..p * stride + (b + 1) * bb];
                    let coef = $mul(wv, q8_scale(blk));
                    for (a, c) in a.iter_mut().zip(codes(blk)) {
                        *a = $fma(coef, c, *a);
                    }
                }
            }
            for (b, a) in acc.iter().enumerate() {
                for (j, a) in a.iter().enumerate() {
                    let dst = &mut out[32 * b + $w * j..32 * b + $w * (j + 1)];
                    let sum = $add(*a, load_f32(dst));
                    // SAFETY: `dst` holds a vector's worth of writable floats; the store is unaligned.
                    unsafe { $store(dst.as_mut_ptr(), sum) };
                }
            }
        }

        /// Attention output over block-quantized values (`bitnet_quant::vecops::weighted_sum_kv`):
        /// eight vectors of columns at a time, then one block at a time.
        #[target_feature(enable = $feat)]
        fn weighted_sum_kv_by(
            w: &[f32],
            v: &[u8],
            stride: usize,
            bb: usize,
            out: &mut [f32],
            codes: impl Fn(&[u8]) -> [$vec; 32 / $w],
        ) {
            const NB: usize = 8 * $w / 32;
            let nb = out.len() / 32;
            let mut b = 0;
            while b + NB <= nb {
                weighted_kv_blocks::<NB>(w, &v[b * bb..], stride, bb, &mut out[32 * b..], &codes);
                b += NB;
            }
            while b < nb {
                weighted_kv_blocks::<1>(w, &v[b * bb..], stride, bb, &mut out[32 * b..], &codes);
                b += 1;
            }
        }

        #[target_feature(enable = $feat)]
        fn weighted_sum_kv(ty: bitnet_quant::vecops::KvBlock, w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
            let bb = ty.bytes();
            match ty {
                bitnet_quant::vecops::KvBlock::Q8_0 => weighted_sum_kv_by(w, v, stride, bb, out, |b| q8_0_codes(b)),
                bitnet_quant::vecops::KvBlock::Q4_0 => weighted_sum_kv_by(w, v, stride, bb, out, |b| q4_0_codes(b)),
            }
        }

        /// Rows `i0 .. i0 + R` × column vectors `j0 .. j0 + V` of [`matmul_add`]: `R·V` sums in
        /// registers, started from `out`, one FMA per row and vector for each `d` (`a`'s element
        /// broadcast, `b`'s row loaded once for the `R` rows).
        #[target_feature(enable = $feat)]
        fn matmul_tile<const R: usize, const V: usize>(
            a: bitnet_quant::vecops::Mat<'_>,
            b: bitnet_quant::vecops::Mat<'_>,
            out: &mut [f32],
            os: usize,
            (i0, j0): (usize, usize),
        ) {
            let k = a.cols;
            let col = j0 * $w;
            let arows: [&[f32]; R] = std::array::from_fn(|r| &a.data[(i0 + r) * a.stride..][..k]);
            let mut acc: [[$vec; V]; R] =
                std::array::from_fn(|r| std::array::from_fn(|v| load_f32(&out[(i0 + r) * os + col + v * $w..])));
            for d in 0..k {
                let brow = &b.data[d * b.stride + col..][..V * $w];
                let bv: [$vec; V] = std::array::from_fn(|v| load_f32(&brow[v * $w..]));
                for r in 0..R {
                    let x = $set1(arows[r][d]);
                    for v in 0..V {
                        acc[r][v] = $fma(x, bv[v], acc[r][v]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (v, &sum) in acc.iter().enumerate() {
                    let dst = &mut out[(i0 + r) * os + col + v * $w..][..$w];
                    // SAFETY: `dst` holds a vector's worth of writable floats; the store is unaligned.
                    unsafe { $store(dst.as_mut_ptr(), sum) };
                }
            }
        }

        /// Column vectors `j0 .. j0 + V` of [`matmul_add`] for every row, `$mr` rows at a time.
        #[target_feature(enable = $feat)]
        fn matmul_cols<const V: usize>(
            a: bitnet_quant::vecops::Mat<'_>,
            b: bitnet_quant::vecops::Mat<'_>,
            out: &mut [f32],
            os: usize,
            j0: usize,
        ) {
            let mut i = 0;
            while i + $mr <= a.rows {
                matmul_tile::<$mr, V>(a, b, out, os, (i, j0));
                i += $mr;
            }
            while i < a.rows {
                matmul_tile::<1, V>(a, b, out, os, (i, j0));
                i += 1;
            }
        }

        /// `out += a·b` (see bitnet_quant::vecops::matmul_add) in tiles of `$mr` rows × two
        /// vectors of columns; the last columns (under a vector) as the reference does them.
        #[target_feature(enable = $feat)]
        fn matmul_add(a: bitnet_quant::vecops::Mat<'_>, b: bitnet_quant::vecops::Mat<'_>, out: &mut [f32], os: usize) {
            assert_eq!(a.cols, b.rows, "matmul_add: inner dimensions");
            a.check("matmul_add a");
            b.check("matmul_add b");
            let (m, n) = (a.rows, b.cols);
            assert!(m == 0 || (m - 1) * os + n <= out.len(), "matmul_add: output too short");
            let nv = n / $w;
            let mut j = 0;
            while j + 2 <= nv {
                matmul_cols::<2>(a, b, out, os, j);
                j += 2;
            }
            if j < nv {
                matmul_cols::<1>(a, b, out, os, j);
            }
            let whole = nv * $w;
            if whole < n {
                for i in 0..m {
                    let o = &mut out[i * os + whole..i * os + n];
                    for (d, &x) in a.row(i).iter().enumerate() {
                        o.iter_mut().zip(&b.row(d)[whole..]).for_each(|(o, &y)| *o += x * y);
                    }
                }
            }
        }

        /// `dst[j·ds + i] = src[i][j]` in blocks of `$w × $w` (one register transpose each), the
        /// edges element by element.
        #[target_feature(enable = $feat)]
        fn transpose(src: bitnet_quant::vecops::Mat<'_>, dst: &mut [f32], ds: usize) {
            src.check("transpose");
            let (rows, cols) = (src.rows, src.cols);
            assert!(rows == 0 || cols == 0 || (cols - 1) * ds + rows <= dst.len(), "transpose: output too short");
            let (rb, cb) = (rows / $w * $w, cols / $w * $w);
            for i in (0..rb).step_by($w) {
                for j in (0..cb).step_by($w) {
                    let t = $transpose_ps(std::array::from_fn(|r| load_f32(&src.data[(i + r) * src.stride + j..])));
                    for (c, v) in t.into_iter().enumerate() {
                        let d = &mut dst[(j + c) * ds + i..][..$w];
                        // SAFETY: `d` holds a vector's worth of writable floats; the store is unaligned.
                        unsafe { $store(d.as_mut_ptr(), v) };
                    }
                }
            }
            for i in 0..rows {
                for j in if i < rb { cb } else { 0 }..cols {
                    dst[j * ds + i] = src.data[i * src.stride + j];
                }
            }
        }

        /// f16 bytes to f32, a vector at a time (the last few as the reference does them).
        #[target_feature(enable = $feat)]
        fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
            let n = dst.len().min(src.len() / 2);
            let whole = n / $w * $w;
            for i in (0..whole).step_by($w) {
                let v = load_f16(&src[2 * i..]);
                let d = &mut dst[i..i + $w];
                // SAFETY: `d` holds a vector's worth of writable floats; the store is unaligned.
                unsafe { $store(d.as_mut_ptr(), v) };
            }
            bitnet_quant::vecops::f16_to_f32(&src[2 * whole..], &mut dst[whole..n]);
        }

        /// The reference's element-wise loop compiled for this instruction set's registers
        /// (the same operations per element, so the same bits as the reference).
        #[target_feature(enable = $feat)]
        fn glu(act: bitnet_quant::vecops::Activation, g: &mut [f32], u: &[f32]) {
            bitnet_quant::vecops::glu(act, g, u)
        }

        /// The reference's softmax compiled for this instruction set's registers (its sum's
        /// sixteen lanes keep their order, so the same bits as the reference).
        #[target_feature(enable = $feat)]
        fn softmax(x: &mut [f32]) {
            bitnet_quant::vecops::softmax(x)
        }

        /// The f32 ops; the token proves the CPU runs the instruction set.
        pub(crate) fn ops(_: $token) -> crate::vecops::F32Ops {
            fn wrapped_glu(act: bitnet_quant::vecops::Activation, g: &mut [f32], u: &[f32]) {
                // SAFETY: reachable only through the F32Ops built here, handed out only to a
                // holder of the token proving this instruction set's features.
                unsafe { glu(act, g, u) }
            }
            fn wrapped_softmax(x: &mut [f32]) {
                // SAFETY: as for `wrapped_glu`.
                unsafe { softmax(x) }
            }
            fn wrapped_matmul_add(
                a: bitnet_quant::vecops::Mat<'_>,
                b: bitnet_quant::vecops::Mat<'_>,
                out: &mut [f32],
                os: usize,
            ) {
                // SAFETY: as for `wrapped_glu`.
                unsafe { matmul_add(a, b, out, os) }
            }
            fn wrapped_transpose(src: bitnet_quant::vecops::Mat<'_>, dst: &mut [f32], ds: usize) {
                // SAFETY: as for `wrapped_glu`.
                unsafe { transpose(src, dst, ds) }
            }
            fn wrapped_f16_to_f32(src: &[u8], dst: &mut [f32]) {
                // SAFETY: as for `wrapped_glu`.
                unsafe { f16_to_f32(src, dst) }
            }
            crate::vecops::F32Ops {
                glu: wrapped_glu,
                softmax: wrapped_softmax,
                matmul_add: wrapped_matmul_add,
                transpose: wrapped_transpose,
                f16_to_f32: wrapped_f16_to_f32,
                ..bitnet_quant::f32_ops!(
                    $label,
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
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use f32_kernels;

/// The body of a `DenseIsa::dots_*` method: one or two rows `w` against the tokens of `x`
/// (`cols` apart) in tiles of `$tok`, 2 and 1 tokens, `$f(rows, tokens)` being the tile product
/// (a closure written once, instantiated for each tile shape).
#[cfg(target_arch = "x86_64")]
macro_rules! dense_rows {
    ($w:expr, $x:expr, $cols:expr, $out:expr, $tok:literal, $f:expr) => {
        match *$w {
            [a, b] => bitnet_quant::isa::by_tokens::<2, $tok>(
                $x,
                $cols,
                $out,
                |xs| ($f)([a, b], xs),
                |xs| ($f)([a, b], xs),
                |xs| ($f)([a, b], xs),
            ),
            _ => {
                let a = $w[0];
                bitnet_quant::isa::by_tokens::<1, $tok>(
                    $x,
                    $cols,
                    $out,
                    |xs| ($f)([a], xs),
                    |xs| ($f)([a], xs),
                    |xs| ($f)([a], xs),
                )
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use dense_rows;
