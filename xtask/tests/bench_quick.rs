//! The CI smoke run of `cargo xtask bench --quick`: bandwidth test, 125M dummy model, `bitnet
//! bench` (release build), report and plot. Speeds are not checked (no timing in tests); the
//! report's shape is.

use std::process::Command;

#[test]
fn quick_bench_writes_a_report_and_a_plot() {
    // Cross-built tests run under an emulator (crates/cli/tests/common): the bench would build
    // and time the host's binary, which says nothing about the target.
    if std::env::var_os("BITNET_TEST_RUNNER").is_some_and(|r| !r.is_empty()) {
        eprintln!("skipped: the bench smoke run under an emulator (BITNET_TEST_RUNNER is set)");
        return;
    }
    let out = std::env::temp_dir().join(format!("bitnet-bench-quick-{}", std::process::id()));
    // Left behind only when the run fails, for a look at what it wrote.
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--quick", "--threads", "1", "--out"])
        .arg(&out)
        .status()
        .expect("running xtask bench");
    assert!(status.success());
    let md = std::fs::read_to_string(out.join("bench.md")).expect("bench.md");
    assert!(md.contains("| 1 | ") && md.contains("read GB/s"), "{md}");
    assert!(md.contains("| 125M | i2_s | 1 |"), "{md}");
    let png = std::fs::read(out.join("bench.png")).expect("bench.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_dir_all(&out).ok();
}
