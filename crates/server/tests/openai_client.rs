//! The official `openai` Python client against the server (tools/openai-client-check.py):
//! models.list, chat completions whole and streamed, completions, an error; embeddings on the tiny
//! embedding checkpoint. Skipped with a note
//! when the package is not installed, unless BITNET_REQUIRE_PYTHON is set (CI installs it).

use std::path::Path;

use bitnet_server::Config;

mod common;

#[test]
fn the_openai_python_client_works() {
    let required = std::env::var_os("BITNET_REQUIRE_PYTHON").is_some();
    let has =
        std::process::Command::new("python3").args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    if !has {
        assert!(!required, "the openai package is required (pip install openai)");
        eprintln!("SKIPPED: PyPI package openai is not installed (pip install openai)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = Config { api_key: Some("k3y".into()), ..Config::default() };
    let server = common::serve(&root.join("fixtures/models/bitnet-demo.gguf"), "bitnet-demo", 512, config);
    check(&[&format!("http://{}/v1", server.addr()), "k3y"]);
    server.shutdown();

    // embeddings.create against the tiny Qwen3 embedding checkpoint, converted here.
    let server =
        common::serve(&common::convert("tiny-qwen3-embedding"), "tiny-qwen3-embedding", 512, Config::default());
    let reference = root.join("fixtures/models/tiny-qwen3-embedding/reference.json");
    check(&[&format!("http://{}/v1", server.addr()), "unused", "--embeddings", reference.to_str().unwrap()]);
    server.shutdown();
}

/// Runs tools/openai-client-check.py with `args`; fails the test with its output if it fails.
fn check(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("python3")
        .arg(root.join("tools/openai-client-check.py"))
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
}
