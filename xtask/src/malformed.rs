//! `cargo xtask malformed-corpus`: writes the hostile-GGUF corpus under fixtures/gguf/malformed.
//!
//! Each file is built byte by byte (our writer refuses to produce most of these) and listed in
//! `EXPECTED` with the error variant the reader must return. The format crate's tests read both,
//! and the fuzz target starts from these files.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// A little-endian byte emitter for hand-made GGUF images.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A key with a UINT32 value.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }
    /// A key with a STRING value.
    fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key.as_bytes()).u32(8).str(v.as_bytes())
    }
    fn tensor(&mut self, name: &str, shape: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(shape.len() as u32);
        for &d in shape {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        let pad = self.0.len().next_multiple_of(32) - self.0.len();
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self.0.extend((0..n).map(|i| i as u8));
        self
    }
    /// Trailing zeros, so the header's counts pass their size check and the case reaches the
    /// field it is about.
    fn fill(&mut self) -> &mut Self {
        self.bytes(&[0; 64])
    }
    fn done(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// A valid file: two metadata keys, an F32 [4, 2] and an I2_S [128, 2] tensor.
fn valid() -> Raw {
    let mut r = Raw::header(3, 2, 2);
    r.kv_str("general.architecture", "bitnet-b1.58").kv_u32("general.alignment", 32);
    r.tensor("a", &[4, 2], 0, 0).tensor("b", &[128, 2], 36, 32);
    r.data(32 + 64 + 32);
    r
}

/// Every corpus case: file name, bytes, the error variant expected.
fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let v = valid().done();
    let infos_end = v.len() - 128; // header + metadata + infos, then padding and data
    // The second key (general.alignment) starts after the header and the architecture entry.
    let key2 = 24 + 52;
    let mut c = vec![
        ("empty", vec![], "Truncated"),
        ("bad_magic", [b"GGML".as_slice(), &v[4..]].concat(), "BadMagic"),
        ("version_1", Raw::header(1, 0, 0).done(), "UnsupportedVersion"),
        ("version_99", Raw::header(99, 0, 0).done(), "UnsupportedVersion"),
        ("big_endian", Raw::header(3u32.swap_bytes(), 0, 0).done(), "BigEndian"),
        ("truncated_header", v[..12].to_vec(), "Truncated"),
        ("truncated_metadata_key", v[..key2 + 12].to_vec(), "Truncated"),
        ("truncated_metadata_value", v[..key2 + 8 + 17 + 4 + 2].to_vec(), "Truncated"),
        ("truncated_tensor_info", v[..infos_end - 30].to_vec(), "Truncated"),
        ("truncated_tensor_data", v[..v.len() - 10].to_vec(), "TensorOutOfBounds"),
        ("huge_kv_count", Raw::header(3, 0, u64::MAX).done(), "CountTooLarge"),
        ("huge_tensor_count", Raw::header(3, u64::MAX / 2, 0).done(), "CountTooLarge"),
        ("huge_key_length", Raw::header(3, 0, 1).u64(u64::MAX).fill().done(), "StringTooLong"),
        ("huge_string_value", Raw::header(3, 0, 1).str(b"k").u32(8).u64(1 << 40).fill().done(), "Truncated"),
        ("huge_array_length", Raw::header(3, 0, 1).str(b"k").u32(9).u32(5).u64(1 << 60).fill().done(), "CountTooLarge"),
        ("bad_value_type", Raw::header(3, 0, 1).str(b"k").u32(99).u32(0).fill().done(), "UnknownValueType"),
        (
            "bad_array_element_type",
            Raw::header(3, 0, 1).str(b"k").u32(9).u32(13).u64(1).fill().done(),
            "UnknownValueType",
        ),
        ("bad_bool", Raw::header(3, 0, 1).str(b"k").u32(7).bytes(&[2]).fill().done(), "InvalidBool"),
        ("invalid_utf8_key", Raw::header(3, 0, 1).str(&[0xff, 0xfe]).u32(0).bytes(&[0]).fill().done(), "InvalidUtf8"),
        ("duplicate_key", Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2).done(), "DuplicateKey"),
        ("alignment_not_power_of_two", Raw::header(3, 0, 1).kv_u32("general.alignment", 48).done(), "BadAlignment"),
        ("alignment_zero", Raw::header(3, 0, 1).kv_u32("general.alignment", 0).done(), "BadAlignment"),
        ("alignment_wrong_type", Raw::header(3, 0, 1).kv_str("general.alignment", "32").done(), "BadAlignment"),
        ("too_many_dims", Raw::header(3, 1, 0).tensor("t", &[1, 1, 1, 1, 1], 0, 0).data(4).done(), "TooManyDims"),
        ("bad_tensor_type", Raw::header(3, 1, 0).tensor("t", &[4], 99, 0).data(16).done(), "UnknownTensorType"),
        ("retired_type_id", Raw::header(3, 1, 0).tensor("t", &[32], 4, 0).data(32).done(), "UnknownTensorType"),
        ("shape_overflow", Raw::header(3, 1, 0).tensor("t", &[1 << 40, 1 << 40], 0, 0).data(4).done(), "BadShape"),
        ("not_block_multiple", Raw::header(3, 1, 0).tensor("t", &[33], 8, 0).data(34).done(), "BadShape"),
        (
            "tl2_too_narrow",
            Raw::header(3, 1, 0).tensor("t", &[128, 2], 39, 0).with_tl2_file_type().data(64).done(),
            "BadShape",
        ),
        ("misaligned_tensor", Raw::header(3, 1, 0).tensor("t", &[4], 0, 8).data(32).done(), "MisalignedTensor"),
        ("offset_past_end", Raw::header(3, 1, 0).tensor("t", &[4], 0, 1 << 20).data(16).done(), "TensorOutOfBounds"),
        (
            "offset_overflow",
            Raw::header(3, 1, 0).tensor("t", &[4], 0, u64::MAX - 31).data(16).done(),
            "TensorOutOfBounds",
        ),
        (
            "overlapping_tensors",
            Raw::header(3, 2, 0).tensor("a", &[16], 0, 0).tensor("b", &[16], 0, 32).data(96).done(),
            "OverlappingTensors",
        ),
        (
            "duplicate_tensor",
            Raw::header(3, 2, 0).tensor("a", &[4], 0, 0).tensor("a", &[4], 0, 32).data(48).done(),
            "DuplicateTensor",
        ),
        ("huge_tensor_name", Raw::header(3, 1, 0).u64(1 << 20).fill().done(), "StringTooLong"),
    ];
    // Arrays nested one level deeper than the reader accepts.
    let mut deep = Raw::header(3, 0, 1);
    deep.str(b"deep").u32(9);
    for _ in 0..9 {
        deep.u32(9).u64(1);
    }
    deep.u32(0).u64(1).bytes(&[0]);
    c.push(("deep_nesting", deep.done(), "NestingTooDeep"));
    c
}

impl Raw {
    /// TL2 is detected as bitnet.cpp only with a hint; without one, id 39 is MXFP4 (block 32),
    /// and [128, 2] would be valid, so give the file bitnet.cpp's "mostly TL2" file type.
    fn with_tl2_file_type(&mut self) -> &mut Self {
        // Rewrite the header's kv count to 1 and append the key after the tensor info.
        self.0[16..24].copy_from_slice(&1u64.to_le_bytes());
        let infos = self.0.split_off(24);
        self.str(b"general.file_type").u32(4).u32(39).bytes(&infos)
    }
}

/// Writes the corpus and its EXPECTED list into `dir`.
pub fn write_corpus(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut expected = String::from(
        "# file  expected error variant (written by `cargo xtask malformed-corpus`; checked by crates/format/tests/hostile.rs)\n",
    );
    for (name, bytes, variant) in cases() {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        writeln!(expected, "{name}.gguf {variant}")?;
    }
    std::fs::write(dir.join("valid.gguf"), valid().done())?;
    writeln!(expected, "valid.gguf OK")?;
    std::fs::write(dir.join("EXPECTED"), expected)?;
    println!("wrote {} files to {}", cases().len() + 1, dir.display());
    Ok(())
}
