//! Quick GEMV streaming check outside criterion: one matrix larger than the L3 (I2_S, I2_S in the
//! four-row order the model's AVX-512 loads use, TQ2_0, TQ1_0, TL1 and TL2 on the lookup-table
//! loops; STREAM_FORMAT=i2s|i2s4|tq2|tq1|tl1|tl2 picks one).
use std::time::Instant;

use bitnet_benches::{Aligned, I2S, I2S4, TL1, TL2, activations, for_shape, packed, read_probe, scale_of};
use bitnet_kernels::Kernels;
use bitnet_quant::{PackedTernary, TernaryFormat};

fn main() {
    // STREAM_COLS picks another row length (same total size): the per-row costs show.
    let cols: usize = std::env::var("STREAM_COLS").ok().and_then(|c| c.parse().ok()).unwrap_or(2560);
    // STREAM_ROWS makes it small enough for the caches (the loop's own speed).
    let rows = std::env::var("STREAM_ROWS").ok().and_then(|c| c.parse().ok()).unwrap_or(6912 * 16 * 2560 / cols);
    // STREAM_REPS repeats each timing (best of them is printed); STREAM_FORMAT picks one format.
    let reps: usize = std::env::var("STREAM_REPS").ok().and_then(|c| c.parse().ok()).unwrap_or(5);
    let only = std::env::var("STREAM_FORMAT").ok();
    // STREAM_PROBE=1 also times a pure read of each copy (the ratio shows what the loop leaves).
    let probe = std::env::var("STREAM_PROBE").is_ok_and(|p| p == "1");
    let short = [(I2S, "i2s"), (I2S4, "i2s4"), (TernaryFormat::Tq2_0, "tq2"), (TernaryFormat::Tq1_0, "tq1")];
    for format in [I2S, I2S4, TernaryFormat::Tq2_0, TernaryFormat::Tq1_0, TL1, TL2] {
        let name = short
            .iter()
            .find(|s| s.0 == format)
            .map_or_else(|| format!("{format:?}")[..3].to_lowercase(), |s| s.1.into());
        if only.as_ref().is_some_and(|o| !o.eq_ignore_ascii_case(&name))
            || (format == I2S4 && (!cols.is_multiple_of(256) || !rows.is_multiple_of(4)))
        {
            continue;
        }
        // TL1/TL2 get the tiling `bitnet convert` would write for the shape (only when it runs:
        // some shapes have none).
        let format = for_shape(format, rows, cols);
        let data = packed(format, rows, cols);
        let (_, x) = activations(1, cols);
        let mut out = vec![0f32; rows];
        for offset in [32, 0, 32, 0] {
            let buf = Aligned::new(&data, offset);
            let w = PackedTernary::new(format, rows, cols, buf.bytes(), scale_of(format)).unwrap();
            for set in Kernels::available().into_iter().filter(|k| k.name() != "scalar") {
                let k = set.ternary();
                let mut best = f64::MAX;
                for _ in 0..reps {
                    let t = Instant::now();
                    k.gemm(&w, &x, &mut out).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!("{format:?} offset {offset} {}: {:.2} GB/s", set.name(), data.len() as f64 / best / 1e9);
            }
            if probe {
                // A pure read of the same bytes right after: the roofline this copy of the
                // matrix allows, in the same minute (the VM's bandwidth drifts between runs).
                println!("{format:?} offset {offset} read probe: {:.2} GB/s", read_probe(buf.bytes(), reps));
            }
        }
    }
}
