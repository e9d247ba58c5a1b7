//! The ggml tensor type table: ids, names, block sizes and byte counts.
//!
//! Type ids are not globally unique across llama.cpp forks: bitnet.cpp's fork uses 36–39 for
//! I2_S, I8_S, TL1 and TL2, while upstream llama.cpp retired 36–38 and uses 39 for MXFP4. A file's
//! raw id is therefore interpreted through a [`Dialect`], which the reader picks from the file
//! itself (see [`Dialect::detect`]) unless the caller forces one.
//!
//! Byte counts follow the fork's `ggml_nbytes` exactly, including the three special cases that are
//! not block types (I2_S, TL1, TL2).

use std::fmt;

/// Which llama.cpp family gives meaning to the ambiguous type ids 31–41.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Upstream ggml-org/llama.cpp: 31–33 and 36–38 retired, 39 = MXFP4, 40 = NVFP4, 41 = Q1_0.
    Upstream,
    /// bitnet.cpp's llama.cpp fork: 31–33 = Q4_0_4_4/4_8/8_8, 36 = I2_S, 37 = I8_S, 38 = TL1,
    /// 39 = TL2.
    BitnetFork,
}

impl Dialect {
    /// Decides the dialect of a file from what it holds.
    ///
    /// * any tensor typed 36, 37 or 38 only exists in bitnet.cpp's fork;
    /// * a tensor typed 39 is TL2 when the file otherwise looks like bitnet.cpp's output (an
    ///   architecture name containing `bitnet`, or `general.file_type` 39 or 40, bitnet.cpp's
    ///   "mostly TL2" and "mostly I2_S"), and MXFP4 otherwise.
    pub fn detect(architecture: Option<&str>, file_type: Option<u64>, type_ids: &[u32]) -> Dialect {
        if type_ids.iter().any(|&t| (36..=38).contains(&t)) {
            return Dialect::BitnetFork;
        }
        let bitnet_arch = architecture.is_some_and(|a| a.to_ascii_lowercase().contains("bitnet"));
        let bitnet_ftype = matches!(file_type, Some(39) | Some(40));
        if bitnet_arch || bitnet_ftype { Dialect::BitnetFork } else { Dialect::Upstream }
    }
}

/// How the byte count of a tensor is computed from its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `ne0` must be a multiple of `block`; every block of `block` elements takes `bytes` bytes.
    Blocks { block: u64, bytes: u64 },
    /// bitnet.cpp I2_S: `numel / 4` bytes of 2-bit codes, then 32 bytes whose first 4 hold the f32
    /// scale.
    I2s,
    /// bitnet.cpp TL1: `numel / 4` bytes of 4-bit pair indices; the scale is a separate F32
    /// tensor named `<name>_scale`. ggml's `ggml_nbytes` reports 32 bytes more than the file
    /// stores (it reads them from whatever follows); see [`TensorType::ggml_nbytes`].
    Tl1,
    /// bitnet.cpp TL2: `(ne0 − 256)·ne1/3·5/8 + 256·ne1/2·4/8` bytes (index and sign planes,
    /// zero-padded); the scale is a separate F32 tensor. Defined for 2-D tensors with `ne0 ≥ 256`.
    Tl2,
}

macro_rules! tensor_types {
    ($( $variant:ident = $id:literal, $name:literal, $layout:expr, $doc:literal; )*) => {
        /// A ggml tensor type, resolved from a raw id through a [`Dialect`].
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum TensorType {
            $( #[doc = $doc] $variant, )*
        }

        impl TensorType {
            /// Every type this crate knows, in id order (both dialects).
            pub const ALL: &'static [TensorType] = &[$(TensorType::$variant,)*];

            /// The raw id stored in GGUF files (meaningful together with [`TensorType::dialects`]).
            pub const fn id(self) -> u32 {
                match self { $(TensorType::$variant => $id,)* }
            }

            /// ggml's lower-case type name (`"i2_s"`, `"q8_0"`, ...).
            pub const fn name(self) -> &'static str {
                match self { $(TensorType::$variant => $name,)* }
            }

            /// How the byte count of a tensor of this type follows from its shape.
            pub const fn layout(self) -> Layout {
                match self { $(TensorType::$variant => $layout,)* }
            }
        }
    };
}

const fn blocks(block: u64, bytes: u64) -> Layout {
    Layout::Blocks { block, bytes }
}

tensor_types! {
    F32 = 0, "f32", blocks(1, 4), "IEEE 754 binary32.";
    F16 = 1, "f16", blocks(1, 2), "IEEE 754 binary16.";
    Q4_0 = 2, "q4_0", blocks(32, 18), "4-bit, f16 scale per 32.";
    Q4_1 = 3, "q4_1", blocks(32, 20), "4-bit, f16 scale and min per 32.";
    Q5_0 = 6, "q5_0", blocks(32, 22), "5-bit, f16 scale per 32.";
    Q5_1 = 7, "q5_1", blocks(32, 24), "5-bit, f16 scale and min per 32.";
    Q8_0 = 8, "q8_0", blocks(32, 34), "8-bit, f16 scale per 32.";
    // ggml's block_q8_1 is 2 halves + 32 bytes = 36; gguf-py's table says 40 (its own bug).
    Q8_1 = 9, "q8_1", blocks(32, 36), "8-bit, f16 scale and sum per 32.";
    Q2_K = 10, "q2_K", blocks(256, 84), "2-bit k-quant.";
    Q3_K = 11, "q3_K", blocks(256, 110), "3-bit k-quant.";
    Q4_K = 12, "q4_K", blocks(256, 144), "4-bit k-quant.";
    Q5_K = 13, "q5_K", blocks(256, 176), "5-bit k-quant.";
    Q6_K = 14, "q6_K", blocks(256, 210), "6-bit k-quant.";
    Q8_K = 15, "q8_K", blocks(256, 292), "8-bit k-quant (intermediate).";
    IQ2_XXS = 16, "iq2_xxs", blocks(256, 66), "i-quant 2.06 bpw.";
    IQ2_XS = 17, "iq2_xs", blocks(256, 74), "i-quant 2.31 bpw.";
    IQ3_XXS = 18, "iq3_xxs", blocks(256, 98), "i-quant 3.06 bpw.";
    IQ1_S = 19, "iq1_s", blocks(256, 50), "i-quant 1.56 bpw.";
    IQ4_NL = 20, "iq4_nl", blocks(32, 18), "i-quant 4.5 bpw, non-linear.";
    IQ3_S = 21, "iq3_s", blocks(256, 110), "i-quant 3.44 bpw.";
    IQ2_S = 22, "iq2_s", blocks(256, 82), "i-quant 2.5 bpw.";
    IQ4_XS = 23, "iq4_xs", blocks(256, 136), "i-quant 4.25 bpw.";
    I8 = 24, "i8", blocks(1, 1), "Signed 8-bit integer.";
    I16 = 25, "i16", blocks(1, 2), "Signed 16-bit integer.";
    I32 = 26, "i32", blocks(1, 4), "Signed 32-bit integer.";
    I64 = 27, "i64", blocks(1, 8), "Signed 64-bit integer.";
    F64 = 28, "f64", blocks(1, 8), "IEEE 754 binary64.";
    IQ1_M = 29, "iq1_m", blocks(256, 56), "i-quant 1.75 bpw.";
    BF16 = 30, "bf16", blocks(1, 2), "bfloat16.";
    Q4_0_4_4 = 31, "q4_0_4x4", blocks(32, 18), "Interleaved Q4_0 (bitnet.cpp fork only).";
    Q4_0_4_8 = 32, "q4_0_4x8", blocks(32, 18), "Interleaved Q4_0 (bitnet.cpp fork only).";
    Q4_0_8_8 = 33, "q4_0_8x8", blocks(32, 18), "Interleaved Q4_0 (bitnet.cpp fork only).";
    TQ1_0 = 34, "tq1_0", blocks(256, 54), "Ternary, base-3 packed, 1.6875 bpw.";
    TQ2_0 = 35, "tq2_0", blocks(256, 66), "Ternary, 2-bit packed, 2.0625 bpw.";
    I2_S = 36, "i2_s", Layout::I2s, "bitnet.cpp ternary 2-bit codes + one f32 scale.";
    I8_S = 37, "i8_s", blocks(1, 1), "bitnet.cpp int8 activations (never stored in files).";
    TL1 = 38, "tl1", Layout::Tl1, "bitnet.cpp lookup-table ternary, pairs of weights.";
    TL2 = 39, "tl2", Layout::Tl2, "bitnet.cpp lookup-table ternary, triples of weights.";
    MXFP4 = 39, "mxfp4", blocks(32, 17), "Microscaling FP4 (upstream only).";
    NVFP4 = 40, "nvfp4", blocks(64, 36), "NVIDIA FP4 (upstream only).";
    Q1_0 = 41, "q1_0", blocks(128, 18), "1-bit (upstream only).";
}

impl TensorType {
    /// The dialects in which this type exists.
    pub const fn dialects(self) -> &'static [Dialect] {
        use TensorType::*;
        match self {
            Q4_0_4_4 | Q4_0_4_8 | Q4_0_8_8 | I2_S | I8_S | TL1 | TL2 => &[Dialect::BitnetFork],
            MXFP4 | NVFP4 | Q1_0 => &[Dialect::Upstream],
            _ => &[Dialect::Upstream, Dialect::BitnetFork],
        }
    }

    /// Resolves a raw id from a file.
    pub fn from_file_id(id: u32, dialect: Dialect) -> Option<TensorType> {
        TensorType::ALL.iter().copied().find(|t| t.id() == id && t.dialects().contains(&dialect))
    }

    /// Looks a type up by its ggml name (case-insensitive).
    pub fn from_name(name: &str) -> Option<TensorType> {
        TensorType::ALL.iter().copied().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Elements per block (1 for the non-block types).
    pub const fn block_size(self) -> u64 {
        match self.layout() {
            Layout::Blocks { block, .. } => block,
            Layout::I2s | Layout::Tl1 | Layout::Tl2 => 1,
        }
    }

    /// Whether this is one of the ternary weight formats.
    pub const fn is_ternary(self) -> bool {
        matches!(self, TensorType::TQ1_0 | TensorType::TQ2_0 | TensorType::I2_S | TensorType::TL1 | TensorType::TL2)
    }

    /// The number of bytes a tensor of this type and shape (`ne`, fastest dimension first)
    /// occupies in a GGUF file; an error names what is wrong with the shape.
    ///
    /// Equal to ggml's `ggml_nbytes` except for TL1 and TL2, where bitnet.cpp's converter
    /// stores fewer bytes than its runtime claims (see [`TensorType::ggml_nbytes`]).
    pub fn byte_size(self, ne: &[u64]) -> Result<u64, ShapeError> {
        let numel = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or(ShapeError::Overflow)?;
        let n = match self.layout() {
            Layout::Blocks { block, bytes } => {
                let ne0 = ne.first().copied().unwrap_or(1);
                if ne0 % block != 0 {
                    return Err(ShapeError::NotBlockMultiple { ne0, block });
                }
                (numel / block).checked_mul(bytes).ok_or(ShapeError::Overflow)?
            }
            Layout::I2s => numel / 4 + 32,
            Layout::Tl1 => numel / 4,
            Layout::Tl2 => {
                if ne.iter().skip(2).any(|&d| d != 1) {
                    return Err(ShapeError::NotTwoDimensional);
                }
                let ne0 = ne.first().copied().unwrap_or(1);
                let ne1 = ne.get(1).copied().unwrap_or(1);
                if ne0 < 256 {
                    return Err(ShapeError::Tl2TooNarrow { ne0 });
                }
                let three = (ne0 - 256).checked_mul(ne1).ok_or(ShapeError::Overflow)? / 3;
                let three = three.checked_mul(5).ok_or(ShapeError::Overflow)? / 8;
                let two = 256u64.checked_mul(ne1).ok_or(ShapeError::Overflow)? / 2 * 4 / 8;
                three.checked_add(two).ok_or(ShapeError::Overflow)?
            }
        };
        // Byte counts must also fit the address space of the reader's machine, with room for
        // ggml's 64 extra bytes.
        match usize::try_from(n) {
            Ok(_) if n < u64::MAX / 2 => Ok(n),
            _ => Err(ShapeError::Overflow),
        }
    }

    /// The byte count bitnet.cpp's runtime (`ggml_nbytes` in its llama.cpp fork) assigns: for TL1
    /// 32 more than stored, for TL2 the stored count rounded up to 32 plus 32.
    pub fn ggml_nbytes(self, ne: &[u64]) -> Result<u64, ShapeError> {
        let stored = self.byte_size(ne)?;
        Ok(match self.layout() {
            Layout::Tl1 => stored + 32,
            Layout::Tl2 => stored.next_multiple_of(32) + 32,
            _ => stored,
        })
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name().to_ascii_uppercase())
    }
}

/// Why a shape cannot hold a tensor of a given type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The element or byte count does not fit in 64 bits (or this machine's address space).
    #[error("element or byte count overflows")]
    Overflow,
    /// A block type needs the first dimension to be a whole number of blocks.
    #[error("first dimension {ne0} is not a multiple of the block size {block}")]
    NotBlockMultiple { ne0: u64, block: u64 },
    /// TL2 is only defined for matrices.
    #[error("TL2 tensors must be two-dimensional")]
    NotTwoDimensional,
    /// TL2's byte formula needs at least 256 columns.
    #[error("TL2 needs a first dimension of at least 256, got {ne0}")]
    Tl2TooNarrow { ne0: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_per_dialect() {
        assert_eq!(TensorType::from_file_id(36, Dialect::BitnetFork), Some(TensorType::I2_S));
        assert_eq!(TensorType::from_file_id(36, Dialect::Upstream), None);
        assert_eq!(TensorType::from_file_id(39, Dialect::BitnetFork), Some(TensorType::TL2));
        assert_eq!(TensorType::from_file_id(39, Dialect::Upstream), Some(TensorType::MXFP4));
        assert_eq!(TensorType::from_file_id(35, Dialect::Upstream), Some(TensorType::TQ2_0));
        assert_eq!(TensorType::from_file_id(4, Dialect::Upstream), None);
        for t in TensorType::ALL {
            for &d in t.dialects() {
                assert_eq!(TensorType::from_file_id(t.id(), d), Some(*t));
            }
            assert_eq!(TensorType::from_name(t.name()), Some(*t));
        }
    }

    #[test]
    fn byte_sizes_match_ggml() {
        // I2_S: numel/4 + 32 (the fork's ggml_nbytes special case).
        assert_eq!(TensorType::I2_S.byte_size(&[2560, 6912]).unwrap(), 2560 * 6912 / 4 + 32);
        assert_eq!(TensorType::TL1.byte_size(&[128, 3]).unwrap(), 96);
        assert_eq!(TensorType::TL1.ggml_nbytes(&[128, 3]).unwrap(), 96 + 32);
        assert_eq!(TensorType::TQ2_0.byte_size(&[512, 2]).unwrap(), 4 * 66);
        assert_eq!(TensorType::TQ1_0.byte_size(&[256]).unwrap(), 54);
        assert_eq!(TensorType::Q6_K.byte_size(&[256, 10]).unwrap(), 2100);
        assert_eq!(TensorType::F16.byte_size(&[3, 5, 7]).unwrap(), 210);
        // TL2 for a 2B-4T q projection, 2560 × 2560: (2304·2560/3·5/8) + 256·2560/2·4/8 = 1_228_800 + 163_840.
        assert_eq!(TensorType::TL2.byte_size(&[2560, 2560]).unwrap(), 1_228_800 + 163_840);
        assert_eq!(TensorType::TL2.ggml_nbytes(&[2560, 2560]).unwrap(), 1_228_800 + 163_840 + 32);
        // Integer division left to right: 3·1/3·5/8 = 0, 256·1/2·4/8 = 64.
        assert_eq!(TensorType::TL2.byte_size(&[259, 1]).unwrap(), 64);
        assert_eq!(TensorType::TL2.ggml_nbytes(&[259, 1]).unwrap(), 64 + 32);
        // 24·1/3·5/8 = 5: ggml rounds 69 up to 96 before adding the trailing 32.
        assert_eq!(TensorType::TL2.byte_size(&[280, 1]).unwrap(), 69);
        assert_eq!(TensorType::TL2.ggml_nbytes(&[280, 1]).unwrap(), 96 + 32);
        assert_eq!(TensorType::TL2.byte_size(&[255, 1]), Err(ShapeError::Tl2TooNarrow { ne0: 255 }));
        assert_eq!(TensorType::TL2.byte_size(&[256, 1, 2]), Err(ShapeError::NotTwoDimensional));
        assert_eq!(TensorType::Q8_0.byte_size(&[33]), Err(ShapeError::NotBlockMultiple { ne0: 33, block: 32 }));
        assert_eq!(TensorType::F32.byte_size(&[u64::MAX, 2]), Err(ShapeError::Overflow));
        assert_eq!(TensorType::F32.byte_size(&[u64::MAX / 2]), Err(ShapeError::Overflow));
    }

    #[test]
    fn dialect_detection() {
        assert_eq!(Dialect::detect(Some("llama"), Some(15), &[0, 1, 12]), Dialect::Upstream);
        assert_eq!(Dialect::detect(Some("llama"), Some(7), &[0, 36]), Dialect::BitnetFork);
        assert_eq!(Dialect::detect(Some("bitnet-b1.58"), Some(40), &[0, 1]), Dialect::BitnetFork);
        assert_eq!(Dialect::detect(Some("gpt-oss"), Some(38), &[0, 39]), Dialect::Upstream);
        assert_eq!(Dialect::detect(Some("llama"), Some(39), &[0, 39]), Dialect::BitnetFork);
    }
}
