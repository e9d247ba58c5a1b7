//! Output types: what the ternary weights and the embedding table / head are written as.

use super::*;

/// Type of the ternary linear weights in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    /// bitnet.cpp's I2_S (x86 block order), the default.
    I2s,
    /// llama.cpp's TQ1_0 (1.69 bits per weight; rows must be multiples of 256).
    Tq1_0,
    /// llama.cpp's TQ2_0 (2.06 bits per weight; rows must be multiples of 256).
    Tq2_0,
    /// bitnet.cpp's TL1 lookup-table layout (2 bits per weight) with a separate `<name>_scale`
    /// tensor, tiled as bitnet.cpp's preset kernels expect for their shapes (and recorded in the
    /// file, [`bitnet_quant::tl::TILINGS_KEY`], for any other shape).
    Tl1,
    /// bitnet.cpp's TL2 (1.67 bits per weight), like [`OutType::Tl1`].
    Tl2,
    /// Unquantized F16 layer weights (each ternary value times its scale): the baseline
    /// bitnet.cpp quotes its speed-ups against, readable by any GGUF tool. Runs as a dense model
    /// (activations are not quantized).
    F16,
    /// Unquantized F32 layer weights, like [`OutType::F16`].
    F32,
}

impl std::fmt::Display for OutType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutType::I2s => "i2_s",
            OutType::Tq1_0 => "tq1_0",
            OutType::Tq2_0 => "tq2_0",
            OutType::Tl1 => "tl1",
            OutType::Tl2 => "tl2",
            OutType::F16 => "f16",
            OutType::F32 => "f32",
        })
    }
}

impl std::str::FromStr for OutType {
    type Err = String;

    /// The names `--outtype` takes: i2_s, tq1_0, tq2_0, tl1, tl2, f16, f32.
    fn from_str(s: &str) -> Result<OutType, String> {
        parse_name(&OutType::ALL, s, "outtype")
    }
}

/// The one of `all` whose `Display` name is `s`, or an error listing the names.
pub(crate) fn parse_name<T: std::fmt::Display + Copy>(all: &[T], s: &str, what: &str) -> Result<T, String> {
    all.iter().copied().find(|t| t.to_string() == s).ok_or_else(|| {
        format!("unknown {what} {s:?} (one of {})", all.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "))
    })
}

impl OutType {
    /// Every type, in the order `--help` lists them.
    pub const ALL: [OutType; 7] =
        [OutType::I2s, OutType::Tq1_0, OutType::Tq2_0, OutType::Tl1, OutType::Tl2, OutType::F16, OutType::F32];

    pub(crate) fn tensor_type(self) -> TensorType {
        match self {
            OutType::I2s => TensorType::I2_S,
            OutType::Tq1_0 => TensorType::TQ1_0,
            OutType::Tq2_0 => TensorType::TQ2_0,
            OutType::Tl1 => TensorType::TL1,
            OutType::Tl2 => TensorType::TL2,
            OutType::F16 => TensorType::F16,
            OutType::F32 => TensorType::F32,
        }
    }

    /// `general.file_type`: bitnet.cpp's "mostly I2_S" (40), "mostly TL1/TL2" (38/39),
    /// llama.cpp's "mostly TQ1_0/TQ2_0" (36/37), "all F32" (0), "mostly F16" (1).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::I2s => 40,
            OutType::Tq1_0 => 36,
            OutType::Tq2_0 => 37,
            OutType::Tl1 => 38,
            OutType::Tl2 => 39,
            OutType::F16 => 1,
            OutType::F32 => 0,
        }
    }

    /// bitnet.cpp's TL types keep the scale out of the packed bytes, in a `<name>_scale` tensor.
    pub(crate) fn separate_scale(self) -> bool {
        matches!(self, OutType::Tl1 | OutType::Tl2)
    }

    /// The type a `rows × cols` ternary matrix is written as when `self` is asked for: `self` when
    /// it can hold the shape, else I2_S (which holds any), with the reason — as llama.cpp's
    /// converter falls back per tensor (1bitLLM's 3B has rows of 3200 and 8640, Gemma 3 270M of
    /// 640: no multiple of 256).
    pub fn for_matrix(self, rows: usize, cols: usize) -> (OutType, Option<String>) {
        let why = match self {
            OutType::Tq1_0 | OutType::Tq2_0 => (!cols.is_multiple_of(bitnet_quant::tq::QK_K))
                .then(|| format!("its rows of {cols} are not a multiple of {}", bitnet_quant::tq::QK_K)),
            OutType::Tl1 | OutType::Tl2 => {
                tl::choose_tiling(self == OutType::Tl2, rows, cols).err().map(|e| e.to_string())
            }
            _ => None,
        };
        match why {
            Some(why) => (OutType::I2s, Some(why)),
            None => (self, None),
        }
    }

    pub(crate) fn pack(self, m: &TernaryMatrix, scale: f32) -> Result<Vec<u8>> {
        Ok(match self {
            OutType::I2s => i2s::pack(m, scale, I2sLayout::X86)?,
            OutType::Tq1_0 => tq::pack(TqKind::Tq1_0, m, scale)?,
            OutType::Tq2_0 => tq::pack(TqKind::Tq2_0, m, scale)?,
            OutType::Tl1 | OutType::Tl2 => {
                let tl2 = self == OutType::Tl2;
                let tiling = tl::choose_tiling(tl2, m.rows(), m.cols())?;
                if tl2 { tl::pack_tl2(m, tiling)? } else { tl::pack_tl1(m, tiling)? }
            }
            OutType::F16 | OutType::F32 => {
                let values: Vec<f32> = m.values().iter().map(|&t| f32::from(t) * scale).collect();
                bitnet_quant::dense::quantize_row(self.tensor_type(), &values)?
            }
        })
    }
}

/// What `convert` says about the ternary tensors (name, rows, cols) written in another type than
/// `outtype`: one line per reason, with how many and which.
pub(crate) fn fallback_notes<'a>(
    tensors: impl Iterator<Item = (&'a str, usize, usize)>,
    outtype: OutType,
) -> Vec<String> {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, rows, cols) in tensors {
        if let (ty, Some(why)) = outtype.for_matrix(rows, cols) {
            let key = format!("written as {} ({why})", ty.to_string().to_uppercase());
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.1.push(name),
                None => groups.push((key, vec![name])),
            }
        }
    }
    let asked = outtype.to_string().to_uppercase();
    groups
        .into_iter()
        .map(|(how, names)| {
            let shown: Vec<&str> = names.iter().take(4).copied().collect();
            let more = if names.len() > 4 { format!(", … {} more", names.len() - 4) } else { String::new() };
            format!("{} tensors {asked} cannot hold, {how}: {}{more}", names.len(), shown.join(", "))
        })
        .collect()
}

/// Type of the embedding table (which is also the output head when tied). For BitNet 2B-4T the
/// head is read whole for every generated token and is larger than all ternary weights, so this
/// choice trades file size and decoding speed against accuracy (see docs/bench.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingType {
    F16,
    F32,
    /// 8.5 bits per weight (llama.cpp's Q8_0).
    Q8_0,
    /// 6.56 bits per weight (llama.cpp's Q6_K; rows must be multiples of 256).
    Q6K,
    /// Q8_0 where the rows (the hidden size) are multiples of 32, F16 otherwise: the best
    /// measured trade (docs/bench.md: +0.02% perplexity on the demo model, 26% fewer bytes per
    /// 2B-4T token, +23% / +43% generation speed at 1 / 2 threads; faster than Q6_K).
    Auto,
}

impl EmbeddingType {
    /// The concrete type for rows of `cols` (resolves [`EmbeddingType::Auto`]).
    pub fn for_rows(self, cols: usize) -> EmbeddingType {
        match self {
            EmbeddingType::Auto if cols.is_multiple_of(32) => EmbeddingType::Q8_0,
            EmbeddingType::Auto => EmbeddingType::F16,
            other => other,
        }
    }

    /// The GGUF tensor type (Auto as F16; resolve it with [`EmbeddingType::for_rows`] first).
    pub fn tensor_type(self) -> TensorType {
        match self {
            EmbeddingType::F16 | EmbeddingType::Auto => TensorType::F16,
            EmbeddingType::F32 => TensorType::F32,
            EmbeddingType::Q8_0 => TensorType::Q8_0,
            EmbeddingType::Q6K => TensorType::Q6_K,
        }
    }
}

impl EmbeddingType {
    /// Every type, in the order `--help` lists them.
    pub const ALL: [EmbeddingType; 5] =
        [EmbeddingType::Auto, EmbeddingType::F16, EmbeddingType::F32, EmbeddingType::Q8_0, EmbeddingType::Q6K];
}

impl std::fmt::Display for EmbeddingType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EmbeddingType::Auto => "auto",
            EmbeddingType::F16 => "f16",
            EmbeddingType::F32 => "f32",
            EmbeddingType::Q8_0 => "q8_0",
            EmbeddingType::Q6K => "q6_k",
        })
    }
}

impl std::str::FromStr for EmbeddingType {
    type Err = String;

    /// The names `--embedding-type` takes: auto, f16, f32, q8_0, q6_k.
    fn from_str(s: &str) -> Result<EmbeddingType, String> {
        parse_name(&EmbeddingType::ALL, s, "embedding type")
    }
}

/// Conversion options.
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    pub outtype: OutType,
    pub embedding_type: EmbeddingType,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { outtype: OutType::I2s, embedding_type: EmbeddingType::Auto }
    }
}
