//! Corrupt or unsupported checkpoints give a clear error and never leave an output file.

use std::path::{Path, PathBuf};

use bitnet_convert::{ConvertOptions, OutType, convert_dir};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny-bitnet-b1.58")
}

/// A copy of the tiny checkpoint in a fresh directory, to damage.
fn copy(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-convert-corrupt-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
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
