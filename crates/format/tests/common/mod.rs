//! Helpers shared by the format crate's integration tests.
#![allow(dead_code)]

use bitnet_format::{Gguf, Value, ValueType};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

/// The canonical JSON description tools/gguf-interop/interop.py prints for a file.
pub fn canonical<D: AsRef<[u8]>>(file: &Gguf<D>) -> Json {
    let metadata: Vec<Json> = file.metadata().iter().map(|(k, v)| json!([k, type_names(v), to_json(v)])).collect();
    let tensors: Vec<Json> = file
        .tensors()
        .iter()
        .map(|t| {
            let data = file.tensor_data(t);
            json!({
                "name": t.name,
                "type": t.ty.id(),
                "shape": t.shape,
                "offset": t.offset,
                "bytes": t.size,
                "sha256": hex(&Sha256::digest(data)),
            })
        })
        .collect();
    json!({"metadata": metadata, "tensors": tensors})
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn type_names(v: &Value) -> Vec<&'static str> {
    let mut names = vec![v.value_type().name()];
    let mut cur = v;
    while let Value::Array(a) = cur {
        names.push(a.element_type().name());
        match a.values().first() {
            Some(first) if a.element_type() == ValueType::Array => cur = first,
            _ => break,
        }
    }
    names
}

pub fn to_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::F32(x) => json!(f64::from(*x)),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Array(a) => Json::Array(a.values().iter().map(to_json).collect()),
    }
}

/// Runs the interop script; `None` (with the reason printed) when Python or gguf-py is missing
/// and BITNET_REQUIRE_PYTHON is not set. CI sets it, so there a missing package fails the test.
pub fn python(args: &[&str]) -> Option<Vec<u8>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/gguf-interop/interop.py");
    let required = std::env::var_os("BITNET_REQUIRE_PYTHON").is_some();
    let out = match std::process::Command::new("python3").arg(script).args(args).output() {
        Ok(out) => out,
        Err(e) if !required => {
            eprintln!("SKIPPED: python3 not runnable ({e})");
            return None;
        }
        Err(e) => panic!("python3 not runnable: {e}"),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if !required && err.contains("ModuleNotFoundError") {
            eprintln!("SKIPPED: the gguf Python package is not installed (pip install gguf)");
            return None;
        }
        panic!("interop.py {args:?} failed: {err}");
    }
    Some(out.stdout)
}
