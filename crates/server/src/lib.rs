//! `bitnet serve`: an OpenAI-compatible HTTP server with continuous batching.
//!
//! * `POST /v1/chat/completions`, `POST /v1/completions` (streamed as server-sent events with
//!   `"stream": true`), `GET /v1/models`, `GET /health` (503 until the model is loaded),
//!   `GET /metrics` (Prometheus text).
//! * One engine thread owns the model and runs every active sequence in one forward pass per step
//!   ([`engine`]); the tokio runtime only parses requests and moves bytes.
//! * Binds 127.0.0.1 by default; `api_key` makes every `/v1` request need `Authorization: Bearer
//!   KEY` (compared in constant time); bodies over `body_limit` get 413, bad JSON 400, a full
//!   queue 429 with `Retry-After`; errors are shaped as OpenAI's.
//!
//! ```no_run
//! use bitnet_server::{Config, Loaded};
//! let server = bitnet_server::start(Config::default(), || {
//!     let model = bitnet_model::Model::load("model.gguf", Default::default())?;
//!     let tok = bitnet_model::Tokenizer::from_metadata(model.metadata())?;
//!     Ok(Loaded { model, tok, template: None, name: "model".into(), ctx: 2048 })
//! })?;
//! println!("listening on {}", server.addr());
//! server.wait();
//! # Ok::<(), std::io::Error>(())
//! ```

#![forbid(unsafe_code)]

mod api;
pub mod engine;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bitnet_model::{ChatTemplate, KvType, Model, Tokenizer};

use crate::engine::{Engine, Work};
use crate::metrics::Metrics;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (127.0.0.1:8080 by default; port 0 picks a free one).
    pub addr: SocketAddr,
    /// Sequences generated together (each with its own KV cache).
    pub parallel: usize,
    /// KV cache element type (`None`: the model's preferred one, q8_0 where its heads allow).
    pub kv: Option<KvType>,
    /// Required bearer token for `/v1` requests.
    pub api_key: Option<String>,
    /// Requests that may wait for a slot; more get 429.
    pub max_queue: usize,
    /// An origin allowed by CORS (none by default).
    pub cors: Option<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// How long in-flight requests may run on after a shutdown signal.
    pub grace: Duration,
    /// Stop on SIGTERM / Ctrl-C (the CLI); tests stop the server with [`Running::shutdown`].
    pub handle_signals: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            parallel: 4,
            kv: None,
            api_key: None,
            max_queue: 64,
            cors: None,
            body_limit: 4 << 20,
            grace: Duration::from_secs(10),
            handle_signals: false,
        }
    }
}

/// What the loader returns: the model, its tokenizer, its chat template (`None`: the model's own
/// or the BitNet default), the name `/v1/models` reports and the context of each sequence.
pub struct Loaded {
    pub model: Model,
    pub tok: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub name: String,
    pub ctx: usize,
}

/// Why loading failed (shown by `/health` and the requests that arrive meanwhile).
pub type LoadError = Box<dyn std::error::Error + Send + Sync>;

/// What the HTTP side needs once the model is loaded.
pub(crate) struct Ready {
    pub tok: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    pub name: String,
    pub ctx: usize,
    /// The embedding model's pooling (`None`: a generative model, /v1/embeddings refuses).
    pub pooling: Option<bitnet_model::Pooling>,
    /// Longest text /v1/embeddings takes (the model's training context).
    pub embed_ctx: usize,
    pub jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<Work>>>,
}

/// State shared by every handler.
pub(crate) struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub ready: OnceLock<Ready>,
    /// Why loading failed, if it did.
    pub load_error: OnceLock<String>,
    pub created: u64,
}

/// A running server.
pub struct Running {
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the model is loaded (`/health` says 200).
    pub fn is_ready(&self) -> bool {
        self.shared.ready.get().is_some()
    }

    /// Why loading the model failed, if it did.
    pub fn load_error(&self) -> Option<&str> {
        self.shared.load_error.get().map(String::as_str)
    }

    /// The counters `/metrics` shows.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops accepting, lets in-flight requests finish (within the grace period), then returns.
    pub fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Waits until the server stops (a signal, with `handle_signals`).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `config.addr`, then loads the model with `load` on the engine thread (`/health` says
/// 503 meanwhile) and serves until shut down.
pub fn start<F>(config: Config, load: F) -> std::io::Result<Running>
where
    F: FnOnce() -> Result<Loaded, LoadError> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bitnet-http")
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(config.addr))?;
    let addr = listener.local_addr()?;
    let created = api::now();
    let shared = Arc::new(Shared {
        config: config.clone(),
        metrics: Arc::new(Metrics::default()),
        ready: OnceLock::new(),
        load_error: OnceLock::new(),
        created,
    });
    // The engine thread: load, then schedule until every request sender is gone.
    let engine_shared = shared.clone();
    let engine = std::thread::Builder::new().name("bitnet-engine".into()).spawn(move || {
        let loaded = match load() {
            Ok(l) => l,
            Err(e) => {
                let _ = engine_shared.load_error.set(error_chain(&*e));
                return;
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let c = &engine_shared.config;
        let ctx = loaded.ctx.max(1);
        let tok = Arc::new(loaded.tok);
        let template = match loaded.template {
            Some(t) => Some(t),
            None => ChatTemplate::of_model(&loaded.model, &tok, None).ok(),
        };
        let ready = Ready {
            tok: tok.clone(),
            template,
            name: loaded.name,
            ctx,
            pooling: loaded.model.config.pooling,
            embed_ctx: loaded.model.config.context_length,
            jobs: std::sync::Mutex::new(Some(tx)),
        };
        if engine_shared.ready.set(ready).is_err() {
            return;
        }
        let kv = c.kv.unwrap_or_else(|| loaded.model.preferred_kv_type());
        let engine = Engine {
            model: loaded.model,
            tok,
            ctx,
            kv,
            parallel: c.parallel.max(1),
            metrics: engine_shared.metrics.clone(),
            #[cfg(test)]
            panic_next_step: Default::default(),
        };
        engine.run(rx);
    })?;
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let app = api::router(shared.clone());
    let serve_shared = shared.clone();
    let after = shared.clone();
    let thread = std::thread::Builder::new().name("bitnet-server".into()).spawn(move || {
        runtime.block_on(async move {
            let grace = serve_shared.config.grace;
            let signals = serve_shared.config.handle_signals;
            let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
            let stopped = async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    _ = signal(signals) => {}
                }
                let _ = graceful_tx.send(());
            };
            let server = axum::serve(listener, app).with_graceful_shutdown(stopped);
            let server = async move {
                let _ = server.await;
            };
            tokio::pin!(server);
            tokio::select! {
                _ = &mut server => {}
                _ = async {
                    let _ = graceful_rx.await;
                    tokio::time::sleep(grace).await;
                } => {}
            }
        });
        // No more requests: the engine finishes what it has and returns.
        if let Some(ready) = after.ready.get() {
            ready.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        let _ = engine.join();
    })?;
    Ok(Running { addr, shutdown, thread: Some(thread), shared })
}

/// SIGTERM or Ctrl-C when `enabled`; never otherwise.
async fn signal(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// An error and its causes, each said once.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
