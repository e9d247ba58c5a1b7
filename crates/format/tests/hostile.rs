//! Hostile input: the checked-in malformed corpus gives the expected typed errors, and no
//! truncation or byte corruption of a valid file panics.

use std::path::PathBuf;

use bitnet_format::{Gguf, GgufBuilder, TensorType};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/malformed")
}

#[test]
fn corpus_gives_expected_errors() {
    let dir = corpus_dir();
    let expected = std::fs::read_to_string(dir.join("EXPECTED")).expect("fixtures/gguf/malformed/EXPECTED");
    let mut listed = Vec::new();
    for line in expected.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (file, variant) = line.split_once(' ').unwrap();
        listed.push(file.to_owned());
        let bytes = std::fs::read(dir.join(file)).unwrap();
        match (Gguf::parse(bytes.as_slice()), variant) {
            (Ok(_), "OK") => {}
            (Ok(_), _) => panic!("{file}: parsed, expected {variant}"),
            (Err(e), _) => {
                let debug = format!("{e:?}");
                assert!(debug.starts_with(variant), "{file}: expected {variant}, got {debug}");
                // Every message is one readable line.
                assert!(!e.to_string().contains('\n'), "{file}: {e}");
            }
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    on_disk.sort();
    listed.sort();
    assert_eq!(on_disk, listed, "every corpus file is listed in EXPECTED");
}

fn sample_file() -> Vec<u8> {
    let mut b = GgufBuilder::new();
    let m = b.metadata_mut();
    m.insert("general.architecture", "bitnet-b1.58");
    m.insert("tokenizer.ggml.tokens", bitnet_format::Array::strings(["a", "b", "c"]));
    m.insert("bitnet-b1.58.rope.freq_base", 500000.0f32);
    b.add_tensor("token_embd.weight", TensorType::F16, &[8, 3]).unwrap();
    b.add_tensor("blk.0.attn_q.weight", TensorType::I2_S, &[128, 4]).unwrap();
    b.add_tensor("blk.0.ffn_down.weight", TensorType::TQ2_0, &[256, 1]).unwrap();
    let mut w = b.start(Vec::new()).unwrap();
    w.write_tensor("token_embd.weight", &[1; 48]).unwrap();
    w.write_tensor("blk.0.attn_q.weight", &[0x55; 160]).unwrap();
    w.write_tensor("blk.0.ffn_down.weight", &[2; 66]).unwrap();
    w.finish().unwrap()
}

#[test]
fn every_truncation_is_an_error() {
    let file = sample_file();
    let parsed = Gguf::parse(file.as_slice()).unwrap();
    // The padding after the last tensor is not needed; every byte before the end of its data is.
    let last = parsed.tensors().last().unwrap();
    let last_end = (parsed.data_offset() + last.offset + last.size) as usize;
    for len in 0..file.len() {
        let r = Gguf::parse(&file[..len]);
        assert_eq!(r.is_ok(), len >= last_end, "truncated at {len} of {}", file.len());
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let file = sample_file();
    // xorshift: deterministic, no dependency.
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..20_000 {
        let mut f = file.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() % f.len() as u64) as usize;
            f[i] = next() as u8;
        }
        let _ = Gguf::parse(f.as_slice());
    }
}
