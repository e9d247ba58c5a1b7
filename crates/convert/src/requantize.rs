//! GGUF → GGUF: re-encoding a model's ternary weights and/or its head.

use super::*;

/// What [`requantize`] changes in an existing GGUF model; `None` keeps the file's own types.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequantizeOptions {
    /// Re-encode every ternary weight (I2_S, TQ1_0, TQ2_0, TL1, TL2 in the input) as this type.
    pub outtype: Option<OutType>,
    /// Re-encode the embedding table and output head as this type.
    pub embedding_type: Option<EmbeddingType>,
}

/// Re-encodes the embedding table and output head of an existing GGUF model (ours, bitnet.cpp's
/// or llama.cpp's) as `ty`, copying everything else byte for byte — llama-quantize's
/// `--token-embedding-type` / `--output-tensor-type` for the one choice that matters to ternary
/// models (the head is read whole for every generated token).
pub fn requantize_embeddings(input: &Path, out: &Path, ty: EmbeddingType) -> Result<Summary> {
    requantize(input, out, RequantizeOptions { outtype: None, embedding_type: Some(ty) })
}

/// Re-encodes an existing GGUF model (ours, bitnet.cpp's or llama.cpp's): its ternary weights as
/// `opts.outtype` and its embedding table / output head as `opts.embedding_type`, copying every
/// other tensor byte for byte. Ternary values never change between ternary types; scales do only
/// where the target stores them with less precision (TQ's per-block f16). A per-tensor type (I2_S,
/// TL1, TL2) cannot hold a TQ tensor whose blocks have different scales (llama.cpp's own
/// quantizer writes those), and float layer weights are not ternarized here: both are errors.
pub fn requantize(input: &Path, out: &Path, opts: RequantizeOptions) -> Result<Summary> {
    requantize_with_progress(input, out, opts, &mut |_| {})
}

/// [`requantize`], calling `progress` before each tensor (for a progress bar).
pub fn requantize_with_progress(
    input: &Path,
    out: &Path,
    opts: RequantizeOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Summary> {
    output_target(out)?;
    let file = bitnet_format::GgufFile::open(input)?;
    let hidden = file.tensor_info("token_embd.weight").and_then(|t| t.shape.first().copied()).unwrap_or(0) as usize;
    let emb_target = opts.embedding_type.map(|ty| ty.for_rows(hidden).tensor_type());
    let is_head = |name: &str| name == "token_embd.weight" || name == "output.weight";
    // bitnet.cpp's TL1/TL2 weights keep their scale in a separate one-value tensor.
    let is_tl_scale = |name: &str| {
        name.strip_suffix("_scale")
            .is_some_and(|w| file.tensor_info(w).is_some_and(|t| matches!(t.ty, TensorType::TL1 | TensorType::TL2)))
    };
    let outtype = opts.outtype;
    if let Some(o) = outtype
        && !file.tensors().iter().any(|t| t.ty.is_ternary())
    {
        return Err(ConvertError::Unsupported(format!(
            "--outtype {o}: {} has no ternary weights to re-encode (float layer weights are ternarized only from a \
             checkpoint directory)",
            input.display()
        )));
    }

    let mut meta = file.metadata().clone();
    let mut tilings: Vec<(usize, usize, tl::TlTiling)> = Vec::new();
    if let Some(o) = outtype {
        // Keys are replaced in place (and the I2_S layout key, harmless elsewhere, is kept), so
        // re-encoding there and back gives the same file.
        meta.insert("general.file_type", o.file_type());
        if o == OutType::I2s || meta.get(i2s::LAYOUT_KEY).is_some() {
            meta.insert(i2s::LAYOUT_KEY, I2sLayout::X86.as_str());
        }
    }
    let mut b = GgufBuilder::new();
    for t in file.tensors() {
        let cols = t.shape.first().copied().unwrap_or(1) as usize;
        let rows = (t.numel() as usize).checked_div(cols).unwrap_or(0);
        let mut ty = t.ty;
        if let Some(target) = emb_target.filter(|_| is_head(&t.name)) {
            bitnet_quant::dense::row_bytes(target, cols).map_err(|e| {
                ConvertError::Unsupported(format!(
                    "{}: --embedding-type {target} cannot hold rows of {cols}: {e}",
                    t.name
                ))
            })?;
            bitnet_quant::dense::row_bytes(t.ty, cols)
                .map_err(|e| ConvertError::Unsupported(format!("{}: cannot read type {} ({e})", t.name, t.ty)))?;
            ty = target;
        }
        if let Some(o) = outtype {
            if is_tl_scale(&t.name) {
                continue;
            }
            if t.ty.is_ternary() {
                // The type asked for, or I2_S where it cannot hold the shape.
                let o = o.for_matrix(rows, cols).0;
                ty = o.tensor_type();
                if o.separate_scale() && !tilings.iter().any(|&(r, c, _)| (r, c) == (rows, cols)) {
                    tilings.push((rows, cols, tl::choose_tiling(o == OutType::Tl2, rows, cols)?));
                }
            }
        }
        b.add_tensor(&t.name, ty, &t.shape)?;
        if outtype.is_some() && t.ty.is_ternary() && matches!(ty, TensorType::TL1 | TensorType::TL2) {
            b.add_tensor(scale_name(&t.name), TensorType::F32, &[1])?;
        }
    }
    if outtype.is_some() && tilings.is_empty() {
        meta.remove(tl::TILINGS_KEY);
    } else if !tilings.is_empty() {
        let values = tl::encode_tilings(&tilings).into_iter().map(Value::U32).collect();
        meta.insert(tl::TILINGS_KEY, Array::new(bitnet_format::ValueType::U32, values).expect("all U32"));
    }
    b.with_metadata(meta);
    let arch = file.metadata().get("general.architecture").and_then(|v| v.as_str()).unwrap_or("?").to_owned();
    let mut tensors = 0;
    let (bytes, path) = write_atomically(out, b, |w| {
        let total = file.tensors().len();
        for (done, t) in file.tensors().iter().enumerate() {
            progress(Progress { done, total, tensor: &t.name });
            let data = file.tensor_data(t);
            let cols = t.shape.first().copied().unwrap_or(1) as usize;
            if let Some(target) = emb_target.filter(|_| is_head(&t.name)) {
                let rb = bitnet_quant::dense::row_bytes(t.ty, cols)?;
                let mut row = vec![0f32; cols];
                for src in data.chunks_exact(rb) {
                    bitnet_quant::dense::dequantize_row(t.ty, src, &mut row);
                    w.write_tensor_chunk(&t.name, &bitnet_quant::dense::quantize_row(target, &row)?)?;
                }
                tensors += 1;
                continue;
            }
            match outtype {
                Some(_) if is_tl_scale(&t.name) => continue,
                Some(o) if t.ty.is_ternary() => {
                    let rows = t.numel() as usize / cols.max(1);
                    let o = o.for_matrix(rows, cols).0;
                    let (m, scales) = read_ternary(&file, t, rows, cols)?;
                    let tensor_error = |message: String| ConvertError::Tensor { name: t.name.clone(), message };
                    let outtype_error = |e: &dyn std::fmt::Display| tensor_error(format!("--outtype {o}: {e}"));
                    if matches!(o, OutType::I2s | OutType::Tl1 | OutType::Tl2) {
                        // One scale per tensor: the blocks' scales must agree.
                        let scale = single_scale(&scales).map_err(tensor_error)?;
                        w.write_tensor(&t.name, &o.pack(&m, scale).map_err(|e| outtype_error(&e))?)?;
                        if o.separate_scale() {
                            w.write_tensor(&scale_name(&t.name), &scale.to_le_bytes())?;
                            tensors += 1;
                        }
                    } else {
                        // TQ (per-block scales) and float types: every row from values × scales.
                        let mut bytes = Vec::new();
                        for row in dequantize_blocks(&m, &scales).chunks(cols) {
                            bytes.extend(
                                match o {
                                    OutType::Tq1_0 => tq::quantize_row(TqKind::Tq1_0, row),
                                    OutType::Tq2_0 => tq::quantize_row(TqKind::Tq2_0, row),
                                    _ => bitnet_quant::dense::quantize_row(o.tensor_type(), row),
                                }
                                .map_err(|e| outtype_error(&e))?,
                            );
                        }
                        w.write_tensor(&t.name, &bytes)?;
                    }
                }
                _ => w.write_tensor(&t.name, data)?,
            }
            tensors += 1;
        }
        Ok(())
    })?;
    let notes = match outtype {
        Some(o) => {
            let ternaries = file.tensors().iter().filter(|t| t.ty.is_ternary()).map(|t| {
                let cols = t.shape.first().copied().unwrap_or(1) as usize;
                (t.name.as_str(), t.numel() as usize / cols.max(1), cols)
            });
            fallback_notes(ternaries, o)
        }
        None => Vec::new(),
    };
    Ok(Summary { path, architecture: arch, tensors, bytes, notes })
}

/// Decodes a ternary tensor of a GGUF file to its values and scales.
pub(crate) fn read_ternary(
    file: &bitnet_format::GgufFile,
    t: &bitnet_format::TensorInfo,
    rows: usize,
    cols: usize,
) -> Result<(TernaryMatrix, WeightScales)> {
    let packed = PackedTernary::from_gguf(file, t, rows, cols)
        .ok_or_else(|| ConvertError::Tensor { name: t.name.clone(), message: format!("{} is not ternary", t.ty) })?
        .map_err(|e| ConvertError::Tensor { name: t.name.clone(), message: e.to_string() })?;
    Ok(packed.unpack()?)
}

/// The one scale of a tensor: per-block scales must all agree (blocks of zeros aside).
pub(crate) fn single_scale(scales: &WeightScales) -> Result<f32, String> {
    match scales {
        WeightScales::Tensor(s) => Ok(*s),
        WeightScales::Blocks { values, .. } => {
            let mut distinct = values.iter().copied().filter(|&v| v != 0.0);
            let first = distinct.next().unwrap_or(0.0);
            match distinct.find(|&v| v != first) {
                None => Ok(first),
                Some(other) => Err(format!(
                    "its blocks have different scales ({first} and {other}, as llama.cpp's own quantizer writes); a \
                     type with one scale per tensor cannot hold them: choose tq1_0 or tq2_0"
                )),
            }
        }
    }
}

/// Ternary values times their block (or tensor) scale.
pub(crate) fn dequantize_blocks(m: &TernaryMatrix, scales: &WeightScales) -> Vec<f32> {
    match scales {
        WeightScales::Tensor(s) => m.values().iter().map(|&t| f32::from(t) * s).collect(),
        WeightScales::Blocks { block, values } => m
            .values()
            .chunks(*block)
            .zip(values)
            .flat_map(|(ts, &d)| ts.iter().map(move |&t| f32::from(t) * d))
            .collect(),
    }
}
