//! bitnet.cpp's TL1/TL2 tensors load (with the tiling of its preset kernels for the shape),
//! repacked to I2_S, and multiply exactly like the same matrix stored as I2_S.

use std::io::BufWriter;

use bitnet_format::{GgufBuilder, GgufFile, TensorType};
use bitnet_model::threads::Pool;
use bitnet_model::weights::Matrix;
use bitnet_quant::{I2sLayout, TernaryMatrix, i2s, tl};

fn ternary(rows: usize, cols: usize) -> TernaryMatrix {
    let mut s = 0x1234_5678u64;
    let values = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 3) as i8 - 1
        })
        .collect();
    TernaryMatrix::new(rows, cols, values).unwrap()
}

#[test]
fn tl_tensors_of_preset_shapes_match_i2s() {
    for (ty, rows, cols) in [(TensorType::TL1, 1536, 1536), (TensorType::TL2, 1536, 4096)] {
        let m = ternary(rows, cols);
        let scale = 0.75f32;
        let tiling = tl::preset_tiling(ty == TensorType::TL2, rows, cols).unwrap();
        let tl_bytes = if ty == TensorType::TL1 { tl::pack_tl1(&m, tiling) } else { tl::pack_tl2(&m, tiling) }.unwrap();
        let i2s_bytes = i2s::pack(&m, scale, I2sLayout::X86).unwrap();
        let path = std::env::temp_dir().join(format!("tl-{}-{ty}.gguf", std::process::id()));
        let mut b = GgufBuilder::new();
        b.metadata_mut().insert("general.architecture", "bitnet");
        let shape = [cols as u64, rows as u64];
        b.add_tensor("tl.weight", ty, &shape).unwrap();
        b.add_tensor("tl.weight_scale", TensorType::F32, &[1]).unwrap();
        b.add_tensor("i2s.weight", TensorType::I2_S, &shape).unwrap();
        let mut w = b.start(BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
        w.write_tensor("tl.weight", &tl_bytes).unwrap();
        w.write_tensor("tl.weight_scale", &scale.to_le_bytes()).unwrap();
        w.write_tensor("i2s.weight", &i2s_bytes).unwrap();
        w.finish().unwrap();

        let file = GgufFile::open(&path).unwrap();
        let a = Matrix::load(&file, "tl.weight", rows, cols, I2sLayout::X86).unwrap();
        let b = Matrix::load(&file, "i2s.weight", rows, cols, I2sLayout::X86).unwrap();
        let kernels = bitnet_kernels::Kernels::best();
        let pool = Pool::new(2);
        let x: Vec<f32> = (0..2 * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let (mut ya, mut yb) = (vec![0f32; 2 * rows], vec![0f32; 2 * rows]);
        a.matmul(file.bytes(), &kernels, &pool, &x, None, &mut ya).unwrap();
        b.matmul(file.bytes(), &kernels, &pool, &x, None, &mut yb).unwrap();
        assert_eq!(ya, yb, "{ty} {rows}x{cols}");
        std::fs::remove_file(&path).ok();
    }
}

#[test]
fn tl_shapes_without_a_preset_are_a_clear_error() {
    let (rows, cols) = (256, 256);
    let m = ternary(rows, cols);
    let bytes = tl::pack_tl1(&m, tl::TlTiling { bm: 256, bk: 128, bmm: 32 }).unwrap();
    let path = std::env::temp_dir().join(format!("tl-nopreset-{}.gguf", std::process::id()));
    let mut b = GgufBuilder::new();
    b.metadata_mut().insert("general.architecture", "bitnet");
    b.add_tensor("x.weight", TensorType::TL1, &[cols as u64, rows as u64]).unwrap();
    let mut w = b.start(BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
    w.write_tensor("x.weight", &bytes).unwrap();
    w.finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    let err = Matrix::load(&file, "x.weight", rows, cols, I2sLayout::X86).unwrap_err().to_string();
    assert!(err.contains("preset") && err.contains("256x256"), "{err}");
    std::fs::remove_file(&path).ok();
}
