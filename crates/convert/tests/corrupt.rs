//! Corrupt or unsupported checkpoints give a clear error and never leave an output file.

use std::path::{Path, PathBuf};

use bitnet_convert::{ConvertOptions, OutType, convert_dir};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

/// A copy of the tiny checkpoint in a fresh directory, to damage.
fn copy(tag: &str) -> PathBuf {
    copy_of("tiny-bitnet-b1.58", tag)
}

/// A copy of fixture checkpoint `name` (its files but reference.json).
fn copy_of(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-convert-corrupt-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(fixture(name)).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap() != "reference.json" {
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn expect_error(dir: &Path, needle: &str) {
    expect_error_with(dir, ConvertOptions::default(), needle);
}

fn expect_error_with(dir: &Path, opts: ConvertOptions, needle: &str) {
    let out = dir.join("out.gguf");
    let err = convert_dir(dir, &out, opts).unwrap_err().to_string();
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!out.exists(), "no output file after a failed conversion");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut j);
    std::fs::write(path, j.to_string()).unwrap();
}

#[test]
fn bad_json() {
    let d = copy("json");
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    expect_error(&d, "invalid JSON");
}

#[test]
fn missing_config_file() {
    let d = copy("noconfig");
    std::fs::remove_file(d.join("config.json")).unwrap();
    expect_error(&d, "config.json");
}

#[test]
fn truncated_safetensors() {
    let d = copy("trunc");
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    expect_error(&d, "not a valid safetensors file");
}

#[test]
fn wrong_shape() {
    let d = copy("shape");
    edit_config(&d, |j| j["intermediate_size"] = 256.into());
    expect_error(&d, "config.json implies");
}

#[test]
fn missing_tensor() {
    let d = copy("missing");
    edit_config(&d, |j| j["num_hidden_layers"] = 3.into());
    expect_error(&d, "model.layers.2");
}

#[test]
fn unsupported_kinds_name_what_is_supported() {
    let d = copy("arch");
    edit_config(&d, |j| j["architectures"] = serde_json::json!(["MistralForCausalLM"]));
    expect_error(&d, "supported: BitNetForCausalLM");
    let d = copy("fp");
    edit_config(&d, |j| {
        j.as_object_mut().unwrap().remove("quantization_config");
    });
    expect_error(&d, "full-precision model");
}

#[test]
fn rows_that_tq_cannot_hold() {
    let d = copy("tq");
    expect_error_with(
        &d,
        ConvertOptions { outtype: OutType::Tq2_0, ..Default::default() },
        "multiple of the block size 256",
    );
}

#[test]
fn existing_output_is_untouched_on_failure() {
    let d = copy("keep");
    let out = d.join("out.gguf");
    std::fs::write(&out, b"previous").unwrap();
    std::fs::write(d.join("tokenizer.json"), "[]").unwrap();
    assert!(convert_dir(&d, &out, ConvertOptions::default()).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
}

/// 1bitLLM-style checkpoints: a damaged or missing tokenizer.model, and weights that are not ternary.
#[test]
fn one_bit_llm_problems() {
    let d = copy_of("tiny-bitnet-1bitllm", "1bit-spm");
    std::fs::write(d.join("tokenizer.model"), b"\xff\xff\xff garbage").unwrap();
    expect_error(&d, "not a SentencePiece model");

    let d = copy_of("tiny-bitnet-1bitllm", "1bit-notok");
    std::fs::remove_file(d.join("tokenizer.model")).unwrap();
    expect_error(&d, "tokenizer.json");

    let d = copy_of("tiny-bitnet-1bitllm", "1bit-bits");
    edit_config(&d, |j| j["weight_bits"] = 2.into());
    expect_error(&d, "weight_bits");

    let d = copy_of("tiny-bitnet-1bitllm", "1bit-vocab");
    edit_config(&d, |j| j["vocab_size"] = 10.into());
    expect_error(&d, "more than vocab_size 10");

    let d = copy_of("tiny-bitnet-1bitllm", "1bit-subnorm");
    let st = std::fs::read(d.join("model.safetensors")).unwrap();
    // A same-length rename inside the header keeps the file valid: the tensor is missing.
    std::fs::write(d.join("model.safetensors"), replace_bytes(&st, b"inner_attn_ln", b"attn_sub_norm")).unwrap();
    expect_error(&d, "inner_attn_ln.weight: missing from the checkpoint");
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = hay.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}
