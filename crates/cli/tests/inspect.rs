//! `bitnet inspect` end to end, through the built binary.

mod common;

fn bitnet(args: &[&str]) -> (bool, String, String) {
    let out = common::bitnet_command().args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn fixture(name: &str) -> String {
    format!("{}/../../fixtures/gguf/malformed/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn prints_header_metadata_tensors_and_totals() {
    let (ok, out, _) = bitnet(&["inspect", &fixture("valid.gguf")]);
    assert!(ok);
    for needle in ["GGUF version 3", "bitnet.cpp fork", "general.architecture", "\"bitnet-b1.58\"", "I2_S", "[128, 2]"]
    {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let totals = out.split("totals by type:").nth(1).unwrap();
    assert!(totals.contains("F32") && totals.contains("I2_S") && totals.contains("all"));
}

#[test]
fn json_output_is_machine_readable() {
    let (ok, out, _) = bitnet(&["inspect", "--json", &fixture("valid.gguf")]);
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 3);
    assert_eq!(doc["dialect"], "bitnet");
    assert_eq!(doc["tensors"][1]["type"], "i2_s");
    assert_eq!(doc["tensors"][1]["bytes"], 96);
    assert_eq!(doc["tensors"][1]["file_offset"], 192 + 32);
    assert_eq!(doc["metadata"][0]["value"], "bitnet-b1.58");
}

#[test]
fn long_arrays_are_abbreviated_unless_full() {
    let dir = common::scratch("inspect");
    let path = dir.path().join("vocab.gguf");
    let mut b = bitnet_format::GgufBuilder::new();
    b.metadata_mut()
        .insert("tokenizer.ggml.tokens", bitnet_format::Array::strings((0..100).map(|i| format!("tok{i}"))));
    std::fs::write(&path, b.start(Vec::new()).unwrap().finish().unwrap()).unwrap();
    let p = path.to_str().unwrap();
    let (_, short, _) = bitnet(&["inspect", p]);
    assert!(short.contains("92 more") && !short.contains("tok99"), "{short}");
    let (_, full, _) = bitnet(&["inspect", "--full", p]);
    assert!(full.contains("tok99"));
    let (_, json, _) = bitnet(&["inspect", "--json", p]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["metadata"][0]["len"], 100);
    assert_eq!(doc["metadata"][0]["truncated"], true);
    assert_eq!(doc["metadata"][0]["value"].as_array().unwrap().len(), 8);
}

#[test]
fn bad_files_give_one_clear_line_and_nonzero_exit() {
    for (file, needle) in [
        ("bad_magic.gguf", "not a GGUF file"),
        ("truncated_tensor_info.gguf", "file truncated"),
        ("offset_past_end.gguf", "past the end of the file"),
        ("bad_tensor_type.gguf", "unknown type id 99"),
    ] {
        let (ok, out, err) = bitnet(&["inspect", &fixture(file)]);
        assert!(!ok, "{file}");
        assert!(out.is_empty());
        assert!(err.starts_with("error: ") && err.contains(needle), "{file}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"));
    }
    let (ok, _, err) = bitnet(&["inspect", "/nonexistent/model.gguf"]);
    assert!(!ok && err.contains("cannot read /nonexistent/model.gguf"), "{err}");
}
