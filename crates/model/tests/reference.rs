//! The forward pass against Hugging Face transformers: tiny checkpoints made by
//! tools/reference/tiny_models.py are converted to GGUF, and our logits, greedy continuation and
//! tokenization must match what transformers recorded in their reference.json.

use std::path::{Path, PathBuf};

use bitnet_convert::{ConvertOptions, EmbeddingType, OutType, convert_dir};
use bitnet_model::{LoadOptions, Model, Tokenizer, argmax};
use common::{check_against_reference, greedy, greedy_with, ids, position_errors};
use serde_json::Value;

mod common;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

/// Converts a fixture checkpoint into a temporary GGUF (I2_S) and loads it.
fn load(name: &str, embedding_type: EmbeddingType, threads: usize) -> (Model, Value) {
    load_as(name, OutType::I2s, embedding_type, threads)
}

/// Converts a fixture checkpoint into a temporary GGUF, removed when the returned path is dropped
/// (a model or file opened from it keeps its mapping).
fn convert_fixture(name: &str, outtype: OutType, embedding_type: EmbeddingType) -> tempfile::TempPath {
    let out = tempfile::Builder::new().prefix("bitnet-model-ref-").suffix(".gguf").tempfile().unwrap().into_temp_path();
    convert_dir(&fixture_dir(name), &out, ConvertOptions { outtype, embedding_type }).unwrap();
    out
}

fn load_as(name: &str, outtype: OutType, embedding_type: EmbeddingType, threads: usize) -> (Model, Value) {
    let out = convert_fixture(name, outtype, embedding_type);
    let model = Model::load(&out, LoadOptions { threads, ..Default::default() }).unwrap();
    let reference = std::fs::read_to_string(fixture_dir(name).join("reference.json")).unwrap();
    (model, serde_json::from_str(&reference).unwrap())
}

#[test]
fn tiny_bitnet_b158_matches_transformers() {
    for threads in [1, 3] {
        let (model, reference) = load("tiny-bitnet-b1.58", EmbeddingType::F32, threads);
        check_against_reference(&model, &reference, &format!("bitnet-b1.58 I2_S, {threads} threads"));
    }
}

/// The BitNet graph and a ternary Llama stored as llama.cpp's TQ1_0 and TQ2_0 (per-block f16 scales).
#[test]
fn tq_formats_match_transformers() {
    for name in ["tiny-bitnet-b1.58-256", "tiny-llama-ternary-256"] {
        for outtype in [OutType::I2s, OutType::Tq1_0, OutType::Tq2_0] {
            let (model, reference) = load_as(name, outtype, EmbeddingType::F32, 2);
            check_against_reference(&model, &reference, &format!("{name} {outtype:?}"));
        }
    }
}

/// bitnet.cpp's lookup-table layouts as `bitnet convert --outtype tl1|tl2` writes them (scale in a
/// `<name>_scale` tensor, tiling recorded in the file since these shapes have no preset kernels).
#[test]
fn tl_formats_match_transformers() {
    for (name, outtype) in [
        ("tiny-bitnet-b1.58", OutType::Tl1),
        ("tiny-bitnet-b1.58-256", OutType::Tl1),
        ("tiny-bitnet-b1.58-256", OutType::Tl2),
    ] {
        let (model, reference) = load_as(name, outtype, EmbeddingType::F32, 2);
        assert!(model.metadata().get(bitnet_quant::tl::TILINGS_KEY).is_some());
        check_against_reference(&model, &reference, &format!("{name} {outtype}"));
    }
}

/// A ternary Llama (Falcon3-1.58bit layout): packed weights with divided scales, untied head,
/// Q/K permuted for llama.cpp's RoPE.
#[test]
fn tiny_ternary_llama_matches_transformers() {
    let (model, reference) = load("tiny-llama-ternary", EmbeddingType::F32, 2);
    assert_eq!(model.config.architecture, "llama");
    check_against_reference(&model, &reference, "llama I2_S");
}

#[test]
fn f16_embeddings_keep_greedy_tokens() {
    let (model, reference) = load("tiny-bitnet-b1.58", EmbeddingType::F16, 2);
    let tokens = ids(&reference["tokens"]);
    let mut cache = model.new_cache(64).unwrap();
    let logits = model.forward(&tokens, &mut cache, false).unwrap();
    assert_eq!(argmax(&logits), ids(&reference["greedy"])[0]);
}

/// Quantized embedding tables / output heads (`convert --embedding-type q8_0|q6_k`) load and run.
/// Q8_0 keeps transformers' greedy token (its head multiplies activations quantized per 32, as
/// llama.cpp's does: the largest logit error went just past 3% of the range with that, while the
/// demo model's perplexity moved by 0.007%); Q6_K's 6-bit rows (errors up to ~2% of a row's range)
/// are enough to reorder this random model's top logits, which lie 0.3% apart, so for it the
/// reference token must stay among the top three and logits within 15% of the range.
#[test]
fn quantized_embeddings_run() {
    let top = |logits: &[f32], k: usize| {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        idx.truncate(k);
        idx
    };
    let (exact, reference) = load_as("tiny-bitnet-b1.58-256", OutType::I2s, EmbeddingType::F32, 2);
    let tokens = ids(&reference["tokens"]);
    let want = exact.forward(&tokens, &mut exact.new_cache(64).unwrap(), false).unwrap();
    let range = want.iter().fold(f32::MIN, |m, &v| m.max(v)) - want.iter().fold(f32::MAX, |m, &v| m.min(v));
    let greedy = ids(&reference["greedy"])[0];
    for (ty, k, tol) in [(EmbeddingType::Q8_0, 1, 0.04), (EmbeddingType::Q6K, 3, 0.15)] {
        let (model, _) = load_as("tiny-bitnet-b1.58-256", OutType::I2s, ty, 2);
        let logits = model.forward(&tokens, &mut model.new_cache(64).unwrap(), false).unwrap();
        assert!(top(&logits, k).contains(&greedy), "{ty:?}: {:?}", top(&logits, 4));
        let worst = logits.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= tol * range, "{ty:?}: logits off by {worst} (range {range})");
    }
}

/// The reference's tokenizations (each string both ways) and the BOS-prefixed prompt.
fn check_tokenizer(model: &Model, reference: &Value) {
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    for (text, want) in reference["tokenizer_cases"].as_object().unwrap() {
        assert_eq!(tok.encode(text, false).unwrap(), ids(want), "{text:?}");
        assert_eq!(tok.decode(&ids(want), true).unwrap(), *text, "decode {text:?}");
    }
    let prompt = reference["text"].as_str().unwrap();
    assert_eq!(tok.encode(prompt, true).unwrap(), ids(&reference["tokens"]), "BOS + prompt");
}

#[test]
fn tokenizer_matches_hugging_face() {
    let (model, reference) = load("tiny-bitnet-b1.58", EmbeddingType::F16, 1);
    check_tokenizer(&model, &reference);
}

/// 1bitLLM's BitnetForCausalLM (bitnet_b1_58-large/-3B layout): float16 master weights
/// ternarized at conversion, SiLU, sub-norms named inner_attn_ln/ffn_layernorm, tied head, a
/// SentencePiece tokenizer.model padded to vocab_size. The reference logits are transformers'
/// BitNet graph (tools/reference/tiny_1bitllm.py, cross-checked there against 1bitLLM's own code).
#[test]
fn tiny_1bitllm_matches_transformers() {
    let (wide, reference) = load("tiny-bitnet-1bitllm-128", EmbeddingType::F32, 2);
    check_against_reference(&wide, &reference, "1bitLLM 128-wide I2_S");
    let (model, reference) = load("tiny-bitnet-1bitllm", EmbeddingType::F32, 2);
    assert_eq!(model.config.architecture, "bitnet-b1.58");
    assert_eq!(model.config.activation, bitnet_model::Activation::Silu);
    check_against_reference(&model, &reference, "1bitLLM I2_S");

    check_tokenizer(&model, &reference);
    let tokens = model.metadata().get("tokenizer.ggml.tokens").and_then(|t| t.as_array()).unwrap();
    assert_eq!(tokens.len(), model.config.vocab_size);
    assert_eq!(tokens.values().last().and_then(|v| v.as_str()), Some("[PAD2]"));
}

/// A file bitnet.cpp itself wrote: its 1.0 converter (microsoft/BitNet c82b5e6,
/// `convert-hf-to-gguf-bitnet.py --outtype f16`) run on the tiny 1bitLLM checkpoint. Architecture
/// `bitnet`, F32 embeddings, ternarized F16 layer weights, SentencePiece vocabulary, linear RoPE
/// scaling 1.0. It must load, tokenize like sentencepiece and compute what our own F16 conversion
/// of the same checkpoint computes.
#[test]
fn bitnet_cpp_converted_file_loads() {
    let path = fixture_dir("tiny-bitnet-1bitllm-bitnetcpp-f16.gguf");
    let theirs = Model::load(&path, LoadOptions { threads: 2, ..Default::default() }).unwrap();
    assert_eq!(theirs.config.architecture, "bitnet");
    assert_eq!(theirs.config.activation, bitnet_model::Activation::Silu);
    let (ours, reference) = load_as("tiny-bitnet-1bitllm", OutType::F16, EmbeddingType::F32, 2);
    check_tokenizer(&theirs, &reference);
    let tokens = ids(&reference["tokens"]);
    let a = theirs.forward(&tokens, &mut theirs.new_cache(64).unwrap(), true).unwrap();
    let b = ours.forward(&tokens, &mut ours.new_cache(64).unwrap(), true).unwrap();
    let range = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / range;
    assert!(worst < 1e-5, "bitnet.cpp's F16 file vs ours: {worst:.2e} of the logit range");
}

/// bitnet.cpp 1.0's own I2_S file (its converter, then its C++ `llama-quantize`) of the 128-wide
/// 1bitLLM checkpoint: the 2-bit codes equal ours for every matrix (its scales are the f16-rounded
/// `1/s`, as its converter rounds the fake-quantized weights to the checkpoint's f16), and our
/// forward pass on its file follows bitnet.cpp's own (tools/bitnetcpp-logits): same greedy tokens.
/// Logits differ by up to ~2% of their range because bitnet.cpp keeps K/V in f16 and multiplies the
/// Q8_0 head with Q8_0-quantized activations, and int8 activation codes amplify such rounding.
#[test]
fn bitnet_cpp_i2s_file_follows_bitnet_cpp() {
    let path = fixture_dir("tiny-bitnet-1bitllm-128-bitnetcpp-i2_s.gguf");
    let theirs_file = bitnet_format::GgufFile::open(&path).unwrap();
    let ours_file =
        bitnet_format::GgufFile::open(convert_fixture("tiny-bitnet-1bitllm-128", OutType::I2s, EmbeddingType::Q8_0))
            .unwrap();
    let mut matrices = 0;
    for t in theirs_file.tensors().iter().filter(|t| t.ty == bitnet_format::TensorType::I2_S) {
        let (a, b) = (theirs_file.tensor_data(t), ours_file.tensor(&t.name).unwrap().data);
        let codes = (t.numel() / 4) as usize;
        assert_eq!(a[..codes], b[..codes], "{}: 2-bit codes", t.name);
        let scale = |d: &[u8]| f32::from_le_bytes(d[codes..codes + 4].try_into().unwrap());
        let f16_rounded = half::f16::from_f32(scale(b)).to_f32();
        assert_eq!(scale(a), f16_rounded, "{}: bitnet.cpp's scale is our scale rounded to f16", t.name);
        matrices += 1;
    }
    assert_eq!(matrices, 7);

    let model = Model::load(&path, LoadOptions { threads: 2, ..Default::default() }).unwrap();
    assert_eq!(model.config.architecture, "bitnet");
    let bitnet_cpp: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("tiny-bitnet-1bitllm-128-bitnetcpp-i2_s.json")).unwrap(),
    )
    .unwrap();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("tiny-bitnet-1bitllm-128").join("reference.json")).unwrap(),
    )
    .unwrap();
    let tokens = ids(&reference["tokens"]);
    let logits = model.forward(&tokens, &mut model.new_cache(64).unwrap(), true).unwrap();
    let vocab = model.config.vocab_size;
    let mut same_argmax = 0;
    for (pos, (err, same)) in position_errors(&logits, &bitnet_cpp["logits"], vocab).into_iter().enumerate() {
        assert!(err < 3e-2, "position {pos}: {err:.2e} of the logit range from bitnet.cpp's");
        same_argmax += usize::from(same);
    }
    assert!(same_argmax * 10 >= tokens.len() * 8, "argmax agrees at {same_argmax} of {} positions", tokens.len());
    let want = ids(&bitnet_cpp["greedy"]);
    assert_eq!(greedy(&model, &tokens, want.len()), want, "greedy continuation against bitnet.cpp's");
}

/// The other direction: bitnet.cpp (its llama.cpp fork, 1.0) read the files *we* write for a ternary
/// Llama as I2_S, TQ1_0 and TQ2_0 and produced transformers' greedy tokens from each
/// (tools/reference/bitnetcpp_fixture.sh recorded its output with each file's SHA-256). Our
/// converter must still write those exact bytes, and our greedy tokens and logits must follow
/// bitnet.cpp's on them (F16 head: transformers' logits were taken with F32 embeddings).
#[test]
fn bitnet_cpp_reads_our_files() {
    use sha2::Digest;
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir("tiny-llama-ternary-256-bitnetcpp.json")).unwrap())
            .unwrap();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("tiny-llama-ternary-256").join("reference.json")).unwrap(),
    )
    .unwrap();
    for (name, outtype) in [("i2_s", OutType::I2s), ("tq1_0", OutType::Tq1_0), ("tq2_0", OutType::Tq2_0)] {
        let theirs = &recorded["files"][name];
        let path = convert_fixture("tiny-llama-ternary-256", outtype, EmbeddingType::F16);
        let sha = format!("{:x}", sha2::Sha256::digest(std::fs::read(&path).unwrap()));
        assert_eq!(sha, theirs["sha256"].as_str().unwrap(), "{name}: the file bitnet.cpp read is what we write");
        assert_eq!(ids(&theirs["greedy"]), ids(&reference["greedy"]), "{name}: bitnet.cpp's greedy tokens on our file");
        let model = Model::load(&path, LoadOptions { threads: 2, ..Default::default() }).unwrap();
        let tokens = ids(&reference["tokens"]);
        assert_eq!(greedy(&model, &tokens, 12), ids(&theirs["greedy"]), "{name}: our greedy tokens on it");
        if theirs["logits"].is_array() {
            let ours = model.forward(&tokens, &mut model.new_cache(64).unwrap(), true).unwrap();
            let vocab = model.config.vocab_size;
            for (pos, (err, _)) in position_errors(&ours, &theirs["logits"], vocab).into_iter().enumerate() {
                assert!(err < 6e-2, "{name} position {pos}: {err:.2e} of the range from bitnet.cpp's logits");
            }
        }
    }
}

/// The f16 KV cache (`bitnet run`'s default): keys and values rounded to f16 (2⁻¹¹ relative) move
/// these random models' logits by up to ~5% of their range, because the int8 activation codes
/// after attention amplify small changes (as in bitnet.cpp, whose cache is f16 too), and keep
/// transformers' greedy tokens.
#[test]
fn f16_kv_cache_keeps_greedy_tokens() {
    for name in ["tiny-bitnet-b1.58", "tiny-llama-ternary", "tiny-bitnet-1bitllm"] {
        let (model, reference) = load(name, EmbeddingType::F32, 2);
        let tokens = ids(&reference["tokens"]);
        let exact = model.forward(&tokens, &mut model.new_cache(64).unwrap(), true).unwrap();
        let half =
            model.forward(&tokens, &mut model.new_cache_of(64, bitnet_model::KvType::F16).unwrap(), true).unwrap();
        let range = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = exact.iter().zip(&half).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / range;
        eprintln!("{name}: f16 KV cache moves logits by {err:.2e} of their range");
        assert!(err < 5e-2, "{name}: {err}");
        let want = ids(&reference["greedy"]);
        assert_eq!(greedy_with(&model, &tokens, want.len(), bitnet_model::KvType::F16), want, "{name}");
    }
}

/// llama.cpp's own `bitnet` architecture with TQ1_0/TQ2_0 tensors, as its converter writes them
/// (`convert_hf_to_gguf.py --outtype tq1_0|tq2_0` of the llama.cpp in bitnet.cpp 1.0, with PyPI's
/// gguf 0.19; F16 embeddings, per-block f16 scales): logits within 5% of transformers' range at
/// every position (the F16 head moves this random model's near-tied top logits), and the same
/// logits and greedy tokens as our own conversion of the checkpoint to the same types.
#[test]
fn llama_cpp_tq_files_load() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("tiny-bitnet-1bitllm-256").join("reference.json")).unwrap(),
    )
    .unwrap();
    let tokens = ids(&reference["tokens"]);
    for ty in ["tq1_0", "tq2_0"] {
        let model = Model::load(
            fixture_dir(&format!("tiny-bitnet-1bitllm-256-llamacpp-{ty}.gguf")),
            LoadOptions { threads: 2, ..Default::default() },
        )
        .unwrap();
        assert_eq!(model.config.architecture, "bitnet");
        let logits = model.forward(&tokens, &mut model.new_cache(64).unwrap(), true).unwrap();
        let vocab = model.config.vocab_size;
        for (pos, (err, _)) in position_errors(&logits, &reference["logits"], vocab).into_iter().enumerate() {
            assert!(err < 5e-2, "{ty} position {pos}: {err:.2e} of the logit range");
        }
        let outtype = if ty == "tq1_0" { OutType::Tq1_0 } else { OutType::Tq2_0 };
        let (ours, _) = load_as("tiny-bitnet-1bitllm-256", outtype, EmbeddingType::F16, 2);
        let mine = ours.forward(&tokens, &mut ours.new_cache(64).unwrap(), true).unwrap();
        let range = mine.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = logits.iter().zip(&mine).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / range;
        assert!(err < 1e-3, "{ty}: llama.cpp's file vs our conversion: {err:.2e} of the range");
        assert_eq!(greedy(&model, &tokens, 12), greedy(&ours, &tokens, 12), "{ty}: greedy tokens");
    }
}

#[test]
fn context_overflow_is_an_error() {
    let (model, _) = load("tiny-bitnet-b1.58", EmbeddingType::F16, 1);
    let mut cache = model.new_cache(4).unwrap();
    let err = model.forward(&[1, 2, 3, 4, 5], &mut cache, false).unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
    let err = model.forward(&[100_000], &mut cache, false).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

/// Q8_0 and Q6_K rows (embeddings, output heads) dequantize exactly as llama.cpp does.
#[test]
fn dense_types_dequantize_like_llama_cpp() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/reference/dense.json");
    let f: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for c in f["cases"].as_array().unwrap() {
        let ty = bitnet_format::TensorType::from_name(c["type"].as_str().unwrap()).unwrap();
        let hex = c["bytes"].as_str().unwrap();
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let want: Vec<f32> = c["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mut got = vec![0f32; want.len()];
        bitnet_quant::dense::dequantize_row(ty, &bytes, &mut got);
        assert_eq!(got, want, "{ty}");
    }
}

/// `convert --outtype f16|f32` writes the ternary weights times their scale as floats (the
/// baseline for speed comparisons); such a file loads and runs as a dense model.
#[test]
fn float_layer_weights_load_and_run() {
    for outtype in [OutType::F16, OutType::F32] {
        let (model, reference) = load_as("tiny-bitnet-b1.58", outtype, EmbeddingType::F16, 2);
        let tokens = ids(&reference["tokens"]);
        let logits = model.forward(&tokens, &mut model.new_cache(64).unwrap(), false).unwrap();
        assert_eq!(logits.len(), model.config.vocab_size);
        assert!(logits.iter().all(|v| v.is_finite()), "{outtype:?}");
    }
}
