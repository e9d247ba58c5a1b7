//! x86-64 kernels behind bitnet-quant's kernel interfaces ([`TernaryKernel`], [`DenseKernel`] and
//! the f32 ops), one type per instruction set, each built only by its `detect()`:
//!
//! * [`Avx512`]: AVX-512 F/BW/VL + VNNI (`vpdpbusd` multiplies the unsigned 2-bit codes by the
//!   int8 activations and accumulates in i32 in one instruction), 256 weights per 64-byte load;
//!   a many-token GEMM that decodes each block of rows once.
//! * [`Avx2`]: AVX2 + FMA + F16C (`vpmaddubsw` + `vpmaddwd`), 128 weights per 32-byte load.
//!
//! Layout, as memchr's: one module per instruction set (`avx2`, `avx512`), the 256-bit integer
//! helpers both use in `x256`, the ISA-independent halves of the ternary and dense kernels
//! (checks, activation preparation, the reference's float steps) in `ternary` and `dense`, and
//! the f32 ops written once for any vector width in `vecops`.
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
mod dense;
mod ternary;
pub mod vecops;
#[cfg(target_arch = "x86_64")]
mod x256;

/// Defines the kernel type of one instruction set: a struct that only `detect()` builds (so
/// holding one proves the CPU runs every feature listed), implementing [`bitnet_quant::TernaryKernel`]
/// and [`bitnet_quant::DenseKernel`] on the instruction set's inner loops (its module implements
/// `ternary::Isa` and `dense::DenseIsa` for the struct) and handing out its f32 ops.
macro_rules! isa_kernels {
    ($(#[$doc:meta])* $name:ident, $module:ident, $label:literal, [$($feature:tt),+]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name(());

        impl $name {
            /// The name of this kernel set (`BITNET_KERNEL` selects it by this name).
            pub const NAME: &'static str = $label;

            /// The kernels, if this CPU supports every feature they use.
            pub fn detect() -> Option<$name> {
                #[cfg(target_arch = "x86_64")]
                {
                    if $(std::arch::is_x86_feature_detected!($feature))&&+ {
                        return Some($name(()));
                    }
                }
                None
            }

            /// The f32 ops (attention, norms) of this instruction set.
            pub fn f32_ops(self) -> vecops::F32Ops {
                #[cfg(target_arch = "x86_64")]
                {
                    $module::ops(self)
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    bitnet_quant::vecops::SCALAR
                }
            }
        }

        impl bitnet_quant::TernaryKernel for $name {
            fn name(&self) -> &'static str {
                $label
            }

            fn supports(&self, format: bitnet_quant::TernaryFormat) -> bool {
                use bitnet_quant::{I2sLayout, TernaryFormat};
                matches!(format, TernaryFormat::I2s(I2sLayout::X86) | TernaryFormat::Tq2_0 | TernaryFormat::Tq1_0)
            }

            fn gemm_rows(
                &self,
                w: &bitnet_quant::PackedTernary<'_>,
                x: &bitnet_quant::QuantizedActivations,
                rows: std::ops::Range<usize>,
                out: &mut [f32],
            ) -> Result<(), bitnet_quant::QuantError> {
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: `self` exists only if `detect` found every feature.
                    unsafe { ternary::gemm_rows::<$name>(w, x, rows, out) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    bitnet_quant::ScalarKernel.gemm_rows(w, x, rows, out)
                }
            }
        }

        impl bitnet_quant::DenseKernel for $name {
            fn name(&self) -> &'static str {
                $label
            }

            fn gemm_rows(
                &self,
                ty: bitnet_format::TensorType,
                w: &[u8],
                cols: usize,
                x: &[f32],
                rows: std::ops::Range<usize>,
                out: &mut [f32],
            ) -> Result<(), bitnet_quant::QuantError> {
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: `self` exists only if `detect` found every feature.
                    unsafe { dense::gemm_rows::<$name>(ty, w, cols, x, rows, out) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    bitnet_quant::ScalarDense.gemm_rows(ty, w, cols, x, rows, out)
                }
            }
        }
    };
}

isa_kernels!(
    /// AVX-512 kernels (F, BW, VL, VNNI; AVX2, FMA and F16C for the 256-bit helpers).
    Avx512,
    avx512,
    "avx512-vnni",
    ["avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx2", "fma", "f16c"]
);
isa_kernels!(
    /// AVX2 kernels (with FMA and F16C, which every AVX2 CPU has).
    Avx2,
    avx2,
    "avx2",
    ["avx2", "fma", "f16c"]
);
