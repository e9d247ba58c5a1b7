//! `requantize` (`bitnet convert MODEL.gguf --embedding-type ... --outtype ...`): only what is
//! asked for changes; ternary values survive every ternary type; a type that cannot hold the
//! tensor is a clear error and writes nothing.

use std::path::Path;

use bitnet_convert::{EmbeddingType, OutType, RequantizeOptions, requantize, requantize_embeddings};
use bitnet_format::{GgufBuilder, GgufFile, TensorType};
use bitnet_quant::{I2sLayout, PackedTernary, TernaryFormat, TqKind, WeightScales, tl, tq};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

#[test]
fn re_encodes_only_the_head() {
    let input = fixture("bitnet-demo.gguf");
    let out = std::env::temp_dir().join(format!("requant-{}.gguf", std::process::id()));
    requantize_embeddings(&input, &out, EmbeddingType::Q8_0).unwrap();
    let (a, b) = (GgufFile::open(&input).unwrap(), GgufFile::open(&out).unwrap());
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        if x.name == "token_embd.weight" || x.name == "output.weight" {
            assert_eq!(y.ty, TensorType::Q8_0, "{}", y.name);
        } else {
            assert_eq!(a.tensor_data(x), b.tensor_data(y), "{} must be copied unchanged", x.name);
        }
    }
    assert_eq!(a.metadata().len(), b.metadata().len());
    std::fs::remove_file(&out).ok();
}

#[test]
fn rows_that_do_not_fit_the_blocks_are_refused() {
    // The tiny fixture's rows are 64 wide: Q6_K needs multiples of 256.
    let out = std::env::temp_dir().join(format!("requant-bad-{}.gguf", std::process::id()));
    let err = requantize_embeddings(&fixture("tiny-bitnet-b1.58.gguf"), &out, EmbeddingType::Q6K).unwrap_err();
    assert!(err.to_string().contains("Q6_K") && err.to_string().contains("64"), "{err}");
    assert!(!out.exists());
}

fn temp(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("requant-{tag}-{}.gguf", std::process::id()))
}

fn with_outtype(o: OutType) -> RequantizeOptions {
    RequantizeOptions { outtype: Some(o), embedding_type: None }
}

/// Ternary values and scales of every ternary tensor of a file, by name.
fn ternary_tensors(path: &Path) -> Vec<(String, Vec<i8>, Vec<f32>)> {
    let f = GgufFile::open(path).unwrap();
    let layout = I2sLayout::of_file(f.metadata()).unwrap();
    f.tensors()
        .iter()
        .filter_map(|t| {
            let (cols, rows) = (t.shape[0] as usize, t.shape.get(1).copied().unwrap_or(1) as usize);
            let format = match t.ty {
                TensorType::I2_S => TernaryFormat::I2s(layout),
                TensorType::TQ1_0 => TernaryFormat::Tq1_0,
                TensorType::TQ2_0 => TernaryFormat::Tq2_0,
                TensorType::TL1 => TernaryFormat::Tl1(tl::tiling_of_file(f.metadata(), false, rows, cols).unwrap()),
                TensorType::TL2 => TernaryFormat::Tl2(tl::tiling_of_file(f.metadata(), true, rows, cols).unwrap()),
                _ => return None,
            };
            let scale =
                f.tensor(&format!("{}_scale", t.name)).map(|s| f32::from_le_bytes(s.data[..4].try_into().unwrap()));
            let (m, scales) =
                PackedTernary::new(format, rows, cols, f.tensor_data(t), scale).unwrap().unpack().unwrap();
            let scales = match scales {
                WeightScales::Tensor(s) => vec![s],
                WeightScales::Blocks { values, .. } => values,
            };
            Some((t.name.clone(), m.values().to_vec(), scales))
        })
        .collect()
}

#[test]
fn ternary_weights_re_encode_to_every_type_and_back() {
    let input = fixture("bitnet-demo.gguf");
    let original = ternary_tensors(&input);
    assert_eq!(original.len(), 6 * 7);
    for o in [OutType::Tq1_0, OutType::Tq2_0, OutType::Tl1, OutType::Tl2, OutType::I2s] {
        let (there, back) = (temp(&format!("{o}")), temp(&format!("{o}-back")));
        requantize(&input, &there, with_outtype(o)).unwrap();
        let encoded = ternary_tensors(&there);
        let f = GgufFile::open(&there).unwrap();
        assert_eq!(f.metadata().get_u64("general.file_type"), Some(u64::from(o.file_type())));
        for ((name, values, scales), (name2, values2, scales2)) in original.iter().zip(&encoded) {
            assert_eq!(name, name2);
            assert!(values == values2, "{o}: {name}: ternary values changed");
            // TQ keeps the scale as f16 in every block.
            let expected = if matches!(o, OutType::Tq1_0 | OutType::Tq2_0) {
                half::f16::from_f32(scales[0]).to_f32()
            } else {
                scales[0]
            };
            assert!(scales2.iter().all(|&s| s == expected), "{o}: {name}: scales {scales2:?}, expected {expected}");
        }
        requantize(&there, &back, with_outtype(OutType::I2s)).unwrap();
        if matches!(o, OutType::Tl1 | OutType::Tl2 | OutType::I2s) {
            // Nothing is lost on the way: the very same file.
            assert!(std::fs::read(&back).unwrap() == std::fs::read(&input).unwrap(), "{o} and back differs");
        }
        std::fs::remove_file(&there).ok();
        std::fs::remove_file(&back).ok();
    }
}

#[test]
fn llama_cpp_tq2_0_file_becomes_its_own_tq1_0_file() {
    // llama.cpp's converter wrote both files from one checkpoint: re-encoding its TQ2_0 as TQ1_0
    // must give the bytes of its TQ1_0 file (general.file_type included).
    let out = temp("llamacpp");
    requantize(&fixture("tiny-bitnet-1bitllm-256-llamacpp-tq2_0.gguf"), &out, with_outtype(OutType::Tq1_0)).unwrap();
    let expected = std::fs::read(fixture("tiny-bitnet-1bitllm-256-llamacpp-tq1_0.gguf")).unwrap();
    assert!(std::fs::read(&out).unwrap() == expected, "differs from llama.cpp's own TQ1_0 file");
    std::fs::remove_file(&out).ok();
}

#[test]
fn per_block_scales_that_differ_are_refused_by_per_tensor_types() {
    // A TQ2_0 tensor as llama.cpp's quantizer writes a float matrix: each block its own scale.
    let (rows, cols) = (32, 512);
    let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 201) as f32 - 100.0) * (1 + i / 256 % 5) as f32).collect();
    let mut data = Vec::new();
    for row in x.chunks(cols) {
        data.extend(tq::quantize_row(TqKind::Tq2_0, row).unwrap());
    }
    let input = temp("blocks-in");
    let mut b = GgufBuilder::new();
    b.metadata_mut().insert("general.architecture", "llama");
    b.add_tensor("blk.0.attn_q.weight", TensorType::TQ2_0, &[cols as u64, rows as u64]).unwrap();
    let mut w = b.start(std::fs::File::create(&input).unwrap()).unwrap();
    w.write_tensor("blk.0.attn_q.weight", &data).unwrap();
    w.finish().unwrap();

    let out = temp("blocks-out");
    for o in [OutType::I2s, OutType::Tl2] {
        let err = requantize(&input, &out, with_outtype(o)).unwrap_err().to_string();
        assert!(err.contains("blk.0.attn_q.weight") && err.contains("different scales"), "{err}");
        assert!(!out.exists());
    }
    // Per-block types keep each block's scale: TQ2_0 → TQ1_0 → TQ2_0 is the same tensor.
    let back = temp("blocks-back");
    requantize(&input, &out, with_outtype(OutType::Tq1_0)).unwrap();
    requantize(&out, &back, with_outtype(OutType::Tq2_0)).unwrap();
    let f = GgufFile::open(&back).unwrap();
    assert!(f.tensor("blk.0.attn_q.weight").unwrap().data == data.as_slice());
    for p in [input, out, back] {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn float_layer_weights_are_not_ternarized_from_a_gguf() {
    let (f16, out) = (temp("f16"), temp("f16-out"));
    requantize(&fixture("bitnet-demo.gguf"), &f16, with_outtype(OutType::F16)).unwrap();
    let err = requantize(&f16, &out, with_outtype(OutType::I2s)).unwrap_err().to_string();
    assert!(err.contains("no ternary weights"), "{err}");
    assert!(!out.exists());
    std::fs::remove_file(&f16).ok();
}

#[test]
fn type_names_round_trip() {
    for t in OutType::ALL {
        assert_eq!(t.to_string().parse::<OutType>(), Ok(t));
    }
    for t in EmbeddingType::ALL {
        assert_eq!(t.to_string().parse::<EmbeddingType>(), Ok(t));
    }
    assert!("q4_0".parse::<EmbeddingType>().unwrap_err().contains("q6_k"));
}
