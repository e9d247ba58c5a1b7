//! Dense quantizers against llama.cpp's (gguf-py's port of `quantize_row_q8_0_ref`), recorded in
//! fixtures/reference/dense.json by tools/reference/dense_fixture.py.

mod common;

use bitnet_format::TensorType;
use bitnet_quant::dense::quantize_row;
use common::{fixture, synthetic};

#[test]
fn q8_0_bytes_match_llama_cpp() {
    let case = fixture("dense.json")["cases"].as_array().unwrap().iter().find(|c| c["type"] == "Q8_0").unwrap().clone();
    // The fixture script quantizes synthetic(2·64, 21, 3.0) as two rows of 64.
    let x = synthetic(128, 21, 3.0);
    let ours: String =
        x.chunks(64).flat_map(|r| quantize_row(TensorType::Q8_0, r).unwrap()).map(|b| format!("{b:02x}")).collect();
    assert_eq!(ours, case["bytes"].as_str().unwrap());
}
