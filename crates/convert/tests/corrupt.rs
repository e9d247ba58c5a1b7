//! Corrupt or unsupported checkpoints give a clear error and never leave an output file.

use std::path::{Path, PathBuf};

use bitnet_convert::{ConvertOptions, OutType, convert_dir};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

/// A copy of the tiny checkpoint in a fresh directory, to damage.
fn copy(tag: &str) -> Scratch {
    copy_of("tiny-bitnet-b1.58", tag)
}

/// A temporary folder, removed when dropped.
struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// A copy of fixture checkpoint `name` (its files but reference.json).
fn copy_of(name: &str, tag: &str) -> Scratch {
    let dir = tempfile::Builder::new().prefix(&format!("bitnet-convert-corrupt-{tag}-")).tempdir().unwrap();
    for f in std::fs::read_dir(fixture(name)).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap() != "reference.json" {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    Scratch(dir)
}

fn expect_error(dir: &Path, needle: &str) {
    expect_error_with(dir, ConvertOptions::default(), needle);
}

fn expect_error_with(dir: &Path, opts: ConvertOptions, needle: &str) {
    let out = dir.join("out.gguf");
    let err = convert_dir(dir, &out, opts).unwrap_err().to_string();
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!out.exists(), "no output file after a failed conversion");
    no_temp_files(dir);
}

fn no_temp_files(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
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
    expect_error(&d, "num_hidden_layers = 3 but the checkpoint has tensors for 2 layers");
}

#[test]
fn config_sizes_are_checked_before_anything_is_planned() {
    // 10^4 layers took 28 s planning and 10^12 aborted on allocation: now checked against the
    // checkpoint first. A vocab of 2^32+384 aborted padding the vocabulary; a context of 2^32+128
    // was stored as 128.
    let cases: [(&str, serde_json::Value, &str); 7] = [
        ("num_hidden_layers", 10_000.into(), "num_hidden_layers = 10000 but the checkpoint has tensors for 2 layers"),
        ("num_hidden_layers", 1_000_000_000_000u64.into(), "out of range"),
        ("vocab_size", ((1u64 << 32) + 384).into(), "out of range"),
        ("vocab_size", 100_000.into(), "vocab_size = 100000 but model.embed_tokens.weight has"),
        ("max_position_embeddings", ((1u64 << 32) + 128).into(), "out of range"),
        ("max_position_embeddings", (-5).into(), "not a non-negative integer"),
        ("rms_norm_eps", (-1e-6).into(), "must be a finite number above 0"),
    ];
    for (i, (key, value, want)) in cases.into_iter().enumerate() {
        let d = copy(&format!("size-{i}"));
        edit_config(&d, |j| j[key] = value);
        let start = std::time::Instant::now();
        expect_error(&d, want);
        assert!(start.elapsed().as_secs() < 10, "{key}: took {:?}", start.elapsed());
    }
}

#[test]
fn outputs_that_are_not_regular_files_are_refused() {
    let d = copy("outputs");
    let opts = ConvertOptions::default();
    // A directory, a dangling symbolic link and a device are refused before any work, untouched.
    std::fs::create_dir(d.join("dir.gguf")).unwrap();
    let err = convert_dir(&d, &d.join("dir.gguf"), opts).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
    assert!(d.join("dir.gguf").is_dir());
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling.gguf")).unwrap();
        let err = convert_dir(&d, &d.join("dangling.gguf"), opts).unwrap_err().to_string();
        assert!(err.contains("symbolic link to a file that does not exist"), "{err}");
        if Path::new("/dev/null").exists() {
            let err = convert_dir(&d, Path::new("/dev/null"), opts).unwrap_err().to_string();
            assert!(err.contains("is a device"), "{err}");
            assert!(!std::fs::metadata("/dev/null").unwrap().is_file(), "/dev/null is still a device");
        }
        // A link to a regular file: the file is replaced, the link kept.
        std::fs::write(d.join("real.gguf"), b"old").unwrap();
        std::os::unix::fs::symlink(d.join("real.gguf"), d.join("link.gguf")).unwrap();
        let s = convert_dir(&d, &d.join("link.gguf"), opts).unwrap();
        assert_eq!(s.path, std::fs::canonicalize(d.join("real.gguf")).unwrap());
        assert!(std::fs::symlink_metadata(d.join("link.gguf")).unwrap().file_type().is_symlink());
        assert!(std::fs::metadata(d.join("real.gguf")).unwrap().len() > 3);
    }
    no_temp_files(&d);
}

#[test]
fn a_failed_rename_removes_the_temporary_file() {
    // The output turns into a directory while converting: the rename must fail, and the
    // full-size temporary file must not stay behind (the rename's `?` used to skip the cleanup).
    let d = copy("rename");
    let out = d.join("out.gguf");
    let mut made = false;
    let err = bitnet_convert::convert_dir_with_progress(&d, &out, ConvertOptions::default(), &mut |_| {
        if !made {
            std::fs::create_dir(&out).unwrap();
            made = true;
        }
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("is a directory"), "{err}");
    no_temp_files(&d);
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

/// Rows TQ2_0 cannot hold (64 and 192 wide) are not an error: those tensors fall back to I2_S,
/// and the summary says which and why.
#[test]
fn rows_that_tq_cannot_hold_fall_back() {
    let d = copy("tq");
    let out = d.join("out.gguf");
    let s = convert_dir(&d, &out, ConvertOptions { outtype: OutType::Tq2_0, ..Default::default() }).unwrap();
    let note = s.notes.iter().find(|n| n.contains("TQ2_0 cannot hold")).expect("a fallback note");
    assert!(note.contains("written as I2_S (its rows of 64 are not a multiple of 256)"), "{note}");
    let file = bitnet_format::GgufFile::open(&out).unwrap();
    assert!(file.tensors().iter().filter(|t| t.ty.is_ternary()).all(|t| t.ty == bitnet_format::TensorType::I2_S));
    assert_eq!(file.metadata().get_str("bitnet_rs.i2_s.layout"), Some("x86"));
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
    expect_error(&d, "vocab_size = 10 but model.embed_tokens.weight has 602 rows");

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
