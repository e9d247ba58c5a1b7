//! One-token dense GEMV (an output head) outside the model: F16, Q8_0 and Q6_K rows of
//! `DENSE_COLS` (default 2560) columns, `DENSE_ROWS` rows (default: a 2B-4T head, 128256; a few
//! hundred keep the matrix in L2, which shows the loop's own speed), `DENSE_TOKENS` tokens
//! (default 1; a server's batch is several), on every kernel set; `DENSE_TYPE` picks one type,
//! `DENSE_REPS` the number of timed runs (default 5; the best is printed). `DENSE_PROBE=1` also
//! times a pure read of the same bytes after each set (the roofline of that minute).
use std::time::Instant;

use bitnet_benches::Aligned;
use bitnet_format::TensorType;
use bitnet_kernels::Kernels;
use bitnet_quant::dense::quantize_row;

fn main() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|c| c.parse().ok()).unwrap_or(d);
    let (rows, cols, tokens) = (env("DENSE_ROWS", 128_256), env("DENSE_COLS", 2560), env("DENSE_TOKENS", 1));
    let reps = env("DENSE_REPS", 5);
    let x: Vec<f32> = (0..cols * tokens).map(|i| ((i * 7919 % 201) as f32 / 100.0 - 1.0) * 0.7).collect();
    let row: Vec<f32> = (0..cols).map(|i| ((i * 104_729 % 301) as f32 / 150.0 - 1.0) * 0.02).collect();
    let only = std::env::var("DENSE_TYPE").ok();
    for ty in [TensorType::F16, TensorType::Q8_0, TensorType::Q6_K] {
        if only.as_ref().is_some_and(|o| !o.eq_ignore_ascii_case(&ty.to_string())) {
            continue;
        }
        let one = quantize_row(ty, &row).unwrap();
        let w: Vec<u8> = (0..rows).flat_map(|_| one.iter().copied()).collect();
        // In 2 MiB pages, as the model maps its head.
        let w = Aligned::new(&w, 0);
        let w = w.bytes();
        let mut out = vec![0f32; rows * tokens];
        for set in Kernels::available() {
            if set.name() == "scalar" && rows > 4096 {
                continue;
            }
            let mut best = f64::MAX;
            for _ in 0..reps {
                let t = Instant::now();
                set.dense().gemm_rows(ty, w, cols, &x, 0..rows, &mut out).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            let macs = (rows * cols * tokens) as f64 / best / 1e9;
            println!("{ty} {}: {:.2} GB/s, {macs:.1} G multiply-adds/s", set.name(), w.len() as f64 / best / 1e9);
            if std::env::var("DENSE_PROBE").is_ok_and(|p| p == "1") {
                println!("{ty} read probe: {:.2} GB/s", bitnet_benches::read_probe(w, reps));
            }
        }
    }
}
