//! What the server's integration tests share.

use std::path::Path;
use std::time::{Duration, Instant};

use bitnet_model::{LoadOptions, Model, Tokenizer};
use bitnet_server::{Config, Loaded, Running};

/// Starts a server on an ephemeral port with the model at `path` (2 threads, `ctx` tokens per
/// sequence, served under `name`) and waits until it has loaded.
pub fn serve(path: &Path, name: &str, ctx: usize, config: Config) -> Running {
    let config = Config { addr: "127.0.0.1:0".parse().unwrap(), ..config };
    let (path, name) = (path.to_owned(), name.to_owned());
    let server = bitnet_server::start(config, move || {
        let model = Model::load(&path, LoadOptions { threads: 2, kernels: None })?;
        let tok = Tokenizer::from_metadata(model.metadata())?;
        Ok(Loaded { model, tok, template: None, name, ctx })
    })
    .unwrap();
    let t = Instant::now();
    while !server.is_ready() {
        assert!(server.load_error().is_none(), "{:?}", server.load_error());
        assert!(t.elapsed() < Duration::from_secs(120), "the model did not load");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// A fixture checkpoint (fixtures/models/NAME) converted to a temporary I2_S GGUF, removed when
/// the returned path is dropped (a loaded model keeps its mapping).
#[allow(dead_code)] // not every test file converts
pub fn convert(name: &str) -> tempfile::TempPath {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name);
    let out =
        tempfile::Builder::new().prefix("bitnet-server-test-").suffix(".gguf").tempfile().unwrap().into_temp_path();
    bitnet_convert::convert_dir(&dir, &out, Default::default()).unwrap();
    out
}
