//! Quick many-token GEMM check outside criterion (prompt processing's kernel): one 2B-4T FFN
//! matrix (6912 × 2560; GEMM_ROWS × GEMM_COLS picks another) against GEMM_TOKENS tokens (default
//! 128), best of GEMM_REPS runs (default 5), one thread, for every ternary format and kernel set
//! this CPU runs.
use std::time::Instant;

use bitnet_benches::{I2S, activations, packed};
use bitnet_kernels::Kernels;
use bitnet_quant::{PackedTernary, TernaryFormat};

fn main() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (rows, cols) = (env("GEMM_ROWS", 6912), env("GEMM_COLS", 2560));
    let (n, reps) = (env("GEMM_TOKENS", 128), env("GEMM_REPS", 5));
    let (_, x) = activations(n, cols);
    let mut out = vec![0f32; rows * n];
    for format in [I2S, TernaryFormat::Tq2_0, TernaryFormat::Tq1_0] {
        let data = packed(format, rows, cols);
        let w = PackedTernary::new(format, rows, cols, &data, None).expect("valid matrix");
        for set in Kernels::available().into_iter().filter(|k| k.name() != "scalar") {
            let k = set.ternary();
            let mut best = f64::MAX;
            for _ in 0..reps {
                let t = Instant::now();
                k.gemm(&w, &x, &mut out).expect("gemm");
                best = best.min(t.elapsed().as_secs_f64());
            }
            let macs = (rows * cols * n) as f64;
            println!(
                "{format:?} {rows}x{cols} {} x{n}: {:.1} GMAC/s ({:.2} ms)",
                set.name(),
                macs / best / 1e9,
                best * 1e3
            );
        }
    }
}
