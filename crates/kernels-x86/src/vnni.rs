//! The 256-bit `vpdpbusd` loops: written once ([`vnni_gemv`], [`vnni_tiles`]) for the two
//! encodings of the instruction, EVEX (`_mm256_dpbusd_epi32`, AVX-512 VNNI + VL: the AVX-512
//! set's one-token loops) and VEX (`_mm256_dpbusd_avx_epi32`, AVX-VNNI: Intel's cores since
//! Alder Lake and AMD's since Zen 5 have it, the client ones without AVX-512). The AVX-VNNI set
//! is the AVX2 set ([`crate::avx2::avx2_family`]: activations in element order, 16 registers)
//! with these loops where AVX2 pairs `vpmaddubsw` with `vpmaddwd` and 16-bit adds.
//!
//! This machine kind has AVX-512 but no AVX-VNNI, and qemu 7.2 does not emulate it, so the same
//! AVX-VNNI set is also built in EVEX encoding (`avx-vnni-evex`, run on any AVX-512 VNNI CPU):
//! the conformance tests and benchmarks run that one. It is compiled for AVX2's 16 registers with
//! the instruction written as assembly, so only the encoding and the compiler's freedom to fold a
//! load into the instruction (the assembly takes registers) differ from the VEX build.

/// The VNNI sets' digits of one transposed TQ1_0 register `$x` (see
/// [`crate::ternary::tq1_gemv`]) against the activations at element offsets `$e` (four bytes
/// each, broadcast). A digit never leaves its byte: with `x = q·3^k mod 256`, TQ1_0's digit is
/// `(3x) >> 8`, and `3x = 256·digit + x'` where `x'` ([`crate::x256::times3`], two wrapping byte
/// adds) is the next digit's `x`, so `Σ a·digit = (3·Σ a·x − Σ a·x') / 256` exactly: two
/// `vpdpbusd` and two adds per digit and register, `Σ a·x` into `$t[$i % $acc]` and `Σ a·x'` into
/// `$t[4 + $i % $acc]` (`$acc` accumulators each: four with 32 registers, two with 16, so that no
/// chain of dependent `vpdpbusd` is long; arrays indexed by constants, as closures over them
/// left them in memory). Lane by lane this is the same exact integer per row and block as summing
/// each row's lanes. Against one row at a time in its own registers (its tail bytes shuffled into
/// place, a transposing sum per block): 9.7 → 12.3 GB/s in cache, one core (Zen 4).
macro_rules! tq1_digits {
    ($dpbusd:ident, $acc:expr, $a:ident, $t:ident, $i:expr, $x:expr, [$($e:expr),*]) => {{
        let mut x = $x;
        $(
            let av = _mm256_set1_epi32(i32::from_le_bytes([$a[$e], $a[$e + 1], $a[$e + 2], $a[$e + 3]].map(|v| v as u8)));
            let next = $crate::x256::times3(x);
            $t[$i % $acc] = $dpbusd($t[$i % $acc], x, av);
            $t[4 + $i % $acc] = $dpbusd($t[4 + $i % $acc], next, av);
            x = next;
        )*
        let _ = x;
    }};
}
pub(crate) use tq1_digits;

/// What the I2_S one-token loop (`i2s_rows` of [`vnni_gemv`]) needs for a range of rows, with
/// every load it makes from them checked once: per 256-chunk `step` bytes from one to the next
/// ([`bitnet_quant::isa::Job::chunk_at`]), `full` whole chunks and maybe a half one (`half_tail`, row-major only),
/// the prefetch distances `fetch` (L1, L2), and `acts` activations read.
pub(crate) struct I2sPlan {
    pub(crate) rows: std::ops::Range<usize>,
    pub(crate) step: usize,
    pub(crate) full: usize,
    pub(crate) half_tail: bool,
    pub(crate) fetch: (usize, usize),
    pub(crate) acts: usize,
}

impl I2sPlan {
    /// The plan for rows `rows` (not empty) of `job` read `n` at a time against `act`: panics if
    /// a load would leave the codes or the activations.
    pub(crate) fn new(job: &bitnet_quant::isa::Job<'_>, rows: std::ops::Range<usize>, act: &[i8], n: usize) -> I2sPlan {
        let (full, blocks) = (job.row_bytes / 64, job.row_bytes / 32);
        let step = job.chunk_at(rows.start).1;
        let half_tail = blocks % 2 == 1;
        assert!(blocks > 0 && !rows.is_empty() && rows.end <= job.rows && (!half_tail || step == 64));
        // Row starts grow with the row in both orders: the last row's last byte read (its half
        // chunk's, or its last whole chunk's) bounds every row's.
        let f = job.chunk_at(rows.end - 1).0;
        let end = if half_tail { f + full * step + 32 } else { f + (full - 1) * step + 64 };
        assert!(end <= job.data.len());
        let acts = blocks * 128;
        assert!(act.len() >= acts);
        // Prefetch distances. Row-major: the same place in the next group of rows while a group
        // is under 4 KiB; beyond, that line is used a whole group later and L1 (which also holds
        // the activations, 28 KiB for 70B's FFN down) loses it first: a fixed distance within
        // each row instead (70B FFN down streamed 21.3 -> 26.7 GB/s in a token, 22 -> 29 in
        // stream.rs). Four-row order: one stream, short fixed distances.
        let next = n * job.row_bytes;
        let fetch = if job.codes == bitnet_quant::isa::Codes::I2sRows4 {
            crate::x256::PREFETCH_STREAM
        } else if next > 4096 {
            (crate::x256::PREFETCH, crate::x256::PREFETCH_L2)
        } else {
            (next, next + crate::x256::PREFETCH_L2 / 2)
        };
        I2sPlan { rows, step, full, half_tail, fetch, acts }
    }
}

/// The one-token loops on 256-bit `vpdpbusd` (`gemv`: I2_S through `i2s_rows`, TQ2_0 through
/// `tq2_block_dot` and [`crate::ternary::tq_gemv`], TQ1_0 through [`crate::ternary::tq1_gemv`]) and the Q8_0
/// head's block dot products (`q8_dot`, `dot_q8_0_wide`), for an instruction set whose features
/// are `$feat` and whose `vpdpbusd ymm` intrinsic is `$dpbusd`. `$slot(g, h)`: which of a
/// 256-chunk's eight 32-byte activation vectors meets code group `g` of its 128-block `h` (the
/// AVX-512 set's prepared order, or element order). `$rows`: I2_S rows read side by side (their
/// 4·`$rows` accumulators, four masks and the activations must fit the registers: 4 with AVX-512
/// VL's 32, 2 with 16); `$acc`: accumulators of each of TQ1_0's two sums (4, or 2 with 16
/// registers); `$acts_in_regs`: whether the I2_S loop loads a chunk's eight activation vectors
/// once for all its rows (32 registers) or each where the rows use it (16). The invoking module
/// provides `dot_q8_0_eight` (the one-token Q8_0 loop of
/// [`crate::vecops::f32_kernels`]).
macro_rules! vnni_gemv {
    ($feat:literal, $dpbusd:ident, $slot:ident, $rows:literal, $acc:literal, $acts_in_regs:literal) => {
        /// One token against many rows (decoding): rows go a few at a time ([`i2s_rows`], TQ's eight-row
        /// loops) and the whole row range runs in this one function (a call per row costs a third of the
        /// time).
        #[target_feature(enable = $feat)]
        fn gemv(job: &Job<'_>, rows: std::ops::Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
            match job.codes {
                Codes::I2s | Codes::I2sArm | Codes::I2sRows4 if !rows.is_empty() => {
                    let plan = $crate::vnni::I2sPlan::new(job, rows.clone(), act, I2S_ROWS);
                    for (i, dots) in dots[..rows.len()].chunks_mut(I2S_ROWS).enumerate() {
                        let r0 = rows.start + I2S_ROWS * i;
                        match dots.len() {
                            4 => i2s_rows::<4>(job, &plan, r0, act, sums[0], dots),
                            3 => i2s_rows::<3>(job, &plan, r0, act, sums[0], dots),
                            2 => i2s_rows::<2>(job, &plan, r0, act, sums[0], dots),
                            _ => i2s_rows::<1>(job, &plan, r0, act, sums[0], dots),
                        }
                    }
                }
                Codes::I2s | Codes::I2sArm | Codes::I2sRows4 => {}
                Codes::Tq2 => gemv_tq2(job, rows, act, sums, dots),
                Codes::Tq1 => gemv_tq1(job, rows, act, sums, dots),
            }
        }

        /// Rows the I2_S one-token loop reads side by side.
        const I2S_ROWS: usize = $rows;

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
        #[target_feature(enable = $feat)]
        fn i2s_rows<const N: usize>(
            job: &Job<'_>,
            plan: &$crate::vnni::I2sPlan,
            r0: usize,
            act: &[i8],
            sum: i32,
            dots: &mut [f32],
        ) {
            // The plan checked every load of its rows (once per call: per group of rows the checks
            // and their set-up were a tenth of the time at 2560 columns); these are its rows.
            assert!(plan.rows.start <= r0 && r0 + N <= plan.rows.end && act.len() >= plan.acts);
            let masks = [0xC0u8, 0x30, 0x0C, 0x03].map(|m| _mm256_set1_epi8(m as i8));
            let zero = _mm256_setzero_si256();
            let (step, full, (d1, d2)) = (plan.step, plan.full, plan.fetch);
            // Chunk `c` of row `r0 + i` starts at byte `first[i] + c·step`.
            let first: [usize; N] = std::array::from_fn(|i| job.chunk_at(r0 + i).0);
            let (w, a) = (job.data.as_ptr(), act.as_ptr());
            // Every `load` below is of a 128-block of one of the plan's rows or of 32 of its
            // `plan.acts` activations.
            let load = |p: *const u8, off: usize| {
                // SAFETY: `off` starts 32 bytes inside `job.data` (checked by `I2sPlan::new` for
                // the plan's rows, which `r0 .. r0 + N` are) or inside `act` (`plan.acts` long);
                // the load is unaligned, and the `$feat` features are this function's.
                unsafe { _mm256_loadu_si256(p.add(off).cast()) }
            };
            let mut acc = [[zero; 4]; N];
            for c in 0..full {
                if $acts_in_regs {
                    // 32 registers: the chunk's eight activation vectors loaded once for every
                    // row, each row's loads and multiply-adds together (with the rows
                    // interleaved per activation vector instead, the loop read 10% slower from
                    // memory, 18.5-22.1 against 20.7-24.5 GB/s, although as fast in cache).
                    let x: [__m256i; 8] = std::array::from_fn(|k| load(a.cast(), c * 256 + 32 * k));
                    for (i, acc) in acc.iter_mut().enumerate() {
                        $crate::x256::prefetch_two(w, first[i] + c * step, d1, d2);
                        for half in 0..2 {
                            let v = load(w, first[i] + c * step + 32 * half);
                            for g in 0..4 {
                                acc[g] = $dpbusd(acc[g], _mm256_and_si256(v, masks[g]), x[$slot(g, half)]);
                            }
                        }
                    }
                } else {
                    for &f in &first {
                        $crate::x256::prefetch_two(w, f + c * step, d1, d2);
                    }
                    // 16 registers: each activation vector loaded where the rows use it (loaded
                    // all at the start of the chunk, the eight of them went through the stack).
                    for half in 0..2 {
                        for g in 0..4 {
                            let x = load(a.cast(), c * 256 + 32 * $slot(g, half));
                            for (i, acc) in acc.iter_mut().enumerate() {
                                let v = load(w, first[i] + c * step + 32 * half);
                                acc[g] = $dpbusd(acc[g], _mm256_and_si256(v, masks[g]), x);
                            }
                        }
                    }
                }
            }
            if plan.half_tail {
                for (i, acc) in acc.iter_mut().enumerate() {
                    let v = load(w, first[i] + full * step);
                    for g in 0..4 {
                        let x = load(a.cast(), full * 256 + 32 * $slot(g, 0));
                        acc[g] = $dpbusd(acc[g], _mm256_and_si256(v, masks[g]), x);
                    }
                }
            }
            // Each row's groups shifted back (exact), then the rows' lanes summed together.
            let s: [__m256i; N] = std::array::from_fn(|i| {
                let acc = &acc[i];
                _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_srai_epi32::<6>(acc[0]), _mm256_srai_epi32::<4>(acc[1])),
                    _mm256_add_epi32(_mm256_srai_epi32::<2>(acc[2]), acc[3]),
                )
            });
            if N == 4 {
                let t = $crate::x256::hsum4([s[0], s[1 % N], s[2 % N], s[3 % N]]);
                let d = _mm_cvtepi32_ps(_mm_sub_epi32(t, _mm_set1_epi32(sum)));
                let mut out = [0f32; 4];
                // SAFETY: `out` holds four f32; the store is unaligned.
                unsafe { _mm_storeu_ps(out.as_mut_ptr(), d) };
                dots[..4].copy_from_slice(&out);
            } else {
                for (s, dot) in s.iter().zip(dots.iter_mut()) {
                    *dot = ($crate::x256::hsum(*s) - sum) as f32;
                }
            }
        }

        /// One TQ2_0 block against its prepared activations, in 256-bit registers (the I2_S stream's
        /// reason: 512-bit loads of this loop read memory slower on Zen 4): half `h`'s group `g` meets
        /// the 32 activations `a[2g + h]` (bytes `64·g + 32·h`); one accumulator per half.
        #[target_feature(enable = $feat)]
        fn tq2_block_dot(block: &[u8], a: &[__m256i; 8]) -> __m256i {
            let m = _mm256_set1_epi8(3);
            let mut acc = [_mm256_setzero_si256(); 2];
            for (h, acc) in acc.iter_mut().enumerate() {
                let v = $crate::x256::load(&block[h * 32..]);
                let q = [v, _mm256_srli_epi16::<2>(v), _mm256_srli_epi16::<4>(v), _mm256_srli_epi16::<6>(v)];
                for (g, q) in q.into_iter().enumerate() {
                    *acc = $dpbusd(*acc, _mm256_and_si256(q, m), a[$slot(g, h)]);
                }
            }
            _mm256_add_epi32(acc[0], acc[1])
        }

        $crate::ternary::tq_gemv!(gemv_tq2, $feat, bitnet_quant::tq::TQ2_0_BLOCK_BYTES, tq2_block_dot, |v| v);
        /// A TQ1_0 block's `Σ a·code` per lane from [`crate::vnni::tq1_digits`]' sums: `p` in
        /// `t[..4]`, `q` in `t[4..]`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn tq1_block_sum(t: [__m256i; 8]) -> __m256i {
            let p = _mm256_add_epi32(_mm256_add_epi32(t[0], t[1]), _mm256_add_epi32(t[2], t[3]));
            let q = _mm256_add_epi32(_mm256_add_epi32(t[4], t[5]), _mm256_add_epi32(t[6], t[7]));
            _mm256_srai_epi32::<8>(_mm256_sub_epi32(_mm256_add_epi32(p, _mm256_add_epi32(p, p)), q))
        }

        $crate::ternary::tq1_gemv!($feat, crate::vnni::tq1_digits($dpbusd, $acc), tq1_block_sum);

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
        #[target_feature(enable = $feat)]
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
                let u = $crate::x256::transpose_dwords8(codes);
                for k in 0..5 {
                    let line = 8 * 34 * b + 64 * k;
                    _mm_prefetch::<_MM_HINT_T1>(base.wrapping_add(2 * group + line).cast());
                }
                // SAFETY: each lane reads the four bytes at the start of block b of row r (its f16 scale
                // and two codes), inside `w` as above.
                let dw = unsafe { $crate::x256::f16_scales8(at, offsets) };
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
                        *s = $dpbusd(*s, u, _mm256_set1_epi32(quad));
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
                $crate::x256::store_f32x8(o, a);
            }
            out
        }

        /// Σ w·q of one Q8_0 block: `vpdpbusd` of the codes made unsigned (`w + 128`, one xor) into
        /// `bias` (−16·Σq in each of the eight lanes, so the lanes sum to Σ w·q).
        #[target_feature(enable = $feat)]
        fn q8_dot(w: __m256i, q: __m256i, bias: __m256i) -> __m256i {
            $dpbusd(bias, _mm256_xor_si256(w, _mm256_set1_epi8(-128)), q)
        }
    };
}
pub(crate) use vnni_gemv;

/// The AVX2 set's two multiply-add loops of the many-token product on `vpdpbusd`: `block_dot`
/// (a 128-block of decoded codes against 128 activations in element order, eight i32 lanes) and
/// `block_sums` (a 256-block of interleaved codes against `T` tokens, straight into the i32
/// accumulators: AVX2 adds `vpmaddubsw`'s pairs in 16 bits and widens every 32 steps).
macro_rules! vnni_tiles {
    ($feat:literal, $dpbusd:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        fn block_dot(q: &[__m256i; 4], a: &[i8]) -> __m256i {
            let mut s = _mm256_setzero_si256();
            for (g, &qg) in q.iter().enumerate() {
                s = $dpbusd(s, qg, $crate::x256::load_i8(&a[g * 32..]));
            }
            s
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn block_sums<const T: usize>(wb: &[u8], at: &[&[i8; 256]; T], mut acc: [__m256i; T]) -> [__m256i; T] {
            // Two chains per token (even and odd steps): `vpdpbusd` accumulates in place with a
            // latency of 4–5 cycles, and four tokens' four chains left its throughput half used
            // (no faster than AVX2's `vpmaddubsw`, whose 16-bit adds do not wait on it).
            let mut odd = [_mm256_setzero_si256(); T];
            for k in (0..64).step_by(2) {
                let wv =
                    [$crate::x256::load(&wb[k * 32..k * 32 + 32]), $crate::x256::load(&wb[k * 32 + 32..k * 32 + 64])];
                for t in 0..T {
                    let av = |k: usize| {
                        let q = [at[t][4 * k], at[t][4 * k + 1], at[t][4 * k + 2], at[t][4 * k + 3]];
                        _mm256_set1_epi32(i32::from_le_bytes(q.map(|b| b as u8)))
                    };
                    acc[t] = $dpbusd(acc[t], wv[0], av(k));
                    odd[t] = $dpbusd(odd[t], wv[1], av(k + 1));
                }
            }
            for t in 0..T {
                acc[t] = _mm256_add_epi32(acc[t], odd[t]);
            }
            acc
        }
    };
}
pub(crate) use vnni_tiles;

/// Which of a 256-chunk's 32-byte activation vectors, in element order, meets code group `g` of
/// 128-block `h`.
const fn element_slot(g: usize, h: usize) -> usize {
    4 * h + g
}

/// The AVX-VNNI set for token `$token` with features `$feat` and `vpdpbusd ymm` intrinsic
/// `$dpbusd`: with 16 registers, two I2_S rows side by side and two accumulators per TQ1_0 sum.
macro_rules! vnni_set {
    ($token:path, $feat:literal, $dpbusd:ident) => {
        use std::arch::x86_64::*;
        use std::ops::Range;

        use super::element_slot;
        use crate::ternary::Interleaved;
        use crate::x256::{hsum, hsum_ps, load, store, sum_lanes8, tq1_codes, transpose_dwords8};
        use bitnet_quant::isa::{Codes, Job, TernaryIsa};

        crate::vnni::vnni_gemv!($feat, $dpbusd, element_slot, 2, 2, false);
        crate::vnni::vnni_tiles!($feat, $dpbusd);
        crate::avx2::avx2_family!($token, $feat, dot_q8_0_wide, false, 6; 1 2 3 4 5);
    };
}

/// AVX-VNNI: `vpdpbusd` in VEX encoding.
pub(crate) mod vex {
    vnni_set!(crate::AvxVnni, "avx2,fma,f16c,avxvnni", _mm256_dpbusd_avx_epi32);
}

/// The same loops with `vpdpbusd` in EVEX encoding, for AVX-512 VNNI + VL CPUs (this machine
/// kind's tests and measurements). Compiled for AVX2 alone, so that the compiler has the same 16
/// registers as for the VEX build (with AVX-512 VL's 32 it spilled a tenth as often, and the
/// figures would not stand for AVX-VNNI CPUs), the instruction written as assembly.
pub(crate) mod evex {
    /// `vpdpbusd` on 256-bit registers, EVEX-encoded (the assembler's default for the mnemonic;
    /// VEX needs a `{vex}` prefix).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn dpbusd_evex(
        acc: core::arch::x86_64::__m256i,
        a: core::arch::x86_64::__m256i,
        b: core::arch::x86_64::__m256i,
    ) -> core::arch::x86_64::__m256i {
        let mut acc = acc;
        // SAFETY: the instruction reads and writes only these three registers. Only this
        // module's kernel set calls it, and only `AvxVnniEvex::detect`, which checks AVX-512
        // VNNI and VL, builds that set's token.
        unsafe {
            std::arch::asm!("vpdpbusd {0}, {1}, {2}", inout(ymm_reg) acc, in(ymm_reg) a, in(ymm_reg) b, options(pure, nomem, nostack, preserves_flags))
        };
        acc
    }

    vnni_set!(crate::AvxVnniEvex, "avx2,fma,f16c", dpbusd_evex);
}
