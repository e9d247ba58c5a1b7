//! x86 decoding of 2-bit codes; the instruction-set-independent half of the ternary kernels is
//! `bitnet_quant::isa`.

/// `decode(v, codes)`: the four 2-bit code groups of one vector of packed codes, in element
/// order (I2_S keeps group `g` at shift `6 − 2g`, TQ2_0 at `2g`), for an instruction set's vector
/// type and intrinsics. TQ1_0's base-3 codes are decoded by `x256::tq1_codes` instead.
#[cfg(target_arch = "x86_64")]
macro_rules! decode_2bit {
    ($feat:literal, $vec:ty, $set1_epi8:ident, $srli_epi16:ident, $and:ident) => {
        #[target_feature(enable = $feat)]
        fn decode(v: $vec, codes: Codes) -> [$vec; 4] {
            let m = $set1_epi8(3);
            let (s2, s4, s6) = ($srli_epi16::<2>(v), $srli_epi16::<4>(v), $srli_epi16::<6>(v));
            match codes {
                Codes::I2s | Codes::I2sArm | Codes::I2sRows4 => [$and(s6, m), $and(s4, m), $and(s2, m), $and(v, m)],
                Codes::Tq2 => [$and(v, m), $and(s2, m), $and(s4, m), $and(s6, m)],
                Codes::Tq1 => unreachable!("TQ1_0 is decoded by x256::tq1_codes"),
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use decode_2bit;

/// `$name`: the TQ2_0 / TQ1_0 one-token product for an instruction set whose
/// `$block_dot(block, a)` returns lanes of one `$block_bytes`-byte block's `Σ code·a` (summed
/// across lanes and passed through `$finish`), given the block's 256 activations as eight
/// vectors (AVX-512 takes TQ1_0 by `avx512::tq1_eight`). Rows go eight at a time, block by
/// block: the eight
/// rows' lane vectors of one block are summed across by one transpose
/// ([`crate::x256::transpose_sum8`]), the block's activation sum subtracted, each row's `d` (the
/// f16 in the block's last two bytes) applied with F16C and the products added to eight running
/// sums, one lane per row, in block order: the reference's float steps exactly, with no
/// horizontal sum, no f16 conversion call and no chain of dependent scalar adds per block (the
/// per-block closure through `tq_gemv` streamed TQ2_0 at 13.5 / 7.3 GB/s against I2_S's 23 / 20
/// on AVX-512 / AVX2, `benches/examples/stream.rs`; eight blocks of one row at a time still paid
/// a serial float chain and per-row costs, 11–15 GB/s in cache).
#[cfg(target_arch = "x86_64")]
macro_rules! tq_gemv {
    ($name:ident, $feat:literal, $block_bytes:expr, $block_dot:ident, $finish:expr) => {
        #[target_feature(enable = $feat)]
        fn $name(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
            const BLOCK: usize = $block_bytes;
            /// Rows `r0 .. r0 + N` (N ≤ 8) into `dots[..N]`.
            #[target_feature(enable = $feat)]
            fn eight<const N: usize>(job: &Job<'_>, r0: usize, act: &[i8], sums: &[i32], dots: &mut [f32]) {
                let rows: [&[u8]; N] = std::array::from_fn(|i| job.row(r0 + i));
                let mut acc = _mm256_setzero_ps();
                for (c, (a, &s)) in act.chunks_exact(256).zip(&sums[..job.chunks]).enumerate() {
                    // The block's activations, loaded once for the eight rows.
                    let a: [__m256i; 8] = std::array::from_fn(|k| crate::x256::load_i8(&a[32 * k..]));
                    let mut v = [_mm256_setzero_si256(); 8];
                    let mut d = [0u16; 8];
                    for i in 0..N {
                        let block = &rows[i][c * BLOCK..(c + 1) * BLOCK];
                        crate::x256::prefetch_rows(block, 8 * job.row_bytes);
                        v[i] = $block_dot(block, &a);
                        d[i] = u16::from_le_bytes([block[BLOCK - 2], block[BLOCK - 1]]);
                    }
                    let dot = _mm256_sub_epi32($finish(crate::x256::transpose_sum8(v)), _mm256_set1_epi32(s));
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(dot), crate::x256::f16x8(&d)));
                }
                let mut out = [0f32; 8];
                crate::x256::store_f32x8(&mut out, acc);
                dots[..N].copy_from_slice(&out[..N]);
            }
            for (i, dots) in dots[..rows.len()].chunks_mut(8).enumerate() {
                let r0 = rows.start + 8 * i;
                match dots.len() {
                    8 => eight::<8>(job, r0, act, sums, dots),
                    7 => eight::<7>(job, r0, act, sums, dots),
                    6 => eight::<6>(job, r0, act, sums, dots),
                    5 => eight::<5>(job, r0, act, sums, dots),
                    4 => eight::<4>(job, r0, act, sums, dots),
                    3 => eight::<3>(job, r0, act, sums, dots),
                    2 => eight::<2>(job, r0, act, sums, dots),
                    _ => eight::<1>(job, r0, act, sums, dots),
                }
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use tq_gemv;

/// The one-token TQ1_0 loop of a 256-bit instruction set (`gemv_tq1`), eight rows at a time with
/// one lane per row: each block's code bytes of the eight rows transposed
/// ([`crate::x256::tq1_lanes8`]), so that digit `k` of a register meets one dword of activations
/// broadcast and every lane's sum is its row's (no per-row shuffles of the 16 tail bytes and four
/// `qh` bytes, no transposing sum per block). `$digits!(args.., a, acc, i, register, [element
/// offsets])` adds one register's digits into the accumulators `acc: [__m256i; 8]` (`i`: the
/// register's number mod 4, to spread chains), and `$block_sum(acc)` is the block's exact
/// `Σ a·code` per lane. The float steps (block sum minus the activation sum, times the block's
/// f16 scale, added in block order) are the reference's, lane by lane: bit-identical.
#[cfg(target_arch = "x86_64")]
macro_rules! tq1_gemv {
    ($feat:literal, $($digits:ident)::+($($args:tt)*), $block_sum:ident) => {
        /// One token against TQ1_0 rows, eight at a time (see [`crate::ternary::tq1_gemv`]).
        #[target_feature(enable = $feat)]
        fn gemv_tq1(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
            /// Rows `r0 .. r0 + n` (n ≤ 8; fewer are padded with the last).
            #[target_feature(enable = $feat)]
            fn eight(job: &Job<'_>, r0: usize, n: usize, act: &[i8], sums: &[i32], out: &mut [f32; 8]) {
                const BLOCK: usize = bitnet_quant::tq::TQ1_0_BLOCK_BYTES;
                let rows: [&[u8]; 8] = std::array::from_fn(|i| job.row(r0 + i.min(n - 1)));
                let mut acc = _mm256_setzero_ps();
                for (c, (a, &s)) in act.chunks_exact(256).zip(&sums[..job.chunks]).enumerate() {
                    let a: &[i8; 256] = a.try_into().expect("256 activations");
                    let blocks: [&[u8; BLOCK]; 8] =
                        std::array::from_fn(|i| rows[i][c * BLOCK..(c + 1) * BLOCK].try_into().expect("one block"));
                    for block in &blocks[..n] {
                        crate::x256::prefetch_rows(&block[..], 8 * job.row_bytes);
                    }
                    let (head, tail, qh) = crate::x256::tq1_lanes8(&blocks);
                    let mut t = [_mm256_setzero_si256(); 8];
                    $($digits)::+!($($args)*, a, t, 0, head[0], [0, 32, 64, 96, 128]);
                    $($digits)::+!($($args)*, a, t, 1, head[1], [4, 36, 68, 100, 132]);
                    $($digits)::+!($($args)*, a, t, 2, head[2], [8, 40, 72, 104, 136]);
                    $($digits)::+!($($args)*, a, t, 3, head[3], [12, 44, 76, 108, 140]);
                    $($digits)::+!($($args)*, a, t, 0, head[4], [16, 48, 80, 112, 144]);
                    $($digits)::+!($($args)*, a, t, 1, head[5], [20, 52, 84, 116, 148]);
                    $($digits)::+!($($args)*, a, t, 2, head[6], [24, 56, 88, 120, 152]);
                    $($digits)::+!($($args)*, a, t, 3, head[7], [28, 60, 92, 124, 156]);
                    $($digits)::+!($($args)*, a, t, 0, tail[0], [160, 176, 192, 208, 224]);
                    $($digits)::+!($($args)*, a, t, 1, tail[1], [164, 180, 196, 212, 228]);
                    $($digits)::+!($($args)*, a, t, 2, tail[2], [168, 184, 200, 216, 232]);
                    $($digits)::+!($($args)*, a, t, 3, tail[3], [172, 188, 204, 220, 236]);
                    $($digits)::+!($($args)*, a, t, 0, qh, [240, 244, 248, 252]);
                    let dot = _mm256_sub_epi32($block_sum(t), _mm256_set1_epi32(s));
                    let d = blocks.map(|b| u16::from_le_bytes([b[BLOCK - 2], b[BLOCK - 1]]));
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(dot), crate::x256::f16x8(&d)));
                }
                crate::x256::store_f32x8(out, acc);
            }
            for (i, dots) in dots[..rows.len()].chunks_mut(8).enumerate() {
                let mut out = [0f32; 8];
                eight(job, rows.start + 8 * i, dots.len(), act, sums, &mut out);
                dots.copy_from_slice(&out[..dots.len()]);
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use tq1_gemv;

/// Per-thread scratch of the interleaved many-token GEMMs ([`interleaved_gemm`]), kept between
/// calls: fresh multi-megabyte buffers per matmul cost page faults and zeroing.
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
pub(crate) struct Interleaved {
    /// One group of rows decoded, `cols` codes each, in the order of the prepared activations.
    pub decoded: Vec<u8>,
    /// The same codes four at a time across the rows: `[step][row]` holds codes
    /// `4·step .. 4·step + 4` of every row of the group, from the first 64-byte boundary in
    /// `inter_buf` on ([`Interleaved::inter`]).
    inter_buf: Vec<u8>,
    /// The group's TQ block scales, `[chunk][row]` (I2_S: unused zeros).
    pub scales: Vec<f32>,
    /// The same scales as decoded, `[row][chunk]`.
    row_scales: Vec<f32>,
    /// Activation sums, `[chunk][token]` (I2_S: one chunk).
    pub sums: Vec<i32>,
}

#[cfg(target_arch = "x86_64")]
impl Interleaved {
    /// The interleaved codes, from a cache line on: every step's load is then whole lines (a
    /// `Vec<u8>` from the allocator is only 16-byte aligned; a 32-byte load across two lines ran
    /// 13% slower in a loop of the tiles' instructions on Zen 3, and a 64-byte load off a line
    /// always crosses one).
    pub fn inter(&self) -> &[u8] {
        let len = self.inter_buf.len().saturating_sub(63);
        let at = bitnet_quant::isa::line_offset(&self.inter_buf, len);
        &self.inter_buf[at..at + len]
    }
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static INTERLEAVED: std::cell::Cell<Interleaved> = std::cell::Cell::new(Interleaved::default());
}

/// The rows of the group after the one being computed, requested from memory a part at a time
/// while its tiles run: interleaving a group waited on memory (4% of a 125M-shape prompt from
/// L3, 3–4% of a 2B-4T one from DRAM), and requesting all of the next group's lines at once
/// helped only from L3 (a core keeps only so many misses in flight; the rest were lost).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Ahead<'a> {
    job: &'a bitnet_quant::isa::Job<'a>,
    rows: std::ops::Range<usize>,
}

#[cfg(target_arch = "x86_64")]
impl Ahead<'_> {
    /// Requests part `part` of `parts` of the rows' cache lines into L1.
    pub(crate) fn fetch(&self, part: usize, parts: usize) {
        let span = self.job.span(self.rows.clone());
        let lines = span.len().div_ceil(64);
        let base = self.job.data.as_ptr().wrapping_add(span.start);
        for l in lines * part / parts..lines * (part + 1) / parts {
            // SAFETY: SSE is part of x86-64's baseline, and a prefetch reads nothing
            // architecturally (the address is inside the rows' bytes).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(base.wrapping_add(64 * l).cast())
            };
        }
    }
}

/// The driver of both x86 many-token GEMMs (prompt processing is compute-bound, so each row is
/// decoded once for every token, not in the inner loop). Rows go `R` at a time: each row is
/// decoded by `decode(r, codes, scales)` (`r`: the row's index in `job`) into `job.chunks · 256` codes in the activations'
/// order (and a TQ row's block scales), the group is interleaved by `interleave(first, decoded,
/// inter)` (`first`: the group's first row, for an interleaving that reads the rows itself),
/// then `tiles(scratch, first, count, next)` computes rows `first .. first + count` (counted from
/// `rows.start`) for every token, requesting the next group's rows (`next`) as it goes. Rows past the end of the last group are zero codes with
/// zero scales, computed and dropped. With the interleaved layout one load holds four codes of
/// each of the `R` rows, so one multiply-add against four activations broadcast to every lane
/// advances all `R` rows for a token, and lane `i` ends with row `i`'s exact sum: nothing to
/// reduce across lanes, which a per-block scale (TQ) would otherwise need per row, token and block.
#[cfg(target_arch = "x86_64")]
pub(crate) fn interleaved_gemm<const R: usize>(
    job: &bitnet_quant::isa::Job<'_>,
    rows: std::ops::Range<usize>,
    n: usize,
    sums: &[i32],
    mut decode: impl FnMut(usize, &mut [u8], &mut [f32]),
    mut interleave: impl FnMut(usize, &[u8], &mut [u8]),
    mut tiles: impl FnMut(&Interleaved, usize, usize, &Ahead<'_>),
) {
    let (cols, per) = (job.chunks * 256, job.sums_per_token());
    let mut s = INTERLEAVED.take();
    s.decoded.resize(R * cols, 0);
    s.inter_buf.resize(R * cols + 63, 0);
    s.scales.resize(per * R, 0.0);
    s.row_scales.resize(per * R, 0.0);
    s.sums.resize(per * n, 0);
    for t in 0..n {
        for c in 0..per {
            s.sums[c * n + t] = sums[t * per + c];
        }
    }
    let mut b0 = rows.start;
    while b0 < rows.end {
        let nb = R.min(rows.end - b0);
        let Interleaved { decoded, inter_buf, scales, row_scales, .. } = &mut s;
        for (i, (dst, sc)) in decoded.chunks_exact_mut(cols).zip(row_scales.chunks_exact_mut(per)).enumerate() {
            if i < nb {
                decode(b0 + i, dst, sc);
            } else {
                dst.fill(0);
                sc.fill(0.0);
            }
        }
        for (i, sc) in row_scales.chunks_exact(per).enumerate() {
            for (c, &d) in sc.iter().enumerate() {
                scales[c * R + i] = d;
            }
        }
        interleave(b0, decoded, bitnet_quant::isa::line_aligned(inter_buf, R * cols));
        let next = Ahead { job, rows: b0 + nb..(b0 + nb + R).min(rows.end) };
        tiles(&s, b0 - rows.start, nb, &next);
        b0 += nb;
    }
    INTERLEAVED.set(s);
}

/// The instruction-set-specific parts of [`interleaved_gemm`] around an instruction set's
/// `block_sums::<T>(wb, at, acc)` (one 256-block's exact sums of the interleaved codes `wb`
/// against `T` tokens' 256 activations `at`, added into `acc`, lane = row) and its
/// `$transpose` of `$rows` registers of 32-bit lanes:
///
/// * `interleave(decoded, inter, cols)`: a decoded group (`cols` codes a row) into `[step][row]`;
/// * `micro::<T, TQ>(s, a, stride, t0, n)`: the group in `s` × `T` prepared tokens from `t0`
///   (`stride` apart from `a`); lane `i` of result `t` is row `i`'s product with token `t0 + t`:
///   I2_S `(Σ code·a − sum) as f32`, one integer sum to the end; TQ (`TQ`) `Σ_block ((Σ code·a −
///   sum) as f32) · d`, blocks in order with unfused multiply and add (the reference's roundings);
/// * `run_tiles(s, acts, stride, tq, (dots, len), rows, next)`: every token against the group, up
///   to `$max` at a time (`$max_tq` for TQ, whose float sums need registers too, and for
///   strides of whole 4 KiB; one monomorphised `micro` per count, `$t` / `$u` below the
///   maximum, so its accumulators stay in registers), into `dots` rows `rows` (`len` rows a
///   token), fetching a part of `next` per step;
/// * `gemm_interleaved(job, rows, acts, stride, sums, dots, (decode, inter))`: the whole product
///   through [`interleaved_gemm`] with the above, given the instruction set's row decoding and,
///   if `inter` is `Some`, its own interleaving `inter(first, decoded, out)` (else
///   `interleave`).
#[cfg(target_arch = "x86_64")]
macro_rules! interleaved_parts {
    ($feat:literal, $rows:expr, $vi:ty, $vf:ty, $transpose:ident, $load:ident, $store:ident, $zero_i:ident,
     $zero_f:ident, $set1:ident, $sub:ident, $cvt:ident, $add_f:ident, $mul_f:ident, $loadu_f:ident,
     $storeu_f:ident, $max:literal; $($t:literal)*; $max_tq:literal; $($u:literal)*) => {
        #[target_feature(enable = $feat)]
        fn gemm_interleaved(
            job: &Job<'_>,
            rows: std::ops::Range<usize>,
            acts: &[i8],
            stride: usize,
            sums: &[i32],
            dots: &mut [f32],
            (decode, mut inter): (impl FnMut(usize, &mut [u8], &mut [f32]), Option<impl FnMut(usize, &[u8], &mut [u8])>),
        ) {
            let (n, len, tq) = (acts.len() / stride, rows.len(), !job.codes.is_i2s());
            $crate::ternary::interleaved_gemm::<{ $rows }>(
                job,
                rows,
                n,
                sums,
                decode,
                |first, decoded, out| match &mut inter {
                    Some(f) => f(first, decoded, out),
                    None => interleave(decoded, out, stride),
                },
                |s, first, nb, next| run_tiles(s, acts, stride, tq, (&mut *dots, len), first..first + nb, next),
            );
        }

        #[target_feature(enable = $feat)]
        fn interleave(decoded: &[u8], inter: &mut [u8], cols: usize) {
            for k in (0..cols).step_by(4 * $rows) {
                let t = $transpose(std::array::from_fn(|i| $load(&decoded[i * cols + k..])));
                for (j, v) in t.into_iter().enumerate() {
                    $store(&mut inter[(k / 4 + j) * 4 * $rows..], v);
                }
            }
        }

        #[target_feature(enable = $feat)]
        fn micro<const T: usize, const TQ: bool>(s: &Interleaved, a: &[i8], stride: usize, t0: usize, n: usize) -> [$vf; T] {
            let zero: $vi = $zero_i();
            let (mut total, mut int) = ([$zero_f(); T], [zero; T]);
            for (c, wb) in s.inter()[..$rows * stride].chunks_exact(256 * $rows).enumerate() {
                // Fixed-length views: the loads in `block_sums` need no bounds checks.
                let at: [&[i8; 256]; T] =
                    std::array::from_fn(|t| a[t * stride + c * 256..][..256].try_into().expect("256 activations"));
                let acc = block_sums::<T>(wb, &at, if TQ { [zero; T] } else { int });
                if TQ {
                    let d: &[f32; $rows] = s.scales[c * $rows..(c + 1) * $rows].try_into().expect("one scale a row");
                    // SAFETY: `d` holds one float per lane; the load is unaligned.
                    let d = unsafe { $loadu_f(d.as_ptr()) };
                    for t in 0..T {
                        let dot = $sub(acc[t], $set1(s.sums[c * n + t0 + t]));
                        // Not fused: the reference rounds the product, then the sum.
                        total[t] = $add_f(total[t], $mul_f($cvt(dot), d));
                    }
                } else {
                    int = acc;
                }
            }
            if !TQ {
                for t in 0..T {
                    total[t] = $cvt($sub(int[t], $set1(s.sums[t0 + t])));
                }
            }
            total
        }

        #[target_feature(enable = $feat)]
        fn run_tiles(
            s: &Interleaved,
            acts: &[i8],
            stride: usize,
            tq: bool,
            (dots, len): (&mut [f32], usize),
            rows: std::ops::Range<usize>,
            next: &$crate::ternary::Ahead<'_>,
        ) {
            let n = acts.len() / stride;
            // A stride of whole 4 KiB puts every token's activations in the same L1 sets: 16
            // streams there missed (4096 columns: 223 -> 202-217 G multiply-adds/s).
            let max = if tq || stride % 4096 == 0 { $max_tq } else { $max };
            let steps = n.div_ceil(max);
            for (step, t0) in (0..n).step_by(max).enumerate() {
                next.fetch(step, steps);
                let a = &acts[t0 * stride..];
                let mut out = |t: usize, v: $vf| {
                    let at = (t0 + t) * len + rows.start;
                    let dst = &mut dots[at..at + rows.len()];
                    if let Ok(whole) = <&mut [f32; $rows]>::try_from(&mut *dst) {
                        // A whole group stored in place (a variable-length copy per token and
                        // group was a memmove call, 5% of a 125M-shape prompt).
                        // SAFETY: `whole` holds one float per lane; the store is unaligned.
                        unsafe { $storeu_f(whole.as_mut_ptr(), v) };
                    } else {
                        let mut lanes = [0f32; $rows];
                        // SAFETY: `lanes` holds one float per lane; the store is unaligned.
                        unsafe { $storeu_f(lanes.as_mut_ptr(), v) };
                        dst.copy_from_slice(&lanes[..dst.len()]);
                    }
                };
                match (tq, (n - t0).min(max)) {
                    $((true, $u) => micro::<$u, true>(s, a, stride, t0, n).into_iter().enumerate().for_each(|(t, v)| out(t, v)),)*
                    (true, _) => micro::<$max_tq, true>(s, a, stride, t0, n).into_iter().enumerate().for_each(|(t, v)| out(t, v)),
                    $((false, $t) => micro::<$t, false>(s, a, stride, t0, n).into_iter().enumerate().for_each(|(t, v)| out(t, v)),)*
                    (false, _) => micro::<$max, false>(s, a, stride, t0, n).into_iter().enumerate().for_each(|(t, v)| out(t, v)),
                }
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use interleaved_parts;

/// `quads(r)`: the first half of a transpose of 32-bit lanes, for `$n` registers of type `$v`:
/// within every 128-bit lane, pairs of rows then quads, so that `result[4q + m]`'s 128-bit lane
/// `L` holds column `4L + m` of rows `4q .. 4q + 4`. What is left is moving 128-bit lanes.
#[cfg(target_arch = "x86_64")]
macro_rules! transpose_quads {
    ($feat:literal, $v:ty, $n:expr, $lo32:ident, $hi32:ident, $lo64:ident, $hi64:ident) => {
        #[target_feature(enable = $feat)]
        fn quads(r: [$v; $n]) -> [$v; $n] {
            let t: [$v; $n] = std::array::from_fn(|j| {
                let (x, y) = (r[j / 2 * 2], r[j / 2 * 2 + 1]);
                if j % 2 == 0 { $lo32(x, y) } else { $hi32(x, y) }
            });
            std::array::from_fn(|j| {
                let (q, m) = (j / 4, j % 4);
                let (x, y) = (t[4 * q + m / 2], t[4 * q + 2 + m / 2]);
                if m % 2 == 0 { $lo64(x, y) } else { $hi64(x, y) }
            })
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use transpose_quads;
