//! Reading the checkpoint: safetensors files (memory-mapped), packed weights unpacked as transformers does, rows permuted for llama.cpp's RoPE.

use super::*;

/// The checkpoint's tensors, from one or more memory-mapped safetensors files.
pub(crate) struct Checkpoint {
    pub(crate) maps: Vec<memmap2::Mmap>,
    pub(crate) index: HashMap<String, Entry>,
}

/// Where a tensor lives, found once when the files are opened.
pub(crate) struct Entry {
    pub(crate) file: usize,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) bytes: std::ops::Range<usize>,
}

impl Checkpoint {
    pub(crate) fn open(dir: &Path) -> Result<Checkpoint> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let j = read_json(&index_path)?;
            let map = j["weight_map"].as_object().ok_or_else(|| ConvertError::Checkpoint {
                path: index_path.clone(),
                message: "missing \"weight_map\"".into(),
            })?;
            let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut maps = Vec::new();
        let mut index = HashMap::new();
        for path in files {
            let io = |source| ConvertError::Io { path: path.clone(), source };
            let file = File::open(&path).map_err(io)?;
            let map = bitnet_format::map_file(&file).map_err(io)?;
            let invalid = |e: safetensors::SafeTensorError| ConvertError::Checkpoint {
                path: path.clone(),
                message: format!("not a valid safetensors file: {e}"),
            };
            // deserialize validates every tensor's offsets against the file; read_metadata gives them.
            SafeTensors::deserialize(&map).map_err(invalid)?;
            let (header, meta) = SafeTensors::read_metadata(&map).map_err(invalid)?;
            let data_start = 8 + header;
            for (name, info) in meta.tensors() {
                let (a, b) = info.data_offsets;
                let entry = Entry {
                    file: maps.len(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes: data_start + a..data_start + b,
                };
                index.insert(name, entry);
            }
            maps.push(map);
        }
        Ok(Checkpoint { maps, index })
    }

    /// The config's layer count and vocabulary must match the tensors present, checked before
    /// a plan (and a padded vocabulary) is sized from them.
    pub(crate) fn check_config(&self, c: &HfConfig) -> Result<()> {
        // Base models (Qwen3Model, Gemma3TextModel) name their tensors without `model.`.
        let prefix = if self.index.contains_key("embed_tokens.weight") { "" } else { "model." };
        let layers = self
            .index
            .keys()
            .filter_map(|n| n.strip_prefix(prefix)?.strip_prefix("layers.")?.split('.').next()?.parse::<u64>().ok())
            .max()
            .map_or(0, |l| l + 1);
        if layers != c.layers {
            return Err(ConvertError::Unsupported(format!(
                "config.json has num_hidden_layers = {} but the checkpoint has tensors for {layers} layers",
                c.layers
            )));
        }
        let embed = &format!("{prefix}embed_tokens.weight");
        let rows = self.index.get(embed).and_then(|e| e.shape.first().copied());
        match rows {
            None => Err(ConvertError::Tensor { name: embed.into(), message: "missing from the checkpoint".into() }),
            Some(rows) if rows as u64 != c.vocab => Err(ConvertError::Unsupported(format!(
                "config.json has vocab_size = {} but {embed} has {rows} rows",
                c.vocab
            ))),
            Some(_) => Ok(()),
        }
    }

    /// A tensor's dtype, shape (row-major, as in PyTorch) and bytes.
    pub(crate) fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let e = self
            .index
            .get(name)
            .ok_or_else(|| ConvertError::Tensor { name: name.into(), message: "missing from the checkpoint".into() })?;
        Ok((e.dtype, e.shape.clone(), &self.maps[e.file][e.bytes.clone()]))
    }

    /// A float tensor as f32 values with its shape.
    pub(crate) fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (dtype, shape, bytes) = self.raw(name)?;
        let values: Vec<f32> = match dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(ConvertError::Tensor {
                    name: name.into(),
                    message: format!("dtype {other:?} is not a float type"),
                });
            }
        };
        Ok((values, shape))
    }
}

/// transformers' packed layout: uint8 `[out/4, in]`, `W[i·R + r, c] = ((P[r, c] >> 2i) & 3) − 1`.
pub(crate) fn unpack_hf(name: &str, packed: &[u8], rows: usize, cols: usize) -> Result<TernaryMatrix> {
    let r4 = rows / 4;
    let mut values = vec![0i8; rows * cols];
    for (i, chunk) in values.chunks_exact_mut(r4 * cols).enumerate() {
        for (v, &p) in chunk.iter_mut().zip(packed) {
            let code = (p >> (2 * i)) & 3;
            if code == 3 {
                return Err(ConvertError::Tensor {
                    name: name.into(),
                    message: "packed code 3 is not a ternary value".into(),
                });
            }
            *v = code as i8 - 1;
        }
    }
    Ok(TernaryMatrix::new(rows, cols, values)?)
}

/// llama.cpp's Q/K permutation: within each head, row `half·d/2 + j` moves to `2j + half`.
pub(crate) fn permute_rows<T: Copy>(values: &[T], rows: usize, cols: usize, heads: usize) -> Vec<T> {
    let hd = rows / heads;
    let mut out = values.to_vec();
    for h in 0..heads {
        for half in 0..2 {
            for j in 0..hd / 2 {
                let (src, dst) = (h * hd + half * hd / 2 + j, h * hd + 2 * j + half);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

pub(crate) fn check_shape(p: &Plan, shape: &[usize]) -> Result<()> {
    if shape != p.shape {
        return Err(ConvertError::Tensor {
            name: p.hf.clone(),
            message: format!("shape {shape:?}, config.json implies {:?}", p.shape),
        });
    }
    Ok(())
}

/// The ternary values (rows permuted where the plan says) and dequantization scale of a linear.
pub(crate) fn ternary(ckpt: &Checkpoint, p: &Plan, source: Source) -> Result<(TernaryMatrix, f32)> {
    let (rows, cols) = (p.shape[0], p.shape[1]);
    let (m, scale) = match source {
        Source::Online => {
            let (values, shape) = ckpt.f32(&p.hf)?;
            check_shape(p, &shape)?;
            let q = absmean_quantize(&values, rows, cols)?;
            let scale = q.scale();
            (q.matrix, scale)
        }
        Source::Packed { divide } => {
            let (dtype, shape, bytes) = ckpt.raw(&p.hf)?;
            if dtype != Dtype::U8 || shape != [rows / 4, cols] || rows % 4 != 0 {
                return Err(ConvertError::Tensor {
                    name: p.hf.clone(),
                    message: format!("expected packed uint8 [{}, {cols}], found {dtype:?} {shape:?}", rows / 4),
                });
            }
            let m = unpack_hf(&p.hf, bytes, rows, cols)?;
            let scale_name = format!("{}_scale", p.hf);
            let (s, sshape) = ckpt.f32(&scale_name)?;
            if s.len() != 1 || sshape.len() > 1 {
                return Err(ConvertError::Tensor {
                    name: scale_name,
                    message: format!("expected one value, found shape {sshape:?}"),
                });
            }
            (m, if divide { 1.0 / s[0] } else { s[0] })
        }
    };
    match p.permute {
        Some(heads) => Ok((TernaryMatrix::new(rows, cols, permute_rows(m.values(), rows, cols, heads))?, scale)),
        None => Ok((m, scale)),
    }
}

pub(crate) fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(Array::strings(items))
}
