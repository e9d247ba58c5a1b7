//! Helpers shared by the quant crate's reference tests (the Rust side of tools/reference/common.py).
#![allow(dead_code)]

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `(u − 0.5)·amplitude` with `u = ((i·2654435761 + 97·seed) mod 2³²) / 2³²`, in f64, rounded to
/// f32: the inputs of tools/reference/*.py.
pub fn synthetic(n: usize, seed: u64, amplitude: f64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let u = ((i.wrapping_mul(2654435761) + seed * 97) % (1 << 32)) as f64 / 4294967296.0;
            ((u - 0.5) * amplitude) as f32
        })
        .collect()
}

/// Hex SHA-256 of bytes.
pub fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// fixtures/reference/NAME, parsed.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/../../fixtures/reference/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// A fixture case's `rows`, `cols` and `seed`.
pub fn dims(c: &Value) -> (usize, usize, u64) {
    (c["rows"].as_u64().unwrap() as usize, c["cols"].as_u64().unwrap() as usize, c["seed"].as_u64().unwrap())
}
