//! Ternary (1.58-bit) quantization for BitNet b1.58 models: the ground truth every fast kernel
//! is tested against, written to be read.
//!
//! * [`ternary`]: absmean weight quantization exactly as transformers does it (f32 and bf16;
//!   [`torch_sum`] replays torch's summation order for bit-identical scales).
//! * [`act`]: per-token absmax int8 activations as bitnet.cpp and transformers do them.
//! * Packings, each with pack and unpack: [`i2s`] (bitnet.cpp I2_S in its x86, ARM and
//!   row-interleaved orders), [`tq`] (llama.cpp TQ1_0, TQ2_0), [`tl`] (bitnet.cpp TL1, TL2).
//! * [`dense`]: F32/F16/BF16/Q8_0/Q6_K rows and the dense (output head) kernel interface.
//! * [`isa`]: the instruction-set-independent half of the fast kernels (checks, tiling,
//!   the reference's float steps), which kernel crates fill with their inner loops.
//! * [`reference`](mod@reference): the one kernel interface ([`TernaryKernel`]) and its scalar implementation.
//!
//! ```
//! use bitnet_quant::{absmean_quantize, i2s, ScalarKernel, TernaryKernel, PackedTernary,
//!                    TernaryFormat, QuantizedActivations, I2sLayout};
//! let (rows, cols) = (4, 128);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0).collect();
//! let q = absmean_quantize(&w, rows, cols)?;                       // ternary values + scale
//! let bytes = i2s::pack(&q.matrix, q.scale(), I2sLayout::X86)?;     // bitnet.cpp's I2_S bytes
//! let x = QuantizedActivations::quantize(&vec![0.5f32; cols], cols)?; // int8 activations
//! let packed = PackedTernary::new(TernaryFormat::I2s(I2sLayout::X86), rows, cols, &bytes, None)?;
//! let mut y = vec![0f32; rows];
//! ScalarKernel.gemm(&packed, &x, &mut y)?;                          // y ≈ W_q · x
//! # Ok::<(), bitnet_quant::QuantError>(())
//! ```

#![forbid(unsafe_code)]

pub mod act;
pub mod dense;
pub mod error;
pub mod i2s;
pub mod isa;
pub mod reference;
pub mod ternary;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tl;
pub mod tl_layout;
pub mod torch_sum;
pub mod tq;
pub mod vecops;

pub use act::{ActScale, QuantizedActivations, quantize_row_hf, quantize_row_i8s};
pub use dense::{DenseKernel, Q8Activations, Q8Row, ScalarDense};
pub use error::QuantError;
pub use i2s::I2sLayout;
pub use reference::{PackedTernary, ScalarKernel, TernaryFormat, TernaryKernel, WeightScales};
pub use ternary::{TernaryMatrix, TernaryWeights, absmean_quantize, absmean_quantize_bf16, absmean_quantize_torch};
pub use tl::TlTiling;
pub use tq::TqKind;

/// The GGUF tensor type that holds each format (bitnet.cpp's fork ids for I2_S, TL1, TL2).
pub fn gguf_type(format: TernaryFormat) -> bitnet_format::TensorType {
    use bitnet_format::TensorType as T;
    match format {
        TernaryFormat::I2s(_) => T::I2_S,
        TernaryFormat::Tq1_0 => T::TQ1_0,
        TernaryFormat::Tq2_0 => T::TQ2_0,
        TernaryFormat::Tl1(_) => T::TL1,
        TernaryFormat::Tl2(_) => T::TL2,
    }
}
