//! x86-64 kernels behind bitnet-quant's kernel interfaces ([`TernaryKernel`], [`DenseKernel`] and
//! the f32 ops), one type per instruction set, each built only by its `detect()`:
//!
//! * [`Avx512`]: AVX-512 F/BW/VL + VNNI (`vpdpbusd` multiplies the unsigned 2-bit codes by the
//!   int8 activations and accumulates in i32 in one instruction), 256 weights per 64-byte load;
//!   a many-token GEMM that decodes each block of rows once.
//! * [`AvxVnni`]: the AVX2 set with 256-bit `vpdpbusd` (AVX-VNNI, VEX encoding) in place of
//!   `vpmaddubsw` + `vpmaddwd`, for CPUs with AVX-VNNI but not AVX-512 (Intel since Alder Lake);
//!   [`AvxVnniEvex`] is the same loops in EVEX encoding, so that AVX-512 machines (ours) test them.
//! * [`Avx2`]: AVX2 + FMA + F16C (`vpmaddubsw` + `vpmaddwd`), 128 weights per 32-byte load.
//!
//! Layout, as memchr's: one module per instruction set (`avx2`, `avx512`, `vnni`: the 256-bit
//! `vpdpbusd` loops the AVX-512 and AVX-VNNI sets share), the 256-bit integer helpers all use in
//! `x256`, the 2-bit decoder in `ternary`, and the f32 ops written once for
//! any vector width in `vecops`. The ISA-independent halves of the ternary and dense kernels
//! (checks, activation preparation, the reference's float steps) are `bitnet_quant::isa`,
//! shared with kernels-arm.
//!
//! Both handle I2_S in its x86 code order (the official files; rows must be whole 128-blocks,
//! which every real model has), TQ2_0 and TQ1_0; any other format or shape goes to the scalar
//! reference, so a kernel never refuses a matrix. Integer sums are exact and the final float
//! operations are the reference's in the same order, so the ternary results equal the scalar
//! kernel's bit for bit (the tests check exactly that).
//!
//! Codes are `t + 1 ∈ {0, 1, 2}`; `Σ code·a − Σ a = Σ t·a` undoes the offset, with the
//! activation sum computed once per token (per 256-block for the TQ formats).
//!
//! ```
//! use bitnet_quant::TernaryKernel;
//! if let Some(k) = bitnet_kernels_x86::Avx512::detect() {
//!     println!("fast path: {} (f32 ops {})", k.name(), k.f32_ops().name);
//! }
//! ```
//!
//! [`TernaryKernel`]: bitnet_quant::TernaryKernel
//! [`DenseKernel`]: bitnet_quant::DenseKernel

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod ternary;
pub mod vecops;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(target_arch = "x86_64")]
mod x256;

// The kernel types: tokens that only `detect()` builds; each module implements
// `bitnet_quant::isa::{TernaryIsa, DenseIsa}` on its token.
bitnet_quant::kernel_token!(
    /// AVX-512 kernels (F, BW, VL, VNNI; AVX2, FMA and F16C for the 256-bit helpers).
    Avx512,
    "avx512-vnni",
    "x86_64",
    is_x86_feature_detected,
    ["avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx2", "fma", "f16c"],
    avx512::ops
);
bitnet_quant::kernel_token!(
    /// AVX-VNNI kernels: the AVX2 set with 256-bit `vpdpbusd` (VEX encoding) in place of
    /// `vpmaddubsw` + `vpmaddwd` (Intel cores since Alder Lake, AMD's since Zen 5).
    AvxVnni,
    "avx-vnni",
    "x86_64",
    is_x86_feature_detected,
    ["avxvnni", "avx2", "fma", "f16c"],
    vnni::vex::ops
);
bitnet_quant::kernel_token!(
    /// The AVX-VNNI kernels in EVEX encoding (AVX-512 VNNI + VL): the same loops, runnable where
    /// AVX-VNNI itself is not (this project's test machines), for their tests and benchmarks.
    AvxVnniEvex,
    "avx-vnni-evex",
    "x86_64",
    is_x86_feature_detected,
    ["avx512f", "avx512vl", "avx512vnni", "avx2", "fma", "f16c"],
    vnni::evex::ops
);
bitnet_quant::kernel_token!(
    /// AVX2 kernels (with FMA and F16C, which every AVX2 CPU has).
    Avx2,
    "avx2",
    "x86_64",
    is_x86_feature_detected,
    ["avx2", "fma", "f16c"],
    avx2::ops
);

/// The environment variable that puts the AVX-512 set's one-token F16 and Q8_0 heads back to
/// rows side by side (`0`), as they were read before one row after another measured faster on
/// the Xeon VM (docs/kernels.md, "2026-12-07 (night)"): for comparing both in one binary on
/// another CPU.
pub const DENSE_STREAM_ENV: &str = "BITNET_DENSE_STREAM";

/// Whether one token's F16 and Q8_0 rows are read one after another where a set can
/// ([`DENSE_STREAM_ENV`], read once).
pub(crate) fn dense_stream() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(DENSE_STREAM_ENV).map_or(true, |v| v != "0"))
}

/// The wrapping sum of `buf`, read with the widest loads this CPU has (AVX2 when present): a
/// memory read-bandwidth probe for benchmarks (`cargo xtask bench`'s roofline). A scalar loop of
/// 8-byte loads under-reads the machine by 10–25% on this machine kind, which had put token
/// generation above "100% of the roofline".
pub fn sum_u64(buf: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected just above.
            return unsafe { x256::sum_u64(buf) };
        }
    }
    buf.iter().fold(0u64, |a, &b| a.wrapping_add(b))
}
