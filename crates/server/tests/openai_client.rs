//! The official `openai` Python client against the server (tools/openai-client-check.py):
//! models.list, chat completions whole and streamed, completions, an error. Skipped with a note
//! when the package is not installed, unless BITNET_REQUIRE_PYTHON is set (CI installs it).

use std::path::Path;
use std::time::{Duration, Instant};

use bitnet_model::{LoadOptions, Model, Tokenizer};
use bitnet_server::{Config, Loaded};

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
    let model_path = root.join("fixtures/models/bitnet-demo.gguf");
    let config = Config { addr: "127.0.0.1:0".parse().unwrap(), api_key: Some("k3y".into()), ..Config::default() };
    let server = bitnet_server::start(config, move || {
        let model = Model::load(&model_path, LoadOptions { threads: 2, kernels: None })?;
        let tok = Tokenizer::from_metadata(model.metadata())?;
        Ok(Loaded { model, tok, template: None, name: "bitnet-demo".into(), ctx: 512 })
    })
    .unwrap();
    let t = Instant::now();
    while !server.is_ready() {
        assert!(t.elapsed() < Duration::from_secs(120) && server.load_error().is_none());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = std::process::Command::new("python3")
        .arg(root.join("tools/openai-client-check.py"))
        .arg(format!("http://{}/v1", server.addr()))
        .arg("k3y")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    server.shutdown();
}
