//! The AVX-512 set with `BITNET_DENSE_STREAM=0` (one token's F16 and Q8_0 rows read side by
//! side, as before they were read one after another) through the dense conformance harness.
//! Its own test binary: the setting is read once per process.

use bitnet_kernels_x86::{Avx512, DENSE_STREAM_ENV};
use bitnet_quant::testkit;

#[test]
fn avx512_dense_rows_side_by_side() {
    // SAFETY: the only test of this binary, so no other thread reads the environment; set
    // before the first kernel call reads it.
    unsafe { std::env::set_var(DENSE_STREAM_ENV, "0") };
    match Avx512::detect() {
        Some(k) => {
            testkit::dense(&k, 48);
            eprintln!("tested: {} with {DENSE_STREAM_ENV}=0", Avx512::NAME);
        }
        None => eprintln!("skipped: {} (this CPU lacks AVX-512 F/BW/VL/VNNI)", Avx512::NAME),
    }
}
