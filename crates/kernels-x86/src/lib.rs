//! x86-64 kernels behind bitnet-quant's one kernel interface ([`TernaryKernel`]).
//!
//! * [`Avx512Kernel`]: AVX-512 BW + VNNI (`vpdpbusd` multiplies the unsigned 2-bit codes by the
//!   int8 activations and accumulates in i32 in one instruction), 256 weights per 64-byte load.
//! * [`Avx2Kernel`]: AVX2 (`vpmaddubsw` + `vpmaddwd`), 128 weights per 32-byte load.
//!
//! Both handle I2_S in its x86 code order (the official files; rows must be whole 128-blocks,
//! which every real model has) and TQ2_0; any other format or shape goes to the scalar
//! reference, so a kernel never refuses a matrix. Integer sums are exact and the final float
//! operations are the reference's in the same order, so the results equal the scalar kernel's
//! bit for bit (the tests check exactly that).
//!
//! Codes are `t + 1 ∈ {0, 1, 2}`; `Σ code·a − Σ a = Σ t·a` undoes the offset, with the
//! activation sum computed once per token (per 256-block for TQ2_0, whose scales are per block).
//!
//! ```
//! use bitnet_quant::{QuantizedActivations, TernaryKernel};
//! if let Some(k) = bitnet_kernels_x86::best() {
//!     println!("fast path: {}", k.name());
//! }
//! ```
//!
//! [`TernaryKernel`]: bitnet_quant::TernaryKernel

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod dense;
mod ternary;
pub mod vecops;

pub use dense::{Avx2Dense, Avx512Dense};
pub use ternary::{Avx2Kernel, Avx512Kernel};

/// The fastest ternary kernel this CPU runs, if any x86 fast path applies.
pub fn best() -> Option<Box<dyn bitnet_quant::TernaryKernel>> {
    if let Some(k) = Avx512Kernel::detect() {
        return Some(Box::new(k));
    }
    Avx2Kernel::detect().map(|k| Box::new(k) as Box<dyn bitnet_quant::TernaryKernel>)
}
