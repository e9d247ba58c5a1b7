//! aarch64 kernels behind bitnet-quant's kernel interfaces ([`TernaryKernel`], [`DenseKernel`]
//! and the f32 ops), one type per feature level, each built only by its `detect()`:
//!
//! * [`Neon`] (every aarch64 CPU): ternary products with `smull`/`smlal2` into i16 pairs, widened
//!   by `sadalp`.
//! * [`Dotprod`] (ARMv8.2 `FEAT_DotProd`: Apple M1+, Graviton2+, Cortex-A76+, Raspberry Pi 5):
//!   `sdot` multiplies four int8 pairs into each i32 lane in one instruction.
//! * [`I8mm`] (ARMv8.6 `FEAT_I8MM`: Apple M2+, Graviton3+): the many-token GEMM on `smmla`, a
//!   2×8 by 8×2 int8 matrix product per instruction (twice `sdot`'s multiplies); one token runs
//!   `sdot` as [`Dotprod`] does.
//!
//! `sdot` and `smmla` have no stable intrinsic in Rust 1.95/1.96 (`vdotq_s32` and `vmmlaq_s32` are
//! behind `stdarch_neon_dotprod` / `stdarch_neon_i8mm`), so they are one-instruction `asm!`
//! blocks inside `#[target_feature]` functions, reached only through the detected types.
//!
//! Layout, as kernels-x86 and memchr: one module per level (`neon`, `dotprod`, `i8mm`), code
//! decoding and the loops every level shares in `codes` (written once, with the level's multiply
//! passed in), and the f32 ops and dense rows (base NEON, the same at every level) in `vecops`.
//! The instruction-set-independent halves (checks, activation preparation, final float steps) are
//! `bitnet_quant::isa`, shared with kernels-x86.
//!
//! Every I2_S order bitnet.cpp writes runs in place (no repacking, no second copy): the x86 order
//! (128-blocks, the official files) and the ARM order (64-blocks) both put 16 consecutive weights
//! in one byte lane group of a 16-byte vector, so activations stay in element order. TQ2_0 and
//! TQ1_0 run natively too. Integer sums are exact and the float steps the reference's, so the
//! ternary results equal the scalar kernel's bit for bit (the conformance tests check exactly that).
//!
//! ```
//! use bitnet_quant::TernaryKernel;
//! match bitnet_kernels_arm::Dotprod::detect() {
//!     Some(k) => println!("fast path: {} (f32 ops {})", k.name(), k.f32_ops().name),
//!     None => println!("no dotprod here"),
//! }
//! ```
//!
//! [`TernaryKernel`]: bitnet_quant::TernaryKernel
//! [`DenseKernel`]: bitnet_quant::DenseKernel

#[cfg(target_arch = "aarch64")]
mod codes;
#[cfg(target_arch = "aarch64")]
mod dotprod;
#[cfg(target_arch = "aarch64")]
mod i8mm;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod vecops;

// The kernel types: tokens that only `detect()` builds; each level's module implements
// `bitnet_quant::isa::TernaryIsa` on its token, `vecops` implements `DenseIsa` on all three.
macro_rules! level {
    ($(#[$doc:meta])* $name:ident, $label:literal, [$($feature:tt),+]) => {
        bitnet_quant::kernel_token!(
            $(#[$doc])* $name, $label, "aarch64", is_aarch64_feature_detected, [$($feature),+], vecops::ops
        );

        #[cfg(target_arch = "aarch64")]
        vecops::dense_isa!($name);
    };
}

level!(
    /// NEON with dotprod for one token and i8mm (`smmla`) for many.
    I8mm,
    "neon-i8mm",
    ["neon", "dotprod", "i8mm"]
);
level!(
    /// NEON with the dot product instructions (`sdot`).
    Dotprod,
    "neon-dotprod",
    ["neon", "dotprod"]
);
level!(
    /// Base NEON (every aarch64 CPU).
    Neon,
    "neon",
    ["neon"]
);
