//! What the CLI's integration tests share.

use std::process::Command;

/// The environment variable naming an emulator that runs the binaries under test, as cargo's
/// target runner does for the test binaries themselves (cross-built aarch64 tests on x86:
/// `BITNET_TEST_RUNNER="qemu-aarch64 -cpu max"`): a test that starts `bitnet` starts it
/// through the runner, since this machine cannot execute the target's binaries directly.
pub const RUNNER_ENV: &str = "BITNET_TEST_RUNNER";

/// A `Command` that runs the `bitnet` binary under test (through [`RUNNER_ENV`] when set).
pub fn bitnet_command() -> Command {
    let bin = env!("CARGO_BIN_EXE_bitnet");
    match std::env::var(RUNNER_ENV).ok().filter(|r| !r.trim().is_empty()) {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().expect("not empty"));
            cmd.args(words).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}
