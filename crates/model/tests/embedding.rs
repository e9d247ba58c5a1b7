//! Ternary embedding models (bitnet.cpp's Qwen3 and Gemma 3 bitnet-embedding graphs) against
//! Hugging Face transformers: tiny checkpoints made by tools/reference/tiny_embedding.py are
//! converted to GGUF; our tokens must equal transformers' and our pooled, normalised embeddings
//! must match its (cosine ≥ 0.999, every component within 0.02: one flipped int8 rounding tie
//! moves a unit vector of these tiny models by up to ~5e-3) and, tightly (1e-4), the same graph
//! with every linear an exact integer product (our accumulation order).

use std::path::{Path, PathBuf};

use bitnet_convert::{ConvertOptions, EmbeddingType, OutType, convert_dir};
use bitnet_model::{LoadOptions, Model, Pooling, Tokenizer};
use serde_json::Value;

const MODELS: [&str; 2] = ["tiny-qwen3-embedding", "tiny-gemma3-embedding"];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

/// Converts fixture `name` into a temporary file, removed when the returned path is dropped (a
/// model loaded from it keeps its mapping).
fn convert(name: &str, outtype: OutType) -> tempfile::TempPath {
    let out = tempfile::Builder::new().prefix("bitnet-embed-").suffix(".gguf").tempfile().unwrap().into_temp_path();
    convert_dir(&fixture_dir(name), &out, ConvertOptions { outtype, embedding_type: EmbeddingType::F32 }).unwrap();
    out
}

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir(name).join("reference.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn compare(ours: &[f32], theirs: &[f32]) -> (f64, f32) {
    let cos: f64 = ours.iter().zip(theirs).map(|(&a, &b)| a as f64 * b as f64).sum();
    let max = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    (cos, max)
}

/// `tight`: also within 1e-4 of the integer-order graph (files whose norms are the checkpoint's
/// f32 values; bitnet.cpp's converter rounds them to f16).
fn check(model: &Model, reference: &Value, what: &str, tight: bool) {
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    let pooling = match reference["pooling"].as_str().unwrap() {
        "lasttoken" => Pooling::Last,
        "mean" => Pooling::Mean,
        other => panic!("pooling {other}"),
    };
    assert_eq!(model.config.pooling, Some(pooling), "{what}: the file's pooling");
    let texts = reference["texts"].as_array().unwrap();
    let ids: Vec<Vec<u32>> =
        texts.iter().map(|t| tok.encode_for_embedding(t["text"].as_str().unwrap()).unwrap()).collect();
    for (t, ours) in texts.iter().zip(&ids) {
        let theirs: Vec<u32> = t["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ours, &theirs, "{what}: tokens of {:?}", t["text"]);
    }
    // All texts in one batch, and each alone: the same vectors.
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = model.embed(&refs, pooling, true).unwrap();
    for ((t, ours), one) in texts.iter().zip(&batch).zip(&refs) {
        let alone = &model.embed(&[one], pooling, true).unwrap()[0];
        let (_, d) = compare(ours, alone);
        assert!(d < 1e-5, "{what}: batched and single embeddings differ by {d}");
        let (cos, max) = compare(ours, &floats(&t["embedding"]));
        assert!(cos >= 0.999 && max <= 0.02, "{what}: vs transformers cos {cos}, max diff {max} ({:?})", t["text"]);
        let (cos_i, max_i) = compare(ours, &floats(&t["embedding_integer_order"]));
        assert!(
            !tight || max_i <= 1e-4,
            "{what}: vs the integer-order graph cos {cos_i}, max diff {max_i} ({:?})",
            t["text"]
        );
    }
}

#[test]
fn embeddings_match_transformers() {
    for name in MODELS {
        for threads in [1, 3] {
            let model =
                Model::load(convert(name, OutType::I2s), LoadOptions { threads, ..Default::default() }).unwrap();
            check(&model, &reference(name), &format!("{name} I2_S, {threads} threads"), true);
        }
    }
}

/// Files written by bitnet.cpp's own converter (tools/reference/bitnetcpp_embedding_fixture.py:
/// F16 norms and embeddings, I2_S with its scale after the codes, no head, its names and keys)
/// load and embed. The Qwen3 one must match transformers like ours; bitnet.cpp's converter
/// writes no sliding window or local RoPE base, so its Gemma file attends globally with one base,
/// unlike the fixture's transformers graph: there the tokens must match and the vectors be sound.
#[test]
fn bitnet_cpp_converted_files_embed() {
    let file = |name: &str| fixture_dir("").join(format!("{name}-bitnetcpp-i2_s.gguf"));
    let model = Model::load(file("tiny-qwen3-embedding"), LoadOptions { threads: 2, ..Default::default() }).unwrap();
    check(&model, &reference("tiny-qwen3-embedding"), "bitnet.cpp's Qwen3 file", false);

    let model = Model::load(file("tiny-gemma3-embedding"), LoadOptions { threads: 2, ..Default::default() }).unwrap();
    assert!(model.config.sliding_window.is_none());
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    let r = reference("tiny-gemma3-embedding");
    for t in r["texts"].as_array().unwrap() {
        let ids = tok.encode_for_embedding(t["text"].as_str().unwrap()).unwrap();
        let theirs: Vec<u32> = t["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, theirs, "bitnet.cpp's Gemma file: tokens of {:?}", t["text"]);
        let v = &model.embed(&[&ids], Pooling::Mean, true).unwrap()[0];
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(v.iter().all(|x| x.is_finite()) && (norm - 1.0).abs() < 1e-4);
    }
}

/// A long prompt's attention runs in blocks of query rows × keys; in chunks of fewer than 32
/// tokens it runs row by row. Both must give the same logits (up to float summation order), with
/// and without a sliding window, f32 and f16 caches.
#[test]
fn blocked_prompt_attention_matches_row_by_row() {
    use bitnet_model::KvType;
    for name in MODELS {
        let model = Model::load(convert(name, OutType::I2s), LoadOptions { threads: 2, ..Default::default() }).unwrap();
        let tokens: Vec<u32> = (0..400u32).map(|i| (i * 7919 + 13) % model.config.vocab_size as u32).collect();
        for kv in [KvType::F32, KvType::F16] {
            let mut whole = model.new_cache_of(512, kv).unwrap();
            let a = model.forward(&tokens, &mut whole, false).unwrap();
            let mut rows = model.new_cache_of(512, kv).unwrap();
            let mut b = Vec::new();
            for chunk in tokens.chunks(16) {
                b = model.forward(chunk, &mut rows, false).unwrap();
            }
            let range = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            // f32: summation order only. f16: the same, but this tiny model's int8 activations can
            // flip a rounding tie on it (one tie moves its logits by up to ~1% of their range);
            // a wrong key range moves them by far more.
            let tol = if kv == KvType::F32 { 1e-3 } else { 2e-2 };
            assert!(max <= tol * range, "{name} {kv:?}: blocked and row-by-row differ by {max} (range {range})");
        }
    }
}

/// Types that cannot hold every shape of these models (TQ1_0 / TQ2_0 need rows of 256, TL2 its
/// tilings) fall back to I2_S per tensor: the mixed files embed like transformers too.
#[test]
fn mixed_type_conversions_embed() {
    for name in MODELS {
        for outtype in [OutType::Tq2_0, OutType::Tq1_0, OutType::Tl2] {
            let path = convert(name, outtype);
            let file = bitnet_format::GgufFile::open(&path).unwrap();
            let types: std::collections::BTreeSet<String> =
                file.tensors().iter().filter(|t| t.ty.is_ternary()).map(|t| t.ty.to_string()).collect();
            assert!(types.contains("I2_S"), "{name} {outtype:?}: {types:?}");
            let model = Model::load(&path, LoadOptions { threads: 2, ..Default::default() }).unwrap();
            check(&model, &reference(name), &format!("{name} {outtype:?} (types {types:?})"), false);
        }
    }
}
