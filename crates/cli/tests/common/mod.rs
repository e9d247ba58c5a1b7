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

/// A fresh temporary folder named after `tag`, removed (with what the test wrote in it) when
/// dropped.
#[allow(dead_code)] // not every test file writes files
pub fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("bitnet-cli-{tag}-")).tempdir().unwrap()
}

/// The path of `name` inside `dir`, as a string for a command line.
#[allow(dead_code)]
pub fn file_in(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_string_lossy().into_owned()
}
