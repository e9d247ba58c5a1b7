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

/// Defines the kernel type of one feature level: a token that only `detect()` builds (so holding
/// one proves the CPU runs every feature listed). Its module implements
/// `bitnet_quant::isa::TernaryIsa` on it and `vecops` implements `DenseIsa`, from which
/// [`bitnet_quant::TernaryKernel`] and [`bitnet_quant::DenseKernel`] follow; on other
/// architectures `detect()` is always `None` and the kernels are the reference's.
macro_rules! level_kernels {
    ($(#[$doc:meta])* $name:ident, $label:literal, [$($feature:tt),+]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name(());

        impl $name {
            /// The name of this kernel set (`BITNET_KERNEL` selects it by this name).
            pub const NAME: &'static str = $label;

            /// The kernels, if this CPU supports every feature they use.
            pub fn detect() -> Option<$name> {
                #[cfg(target_arch = "aarch64")]
                {
                    if $(std::arch::is_aarch64_feature_detected!($feature))&&+ {
                        return Some($name(()));
                    }
                }
                None
            }

            /// The f32 ops (attention, norms): base NEON at every level.
            pub fn f32_ops(self) -> bitnet_quant::vecops::F32Ops {
                #[cfg(target_arch = "aarch64")]
                {
                    vecops::OPS
                }
                #[cfg(not(target_arch = "aarch64"))]
                {
                    bitnet_quant::vecops::SCALAR
                }
            }
        }

        #[cfg(target_arch = "aarch64")]
        vecops::dense_isa!($name);

        #[cfg(target_arch = "aarch64")]
        bitnet_quant::isa_kernel_impls!($name, $label);

        #[cfg(not(target_arch = "aarch64"))]
        bitnet_quant::isa_kernel_impls!($name, $label, reference);
    };
}

level_kernels!(
    /// NEON with dotprod for one token and i8mm (`smmla`) for many.
    I8mm,
    "neon-i8mm",
    ["neon", "dotprod", "i8mm"]
);
level_kernels!(
    /// NEON with the dot product instructions (`sdot`).
    Dotprod,
    "neon-dotprod",
    ["neon", "dotprod"]
);
level_kernels!(
    /// Base NEON (every aarch64 CPU).
    Neon,
    "neon",
    ["neon"]
);
