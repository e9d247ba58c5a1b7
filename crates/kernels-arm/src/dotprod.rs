//! NEON with `FEAT_DotProd`: `sdot` adds four int8 products into each of four i32 lanes in one
//! instruction. `vdotq_s32` is not stable in Rust 1.95/1.96, so it is one `asm!` instruction.

use bitnet_quant::isa::TernaryIsa;

use crate::Dotprod;
use crate::codes::{Layout, gemm_tiled};

/// `acc` plus the 16 products of `c` and `a` (`sdot`).
#[target_feature(enable = "dotprod")]
#[inline]
pub(crate) fn mac(mut acc: int32x4_t, c: int8x16_t, a: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` only reads and writes these registers; the enclosing target feature
    // guarantees the CPU has the instruction.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {c:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            c = in(vreg) c,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `acc` plus the products of both pairs (two `sdot`).
#[target_feature(enable = "dotprod")]
#[inline]
fn mac2(acc: int32x4_t, c0: int8x16_t, a0: int8x16_t, c1: int8x16_t, a1: int8x16_t) -> int32x4_t {
    mac(mac(acc, c0, a0), c1, a1)
}

crate::codes::ternary_loops!("neon,dotprod");

/// Zero activation sums for [`tq1_gemv`]'s blocks, whose dots are already `Σ t·a`.
const NO_SUMS: [i32; 512] = [0; 512];

/// TQ1_0 rows against one token without decoding digits. Digit k of a byte q is
/// `d_k = (3·m_k − m_{k+1}) / 256` with `m_k = q·3^k mod 256`, so over a byte's digits
/// `Σ d_k·x_k = (3·Σ_k m_k·x_k − Σ_k m_{k+1}·x_k) / 256` exactly. With `y_k = m_k − 128` as
/// signed bytes (`q ^ 0x80`; `y_{k+1} = 3·y_k` wrapping, the bias survives) the two sums are
/// `sdot`s, and the bias adds `256·Σ x_k`, which cancels the codes' offset: `Σ t_k·x_k =
/// (3·A − B) / 256` with `A = Σ_k sdot(y_k, x_k)` and `B = Σ_k sdot(y_{k+1}, x_k)`. Per 16
/// bytes of five digits: one `eor`, five `mul`, ten `sdot`, against twenty decode operations and
/// five `sdot` through the codes.
#[target_feature(enable = "neon,dotprod")]
fn tq1_gemv(job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    let zeros;
    let no_sums: &[i32] = if sums.len() <= NO_SUMS.len() {
        &NO_SUMS[..sums.len()]
    } else {
        zeros = vec![0; sums.len()];
        &zeros
    };
    let (bias, three) = (vdupq_n_u8(0x80), vdupq_n_u8(3));
    // The qh digits' `m` by one `tbl` and a multiply, as `tq1_codes` spreads them.
    let (idx, mul) = (ld(&crate::codes::TQ1_QH_LANES), ld(&crate::codes::TQ1_QH_POW3));
    let s8 = vreinterpretq_s8_u8;
    tq_gemv(job, rows, act, no_sums, dots, |block, a| {
        // Fixed-length views: the loads below need no bounds checks.
        let a: &[i8; 256] = a[..256].try_into().expect("a block's activations");
        let block: &[u8; 54] = block.try_into().expect("a TQ1_0 block");
        let (mut da, mut db) = ([vdupq_n_s32(0); 2], [vdupq_n_s32(0); 2]);
        // The five digits of 16 bytes `q`, digit k against the activations at `at[k]`, into
        // accumulators `i` (a macro: as a closure LLVM did not inline all three).
        macro_rules! chain {
            ($q:expr, [$($at:literal),*], $i:literal) => {{
                let x = [$(ld_i8(&a[$at..])),*];
                let mut y = veorq_u8($q, bias);
                da[$i] = mac(da[$i], s8(y), x[0]);
                macro_rules! digit {
                    ($k:literal) => {
                        y = vmulq_u8(y, three);
                        da[$i] = mac(da[$i], s8(y), x[$k]);
                        db[$i] = mac(db[$i], s8(y), x[$k - 1]);
                    };
                }
                digit!(1);
                digit!(2);
                digit!(3);
                digit!(4);
                db[$i] = mac(db[$i], s8(vmulq_u8(y, three)), x[4]);
            }};
        }
        chain!(ld(block), [0, 32, 64, 96, 128], 0);
        chain!(ld(&block[16..]), [16, 48, 80, 112, 144], 1);
        chain!(ld(&block[32..]), [160, 176, 192, 208, 224], 0);
        // The qh digits: lane 4n + j holds m = qh[j]·3^n, against elements 240..256 alike.
        let y = veorq_u8(vmulq_u8(vqtbl1q_u8(ld(&block[38..]), idx), mul), bias);
        let x = ld_i8(&a[240..]);
        da[1] = mac(da[1], s8(y), x);
        db[1] = mac(db[1], s8(vmulq_u8(y, three)), x);
        let (sa, sb) = (vaddvq_s32(vaddq_s32(da[0], da[1])), vaddvq_s32(vaddq_s32(db[0], db[1])));
        // An exact multiple of 256 (|3A − B| ≤ 4 · 256 products of at most 2^14: no overflow).
        (3 * sa - sb) >> 8
    })
}

/// `R` rows × `T` tokens of signed values in element order (`Layout::Plain`), over the
/// elements `k` (a multiple of 16): one multiply-accumulate per row and token per 16.
/// Rows and tokens are cut to exactly `k` as 16-byte arrays first, so the loop has no
/// bounds checks (they had been half its instructions).
// Not inlined: one call per tile is nothing, and tools/arm-mca.py finds the loop by name.
#[inline(never)]
#[target_feature(enable = "neon,dotprod")]
fn tile<const R: usize, const T: usize>(w: &[i8], a: &[i8], stride: usize, k: Range<usize>) -> [[i32; T]; R] {
    let wr: [&[[i8; 16]]; R] = std::array::from_fn(|r| crate::codes::blocks16(w, r * stride, &k));
    let ar: [&[[i8; 16]]; T] = std::array::from_fn(|t| crate::codes::blocks16(a, t * stride, &k));
    let mut acc = [[vdupq_n_s32(0); T]; R];
    for i in 0..k.len() / 16 {
        let wv: [int8x16_t; R] = std::array::from_fn(|r| crate::codes::ld16(&wr[r][i]));
        for t in 0..T {
            let av = crate::codes::ld16(&ar[t][i]);
            for r in 0..R {
                acc[r][t] = mac(acc[r][t], wv[r], av);
            }
        }
    }
    acc.map(|row| row.map(|v| vaddvq_s32(v)))
}

/// [`gemv`] for other levels that have dotprod (i8mm).
///
/// # Safety
/// The CPU must support dotprod.
pub(crate) unsafe fn gemv_dotprod(job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
    // SAFETY: the caller guarantees dotprod.
    unsafe { gemv(job, rows, act, sums, dots) }
}

impl TernaryIsa for Dotprod {
    fn accepts(self, codes: Codes) -> bool {
        // The four-row I2_S order is x86's (the loader keeps the file's order here).
        codes != Codes::I2sRows4
    }

    fn gemv(self, job: &Job<'_>, rows: Range<usize>, act: &[i8], sums: &[i32], dots: &mut [f32]) {
        // SAFETY: the token exists only if `detect` found dotprod.
        unsafe { gemv(job, rows, act, sums, dots) }
    }

    fn gemm(self, job: &Job<'_>, rows: Range<usize>, acts: &[i8], stride: usize, _: &[i32], dots: &mut [f32]) {
        let tile = |w: &[i8], a: &[i8], s: usize, k: Range<usize>| {
            // SAFETY: the token exists only if `detect` found dotprod.
            unsafe { tile::<4, 4>(w, a, s, k) }
        };
        // SAFETY: NEON is part of every aarch64 CPU.
        unsafe { gemm_tiled::<4, 4>(Layout::Plain, job, rows, acts, stride, dots, tile) }
    }
}
