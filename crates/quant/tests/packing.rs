//! Every packing: bit-exact round trips on random shapes, bytes identical to bitnet.cpp's own
//! packers (fixtures/reference/packing.json), insta snapshots of small packed matrices, and the
//! same GEMV result from every packing of one ternary matrix.

use bitnet_quant::i2s::{self, I2sLayout};
use bitnet_quant::tl::{self, TlTiling};
use bitnet_quant::tq::{self, TqKind};
use bitnet_quant::{
    PackedTernary, QuantError, QuantizedActivations, ScalarKernel, TernaryFormat, TernaryKernel, TernaryMatrix,
};
use common::{dims, fixture, sha, synthetic};
use proptest::prelude::*;
use serde_json::Value;

mod common;

/// The ternary matrices of tools/reference/packing_fixture.py.
fn formula_matrix(rows: usize, cols: usize, seed: u64) -> TernaryMatrix {
    let values = (0..(rows * cols) as u64)
        .map(|i| (((i.wrapping_mul(2654435761) + seed * 97) % (1 << 32)) >> 16) as i64 % 3 - 1)
        .map(|v| v as i8)
        .collect();
    TernaryMatrix::new(rows, cols, values).unwrap()
}

fn tiling(c: &Value) -> TlTiling {
    let t: Vec<usize> = c["tiling"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    TlTiling { bm: t[0], bk: t[1], bmm: t[2] }
}

#[test]
fn i2_s_bytes_match_bitnet_cpp() {
    for c in fixture("packing.json")["i2_s"].as_array().unwrap() {
        let (rows, cols, seed) = dims(c);
        let m = formula_matrix(rows, cols, seed);
        let bytes = i2s::pack(&m, c["scale"].as_f64().unwrap() as f32, I2sLayout::X86).unwrap();
        assert_eq!(bytes.len() as u64, c["bytes"].as_u64().unwrap());
        assert_eq!(sha(&bytes), c["sha256"], "I2_S {rows}x{cols}");
    }
}

#[test]
fn tl1_and_tl2_bytes_match_bitnet_cpp() {
    let f = fixture("packing.json");
    for c in f["tl1"].as_array().unwrap() {
        let (rows, cols, seed) = dims(c);
        let m = formula_matrix(rows, cols, seed);
        let bytes = tl::pack_tl1(&m, tiling(c)).unwrap();
        assert_eq!(sha(&bytes), c["sha256"], "TL1 {rows}x{cols} {:?}", tiling(c));
        assert_eq!(tl::unpack_tl1(&bytes, rows, cols, tiling(c)).unwrap(), m);
    }
    for c in f["tl2"].as_array().unwrap() {
        let (rows, cols, seed) = dims(c);
        let m = formula_matrix(rows, cols, seed);
        let bytes = tl::pack_tl2(&m, tiling(c)).unwrap();
        assert_eq!(bytes.len() as u64, c["bytes"].as_u64().unwrap());
        assert_eq!(sha(&bytes), c["sha256"], "TL2 {rows}x{cols} {:?}", tiling(c));
        assert_eq!(tl::unpack_tl2(&bytes, rows, cols, tiling(c)).unwrap(), m);
    }
}

#[test]
fn worked_i2_s_bytes_from_formats_md() {
    // +1, −1, 0, +1 at block positions 0/32/64/96 → 0x86; all zeros → 0x55; scale 0.5 → 00 00 00 3f.
    let mut v = vec![0i8; 128];
    (v[0], v[32], v[64], v[96]) = (1, -1, 0, 1);
    let bytes = i2s::pack(&TernaryMatrix::new(1, 128, v).unwrap(), 0.5, I2sLayout::X86).unwrap();
    assert_eq!(bytes[0], 0x86);
    assert!(bytes[1..32].iter().all(|&b| b == 0x55));
    assert_eq!(&bytes[32..36], &[0, 0, 0, 0x3f]);
    assert!(bytes[36..].iter().all(|&b| b == 0));
}

#[test]
fn small_packings_snapshot() {
    let m = formula_matrix(4, 256, 42);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut report = String::new();
    for (name, bytes) in [
        ("i2_s x86", i2s::pack(&m, 0.25, I2sLayout::X86).unwrap()),
        ("i2_s arm", i2s::pack(&m, 0.25, I2sLayout::Arm).unwrap()),
        ("i2_s interleaved", i2s::pack(&m, 0.25, I2sLayout::X86Interleaved4).unwrap()),
        ("tq1_0", tq::pack(TqKind::Tq1_0, &m, 0.25).unwrap()),
        ("tq2_0", tq::pack(TqKind::Tq2_0, &m, 0.25).unwrap()),
    ] {
        report.push_str(&format!("{name} ({} bytes):\n", bytes.len()));
        for chunk in bytes.chunks(64) {
            report.push_str(&format!("  {}\n", hex(chunk)));
        }
    }
    insta::assert_snapshot!(report);
}

/// Every packing of the same matrix and activations gives the same GEMV result.
#[test]
fn all_packings_agree_on_gemv() {
    let (rows, cols) = (64, 512);
    let m = formula_matrix(rows, cols, 9);
    let scale = 0.037f32;
    let x: Vec<f32> = (0..2 * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 97.0).collect();
    let acts = QuantizedActivations::quantize(&x, cols).unwrap();
    let t1 = TlTiling { bm: 32, bk: 128, bmm: 32 };
    let t2 = TlTiling { bm: 32, bk: 96, bmm: 32 };
    let packs = vec![
        (TernaryFormat::I2s(I2sLayout::X86), i2s::pack(&m, scale, I2sLayout::X86).unwrap()),
        (TernaryFormat::I2s(I2sLayout::Arm), i2s::pack(&m, scale, I2sLayout::Arm).unwrap()),
        (TernaryFormat::I2s(I2sLayout::X86Interleaved4), i2s::pack(&m, scale, I2sLayout::X86Interleaved4).unwrap()),
        (TernaryFormat::I2s(I2sLayout::X86Rows4), i2s::pack(&m, scale, I2sLayout::X86Rows4).unwrap()),
        (TernaryFormat::Tq1_0, tq::pack(TqKind::Tq1_0, &m, scale).unwrap()),
        (TernaryFormat::Tq2_0, tq::pack(TqKind::Tq2_0, &m, scale).unwrap()),
        (TernaryFormat::Tl1(t1), tl::pack_tl1(&m, t1).unwrap()),
        (TernaryFormat::Tl2(t2), tl::pack_tl2(&m, t2).unwrap()),
    ];
    // Exact expectation from the ternary matrix itself.
    let mut expected = Vec::new();
    for n in 0..acts.len() {
        for r in 0..rows {
            expected.push(bitnet_quant::reference::dot(m.row(r), acts.row(n)) as f32 / acts.rows[n].scale * scale);
        }
    }
    for (format, bytes) in &packs {
        let tl_scale = matches!(format, TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_)).then_some(scale);
        let w = PackedTernary::new(*format, rows, cols, bytes, tl_scale).unwrap();
        let mut out = vec![0f32; acts.len() * rows];
        ScalarKernel.gemm(&w, &acts, &mut out).unwrap();
        for (i, (o, e)) in out.iter().zip(&expected).enumerate() {
            // TQ's per-block f16 scale rounds `scale`; the others are exact.
            let tol = if matches!(format, TernaryFormat::Tq1_0 | TernaryFormat::Tq2_0) {
                1e-3 * e.abs().max(1.0)
            } else {
                0.0
            };
            assert!((o - e).abs() <= tol, "{format:?} output {i}: {o} vs {e}");
        }
    }
}

#[test]
fn code_offset_identity() {
    let t: Vec<i8> = (0..300).map(|i| (i % 3) as i8 - 1).collect();
    let a: Vec<i8> = (0..300).map(|i| ((i * 37) % 256) as u8 as i8).collect();
    let sum: i32 = a.iter().map(|&v| i32::from(v)).sum();
    assert_eq!(bitnet_quant::reference::dot_with_code_offset(&t, &a, sum), bitnet_quant::reference::dot(&t, &a));
}

#[test]
fn bad_shapes_and_codes_are_clear_errors() {
    let m = formula_matrix(3, 100, 1);
    let e = i2s::pack(&m, 1.0, I2sLayout::X86).unwrap_err();
    assert!(matches!(e, QuantError::NotMultiple { .. }), "{e}");
    assert!(e.to_string().contains("multiple of 128"), "{e}");
    assert!(tq::pack(TqKind::Tq2_0, &m, 1.0).unwrap_err().to_string().contains("multiple of 256"));
    let e = tl::pack_tl1(&formula_matrix(48, 128, 1), TlTiling { bm: 32, bk: 64, bmm: 32 }).unwrap_err();
    assert!(e.to_string().contains("rows"), "{e}");
    let e = tl::pack_tl2(&formula_matrix(32, 128, 1), TlTiling { bm: 32, bk: 96, bmm: 32 }).unwrap_err();
    assert!(e.to_string().contains("256 columns"), "{e}");
    let e = tl::pack_tl2(&formula_matrix(32, 512, 1), TlTiling { bm: 32, bk: 96, bmm: 16 }).unwrap_err();
    assert!(e.to_string().contains("bmm"), "{e}");
    // Code 3 is not a ternary value.
    let mut bytes = i2s::pack(&formula_matrix(1, 128, 1), 1.0, I2sLayout::X86).unwrap();
    bytes[5] |= 0b1100_0000;
    assert!(matches!(i2s::unpack(&bytes, 1, 128, I2sLayout::X86), Err(QuantError::InvalidCode { byte: 5, .. })));
    assert!(matches!(i2s::unpack(&bytes[..10], 1, 128, I2sLayout::X86), Err(QuantError::Length { .. })));
    assert!(TernaryMatrix::new(1, 2, vec![0, 2]).is_err());
    // The four-row order: whole groups of four rows, whole blocks, groups that exist.
    let e = i2s::pack(&formula_matrix(6, 256, 1), 1.0, I2sLayout::X86Rows4).unwrap_err();
    assert!(e.to_string().contains("multiple of 4"), "{e}");
    let e = i2s::pack(&formula_matrix(8, 128, 1), 1.0, I2sLayout::X86Rows4).unwrap_err();
    assert!(e.to_string().contains("multiple of 256"), "{e}");
    let x86 = i2s::pack(&formula_matrix(8, 256, 1), 1.0, I2sLayout::X86).unwrap();
    let e = i2s::x86_to_rows4(&x86, 8, 256, 0..3, &mut [0u8; 3 * 256]).unwrap_err();
    assert!(e.to_string().contains("groups up to 3"), "{e}");
    assert!(i2s::x86_to_rows4(&x86, 8, 256, 0..2, &mut [0u8; 100]).is_err());
    assert!(i2s::x86_to_rows4(&x86[..50], 8, 256, 0..2, &mut [0u8; 512]).is_err());
}

fn arb_matrix(
    row_mult: usize,
    col_mult: usize,
    max_rows: usize,
    max_cols: usize,
) -> impl Strategy<Value = TernaryMatrix> {
    (1..=max_rows / row_mult, 1..=max_cols / col_mult).prop_flat_map(move |(r, c)| {
        let (rows, cols) = (r * row_mult, c * col_mult);
        proptest::collection::vec(-1i8..=1, rows * cols).prop_map(move |v| TernaryMatrix::new(rows, cols, v).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn i2_s_round_trips(m in arb_matrix(1, 128, 5, 640), scale in 1e-4f32..10.0) {
        for layout in [I2sLayout::X86, I2sLayout::Arm] {
            let bytes = i2s::pack(&m, scale, layout).unwrap();
            prop_assert_eq!(bytes.len(), m.rows() * m.cols() / 4 + 32);
            prop_assert_eq!(i2s::unpack(&bytes, m.rows(), m.cols(), layout).unwrap(), (m.clone(), scale));
        }
        // x86 → ARM → x86 repacking is lossless.
        let x86 = i2s::pack(&m, scale, I2sLayout::X86).unwrap();
        let arm = i2s::repack(&x86, m.rows(), m.cols(), I2sLayout::X86, I2sLayout::Arm).unwrap();
        prop_assert_eq!(i2s::repack(&arm, m.rows(), m.cols(), I2sLayout::Arm, I2sLayout::X86).unwrap(), x86);
    }

    /// The four-row order: the block copy (`x86_to_rows4`, what the loader runs) gives the bytes
    /// the per-element packing does, over any split of the groups, and it round-trips.
    #[test]
    fn i2_s_rows_in_fours(m in arb_matrix(4, 256, 12, 1280), scale in 1e-4f32..10.0, split in 0usize..4) {
        let (rows, cols) = (m.rows(), m.cols());
        let packed = i2s::pack(&m, scale, I2sLayout::X86Rows4).unwrap();
        prop_assert_eq!(i2s::unpack(&packed, rows, cols, I2sLayout::X86Rows4).unwrap(), (m.clone(), scale));
        let x86 = i2s::pack(&m, scale, I2sLayout::X86).unwrap();
        prop_assert_eq!(&i2s::repack(&x86, rows, cols, I2sLayout::X86, I2sLayout::X86Rows4).unwrap(), &packed);
        let (groups, at) = (rows / 4, split.min(rows / 4));
        let mut parts = vec![0u8; rows * cols / 4];
        let (a, b) = parts.split_at_mut(at * cols);
        i2s::x86_to_rows4(&x86, rows, cols, 0..at, a).unwrap();
        i2s::x86_to_rows4(&x86, rows, cols, at..groups, b).unwrap();
        prop_assert_eq!(&parts[..], &packed[..rows * cols / 4]);
    }

    #[test]
    fn i2_s_odd_sizes_round_trip_in_the_arm_and_interleaved_layouts(m in arb_matrix(4, 16, 12, 80)) {
        if (m.rows() * m.cols()) % 64 == 0 {
            let bytes = i2s::pack(&m, 1.0, I2sLayout::Arm).unwrap();
            prop_assert_eq!(i2s::unpack(&bytes, m.rows(), m.cols(), I2sLayout::Arm).unwrap().0, m.clone());
        }
        let bytes = i2s::pack(&m, 1.0, I2sLayout::X86Interleaved4).unwrap();
        prop_assert_eq!(i2s::unpack(&bytes, m.rows(), m.cols(), I2sLayout::X86Interleaved4).unwrap().0, m);
    }

    #[test]
    fn tq_round_trips(m in arb_matrix(1, 256, 4, 768), scale in 1e-3f32..4.0) {
        for kind in [TqKind::Tq1_0, TqKind::Tq2_0] {
            let bytes = tq::pack(kind, &m, scale).unwrap();
            prop_assert_eq!(bytes.len(), m.rows() * m.cols() / 256 * kind.block_bytes());
            let (back, scales) = tq::unpack(kind, &bytes, m.rows(), m.cols()).unwrap();
            prop_assert_eq!(&back, &m);
            for (b, s) in scales.iter().enumerate() {
                let (r, blk) = (b / (m.cols() / 256), b % (m.cols() / 256));
                let any = m.row(r)[blk * 256..(blk + 1) * 256].iter().any(|&t| t != 0);
                let want = if any { half::f16::from_f32(scale).to_f32() } else { 0.0 };
                prop_assert_eq!(*s, want);
            }
        }
    }

    #[test]
    fn tl1_round_trips(m in arb_matrix(32, 64, 96, 256), bmm in prop::sample::select(vec![16usize, 32])) {
        let t = TlTiling { bm: 32, bk: 64, bmm };
        let bytes = tl::pack_tl1(&m, t).unwrap();
        prop_assert_eq!(bytes.len(), m.rows() * m.cols() / 4);
        prop_assert_eq!(tl::unpack_tl1(&bytes, m.rows(), m.cols(), t).unwrap(), m);
    }

    #[test]
    fn tl2_round_trips(m in arb_matrix(32, 32, 64, 448)) {
        let t = TlTiling { bm: 32, bk: 96, bmm: 32 };
        match tl::pack_tl2(&m, t) {
            Ok(bytes) => {
                prop_assert_eq!(Some(bytes.len()), tl::tl2_bytes(m.rows(), m.cols()));
                prop_assert_eq!(tl::unpack_tl2(&bytes, m.rows(), m.cols(), t).unwrap(), m);
            }
            // Shapes TL2 cannot hold: fewer than 256 columns, or a remainder that is not a multiple of 32.
            Err(e) => prop_assert!(m.cols() < 256 || (m.cols() % 96) % 32 != 0, "{e}"),
        }
    }
}

#[test]
fn tq_bytes_match_llama_cpp() {
    let f = fixture("tq.json");
    for c in f["cases"].as_array().unwrap() {
        let (rows, cols, seed) = dims(c);
        let x = synthetic(rows * cols, seed, c["amplitude"].as_f64().unwrap());
        let x = if c["input"] == "ternary" {
            let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            x.iter().map(|v| (v / max * 1.4).round_ties_even().clamp(-1.0, 1.0) * 0.75).collect()
        } else {
            x
        };
        let kind = if c["type"] == "TQ1_0" { TqKind::Tq1_0 } else { TqKind::Tq2_0 };
        let bytes: Vec<u8> = x.chunks(cols).flat_map(|row| tq::quantize_row(kind, row).unwrap()).collect();
        assert_eq!(sha(&bytes), c["sha256"], "{kind:?} {} {rows}x{cols}", c["input"]);
    }
}

#[test]
fn layout_is_recorded_in_metadata() {
    let mut m = bitnet_format::Metadata::new();
    assert_eq!(I2sLayout::of_file(&m).unwrap(), I2sLayout::X86, "bitnet.cpp files carry no key");
    for l in [I2sLayout::X86, I2sLayout::Arm, I2sLayout::X86Interleaved4, I2sLayout::X86Rows4] {
        m.insert(i2s::LAYOUT_KEY, l.as_str());
        assert_eq!(I2sLayout::of_file(&m).unwrap(), l);
    }
    m.insert(i2s::LAYOUT_KEY, "riscv");
    assert!(I2sLayout::of_file(&m).unwrap_err().to_string().contains("riscv"));
    m.insert(i2s::LAYOUT_KEY, 3u32);
    assert!(I2sLayout::of_file(&m).is_err());
}

/// Writers pick bitnet.cpp's preset tiling where a shape has one, some fitting tiling elsewhere
/// (round-tripping through the recorded-tilings encoding), and a clear error when none fits.
#[test]
fn tl_tiling_choice() {
    for (tl2, rows, cols) in [(false, 1536, 4096), (true, 3200, 8640), (true, 4096, 14336)] {
        assert_eq!(tl::choose_tiling(tl2, rows, cols).unwrap(), tl::preset_tiling(tl2, rows, cols).unwrap());
    }
    // 2B-4T's shapes (2560 hidden, 6912 FFN, 640 KV rows) have no preset kernels.
    let mut chosen = Vec::new();
    for tl2 in [false, true] {
        for (rows, cols) in [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912), (64, 64), (256, 512)] {
            if tl2 && cols < 256 {
                continue;
            }
            let t = tl::choose_tiling(tl2, rows, cols).unwrap_or_else(|e| panic!("{rows}x{cols}: {e}"));
            let m = formula_matrix(rows, cols, 7);
            let (bytes, back) = if tl2 {
                let b = tl::pack_tl2(&m, t).unwrap();
                let back = tl::unpack_tl2(&b, rows, cols, t).unwrap();
                (b, back)
            } else {
                let b = tl::pack_tl1(&m, t).unwrap();
                let back = tl::unpack_tl1(&b, rows, cols, t).unwrap();
                (b, back)
            };
            assert!(!bytes.is_empty());
            assert_eq!(back, m, "{rows}x{cols} tl2={tl2} {t:?}");
            if !tl2 {
                chosen.push((rows, cols, t));
            }
        }
    }
    let encoded: Vec<u64> = tl::encode_tilings(&chosen).into_iter().map(u64::from).collect();
    for &(rows, cols, t) in &chosen {
        assert_eq!(tl::find_tiling(&encoded, rows, cols), Some(t));
    }
    assert_eq!(tl::find_tiling(&encoded, 3, 5), None);
    let err = tl::choose_tiling(false, 48, 64).unwrap_err().to_string();
    assert!(err.contains("no tiling fits a 48x64 matrix"), "{err}");
    let err = tl::choose_tiling(true, 64, 128).unwrap_err().to_string();
    assert!(err.contains("TL2"), "{err}");
}

/// TQ1_0 → TL2 at load (what the lookup-table kernels run for TQ1_0 files): the same bytes as
/// packing the unpacked values, on one thread or several; an all-zero block's trits ignored;
/// blocks with different scales refused.
#[test]
fn tq1_0_repacks_to_the_tl2_of_its_values() {
    for (rows, cols, seed) in [(32, 256, 1), (64, 768, 2), (96, 1280, 3), (256, 2560, 4)] {
        let t = tl::choose_tiling(true, rows, cols).unwrap();
        let mut m = formula_matrix(rows, cols, seed);
        // Row 1's second block all zero: its scale is 0.
        let mut values = m.values().to_vec();
        values[cols + 256..cols + 512].fill(0);
        m = TernaryMatrix::new(rows, cols, values).unwrap();
        let mut bytes = tq::pack(TqKind::Tq1_0, &m, 0.375).unwrap();
        // Trits in the zero-scale block must not count.
        let row_bytes = cols / 256 * 54;
        bytes[row_bytes + 54 + 3] = 200;
        let want = tl::pack_tl2(&m, t).unwrap();
        for threads in [1, 3] {
            let mut got = vec![0; tl::tl2_bytes(rows, cols).unwrap()];
            let scale = tl::tq1_to_tl2(&bytes, rows, cols, t, threads, &mut got).unwrap().expect("one shared scale");
            assert_eq!(scale, 0.375);
            assert!(got == want, "{rows}x{cols} {t:?} on {threads} threads");
        }
        // Another scale in one block: not one TL2 tensor.
        bytes[row_bytes * 2 + 52..row_bytes * 2 + 54].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        let mut out = vec![0; want.len()];
        assert!(tl::tq1_to_tl2(&bytes, rows, cols, t, 2, &mut out).unwrap().is_none());
    }
    let t = TlTiling { bm: 32, bk: 96, bmm: 32 };
    let err = tl::tq1_to_tl2(&[0; 53], 1, 256, t, 1, &mut [0; 64]).unwrap_err().to_string();
    assert!(err.contains("TQ1_0 bytes"), "{err}");
}
