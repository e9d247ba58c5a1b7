//! Hugging Face checkpoint → GGUF.

use super::*;

/// Converts the Hugging Face checkpoint in `dir` to a GGUF file at `out`.
pub fn convert_dir(dir: &Path, out: &Path, opts: ConvertOptions) -> Result<Summary> {
    convert_dir_with_progress(dir, out, opts, &mut |_| {})
}

/// Where a conversion is: tensors written so far out of all, and the one being written.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub tensor: &'a str,
}

/// [`convert_dir`], calling `progress` before each tensor (for a progress bar).
pub fn convert_dir_with_progress(
    dir: &Path,
    out: &Path,
    opts: ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Summary> {
    output_target(out)?;
    let config = HfConfig::load(dir)?;
    let (family, source) = detect(&config)?;
    let ckpt = Checkpoint::open(dir)?;
    ckpt.check_config(&config)?;
    let tok = TokenizerMetadata::load(dir, config.vocab as usize)?;
    if family == Family::OneBitLlm && !matches!(tok.vocab, Vocab::SentencePiece { .. }) {
        // bitnet-b1.58 files carry no activation key: SiLU (1bitLLM) is told from squared ReLU
        // (2B-4T) by the SentencePiece vocabulary, as 1bitLLM models all have one.
        return Err(ConvertError::Unsupported(
            "a BitnetForCausalLM (1bitLLM) checkpoint without tokenizer.model: its SiLU graph is recognised by the \
             SentencePiece vocabulary"
                .into(),
        ));
    }
    let arch = family.architecture();
    let plans = plan_for(&config, family, &ckpt);
    let mut notes = Vec::new();

    let mut b = GgufBuilder::new();
    let m = b.metadata_mut();
    m.insert("general.architecture", arch);
    m.insert("general.name", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    m.insert("general.file_type", opts.outtype.file_type());
    m.insert("general.quantization_version", 2u32);
    // Checked (config sizes are at most MAX_CONFIG_DIM), never truncated.
    let u32_of = |k: &str, v: u64| {
        u32::try_from(v).map_err(|_| ConvertError::Unsupported(format!("{k} = {v} does not fit a 32-bit GGUF field")))
    };
    m.insert(format!("{arch}.vocab_size"), u32_of("vocab_size", config.vocab)?);
    m.insert(format!("{arch}.context_length"), u32_of("context_length", config.ctx)?);
    m.insert(format!("{arch}.embedding_length"), u32_of("embedding_length", config.hidden)?);
    m.insert(format!("{arch}.block_count"), u32_of("block_count", config.layers)?);
    m.insert(format!("{arch}.feed_forward_length"), u32_of("feed_forward_length", config.ff)?);
    m.insert(format!("{arch}.attention.head_count"), u32_of("attention.head_count", config.heads)?);
    m.insert(format!("{arch}.attention.head_count_kv"), u32_of("attention.head_count_kv", config.kv_heads)?);
    m.insert(format!("{arch}.attention.layer_norm_rms_epsilon"), config.eps as f32);
    m.insert(format!("{arch}.rope.freq_base"), config.rope_theta as f32);
    m.insert(format!("{arch}.rope.dimension_count"), u32_of("rope.dimension_count", config.head_dim)?);
    if matches!(family, Family::Qwen3 | Family::Gemma3) {
        graph_metadata(m, &config, dir, &mut notes)?;
    }
    // Each ternary tensor's type: the one asked for, or I2_S where that cannot hold its shape.
    let types: Vec<Option<OutType>> = plans
        .iter()
        .map(|p| (p.kind == Kind::Ternary).then(|| opts.outtype.for_matrix(p.shape[0], p.shape[1]).0))
        .collect();
    let ternaries = plans.iter().filter(|p| p.kind == Kind::Ternary).map(|p| (p.gguf.as_str(), p.shape[0], p.shape[1]));
    notes.extend(fallback_notes(ternaries, opts.outtype));
    if types.contains(&Some(OutType::I2s)) {
        m.insert(i2s::LAYOUT_KEY, I2sLayout::X86.as_str());
    }
    if opts.outtype.separate_scale() {
        // Every TL shape's tiling (checked by for_matrix), recorded before anything is written.
        let tl2 = opts.outtype == OutType::Tl2;
        let mut tilings: Vec<(usize, usize, tl::TlTiling)> = Vec::new();
        for (p, _) in plans.iter().zip(&types).filter(|(_, t)| **t == Some(opts.outtype)) {
            let (rows, cols) = (p.shape[0], p.shape[1]);
            if !tilings.iter().any(|&(r, c, _)| (r, c) == (rows, cols)) {
                tilings.push((rows, cols, tl::choose_tiling(tl2, rows, cols)?));
            }
        }
        let values = tl::encode_tilings(&tilings).into_iter().map(Value::U32).collect();
        m.insert(tl::TILINGS_KEY, Array::new(bitnet_format::ValueType::U32, values).expect("all U32"));
    }
    tok.write(m);

    let emb_type = opts.embedding_type.for_rows(config.hidden as usize).tensor_type();
    // Block types need whole blocks per row: say so before writing anything.
    bitnet_quant::dense::row_bytes(emb_type, config.hidden as usize).map_err(|e| {
        ConvertError::Unsupported(format!(
            "--embedding-type {emb_type} cannot hold rows of {} (hidden size): {e}",
            config.hidden
        ))
    })?;
    for (p, out_ty) in plans.iter().zip(&types) {
        let ne: Vec<u64> = p.shape.iter().rev().map(|&d| d as u64).collect();
        let ty = match p.kind {
            Kind::Norm | Kind::GemmaNorm => TensorType::F32,
            Kind::Embedding => emb_type,
            Kind::Ternary => out_ty.expect("typed").tensor_type(),
        };
        b.add_tensor(&p.gguf, ty, &ne)?;
        if out_ty.is_some_and(OutType::separate_scale) {
            b.add_tensor(scale_name(&p.gguf), TensorType::F32, &[1])?;
        }
    }

    let (bytes, path) = write_atomically(out, b, |w| {
        for (done, (p, out_ty)) in plans.iter().zip(&types).enumerate() {
            progress(Progress { done, total: plans.len(), tensor: &p.gguf });
            let bytes = match p.kind {
                Kind::Ternary => {
                    let out_ty = out_ty.expect("typed");
                    let (m, scale) = ternary(&ckpt, p, source)?;
                    let bytes = out_ty.pack(&m, scale)?;
                    if out_ty.separate_scale() {
                        w.write_tensor(&p.gguf, &bytes)?;
                        w.write_tensor(&scale_name(&p.gguf), &scale.to_le_bytes())?;
                        continue;
                    }
                    bytes
                }
                Kind::Norm | Kind::GemmaNorm | Kind::Embedding => {
                    let (mut values, shape) = ckpt.f32(&p.hf)?;
                    check_shape(p, &shape)?;
                    if p.kind == Kind::GemmaNorm {
                        values.iter_mut().for_each(|v| *v += 1.0);
                    }
                    match p.kind {
                        Kind::Embedding => {
                            let mut bytes = Vec::new();
                            for row in values.chunks(config.hidden as usize) {
                                bytes.extend(bitnet_quant::dense::quantize_row(emb_type, row)?);
                            }
                            bytes
                        }
                        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    }
                }
            };
            w.write_tensor(&p.gguf, &bytes)?;
        }
        Ok(())
    })?;
    let scales = types.iter().filter(|t| t.is_some_and(OutType::separate_scale)).count();
    Ok(Summary { path, architecture: arch.into(), tensors: plans.len() + scales, bytes, notes })
}

/// The keys of the Qwen3 / Gemma 3 graphs beyond the common ones: head sizes, pooling (from
/// sentence-transformers' modules.json), Gemma's sliding window, attention scale and causality.
fn graph_metadata(m: &mut bitnet_format::Metadata, c: &HfConfig, dir: &Path, notes: &mut Vec<String>) -> Result<()> {
    let arch = if m.get_str("general.architecture") == Some("gemma3") { "gemma3" } else { "qwen3" };
    let hd = u32::try_from(c.head_dim).expect("checked against MAX_CONFIG_DIM");
    m.insert(format!("{arch}.attention.key_length"), hd);
    m.insert(format!("{arch}.attention.value_length"), hd);
    let (pooling, why) = pooling_of(dir)?;
    notes.push(format!("pooling: {} ({why})", pooling.0));
    m.insert(format!("{arch}.pooling_type"), pooling.1);
    if let Some((window, sliding)) = &c.sliding {
        m.insert(format!("{arch}.attention.sliding_window"), u32::try_from(*window).expect("checked"));
        let pattern = sliding.iter().map(|&s| Value::Bool(s)).collect();
        m.insert(
            format!("{arch}.attention.sliding_window_pattern"),
            Array::new(bitnet_format::ValueType::Bool, pattern).expect("all Bool"),
        );
        m.insert(format!("{arch}.rope.freq_base_swa"), c.rope_theta_local.unwrap_or(10000.0) as f32);
    }
    if let Some(s) = c.query_pre_attn_scalar
        && s != c.head_dim as f64
    {
        m.insert(format!("{arch}.attention.scale"), (1.0 / s.sqrt()) as f32);
    }
    if c.bidirectional {
        m.insert(format!("{arch}.attention.causal"), false);
    }
    Ok(())
}

/// The folder of the Pooling module sentence-transformers' modules.json lists (its config.json
/// says the pooling), if any; a path leaving the checkpoint is ignored.
pub fn pooling_module(modules: &Json) -> Option<&str> {
    let module = modules.as_array()?.iter().find(|m| m["type"].as_str().is_some_and(|t| t.ends_with("Pooling")))?;
    module["path"].as_str().filter(|p| !p.contains(".."))
}

/// The pooling sentence-transformers' modules.json / `<Pooling>/config.json` names, as llama.cpp's
/// `pooling_type` (mean 1, CLS 2, last 3); a checkpoint without one is mean-pooled, as bitnet.cpp's
/// converter does, and the conversion says so.
fn pooling_of(dir: &Path) -> Result<((&'static str, u32), String)> {
    let path = dir.join("modules.json");
    if !path.exists() {
        return Ok((("mean", 1), "no modules.json: mean, as bitnet.cpp's converter assumes".into()));
    }
    let modules = read_json(&path)?;
    let Some(module) = pooling_module(&modules) else {
        return Ok((("mean", 1), "modules.json has no Pooling module: mean, as bitnet.cpp's converter assumes".into()));
    };
    let cfg_path = dir.join(module).join("config.json");
    let cfg = read_json(&cfg_path)?;
    let on = |k: &str| cfg[k].as_bool() == Some(true);
    let found = if on("pooling_mode_mean_tokens") {
        ("mean", 1)
    } else if on("pooling_mode_cls_token") {
        ("cls", 2)
    } else if on("pooling_mode_lasttoken") {
        ("last", 3)
    } else {
        return Err(ConvertError::Unsupported(format!(
            "{}: no supported pooling mode (mean, CLS or last token) is set",
            cfg_path.display()
        )));
    };
    Ok((found, format!("from {}", cfg_path.display())))
}

/// bitnet.cpp's name for the scale tensor of a TL1/TL2 weight.
pub(crate) fn scale_name(weight: &str) -> String {
    format!("{weight}_scale")
}
