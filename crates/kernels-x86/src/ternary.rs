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
                Codes::I2s | Codes::I2sArm => [$and(s6, m), $and(s4, m), $and(s2, m), $and(v, m)],
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
/// across lanes and passed through `$finish`: TQ1_0's loop yields 256 times the sum), given the
/// block's 256 activations as eight vectors. Rows go eight at a time, block by block: the eight
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
