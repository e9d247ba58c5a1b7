//! Our writer and reader agree on everything the reader reads, for every tensor type.

use bitnet_format::{Array, Dialect, Gguf, GgufBuilder, GgufError, ReadOptions, TensorType, Value, ValueType};

fn shape_for(ty: TensorType) -> Vec<u64> {
    match ty {
        TensorType::TL2 => vec![256 + 96, 3],
        _ => vec![ty.block_size().max(1) * 3, 2],
    }
}

fn write_all_types(dialect: Dialect, version: u32, alignment: Option<u32>) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut b = GgufBuilder::new();
    b.version(version).unwrap();
    let m = b.metadata_mut();
    m.insert("general.architecture", if dialect == Dialect::BitnetFork { "bitnet-b1.58" } else { "llama" });
    if let Some(a) = alignment {
        m.insert("general.alignment", a);
    }
    m.insert("x.strings", Array::strings(["α", "β"]));
    m.insert("x.nested", Array::new(ValueType::Array, vec![Value::Array(Array::strings(["z"]))]).unwrap());
    let mut expected = Vec::new();
    for (i, ty) in TensorType::ALL.iter().filter(|t| t.dialects().contains(&dialect)).enumerate() {
        let name = format!("t{i}.{}", ty.name());
        let shape = shape_for(*ty);
        b.add_tensor(&name, *ty, &shape).unwrap();
        let n = ty.byte_size(&shape).unwrap() as usize;
        expected.push((name, (0..n).map(|j| (j ^ i) as u8).collect::<Vec<u8>>()));
    }
    let mut w = b.start(Vec::new()).unwrap();
    for (name, data) in &expected {
        // Stream in two chunks to exercise the chunked path.
        let (a, b) = data.split_at(data.len() / 2);
        w.write_tensor_chunk(name, a).unwrap();
        w.write_tensor_chunk(name, b).unwrap();
    }
    (w.finish().unwrap(), expected)
}

#[test]
fn every_type_round_trips_in_both_dialects() {
    for dialect in [Dialect::Upstream, Dialect::BitnetFork] {
        for version in [2, 3] {
            for alignment in [None, Some(64), Some(1)] {
                let (bytes, expected) = write_all_types(dialect, version, alignment);
                let file = Gguf::parse(bytes.as_slice()).unwrap();
                assert_eq!(file.dialect(), dialect);
                assert_eq!(file.version(), version);
                assert_eq!(file.alignment(), u64::from(alignment.unwrap_or(32)));
                assert_eq!(file.data_offset() % file.alignment(), 0);
                for (name, data) in &expected {
                    assert_eq!(file.tensor(name).unwrap().data, data.as_slice(), "{name}");
                }
                // Re-writing what we read gives the same bytes.
                let mut b = GgufBuilder::new();
                b.version(version).unwrap();
                b.with_metadata(file.metadata().clone());
                for t in file.tensors() {
                    b.add_tensor(&t.name, t.ty, &t.shape).unwrap();
                }
                let mut w = b.start(Vec::new()).unwrap();
                for t in file.tensors() {
                    w.write_tensor(&t.name, file.tensor_data(t)).unwrap();
                }
                assert_eq!(w.finish().unwrap(), bytes);
            }
        }
    }
}

#[test]
fn i2_s_tensor_byte_count_matches_bitnet_cpp() {
    let mut b = GgufBuilder::new();
    b.add_tensor("w", TensorType::I2_S, &[2560, 2560]).unwrap();
    let mut w = b.start(Vec::new()).unwrap();
    assert!(w.write_tensor("w", &vec![0; 2560 * 2560 / 4]).is_err(), "the 32-byte scale tail is required");
    let mut b = GgufBuilder::new();
    b.add_tensor("w", TensorType::I2_S, &[2560, 2560]).unwrap();
    let mut w = b.start(Vec::new()).unwrap();
    w.write_tensor("w", &vec![0; 2560 * 2560 / 4 + 32]).unwrap();
    let file = Gguf::parse(w.finish().unwrap()).unwrap();
    assert_eq!(file.tensor_info("w").unwrap().size, 1_638_432);
}

#[test]
fn forced_dialect_changes_meaning_of_39() {
    let mut b = GgufBuilder::new();
    b.add_tensor("w", TensorType::MXFP4, &[256, 2]).unwrap();
    let mut w = b.start(Vec::new()).unwrap();
    w.write_tensor("w", &[0; 8 * 2 * 17]).unwrap();
    let bytes = w.finish().unwrap();
    assert_eq!(Gguf::parse(bytes.as_slice()).unwrap().tensors()[0].ty, TensorType::MXFP4);
    // Read as bitnet.cpp's fork, 39 is TL2 with a different byte count: the data no longer fits.
    let forced = Gguf::parse_with(bytes.as_slice(), ReadOptions { dialect: Some(Dialect::BitnetFork) });
    match forced {
        Ok(f) => assert_eq!(f.tensors()[0].ty, TensorType::TL2),
        Err(e) => assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}"),
    }
}

#[test]
fn writer_rejects_misuse() {
    let mut b = GgufBuilder::new();
    assert!(b.add_tensor("q", TensorType::Q8_0, &[33]).is_err());
    assert!(b.add_tensor("d", TensorType::F32, &[1, 1, 1, 1, 1]).is_err());
    b.add_tensor("a", TensorType::F32, &[2]).unwrap();
    assert!(b.add_tensor("a", TensorType::F32, &[2]).is_err());
    b.add_tensor("b", TensorType::F32, &[2]).unwrap();
    let mut w = b.clone().start(Vec::new()).unwrap();
    assert!(w.write_tensor("b", &[0; 8]).is_err(), "out of order");
    assert!(w.write_tensor("a", &[0; 9]).is_err(), "too long");
    w.write_tensor("a", &[0; 8]).unwrap();
    let err = w.finish().unwrap_err().to_string();
    assert!(err.contains("\"b\""), "{err}");
    let mut bad = GgufBuilder::new();
    bad.metadata_mut().insert("general.alignment", 3u32);
    assert!(bad.start(Vec::new()).is_err());
    assert!(GgufBuilder::new().version(1).is_err());
}

#[test]
fn metadata_remove_keeps_the_order_of_the_rest() {
    let mut m = bitnet_format::Metadata::new();
    m.insert("a", 1u32);
    m.insert("b", 2u32);
    m.insert("c", 3u32);
    assert_eq!(m.remove("b").and_then(|v| v.as_u64()), Some(2));
    assert!(m.remove("b").is_none());
    assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(m.get_u64("c"), Some(3));
    m.insert("b", 4u32);
    assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "c", "b"]);
    assert_eq!(m.get_u64("c"), Some(3));
}

#[test]
fn many_tensors_are_declared_in_linear_time() {
    // The duplicate-name check scanned every earlier tensor: 200k declarations took minutes.
    let mut b = bitnet_format::GgufBuilder::new();
    for i in 0..200_000 {
        b.add_tensor(format!("t.{i}"), bitnet_format::TensorType::F32, &[1]).unwrap();
    }
    let err = b.add_tensor("t.7", bitnet_format::TensorType::F32, &[1]).unwrap_err();
    assert!(err.to_string().contains("t.7"), "{err}");
}
