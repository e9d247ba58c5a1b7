//! Weight matrices as the file holds them (memory-mapped), and the matmuls over them.

use std::ops::Range;

use bitnet_format::{GgufFile, TensorInfo, TensorType};
use bitnet_kernels::Kernels;
use bitnet_quant::dense::{DENSE_TYPES, dequantize_row, row_bytes};
use bitnet_quant::{I2sLayout, PackedTernary, QuantizedActivations, TernaryFormat};

use crate::error::{ModelError, Result};
use crate::profile::part_of;
use crate::threads::Pool;

/// How a matrix's bytes are interpreted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MatrixKind {
    /// Ternary weights; `extra_scale` is bitnet.cpp 1.0's optional `<name>.scale` multiplier.
    Ternary { format: TernaryFormat, extra_scale: Option<f32> },
    /// Float or block-quantized weights, dequantized row by row.
    Dense(TensorType),
}

/// A `rows × cols` weight matrix whose bytes live in the model file.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub kind: MatrixKind,
    range: Range<usize>,
    /// Bytes repacked at load (an I2_S order the kernels do not read; TL1/TL2 → I2_S for a set
    /// without lookup-table loops) instead of the file's.
    owned: Option<Owned>,
    /// TL1/TL2's scale (bitnet.cpp keeps it in a separate `<name>_scale` tensor).
    tl_scale: Option<f32>,
    /// The profile part its matmuls count under (`bitnet bench --profile`).
    pub(crate) part: &'static str,
}

/// Bytes made at load (a heap `Vec` or a huge-page [`bitnet_format::WeightBuffer`]), shown in
/// `Debug` by their length.
#[derive(Clone)]
struct Owned(std::sync::Arc<dyn std::ops::Deref<Target = [u8]> + Send + Sync>);

impl std::fmt::Debug for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes made at load", self.0.len())
    }
}

fn info<'a>(file: &'a GgufFile, name: &str) -> Result<&'a TensorInfo> {
    file.tensor_info(name).ok_or_else(|| ModelError::MissingTensor(name.into()))
}

fn bad(name: &str, message: impl Into<String>) -> ModelError {
    ModelError::BadTensor { name: name.into(), message: message.into() }
}

/// A one-element F32 tensor's value, if the tensor exists.
fn scalar(file: &GgufFile, name: &str) -> Result<Option<f32>> {
    let Some(t) = file.tensor_info(name) else { return Ok(None) };
    if t.ty != TensorType::F32 || t.numel() != 1 {
        return Err(bad(name, format!("expected one F32 value, found {} {:?}", t.ty, t.shape)));
    }
    let b = file.tensor_data(t);
    Ok(Some(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
}

impl Matrix {
    /// Looks up a 2-D weight `name` (ggml shape `[cols, rows]`) and checks its shape.
    pub fn load(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let t = info(file, name)?;
        let (ne0, ne1) =
            (t.shape.first().copied().unwrap_or(1) as usize, t.shape.get(1).copied().unwrap_or(1) as usize);
        if t.shape.len() > 2 || ne0 != cols || ne1 != rows {
            return Err(bad(name, format!("shape {:?}, expected [{cols}, {rows}]", t.shape)));
        }
        let mut tl_scale = None;
        let kind = match PackedTernary::from_gguf(file, t, rows, cols) {
            Some(packed) => {
                let packed = packed.map_err(|e| bad(name, e.to_string()))?;
                if let TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_) = packed.format {
                    tl_scale = packed.scale;
                    MatrixKind::Ternary { format: packed.format, extra_scale: None }
                } else {
                    let base = name.strip_suffix(".weight").unwrap_or(name);
                    MatrixKind::Ternary { format: packed.format, extra_scale: scalar(file, &format!("{base}.scale"))? }
                }
            }
            None if DENSE_TYPES.contains(&t.ty) => {
                row_bytes(t.ty, cols).map_err(|e| bad(name, e.to_string()))?;
                MatrixKind::Dense(t.ty)
            }
            None => return Err(bad(name, format!("type {} is not supported for weights", t.ty))),
        };
        let start = (file.data_offset() + t.offset) as usize;
        let range = start..start + t.size as usize;
        Ok(Matrix { rows, cols, kind, range, owned: None, tl_scale, part: part_of(name) })
    }

    /// The matrix in a code order `kernels` read on their fast path: an I2_S order they do not
    /// read (bitnet.cpp's ARM or row-interleaved order on x86, the interleaved one on ARM) is
    /// repacked once, at load, to the x86 order every fast set reads; TL1/TL2 stay as the file
    /// has them when the set has lookup-table loops and are repacked to I2_S otherwise (the
    /// scalar set's TL path decodes the whole matrix per call); any other matrix is returned as
    /// it is (the scalar set reads every order).
    ///
    /// TQ1_0 matrices whose blocks share one scale (every ternarized model's) are repacked to
    /// TL2 on `threads` threads where that is faster ([`Kernels::runs_tq1_0_as_tl2`]): the table
    /// walk reads their 1.67 bits per weight faster than the base-3 digits decode (2B-4T tg on
    /// Zen 3: 1.4–1.6× TQ1_0's), with the same results up to float rounding (one scale per row
    /// instead of one per block). The cost: about a second per two billion weights per thread at
    /// load (`Model::load` then gives back the file's pages of the matrix, so resident memory
    /// stays about the file's size). `BITNET_TQ1_REPACK=0` keeps TQ1_0 as it is.
    /// I2_S matrices the set reads faster in the four-row order move there afterwards, all
    /// together ([`to_rows4`]).
    pub fn suited_to(self, file: &[u8], kernels: &Kernels, threads: usize) -> Result<Matrix> {
        if let MatrixKind::Ternary { format: TernaryFormat::Tq1_0, extra_scale } = self.kind
            && kernels.runs_tq1_0_as_tl2()
            && !std::env::var("BITNET_TQ1_REPACK").is_ok_and(|v| v == "0")
            && let Ok(tiling) = bitnet_quant::tl::choose_tiling(true, self.rows, self.cols)
        {
            let len = bitnet_quant::tl::tl2_bytes(self.rows, self.cols).expect("a tiling fits");
            let mut bytes = bitnet_format::WeightBuffer::zeroed(len).map_err(|e| {
                ModelError::Invalid(format!("no memory for {}'s {len} bytes repacked to TL2: {e}", self.part))
            })?;
            let repacked =
                bitnet_quant::tl::tq1_to_tl2(self.bytes(file), self.rows, self.cols, tiling, threads, &mut bytes)?;
            if let Some(scale) = repacked {
                return Ok(Matrix {
                    kind: MatrixKind::Ternary { format: TernaryFormat::Tl2(tiling), extra_scale },
                    range: 0..0,
                    owned: Some(Owned(std::sync::Arc::new(bytes))),
                    tl_scale: Some(scale),
                    ..self
                });
            }
        }
        if let MatrixKind::Ternary { format: format @ (TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_)), .. } = self.kind
        {
            if kernels.lut().is_some() {
                return Ok(self);
            }
            let packed = PackedTernary::new(format, self.rows, self.cols, self.bytes(file), self.tl_scale)?;
            return tl_as_i2s(&packed, self.part);
        }
        let MatrixKind::Ternary { format: TernaryFormat::I2s(layout), extra_scale } = self.kind else {
            return Ok(self);
        };
        let (t, x86) = (kernels.ternary(), TernaryFormat::I2s(I2sLayout::X86));
        if t.supports(self.kind_format()) || !t.supports(x86) || !self.cols.is_multiple_of(128) {
            return Ok(self);
        }
        let bytes = bitnet_quant::i2s::repack(self.bytes(file), self.rows, self.cols, layout, I2sLayout::X86)?;
        Ok(Matrix {
            kind: MatrixKind::Ternary { format: x86, extra_scale },
            range: 0..0,
            owned: Some(Owned(std::sync::Arc::new(bytes))),
            ..self
        })
    }

    /// The ternary type the kernels read (`None` for dense matrices).
    pub(crate) fn ternary_format(&self) -> Option<TernaryFormat> {
        match self.kind {
            MatrixKind::Ternary { format, .. } => Some(format),
            MatrixKind::Dense(_) => None,
        }
    }

    fn kind_format(&self) -> TernaryFormat {
        match self.kind {
            MatrixKind::Ternary { format, .. } => format,
            MatrixKind::Dense(_) => unreachable!("only ternary matrices have a ternary format"),
        }
    }

    /// Where the matrix's bytes lie in the file, when it reads them there (not repacked).
    pub(crate) fn file_range(&self) -> Option<Range<usize>> {
        self.owned.is_none().then(|| self.range.clone())
    }

    /// Bytes of the weights one pass reads.
    pub(crate) fn len(&self) -> usize {
        self.owned.as_ref().map_or(self.range.len(), |b| b.0.len())
    }

    /// The ternary weights as the kernels take them (an error for a dense matrix).
    fn packed<'a>(&'a self, file: &'a [u8]) -> Result<PackedTernary<'a>> {
        match self.kind {
            MatrixKind::Ternary { format, .. } => {
                Ok(PackedTernary::new(format, self.rows, self.cols, self.bytes(file), self.tl_scale)?)
            }
            MatrixKind::Dense(ty) => Err(ModelError::Invalid(format!("a {ty} matrix among ternary ones"))),
        }
    }

    /// The file's extra scale of a ternary matrix, applied to its kernels' outputs.
    fn scale_outputs(&self, out: &mut [f32]) {
        if let MatrixKind::Ternary { extra_scale: Some(s), .. } = self.kind {
            out.iter_mut().for_each(|v| *v *= s);
        }
    }

    fn bytes<'a>(&'a self, file: &'a [u8]) -> &'a [u8] {
        match &self.owned {
            Some(bytes) => &bytes.0,
            None => &file[self.range.clone()],
        }
    }

    /// Dequantizes row `r` of a dense matrix into `out`.
    pub fn dense_row(&self, file: &[u8], r: usize, out: &mut [f32]) {
        let MatrixKind::Dense(ty) = self.kind else { unreachable!("dense_row on a ternary matrix") };
        let rb = row_bytes(ty, self.cols).expect("checked at load");
        dequantize_row(ty, &self.bytes(file)[r * rb..(r + 1) * rb], out);
    }

    /// `out[n·rows + r] = Σ_c W[r, c] · x[n·cols + c]` for each of the `x.len() / cols` rows of x.
    /// `acts` may hold x already quantized (matrices that share an input quantize it once).
    pub fn matmul(
        &self,
        file: &[u8],
        kernels: &Kernels,
        pool: &Pool,
        x: &[f32],
        acts: Option<&Acts>,
        out: &mut [f32],
    ) -> Result<()> {
        let n = x.len() / self.cols;
        debug_assert_eq!(out.len(), n * self.rows);
        match self.kind {
            MatrixKind::Ternary { .. } => {
                let owned;
                let acts = match acts {
                    Some(a) => a,
                    None => {
                        owned = Acts::new(vec![kernels.ternary().quantize(x, self.cols)?]);
                        &owned
                    }
                };
                let w = self.packed(file)?;
                if pool.threads() > 1 && n >= (TOKENS_PER_THREAD * pool.threads()).max(self.cols / 8) {
                    // A prompt: each thread runs every row for its share of the tokens.
                    let all = 0..self.rows;
                    pool.tokens(n, out, |t, part| -> Result<()> {
                        let acts = acts.tokens(t)?;
                        kernels.ternary().gemm_rows(&w, &acts, all.clone(), part)?;
                        Ok(())
                    })?;
                } else {
                    let acts = acts.whole()?;
                    pool.rows(self.rows, n, out, |rows, part| kernels.ternary().gemm_rows(&w, acts, rows, part))?;
                }
                self.scale_outputs(out);
            }
            MatrixKind::Dense(ty) => {
                let w = self.bytes(file);
                pool.rows(self.rows, n, out, |rows, part| kernels.dense().gemm_rows(ty, w, self.cols, x, rows, part))?;
            }
        }
        Ok(())
    }
}

/// One token through several ternary matrices that share its quantized input (`acts`), in one
/// parallel region ([`Pool::rows_many`]): `outs[i]` gets matrix `i`'s rows.
pub fn matmul_one_token(
    ms: &[&Matrix],
    file: &[u8],
    kernels: &Kernels,
    pool: &Pool,
    acts: &Acts,
    outs: &mut [&mut [f32]],
) -> Result<()> {
    let packed = ms.iter().map(|m| m.packed(file)).collect::<Result<Vec<_>>>()?;
    let acts = acts.whole()?;
    let rows: Vec<usize> = ms.iter().map(|m| m.rows).collect();
    pool.rows_many(&rows, outs, |i, range, part| kernels.ternary().gemm_rows(&packed[i], acts, range, part))?;
    for (m, out) in ms.iter().zip(outs.iter_mut()) {
        m.scale_outputs(out);
    }
    Ok(())
}

/// One input quantized for the ternary matrices that share it, as consecutive batches of tokens
/// (one per thread when a prompt is quantized on several, split as [`Pool::tokens`] splits a
/// matmul's tokens): a matmul split by tokens takes each thread's batch as it is, and only one
/// split by rows needs them joined (once, for all the matrices). Joining on every quantization
/// and copying each thread's tokens back out for every matrix were ~4% of a 125M-shape prompt at
/// two threads, the joining on one thread while the other waited.
pub struct Acts {
    parts: Vec<QuantizedActivations>,
    /// The first token of each part.
    starts: Vec<usize>,
    whole: std::sync::OnceLock<QuantizedActivations>,
}

impl Acts {
    /// Batches of consecutive tokens, in order, all as wide.
    pub fn new(parts: Vec<QuantizedActivations>) -> Acts {
        let starts = parts.iter().scan(0, |at, p| Some(std::mem::replace(at, *at + p.len()))).collect();
        Acts { parts, starts, whole: std::sync::OnceLock::new() }
    }

    /// Every token as one batch (joined once, by `QuantizedActivations::concat`).
    pub fn whole(&self) -> Result<&QuantizedActivations> {
        if let [one] = &self.parts[..] {
            return Ok(one);
        }
        if let Some(all) = self.whole.get() {
            return Ok(all);
        }
        let all = QuantizedActivations::concat(&self.parts)?;
        Ok(self.whole.get_or_init(|| all))
    }

    /// Tokens `t` as one batch: a part itself when one is exactly those tokens, else a copy.
    pub fn tokens(&self, t: Range<usize>) -> Result<std::borrow::Cow<'_, QuantizedActivations>> {
        Ok(match self.starts.iter().position(|&s| s == t.start) {
            Some(i) if self.parts[i].len() == t.len() => std::borrow::Cow::Borrowed(&self.parts[i]),
            _ => std::borrow::Cow::Owned(self.whole()?.slice(t)),
        })
    }
}

/// Fewest tokens a thread must get before a ternary matmul splits its tokens over the threads
/// rather than its output rows; the tokens must also number at least an eighth of the row
/// length. Split by rows, each thread's outputs for every token go through a buffer and a copy
/// (a cost per output); split by tokens, each thread decodes every row for its own tokens (a
/// cost per weight, and the weights read once per thread). Few tokens, as in a server's
/// decoding steps, are bound by reading the weights: split by rows. Measured at two threads
/// (medians of 8 interleaved runs): 125M-shape pp128 2210 -> 2411 tokens/s when the VM ran
/// slow, unchanged (2785 / 2763) when it ran fast; 2B-4T's 2560-wide rows lost 3% split by
/// tokens at 128 tokens, hence the eighth.
const TOKENS_PER_THREAD: usize = 32;

/// Whether `m` is I2_S in the x86 order (where [`Matrix::suited_to`] leaves every I2_S order a
/// set with the four-row order does not read) that `kernels` read faster in the four-row order
/// ([`to_rows4`]).
pub(crate) fn wants_rows4(m: &Matrix, kernels: &Kernels) -> bool {
    matches!(m.kind, MatrixKind::Ternary { format: TernaryFormat::I2s(I2sLayout::X86), .. })
        && kernels.reads_i2s_rows4()
        && m.rows > 0
        && m.rows.is_multiple_of(4)
        && m.cols.is_multiple_of(256)
        && !std::env::var("BITNET_I2S_REPACK").is_ok_and(|v| v == "0")
}

/// One matrix's bytes inside [`to_rows4`]'s shared buffer.
struct ArenaSlice {
    arena: std::sync::Arc<bitnet_format::WeightBuffer>,
    range: Range<usize>,
}

impl std::ops::Deref for ArenaSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.arena[self.range.clone()]
    }
}

/// Moves x86-order I2_S `matrices` (each [`wants_rows4`]) into the four-row order
/// ([`I2sLayout::X86Rows4`]), all in one buffer of 2 MiB pages, copying the groups of rows on
/// `threads` threads; `release(range)` is called with each file range once copied (resident
/// memory then stays about the file's size).
///
/// Why: the AVX-512 one-token loop reads four rows side by side, and reading them from one
/// stream instead of four it reads 0.95–1.03 of a pure read of the same bytes instead of
/// 0.78–0.94 on rows wider than 4096 (docs/kernels.md). One buffer rather than one per matrix:
/// a matrix under 2 MiB (or the end of a larger one) would get 4 KiB pages, which cost the
/// 2B-4T shape's attention matrices a quarter of their speed. The copy runs at memory speed
/// (0.15 s for 2B-4T on the Xeon VM). `BITNET_I2S_REPACK=0` keeps the file's order.
pub(crate) fn to_rows4(
    matrices: &mut [&mut Matrix],
    file: &[u8],
    threads: usize,
    mut release: impl FnMut(Range<usize>),
) -> Result<()> {
    let mut places = Vec::with_capacity(matrices.len());
    let mut total = 0usize;
    for m in matrices.iter() {
        let len = bitnet_quant::i2s::i2s_bytes(m.rows * m.cols);
        places.push(total..total + len);
        total = (total + len).next_multiple_of(64);
    }
    let mut arena = bitnet_format::WeightBuffer::zeroed(total).map_err(|e| {
        ModelError::Invalid(format!("no memory for {total} bytes of I2_S weights in the four-row order: {e}"))
    })?;
    for (m, place) in matrices.iter().zip(&places) {
        rows4_into(m.bytes(file), m.rows, m.cols, threads, &mut arena[place.clone()])?;
        if let Some(range) = m.file_range() {
            release(range);
        }
    }
    let arena = std::sync::Arc::new(arena);
    for (m, place) in matrices.iter_mut().zip(places) {
        let MatrixKind::Ternary { extra_scale, .. } = m.kind else { unreachable!("only I2_S matrices are moved") };
        m.kind = MatrixKind::Ternary { format: TernaryFormat::I2s(I2sLayout::X86Rows4), extra_scale };
        m.owned = Some(Owned(std::sync::Arc::new(ArenaSlice { arena: arena.clone(), range: place })));
        m.range = 0..0;
    }
    Ok(())
}

/// An X86-order I2_S tensor (`x86`: codes and tail) into `out` in the four-row order, its groups
/// of rows copied on `threads` threads.
fn rows4_into(x86: &[u8], rows: usize, cols: usize, threads: usize, out: &mut [u8]) -> Result<()> {
    let codes = rows * cols / 4;
    let (body, tail) = out.split_at_mut(codes);
    tail.copy_from_slice(&x86[codes..codes + tail.len()]);
    let per = (rows / 4).div_ceil(threads.max(1)).max(1);
    let result: std::sync::Mutex<Result<()>> = std::sync::Mutex::new(Ok(()));
    std::thread::scope(|s| {
        for (i, dst) in body.chunks_mut(per * cols).enumerate() {
            let result = &result;
            s.spawn(move || {
                let first = i * per;
                if let Err(e) = bitnet_quant::i2s::x86_to_rows4(x86, rows, cols, first..first + dst.len() / cols, dst) {
                    *result.lock().unwrap_or_else(|p| p.into_inner()) = Err(e.into());
                }
            });
        }
    });
    result.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// bitnet.cpp's TL1/TL2 tensors (read with the tiling of its preset kernels for the shape and
/// the scale of the separate `<name>_scale` tensor), repacked to I2_S in memory, so the I2_S
/// kernels run them.
fn tl_as_i2s(packed: &PackedTernary<'_>, part: &'static str) -> Result<Matrix> {
    // PackedTernary::new refuses TL bytes without their scale.
    let Some(scale) = packed.scale else { return Err(ModelError::Invalid("a TL tensor without its scale".into())) };
    let (m, _) = packed.unpack()?;
    let bytes = bitnet_quant::i2s::pack(&m, scale, I2sLayout::X86)?;
    Ok(Matrix {
        rows: packed.rows,
        cols: packed.cols,
        kind: MatrixKind::Ternary { format: TernaryFormat::I2s(I2sLayout::X86), extra_scale: None },
        range: 0..0,
        owned: Some(Owned(std::sync::Arc::new(bytes))),
        tl_scale: None,
        part,
    })
}

/// A 1-D F32 tensor (norm weights).
pub fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = info(file, name)?;
    if t.numel() as usize != len {
        return Err(bad(name, format!("has {} elements, expected {len}", t.numel())));
    }
    let mut out = vec![0f32; len];
    match t.ty {
        TensorType::F32 | TensorType::F16 | TensorType::BF16 => dequantize_row(t.ty, file.tensor_data(t), &mut out),
        ty => return Err(bad(name, format!("type {ty}, expected F32, F16 or BF16"))),
    }
    Ok(out)
}

/// bitnet.cpp's TL1/TL2 tensors load (with the tiling of its preset kernels for the shape), run
/// in place where the kernel set has lookup loops (repacked to I2_S where not), and multiply
/// exactly like the same matrix stored as I2_S.
#[cfg(test)]
mod tests {
    use std::io::BufWriter;

    use bitnet_format::{GgufBuilder, GgufFile, TensorType};
    use bitnet_quant::{I2sLayout, TernaryFormat, TernaryMatrix, i2s, tl};

    use super::Matrix;
    use crate::threads::Pool;

    fn ternary(rows: usize, cols: usize) -> TernaryMatrix {
        let mut s = 0x1234_5678u64;
        let values = (0..rows * cols)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 3) as i8 - 1
            })
            .collect();
        TernaryMatrix::new(rows, cols, values).unwrap()
    }

    #[test]
    fn tl_tensors_of_preset_shapes_match_i2s() {
        for (ty, rows, cols) in [(TensorType::TL1, 1536, 1536), (TensorType::TL2, 1536, 4096)] {
            let m = ternary(rows, cols);
            let scale = 0.75f32;
            let tiling = tl::preset_tiling(ty == TensorType::TL2, rows, cols).unwrap();
            let tl_bytes =
                if ty == TensorType::TL1 { tl::pack_tl1(&m, tiling) } else { tl::pack_tl2(&m, tiling) }.unwrap();
            let i2s_bytes = i2s::pack(&m, scale, I2sLayout::X86).unwrap();
            let path = std::env::temp_dir().join(format!("tl-{}-{ty}.gguf", std::process::id()));
            let mut b = GgufBuilder::new();
            b.metadata_mut().insert("general.architecture", "bitnet");
            let shape = [cols as u64, rows as u64];
            b.add_tensor("tl.weight", ty, &shape).unwrap();
            b.add_tensor("tl.weight_scale", TensorType::F32, &[1]).unwrap();
            b.add_tensor("i2s.weight", TensorType::I2_S, &shape).unwrap();
            let mut w = b.start(BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
            w.write_tensor("tl.weight", &tl_bytes).unwrap();
            w.write_tensor("tl.weight_scale", &scale.to_le_bytes()).unwrap();
            w.write_tensor("i2s.weight", &i2s_bytes).unwrap();
            w.finish().unwrap();

            let file = GgufFile::open(&path).unwrap();
            let pool = Pool::try_new(2).unwrap();
            let x: Vec<f32> = (0..2 * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            for kernels in bitnet_kernels::Kernels::available() {
                let a =
                    Matrix::load(&file, "tl.weight", rows, cols).unwrap().suited_to(file.bytes(), &kernels, 2).unwrap();
                let b = Matrix::load(&file, "i2s.weight", rows, cols).unwrap();
                // In place (resident memory = the file) where the set has lookup loops.
                assert_eq!(a.owned.is_none(), kernels.lut().is_some(), "{} {ty}", kernels.name());
                let (mut ya, mut yb) = (vec![0f32; 2 * rows], vec![0f32; 2 * rows]);
                a.matmul(file.bytes(), &kernels, &pool, &x, None, &mut ya).unwrap();
                b.matmul(file.bytes(), &kernels, &pool, &x, None, &mut yb).unwrap();
                assert_eq!(ya, yb, "{} {ty} {rows}x{cols}", kernels.name());
                let (mut y1, mut y2) = (vec![0f32; rows], vec![0f32; rows]);
                a.matmul(file.bytes(), &kernels, &pool, &x[..cols], None, &mut y1).unwrap();
                b.matmul(file.bytes(), &kernels, &pool, &x[..cols], None, &mut y2).unwrap();
                assert_eq!(y1, y2, "{} {ty} {rows}x{cols}, one token", kernels.name());
            }
            std::fs::remove_file(&path).ok();
        }
    }

    /// One token through several I2_S matrices in one parallel region gives each matrix's own
    /// matmul, bit for bit, on every set at one and two threads.
    #[test]
    fn one_region_for_several_matrices_matches_each_alone() {
        let cols = 512;
        let shapes = [("q.weight", 64), ("k.weight", 16), ("v.weight", 16)];
        let path = std::env::temp_dir().join(format!("qkv-{}.gguf", std::process::id()));
        let mut b = GgufBuilder::new();
        b.metadata_mut().insert("general.architecture", "bitnet");
        let packed: Vec<Vec<u8>> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(_, rows))| i2s::pack(&ternary(rows, cols), 0.5 + i as f32, I2sLayout::X86).unwrap())
            .collect();
        for &(name, rows) in &shapes {
            b.add_tensor(name, TensorType::I2_S, &[cols as u64, rows as u64]).unwrap();
        }
        let mut w = b.start(BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
        for (&(name, _), bytes) in shapes.iter().zip(&packed) {
            w.write_tensor(name, bytes).unwrap();
        }
        w.finish().unwrap();
        let file = GgufFile::open(&path).unwrap();
        let x: Vec<f32> = (0..cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        for threads in [1, 2] {
            let pool = Pool::try_new(threads).unwrap();
            for kernels in bitnet_kernels::Kernels::available() {
                let ms: Vec<Matrix> = shapes
                    .iter()
                    .map(|&(name, rows)| {
                        Matrix::load(&file, name, rows, cols)
                            .unwrap()
                            .suited_to(file.bytes(), &kernels, threads)
                            .unwrap()
                    })
                    .collect();
                let acts = super::Acts::new(vec![kernels.ternary().quantize(&x, cols).unwrap()]);
                let mut outs: Vec<Vec<f32>> = ms.iter().map(|m| vec![f32::NAN; m.rows]).collect();
                let mut parts: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
                let refs: Vec<&Matrix> = ms.iter().collect();
                super::matmul_one_token(&refs, file.bytes(), &kernels, &pool, &acts, &mut parts).unwrap();
                for (m, got) in ms.iter().zip(&outs) {
                    let mut want = vec![0f32; m.rows];
                    m.matmul(file.bytes(), &kernels, &pool, &x, Some(&acts), &mut want).unwrap();
                    assert_eq!(got, &want, "{} at {threads} threads", kernels.name());
                }
            }
        }
        std::fs::remove_file(&path).ok();
    }

    /// TQ1_0 matrices run as TL2 (repacked at load) where the set says so, with the
    /// results of the TQ1_0 kernels up to float rounding; blocks with different scales stay TQ1_0.
    #[test]
    fn tq1_0_runs_as_tl2_where_lookup_loops_are() {
        let (rows, cols) = (64, 768);
        let m = ternary(rows, cols);
        let path = std::env::temp_dir().join(format!("tq1-tl2-{}.gguf", std::process::id()));
        let uniform = bitnet_quant::tq::pack(bitnet_quant::TqKind::Tq1_0, &m, 0.375).unwrap();
        let mut mixed = uniform.clone();
        mixed[52..54].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        let mut b = GgufBuilder::new();
        b.metadata_mut().insert("general.architecture", "bitnet");
        b.add_tensor("u.weight", TensorType::TQ1_0, &[cols as u64, rows as u64]).unwrap();
        b.add_tensor("m.weight", TensorType::TQ1_0, &[cols as u64, rows as u64]).unwrap();
        let mut w = b.start(BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
        w.write_tensor("u.weight", &uniform).unwrap();
        w.write_tensor("m.weight", &mixed).unwrap();
        w.finish().unwrap();
        let file = GgufFile::open(&path).unwrap();
        let pool = Pool::try_new(2).unwrap();
        let x: Vec<f32> = (0..3 * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let scalar = bitnet_kernels::Kernels::named("scalar").unwrap();
        for name in ["u.weight", "m.weight"] {
            let native = Matrix::load(&file, name, rows, cols).unwrap();
            let mut want = vec![0f32; 3 * rows];
            native.matmul(file.bytes(), &scalar, &pool, &x, None, &mut want).unwrap();
            for kernels in bitnet_kernels::Kernels::available() {
                let a = Matrix::load(&file, name, rows, cols).unwrap().suited_to(file.bytes(), &kernels, 2).unwrap();
                let super::MatrixKind::Ternary { format, .. } = a.kind else { panic!("ternary") };
                let tl2 = kernels.runs_tq1_0_as_tl2() && name == "u.weight";
                assert_eq!(matches!(format, TernaryFormat::Tl2(_)), tl2, "{} {name}: {format:?}", kernels.name());
                let mut y = vec![0f32; 3 * rows];
                a.matmul(file.bytes(), &kernels, &pool, &x, None, &mut y).unwrap();
                for (i, (y, w)) in y.iter().zip(&want).enumerate() {
                    assert!((y - w).abs() <= 1e-5 * w.abs().max(1.0), "{} {name} [{i}]: {y} vs {w}", kernels.name());
                }
            }
        }
        std::fs::remove_file(&path).ok();
    }

    /// Every I2_S order bitnet.cpp writes loads for every kernel set, in an order the set reads
    /// on its fast path (repacked at load where needed), and multiplies exactly like x86 order.
    #[test]
    fn every_i2s_order_runs_on_every_kernel_set() {
        // 384 columns end in half a 256-chunk (no four-row order); 512 do not.
        for (rows, cols) in [(64, 384), (64, 512)] {
            let m = ternary(rows, cols);
            let path = std::env::temp_dir().join(format!("i2s-orders-{}-{cols}.gguf", std::process::id()));
            let mut orders = vec![I2sLayout::X86, I2sLayout::Arm, I2sLayout::X86Interleaved4];
            if cols % 256 == 0 {
                orders.push(I2sLayout::X86Rows4);
            }
            let x: Vec<f32> = (0..3 * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let pool = Pool::try_new(2).unwrap();
            let mut want: Option<Vec<f32>> = None;
            for layout in orders {
                let mut b = GgufBuilder::new();
                b.metadata_mut().insert("general.architecture", "bitnet");
                b.metadata_mut().insert(i2s::LAYOUT_KEY, layout.as_str());
                b.add_tensor("w.weight", TensorType::I2_S, &[cols as u64, rows as u64]).unwrap();
                let mut w = b.start(BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
                w.write_tensor("w.weight", &i2s::pack(&m, 0.5, layout).unwrap()).unwrap();
                w.finish().unwrap();
                let file = GgufFile::open(&path).unwrap();
                for kernels in bitnet_kernels::Kernels::available() {
                    let mut a = Matrix::load(&file, "w.weight", rows, cols)
                        .unwrap()
                        .suited_to(file.bytes(), &kernels, 2)
                        .unwrap();
                    // What `Model::load` does next: the four-row order where the set reads it.
                    let rows4 = super::wants_rows4(&a, &kernels);
                    let fast = kernels.reads_i2s_rows4();
                    assert_eq!(fast, kernels.name() == "avx512-vnni", "only AVX-512 reads the four-row order");
                    assert_eq!(rows4, fast && cols % 256 == 0 && layout != I2sLayout::X86Rows4);
                    if rows4 {
                        let in_file = a.file_range();
                        let mut released = Vec::new();
                        super::to_rows4(&mut [&mut a], file.bytes(), 2, |r| released.push(r)).unwrap();
                        assert_eq!(released, in_file.into_iter().collect::<Vec<_>>(), "the file's pages go back");
                        assert!(a.file_range().is_none());
                    }
                    let super::MatrixKind::Ternary { format, .. } = a.kind else { panic!("ternary") };
                    assert!(kernels.ternary().supports(format), "{} runs {layout:?} as {format:?}", kernels.name());
                    if fast && cols % 256 == 0 {
                        assert_eq!(format, TernaryFormat::I2s(I2sLayout::X86Rows4), "{layout:?}");
                    }
                    let mut y = vec![0f32; 3 * rows];
                    a.matmul(file.bytes(), &kernels, &pool, &x, None, &mut y).unwrap();
                    match &want {
                        Some(w) => assert_eq!(&y, w, "{} {layout:?}", kernels.name()),
                        None => want = Some(y),
                    }
                }
            }
            std::fs::remove_file(&path).ok();
        }
    }

    #[test]
    fn tl_shapes_without_a_preset_are_a_clear_error() {
        let (rows, cols) = (256, 256);
        let m = ternary(rows, cols);
        let bytes = tl::pack_tl1(&m, tl::TlTiling { bm: 256, bk: 128, bmm: 32 }).unwrap();
        let path = std::env::temp_dir().join(format!("tl-nopreset-{}.gguf", std::process::id()));
        let mut b = GgufBuilder::new();
        b.metadata_mut().insert("general.architecture", "bitnet");
        b.add_tensor("x.weight", TensorType::TL1, &[cols as u64, rows as u64]).unwrap();
        let mut w = b.start(BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
        w.write_tensor("x.weight", &bytes).unwrap();
        w.finish().unwrap();
        let file = GgufFile::open(&path).unwrap();
        let err = Matrix::load(&file, "x.weight", rows, cols).unwrap_err().to_string();
        assert!(err.contains("preset") && err.contains("256x256"), "{err}");
        std::fs::remove_file(&path).ok();
    }
}

/// A prompt quantized in per-thread batches gives each matmul thread its own batch untouched,
/// any other range of tokens as a copy, and all of them joined in order.
#[cfg(test)]
mod acts_tests {
    use std::borrow::Cow;

    use bitnet_quant::QuantizedActivations;

    use super::Acts;

    #[test]
    fn parts_serve_their_tokens_and_join_in_order() {
        let x: Vec<f32> = (0..10 * 32).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let all = QuantizedActivations::quantize(&x, 32).unwrap();
        let parts =
            [0..4, 4..7, 7..10].map(|t| QuantizedActivations::quantize(&x[t.start * 32..t.end * 32], 32).unwrap());
        let acts = Acts::new(parts.to_vec());
        assert_eq!(acts.whole().unwrap(), &all);
        assert!(matches!(acts.tokens(4..7).unwrap(), Cow::Borrowed(p) if *p == parts[1]));
        assert!(matches!(acts.tokens(3..7).unwrap(), Cow::Owned(p) if p == all.slice(3..7)));
        let one = Acts::new(vec![all.clone()]);
        assert!(std::ptr::eq(one.whole().unwrap(), one.tokens(0..10).unwrap().as_ref()));
    }
}
