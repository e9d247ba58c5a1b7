//! Hostile input: the checked-in malformed corpus gives the expected typed errors, and no
//! truncation or byte corruption of a valid file panics.

use std::path::PathBuf;

use bitnet_format::{Gguf, GgufBuilder, GgufHeader, TensorType};

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

#[test]
fn header_reads_tensor_types_the_crate_does_not_know() {
    let mut file = sample_file();
    let known = Gguf::parse(file.as_slice()).unwrap();
    let header = GgufHeader::parse(&file).unwrap();
    assert_eq!(header.tensors.len(), known.tensors().len());
    assert_eq!(header.data_offset, known.data_offset());
    assert_eq!(header.metadata, *known.metadata());
    // Each extent is the tensor's size plus the padding to the next one.
    for (t, extent) in known.tensors().iter().zip(header.extents().unwrap()) {
        assert!(extent >= t.size && extent < t.size + known.alignment(), "{}: {extent} vs {}", t.name, t.size);
    }
    // Retype the last tensor to an id no ggml fork has: the full reader refuses it by name,
    // the header still lists it with its raw id and extent.
    let t = &header.tensors[2];
    let type_at = (t.info_offset + 8 + t.name.len() as u64 + 4 + 8 * t.shape.len() as u64) as usize;
    file[type_at..type_at + 4].copy_from_slice(&200u32.to_le_bytes());
    let err = Gguf::parse(file.as_slice()).unwrap_err();
    assert!(err.to_string().contains("blk.0.ffn_down.weight"), "{err}");
    let header = GgufHeader::parse(&file).unwrap();
    assert_eq!(header.tensors[2].type_id, 200);
    assert_eq!(header.extents().unwrap()[2], file.len() as u64 - header.data_offset - header.tensors[2].offset);
    // A tensor starting past the end of the file has no extent.
    let cut = &file[..(header.data_offset + header.tensors[2].offset) as usize - 1];
    let err = GgufHeader::parse(cut).unwrap().extents().unwrap_err();
    assert!(err.to_string().contains("blk.0.ffn_down.weight"), "{err}");
    // Truncated headers are errors, never panics.
    for len in 0..header.data_offset as usize {
        let _ = GgufHeader::parse(&file[..len]);
    }
}
