//! `bitnet serve`: the OpenAI-compatible server (crates/server).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bitnet_model::{ChatTemplate, KvType};

use crate::generate::ModelArgs;

#[derive(clap::Args, Debug)]
#[command(after_help = "Endpoints: POST /v1/chat/completions, POST /v1/completions (\"stream\": true for \
                        server-sent events), POST /v1/embeddings (embedding models), GET /v1/models, GET /health (503 while loading), GET /metrics \
                        (Prometheus).\n\n\
                        Up to --parallel requests generate together in one batch per step; more wait in a \
                        queue of --max-queue, and past that get 429.\n\n\
                        Example:\n  bitnet serve -m model.gguf --parallel 8 -c 4096\n  \
                        curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\\n    \
                        -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests generated together, each with its own KV cache of --ctx-size tokens.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Requests that may wait for a free slot; more are refused with 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Require `Authorization: Bearer KEY` on every /v1 request.
    #[arg(long, env = "BITNET_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow browser requests from this origin (CORS); none by default.
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Option<String>,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 4, value_name = "MIB")]
    pub body_limit: usize,
    /// Seconds in-flight requests may run on after SIGTERM / Ctrl-C.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub grace: u64,
}

pub fn run(args: &Args) -> Result<()> {
    if args.api_key.as_deref().is_some_and(str::is_empty) {
        bail!("--api-key (or BITNET_API_KEY) is empty");
    }
    let template_source = match &args.chat_template {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    // Resolve the file now, so that a wrong path fails before the port is taken.
    let path = args.model.path()?;
    if !path.exists() {
        bail!("model file {} does not exist", path.display());
    }
    let name = path.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let kv: Option<KvType> = args.model.kv_type.map(Into::into);
    let parallel = usize::from(args.parallel);
    let config = bitnet_server::Config {
        addr: SocketAddr::new(args.host, args.port),
        parallel,
        kv,
        api_key: args.api_key.clone(),
        max_queue: args.max_queue,
        cors: args.cors.clone(),
        body_limit: args.body_limit.saturating_mul(1 << 20),
        grace: Duration::from_secs(args.grace),
        handle_signals: true,
    };
    let mut model_args = args.model.clone();
    model_args.model = Some(path.clone());
    model_args.hf_repo = None;
    let server = bitnet_server::start(config, move || {
        let (model, tok, ctx) = model_args.load()?;
        let template = match &template_source {
            Some(src) => Some(ChatTemplate::of_model(&model, &tok, Some(src))?),
            None => None,
        };
        let kv = kv.unwrap_or_else(|| model.preferred_kv_type());
        let per_token = model.kv_bytes_per_token(kv);
        eprintln!(
            "loaded {} ({} kernels, {}); {kv} KV caches: up to {parallel} × {ctx} tokens = {:.1} MiB at most (they grow with use)",
            name,
            model.kernel_name(),
            model.pages,
            (per_token * ctx * parallel) as f64 / (1 << 20) as f64
        );
        Ok(bitnet_server::Loaded { model, tok, template, name, ctx })
    })
    .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    eprintln!("listening on http://{} (Ctrl-C to stop)", server.addr());
    server.wait();
    eprintln!("stopped");
    Ok(())
}
