//! The HTTP side: routes, request parsing and checks, OpenAI-shaped responses and errors.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bitnet_model::sampling::limits;
use bitnet_model::{GenerateOptions, Message, SamplingParams};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::Shared;
use crate::engine::{EmbedJob, Event, Finish, Job, TokenLogprob, Work};

type App = Arc<Shared>;

/// An OpenAI-shaped error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, param: None, code }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

pub fn router(app: App) -> Router {
    let limit = app.config.body_limit;
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings))
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    let mut router = Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", None, "no such endpoint") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app.clone());
    if let Some(origin) = &app.config.cors
        && let Ok(origin) = origin.parse::<HeaderValue>()
    {
        router = router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    router
}

/// `Authorization: Bearer KEY` when the server has a key (constant-time comparison).
async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq::constant_time_eq(given.as_bytes(), key.as_bytes()) {
            let msg = "missing or wrong API key (send Authorization: Bearer KEY)";
            return ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", Some("invalid_api_key"), msg)
                .into_response();
        }
    }
    next.run(req).await
}

async fn health(State(app): State<App>) -> Response {
    match (app.ready.get(), app.load_error.get()) {
        (Some(_), _) => (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response(),
        (None, Some(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "error", "error": e}))).into_response()
        }
        (None, None) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "loading"}))).into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let body = app.metrics.render(app.config.parallel);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn ready(app: &Shared) -> Result<&crate::Ready, ApiError> {
    app.ready.get().ok_or_else(|| {
        let why = app.load_error.get().map_or("the model is still loading".to_owned(), |e| format!("no model: {e}"));
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, why)
    })
}

async fn models(State(app): State<App>) -> Result<Response, ApiError> {
    let r = ready(&app)?;
    let model = json!({"id": r.name, "object": "model", "created": app.created, "owned_by": "bitnet-rs"});
    Ok(axum::Json(json!({"object": "list", "data": [model]})).into_response())
}

/// The body as a JSON object, or the error a client should see (413 over the limit).
fn parse(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), "invalid_request_error", None, e.body_text()))?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad("the body must be a JSON object", None)),
        Err(e) => Err(ApiError::bad(format!("the body is not valid JSON: {e}"), None)),
    }
}

/// What both endpoints share once their prompt is known.
struct Request_ {
    prompt: Vec<u32>,
    opts: GenerateOptions,
    stream: bool,
    include_usage: bool,
    logprobs: Option<usize>,
}

fn number(body: &serde_json::Map<String, Value>, key: &'static str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(ApiError::bad(format!("{key} must be a number"), Some(key))),
    }
}

fn count(body: &serde_json::Map<String, Value>, key: &'static str) -> Result<Option<usize>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|v| Some(v as usize))
            .ok_or_else(|| ApiError::bad(format!("{key} must be a whole number ≥ 0"), Some(key))),
        Some(_) => Err(ApiError::bad(format!("{key} must be a whole number"), Some(key))),
    }
}

fn flag(body: &serde_json::Map<String, Value>, key: &'static str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad(format!("{key} must be true or false"), Some(key))),
    }
}

/// The sampling and length options of a request (OpenAI's defaults: temperature 1, top_p 1).
fn options(
    body: &serde_json::Map<String, Value>,
    prompt: Vec<u32>,
    ctx: usize,
    chat: bool,
) -> Result<Request_, ApiError> {
    if let Some(n) = count(body, "n")?
        && n != 1
    {
        return Err(ApiError::bad("only n = 1 is supported", Some("n")));
    }
    for key in ["tools", "functions", "tool_choice", "function_call"] {
        if body.get(key).is_some_and(|v| !v.is_null() && v != &Value::Array(vec![])) {
            return Err(ApiError::bad(format!("{key} is not supported"), None));
        }
    }
    for key in ["frequency_penalty", "presence_penalty"] {
        if number(body, key)?.is_some_and(|v| v != 0.0) {
            return Err(ApiError::bad(
                format!("{key} is not supported (this server's sampler has a repetition penalty only)"),
                None,
            ));
        }
    }
    let temperature = number(body, "temperature")?.unwrap_or(1.0) as f32;
    let temperature = limits::temperature(temperature)
        .map_err(|w| ApiError::bad(format!("temperature must be {w}"), Some("temperature")))?;
    let top_p = number(body, "top_p")?.unwrap_or(1.0) as f32;
    let top_p = limits::top_p(top_p).map_err(|w| ApiError::bad(format!("top_p must be {w}"), Some("top_p")))?;
    let seed = match body.get("seed") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|v| v as u64)
            .or(n.as_u64())
            .ok_or_else(|| ApiError::bad("seed must be an integer", Some("seed")))?,
        Some(_) => return Err(ApiError::bad("seed must be an integer", Some("seed"))),
    };
    let max_key =
        if chat && body.contains_key("max_completion_tokens") { "max_completion_tokens" } else { "max_tokens" };
    let room = ctx.saturating_sub(prompt.len());
    let max_tokens = count(body, max_key)?.unwrap_or(room);
    if prompt.len() >= ctx {
        return Err(ApiError::bad(
            format!(
                "the prompt is {} tokens; the context is {ctx} per sequence (it needs at least one more)",
                prompt.len()
            ),
            Some(if chat { "messages" } else { "prompt" }),
        ));
    }
    let stop_strings = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| ApiError::bad("stop must hold strings", Some("stop"))))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad("stop must be a string or a list of up to 4 strings", Some("stop"))),
    };
    let logprobs = if chat {
        match (flag(body, "logprobs")?, count(body, "top_logprobs")?) {
            (true, k) if k.unwrap_or(0) <= 20 => Some(k.unwrap_or(0)),
            (true, _) => return Err(ApiError::bad("top_logprobs must be at most 20", Some("top_logprobs"))),
            (false, Some(k)) if k > 0 => {
                return Err(ApiError::bad("top_logprobs needs logprobs: true", Some("top_logprobs")));
            }
            (false, _) => None,
        }
    } else {
        match count(body, "logprobs")? {
            Some(k) if k <= 5 => Some(k),
            Some(_) => return Err(ApiError::bad("logprobs must be at most 5", Some("logprobs"))),
            None => None,
        }
    };
    let include_usage = match body.get("stream_options") {
        Some(Value::Object(o)) => o.get("include_usage").and_then(Value::as_bool).unwrap_or(false),
        _ => false,
    };
    let sampling = SamplingParams {
        temperature,
        top_p,
        top_k: 0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        seed,
        ..SamplingParams::default()
    };
    Ok(Request_ {
        prompt,
        opts: GenerateOptions {
            max_tokens,
            sampling,
            stop_strings,
            stop_tokens: Vec::new(),
            // llama.cpp's server extension: keep going past end-of-sequence tokens.
            ignore_eos: flag(body, "ignore_eos")?,
        },
        stream: flag(body, "stream")?,
        include_usage,
        logprobs,
    })
}

/// The text of a message's `content`: a string, or a list of `{"type": "text", "text": ...}` parts.
fn content(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => return Err(ApiError::bad("only text content parts are supported", Some("messages"))),
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::bad("message content must be a string or a list of text parts", Some("messages"))),
    }
}

type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

async fn chat(State(app): State<App>, body: Body) -> Response {
    let started = Instant::now();
    prepare_and_submit(app, started, true, move |app| chat_request(app, body)).await
}

async fn completions(State(app): State<App>, body: Body) -> Response {
    let started = Instant::now();
    prepare_and_submit(app, started, false, move |app| completion_request(app, body)).await
}

/// Runs `prepare` (parsing, template rendering, tokenizing: CPU work, bounded but not tiny) on
/// the blocking pool rather than a runtime worker, then submits. A panic while preparing is a
/// 500 for that request only.
async fn prepare_and_submit(
    app: App,
    started: Instant,
    chat: bool,
    prepare: impl FnOnce(&Shared) -> Result<Request_, ApiError> + Send + 'static,
) -> Response {
    let shared = app.clone();
    let result = match tokio::task::spawn_blocking(move || prepare(&shared)).await {
        Ok(Ok(req)) => match ready(&app) {
            Ok(r) => submit(&app, r, req, chat, started).await,
            Err(e) => Err(e),
        },
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "internal error while reading the request",
        )),
    };
    result.unwrap_or_else(|e| reject(&app, e))
}

/// `POST /v1/embeddings`: `input` a string, a list of strings, a list of token ids or a list of
/// lists of token ids; `encoding_format` float (default) or base64 (little-endian f32s).
async fn embeddings(State(app): State<App>, body: Body) -> Response {
    let shared = app.clone();
    let prepared = match tokio::task::spawn_blocking(move || embedding_request(&shared, body)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "internal error while reading the request",
        )),
    };
    let result = match prepared {
        Ok((texts, base64)) => submit_embeddings(&app, texts, base64).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| reject(&app, e))
}

/// The request's texts as token ids (each checked against the context) and whether base64 was
/// asked for.
fn embedding_request(app: &Shared, body: Body) -> Result<(Vec<Vec<u32>>, bool), ApiError> {
    let body = parse(body)?;
    let r = ready(app)?;
    if r.pooling.is_none() {
        return Err(ApiError::bad(
            "this model is not an embedding model (its file declares no pooling)",
            Some("model"),
        ));
    }
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(ApiError::bad("encoding_format must be \"float\" or \"base64\"", Some("encoding_format")));
        }
    };
    if let Some(d) = body.get("dimensions").filter(|d| !d.is_null()) {
        return Err(ApiError::bad(
            format!("dimensions = {d} is not supported (the model's vectors have a fixed size)"),
            Some("dimensions"),
        ));
    }
    let encode = |text: &str| r.tok.encode_for_embedding(text).map_err(|e| ApiError::bad(e.to_string(), Some("input")));
    let token_list = |v: &Vec<Value>| -> Option<Vec<u32>> {
        v.iter().map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok())).collect()
    };
    let texts: Vec<Vec<u32>> = match body.get("input") {
        Some(Value::String(s)) => vec![encode(s)?],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items.iter().map(|s| encode(s.as_str().unwrap_or(""))).collect::<Result<_, _>>()?
        }
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_number) => {
            vec![
                token_list(items)
                    .ok_or_else(|| ApiError::bad("input holds a token id that is not one", Some("input")))?,
            ]
        }
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_array) => items
            .iter()
            .map(|t| {
                token_list(t.as_array().expect("checked"))
                    .ok_or_else(|| ApiError::bad("input holds a token id that is not one", Some("input")))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(items)) if items.is_empty() => return Err(ApiError::bad("input is empty", Some("input"))),
        _ => {
            return Err(ApiError::bad(
                "input must be a string, a list of strings, or token ids (a list or a list of lists)",
                Some("input"),
            ));
        }
    };
    let vocab = r.tok.vocab_size();
    for (i, t) in texts.iter().enumerate() {
        if t.is_empty() {
            return Err(ApiError::bad(format!("input {i} is empty"), Some("input")));
        }
        if t.len() > r.embed_ctx {
            return Err(ApiError::bad(
                format!(
                    "input {i} is {} tokens long, longer than the model's context of {} tokens",
                    t.len(),
                    r.embed_ctx
                ),
                Some("input"),
            ));
        }
        if let Some(&id) = t.iter().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::bad(format!("token id {id} is outside the vocabulary of {vocab}"), Some("input")));
        }
    }
    Ok((texts, base64))
}

async fn submit_embeddings(app: &App, texts: Vec<Vec<u32>>, base64: bool) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let r = ready(app)?;
    let sender = engine(r)?;
    let tokens: usize = texts.iter().map(Vec::len).sum();
    // Embedding requests wait in the engine's own queue (one running, up to --max-queue waiting).
    let waiting = app.metrics.embed_queue.fetch_add(1, Ordering::Relaxed);
    if waiting > app.config.max_queue {
        app.metrics.embed_queue.fetch_sub(1, Ordering::Relaxed);
        return Err(queue_full(format!("{waiting} embedding requests are waiting")));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    if sender.send(Work::Embed(EmbedJob { texts, reply: tx })).is_err() {
        app.metrics.embed_queue.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, "the engine has stopped"));
    }
    let vectors = match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e)),
        Err(_) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, "the engine has stopped"));
        }
    };
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": r.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok(axum::Json(body).into_response())
}

fn chat_request(app: &Shared, body: Body) -> Result<Request_, ApiError> {
    let body = parse(body)?;
    let r = ready(app)?;
    let template =
        r.template.as_ref().ok_or_else(|| ApiError::bad("the model has no chat template", Some("messages")))?;
    let Some(Value::Array(list)) = body.get("messages") else {
        return Err(ApiError::bad("messages must be a list", Some("messages")));
    };
    if list.is_empty() {
        return Err(ApiError::bad("messages is empty", Some("messages")));
    }
    let mut messages = Vec::with_capacity(list.len());
    for m in list {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let role = match role {
            "system" | "user" | "assistant" => role,
            "developer" => "system",
            other => return Err(ApiError::bad(format!("unknown or unsupported role {other:?}"), Some("messages"))),
        };
        messages.push(Message::new(role, content(m.get("content").unwrap_or(&Value::Null))?));
    }
    let prompt =
        template.encode(&r.tok, &messages, true).map_err(|e| ApiError::bad(e.to_string(), Some("messages")))?;
    options(&body, prompt, r.ctx, true)
}

fn completion_request(app: &Shared, body: Body) -> Result<Request_, ApiError> {
    let body = parse(body)?;
    let r = ready(app)?;
    let text = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or("").to_owned(),
        Some(Value::Array(_)) => {
            return Err(ApiError::bad(
                "prompt must be one string (batches of prompts are not supported)",
                Some("prompt"),
            ));
        }
        _ => return Err(ApiError::bad("prompt must be a string", Some("prompt"))),
    };
    if flag(&body, "echo")? {
        return Err(ApiError::bad("echo is not supported", Some("echo")));
    }
    let prompt = r.tok.encode(&text, true).map_err(|e| ApiError::bad(e.to_string(), Some("prompt")))?;
    options(&body, prompt, r.ctx, false)
}

fn reject(app: &Shared, e: ApiError) -> Response {
    if e.status == StatusCode::TOO_MANY_REQUESTS {
        app.metrics.rejected_full.fetch_add(1, Ordering::Relaxed);
    } else if e.status.is_client_error() {
        app.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
    }
    e.into_response()
}

/// Hands the request to the engine (429 when the queue is full) and answers, streamed or whole.
async fn submit(
    app: &App,
    r: &crate::Ready,
    req: Request_,
    chat: bool,
    started: Instant,
) -> Result<Response, ApiError> {
    let queued = app.metrics.queue_depth.load(Ordering::Relaxed);
    let active = app.metrics.active.load(Ordering::Relaxed);
    if queued >= app.config.max_queue && active >= app.config.parallel {
        return Err(queue_full(format!("{queued} requests are waiting for {} slots", app.config.parallel)));
    }
    let sender = engine(r)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = req.stream;
    let include_usage = req.include_usage;
    let logprobs = req.logprobs.is_some();
    let job = Job { prompt: req.prompt, opts: req.opts, logprobs: req.logprobs, events: tx, received: started };
    app.metrics.requests.fetch_add(1, Ordering::Relaxed);
    // Counted as waiting until the engine takes it (the engine then sets the real depth).
    app.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    sender
        .send(Work::Generate(job))
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, "the engine has stopped"))?;
    let meta = Meta {
        id: format!("{}-{:x}", if chat { "chatcmpl" } else { "cmpl" }, rand_id()),
        created: now(),
        model: r.name.clone(),
        chat,
        logprobs,
        tok: r.tok.clone(),
    };
    Ok(if stream { streamed(meta, rx, include_usage) } else { whole(meta, rx).await })
}

/// 429 with Retry-After.
fn queue_full(why: String) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        Some("queue_full"),
        format!("{why}; try again shortly"),
    )
}

/// The engine's request channel (503 once the server is shutting down).
fn engine(r: &crate::Ready) -> Result<std::sync::mpsc::Sender<Work>, ApiError> {
    let sender = r.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    sender.ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, "the server is shutting down")
    })
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A request id: time and a counter, unique within this server.
fn rand_id() -> u128 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (t << 16) ^ u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What each response chunk repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    logprobs: bool,
    tok: Arc<bitnet_model::Tokenizer>,
}

fn finish_name(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

fn token_text(tok: &bitnet_model::Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// OpenAI's chat logprobs entry for one token.
fn chat_logprob(tok: &bitnet_model::Tokenizer, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, p: f32| {
        let text = token_text(tok, id);
        json!({"token": text, "logprob": p, "bytes": text.as_bytes()})
    };
    let mut v = entry(lp.token, lp.logprob);
    v["top_logprobs"] = Value::Array(lp.top.iter().map(|&(t, p)| entry(t, p)).collect());
    v
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Collects the whole answer (if the client goes away, the handler's future and with it the
/// receiver are dropped, and the engine frees the slot).
async fn whole(meta: Meta, mut rx: UnboundedReceiver<Event>) -> Response {
    {
        let mut text = String::new();
        let mut lps: Vec<TokenLogprob> = Vec::new();
        loop {
            match rx.recv().await {
                Some(Event::Piece { text: t, logprob }) => {
                    text.push_str(&t);
                    lps.extend(logprob);
                }
                Some(Event::Done { finish, prompt_tokens, completion_tokens }) => {
                    let finish = finish_name(finish);
                    let body = if meta.chat {
                        let logprobs = meta.logprobs.then(
                            || json!({"content": lps.iter().map(|l| chat_logprob(&meta.tok, l)).collect::<Vec<_>>()}),
                        );
                        json!({
                            "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "logprobs": logprobs, "finish_reason": finish}],
                            "usage": usage(prompt_tokens, completion_tokens),
                        })
                    } else {
                        let logprobs = meta.logprobs.then(|| completion_logprobs(&meta.tok, &lps));
                        json!({
                            "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
                            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
                            "usage": usage(prompt_tokens, completion_tokens),
                        })
                    };
                    return axum::Json(body).into_response();
                }
                Some(Event::Error(e)) => {
                    return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e).into_response();
                }
                None => {
                    return ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        None,
                        "the engine stopped",
                    )
                    .into_response();
                }
            }
        }
    }
}

/// The legacy completions logprobs object.
fn completion_logprobs(tok: &bitnet_model::Tokenizer, lps: &[TokenLogprob]) -> Value {
    let tokens: Vec<String> = lps.iter().map(|l| token_text(tok, l.token)).collect();
    let mut offset = 0;
    let offsets: Vec<usize> = tokens
        .iter()
        .map(|t| {
            let o = offset;
            offset += t.len();
            o
        })
        .collect();
    json!({
        "tokens": tokens,
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| l.top.iter().map(|&(t, p)| (token_text(tok, t), json!(p))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// Server-sent events, one chunk per piece, then the finish chunk, the usage chunk when asked,
/// and `data: [DONE]`. Dropping the stream (the client went away) drops the receiver, and the
/// engine frees the slot at its next step.
fn streamed(meta: Meta, rx: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    let mut first = true;
    let stream = UnboundedReceiverStream::new(rx)
        .map(move |ev| {
            let mut out: Vec<Value> = Vec::new();
            let chunk = |choice: Value, usage_: Option<Value>| {
                let object = if meta.chat { "chat.completion.chunk" } else { "text_completion" };
                let mut v = json!({"id": meta.id, "object": object, "created": meta.created, "model": meta.model,
                                   "choices": if choice.is_null() { json!([]) } else { json!([choice]) }});
                if let Some(u) = usage_ {
                    v["usage"] = u;
                }
                v
            };
            match ev {
                Event::Piece { text, logprob } => {
                    if text.is_empty() && logprob.is_none() && !first {
                        return out;
                    }
                    let choice = if meta.chat {
                        let mut delta = json!({"content": text});
                        if first {
                            delta["role"] = json!("assistant");
                        }
                        let lp = logprob.as_ref().map(|l| json!({"content": [chat_logprob(&meta.tok, l)]}));
                        json!({"index": 0, "delta": delta, "logprobs": lp, "finish_reason": null})
                    } else {
                        let lp = logprob.as_ref().map(|l| completion_logprobs(&meta.tok, std::slice::from_ref(l)));
                        json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": null})
                    };
                    first = false;
                    out.push(chunk(choice, None));
                }
                Event::Done { finish, prompt_tokens, completion_tokens } => {
                    let finish = finish_name(finish);
                    let choice = if meta.chat {
                        json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish})
                    } else {
                        json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish})
                    };
                    out.push(chunk(choice, None));
                    if include_usage {
                        out.push(chunk(Value::Null, Some(usage(prompt_tokens, completion_tokens))));
                    }
                }
                Event::Error(e) => {
                    out.push(json!({"error": {"message": e, "type": "server_error", "param": null, "code": null}}));
                }
            }
            out
        })
        .flat_map(|items| {
            futures_util::stream::iter(items.into_iter().map(|v| SseEvent::default().data(v.to_string())))
        })
        .chain(futures_util::stream::once(async { SseEvent::default().data("[DONE]") }))
        .map(Ok::<_, Infallible>);
    Sse::new(stream).into_response()
}
