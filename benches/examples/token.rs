//! One token's ternary GEMVs outside the model: every layer's matrices (separate buffers, in the
//! model's order) streamed one after another, so per-shape streaming speeds show without norms,
//! attention or the head. `TOKEN_SHAPE=2B-4T|7B` (default 2B-4T), `TOKEN_LAYERS` (default 30),
//! `TOKEN_FORMAT=i2_s|tq2_0|tq1_0`. `TOKEN_FILE=model.gguf` takes the matrices from a GGUF file of
//! that shape (copied into the process), and with `TOKEN_MAPPED=1` reads them in place from its
//! memory map, as the model does: how the page cache holds the file then shows (4 KiB pages or
//! huge pages; docs/kernels.md). Otherwise the matrices lie one after another in one buffer of
//! 2 MiB pages, as a file's tensors do. `TOKEN_ONE=1` first reads that whole buffer as one matrix
//! in one call (against the calls per matrix: what starting each matrix costs). `TOKEN_ROWS4=1`
//! puts I2_S matrices in the four-row order the model's AVX-512 loads use (`I2sLayout::X86Rows4`).
use std::time::Instant;

use bitnet_benches::{Aligned, B2B4T, B7, I2S, activations, packed};
use bitnet_kernels::Kernels;
use bitnet_quant::{I2sLayout, PackedTernary, TernaryFormat, i2s};

fn main() {
    let shape = std::env::var("TOKEN_SHAPE").unwrap_or_else(|_| "2B-4T".into());
    let layers: usize = std::env::var("TOKEN_LAYERS").ok().and_then(|c| c.parse().ok()).unwrap_or(30);
    let rows4 = std::env::var("TOKEN_ROWS4").is_ok_and(|v| v == "1");
    let format = match std::env::var("TOKEN_FORMAT").as_deref() {
        Ok("tq2_0") => TernaryFormat::Tq2_0,
        Ok("tq1_0") => TernaryFormat::Tq1_0,
        _ if rows4 => TernaryFormat::I2s(I2sLayout::X86Rows4),
        _ => I2S,
    };
    // Matrices of one layer in the model's order, by index into the shape table.
    let (shapes, order): (_, &[usize]) =
        if shape == "7B" { (B7, &[0, 0, 0, 0, 1, 1, 2]) } else { (B2B4T, &[0, 1, 1, 0, 2, 2, 3]) };
    let file = std::env::var("TOKEN_FILE").ok().map(|p| bitnet_format::Gguf::open(p).unwrap());
    let names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
    let mats: Vec<(usize, Vec<u8>)> = (0..layers)
        .flat_map(|l| {
            let file = file.as_ref();
            order.iter().zip(names).map(move |(&i, n)| {
                let (rows, cols) = (shapes[i].1, shapes[i].2);
                let data = match file {
                    Some(f) => f.tensor(&format!("blk.{l}.{n}.weight")).unwrap().data.to_vec(),
                    None => packed(if rows4 { I2S } else { format }, rows, cols),
                };
                match rows4 {
                    true => (i, i2s::repack(&data, rows, cols, I2sLayout::X86, I2sLayout::X86Rows4).unwrap()),
                    false => (i, data),
                }
            })
        })
        .collect();
    // All matrices in one buffer of 2 MiB pages, one after another, as the model's file maps.
    let mut whole = Vec::new();
    let mut spans = Vec::new();
    for (_, d) in &mats {
        spans.push(whole.len()..whole.len() + d.len());
        whole.extend_from_slice(d);
        whole.resize(whole.len().next_multiple_of(32), 0);
    }
    let whole = Aligned::new(&whole, 0);
    let mut mapped: Vec<(usize, &[u8])> =
        mats.iter().zip(spans).map(|((i, _), span)| (*i, &whole.bytes()[span])).collect();
    if let (Some(f), Ok(_), false) = (file.as_ref(), std::env::var("TOKEN_MAPPED"), rows4) {
        let mut k = 0;
        for l in 0..layers {
            for n in names {
                mapped[k].1 = f.tensor(&format!("blk.{l}.{n}.weight")).unwrap().data;
                k += 1;
            }
        }
    }
    let acts: Vec<_> = shapes.iter().map(|s| activations(1, s.2).1).collect();
    let mut out = vec![0f32; shapes.iter().map(|s| s.1).max().unwrap()];
    for set in Kernels::available().into_iter().filter(|k| k.name() != "scalar") {
        let k = set.ternary();
        if std::env::var("TOKEN_ONE").is_ok() {
            // The same bytes as one matrix as wide as the first shape's rows (whatever lies
            // between the matrices read as codes), in one call: what the calls per matrix cost.
            let (all, cols) = (whole.bytes(), shapes[0].2);
            let size = |rows| format.byte_size(rows, cols).unwrap();
            // Whole groups of eight rows (`size(16) - size(8)`: eight rows' bytes), then fewer
            // until the last group's trailer (I2_S: its scale) fits too.
            let mut rows = all.len() / (size(16) - size(8)) * 8;
            while size(rows) > all.len() {
                rows -= 8;
            }
            let w = PackedTernary::new(format, rows, cols, &all[..size(rows)], None).unwrap();
            let mut o = vec![0f32; rows];
            for _ in 0..3 {
                let t = Instant::now();
                k.gemm(&w, &acts[0], &mut o).unwrap();
                println!("{} one call {:.1} GB/s", set.name(), size(rows) as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
        }
        for _ in 0..3 {
            let mut time = vec![0f64; shapes.len()];
            let mut bytes = vec![0usize; shapes.len()];
            for (i, data) in &mapped {
                let (rows, cols) = (shapes[*i].1, shapes[*i].2);
                let w = PackedTernary::new(format, rows, cols, &data[..format.byte_size(rows, cols).unwrap()], None)
                    .unwrap();
                let t = Instant::now();
                k.gemm(&w, &acts[*i], &mut out[..rows]).unwrap();
                time[*i] += t.elapsed().as_secs_f64();
                bytes[*i] += data.len();
            }
            let parts: Vec<String> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{} {:.1}", s.0, bytes[i] as f64 / time[i] / 1e9))
                .collect();
            let total = bytes.iter().sum::<usize>() as f64 / time.iter().sum::<f64>() / 1e9;
            println!("{} total {total:.1} GB/s | {}", set.name(), parts.join(" | "));
        }
    }
}
