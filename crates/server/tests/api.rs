//! The server end to end over HTTP on an ephemeral port, with the demo model: every endpoint,
//! streaming and whole answers equal to the library's generation, errors in OpenAI's shape,
//! auth, the queue limit, clients that go away mid-stream, and a load of 32 clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bitnet_model::{ChatTemplate, GenerateOptions, LoadOptions, Message, Model, Sequence, Tokenizer};
use bitnet_server::{Config, Running};
use serde_json::{Value, json};

mod common;

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/bitnet-demo.gguf")
}

fn start(config: Config, ctx: usize) -> Running {
    common::serve(&demo(), "demo", ctx, config)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// (status, body) of a request; `body` None for GET.
fn call(server: &Running, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> (u16, String) {
    let url = format!("http://{}{path}", server.addr());
    let agent = agent();
    let mut resp = match body {
        None => {
            let mut r = agent.get(&url);
            if let Some(k) = key {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            r.call().unwrap()
        }
        Some(b) => {
            let mut r = agent.post(&url).header("Content-Type", "application/json");
            if let Some(k) = key {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            let _ = method;
            r.send(b).unwrap()
        }
    };
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

fn post(server: &Running, path: &str, body: &Value) -> (u16, Value) {
    let (s, b) = call(server, "POST", path, Some(&body.to_string()), None);
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

/// The `data:` payloads of a server-sent event stream.
fn events(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_owned).collect()
}

/// The library's greedy answer to `messages` (what the server must return at temperature 0).
fn library_answer(messages: &[Message], max_tokens: usize) -> (String, usize, usize) {
    let model = Model::load(demo(), LoadOptions { threads: 1, kernels: None }).unwrap();
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    let template = ChatTemplate::of_model(&model, &tok, None).unwrap();
    let prompt = template.encode(&tok, messages, true).unwrap();
    let mut seq = Sequence::new(&model, 512, model.preferred_kv_type()).unwrap();
    let opts = GenerateOptions { max_tokens, ..GenerateOptions::default() };
    let mut g = seq.generate(&model, &tok, &prompt, &opts).unwrap();
    let mut text = String::new();
    for p in g.by_ref() {
        text.push_str(&p.unwrap().text);
    }
    let n = g.token_ids().len();
    (text, prompt.len(), n)
}

fn assert_error(status: u16, body: &Value, want: u16, needle: &str) {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| m.contains(needle)), "{body}");
    assert!(e.get("type").is_some() && e.get("param").is_some() && e.get("code").is_some(), "{body}");
}

#[test]
fn answers_equal_the_library_streamed_or_whole() {
    let server = start(Config { parallel: 2, ..Config::default() }, 512);
    let (s, health) = call(&server, "GET", "/health", None, None);
    assert_eq!((s, health.contains("ok")), (200, true));
    let (s, models) = call(&server, "GET", "/v1/models", None, None);
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&models).unwrap()["data"][0]["id"], "demo");

    let messages = [Message::new("system", "You are terse."), Message::new("user", "What is Rust?")];
    let (want, prompt_tokens, n) = library_answer(&messages, 24);
    let req = json!({"model": "demo", "temperature": 0, "max_tokens": 24, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "Rust?"}]}]});
    let (s, whole) = post(&server, "/v1/chat/completions", &req);
    assert_eq!(s, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["content"], want.as_str());
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert_eq!(whole["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(whole["usage"]["completion_tokens"], n);
    assert_eq!(whole["usage"]["total_tokens"], prompt_tokens + n);
    let finish = if n == 24 { "length" } else { "stop" };
    assert_eq!(whole["choices"][0]["finish_reason"], finish);

    let mut req = req;
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (s, body) = call(&server, "POST", "/v1/chat/completions", Some(&req.to_string()), None);
    assert_eq!(s, 200);
    let ev = events(&body);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned)).collect();
    assert_eq!(text, want);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], n);
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], finish);

    // Legacy completions, a stop string, max_tokens, logprobs.
    let (s, c) = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "fn main() {", "max_tokens": 3, "temperature": 0, "logprobs": 2}),
    );
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert_eq!(c["usage"]["completion_tokens"], 3);
    assert_eq!(c["choices"][0]["logprobs"]["token_logprobs"].as_array().unwrap().len(), 3);
    let first = want.split_whitespace().nth(1).unwrap_or("the").to_owned();
    let mut stop = json!({"temperature": 0, "max_tokens": 24, "stop": [first.clone()], "messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is Rust?"}]});
    let (s, r) = post(&server, "/v1/chat/completions", &stop);
    assert_eq!(s, 200);
    let got = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!got.contains(&first) && want.starts_with(got), "{got:?} / {want:?}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    stop["logprobs"] = json!(true);
    stop["top_logprobs"] = json!(3);
    let (_, r) = post(&server, "/v1/chat/completions", &stop);
    let lp = &r["choices"][0]["logprobs"]["content"];
    assert!(lp[0]["logprob"].as_f64().unwrap() <= 0.0 && lp[0]["top_logprobs"].as_array().unwrap().len() == 3, "{r}");

    let (_, metrics) = call(&server, "GET", "/metrics", None, None);
    assert!(metrics.contains("bitnet_requests_completed_total 5"), "{metrics}");
    assert!(metrics.contains("bitnet_time_to_first_token_seconds_count 5"), "{metrics}");
    server.shutdown();
}

#[test]
fn bad_requests_get_clear_errors() {
    let server = start(Config { body_limit: 64 << 10, ..Config::default() }, 64);
    let path = "/v1/chat/completions";
    let user = json!([{"role": "user", "content": "hi"}]);
    let (s, b) = call(&server, "POST", path, Some("{not json"), None);
    assert_error(s, &serde_json::from_str(&b).unwrap(), 400, "not valid JSON");
    for (body, needle) in [
        (json!({"messages": [{"role": "tool", "content": "x"}]}), "role"),
        (json!({"messages": []}), "empty"),
        (json!({"messages": "hi"}), "list"),
        (json!({"messages": user, "n": 2}), "n = 1"),
        (json!({"messages": user, "tools": [{"type": "function"}]}), "tools"),
        (json!({"messages": user, "temperature": "hot"}), "temperature"),
        (json!({"messages": user, "temperature": -1}), "temperature"),
        (json!({"messages": user, "top_p": 2}), "top_p"),
        (json!({"messages": user, "stop": 5}), "stop"),
        (json!({"messages": user, "frequency_penalty": 0.5}), "frequency_penalty"),
        (json!({"messages": [{"role": "user", "content": "word ".repeat(200)}]}), "the context is 64"),
    ] {
        let (s, b) = post(&server, path, &body);
        assert_error(s, &b, 400, needle);
    }
    let (s, b) = post(&server, "/v1/completions", &json!({"prompt": ["a", "b"]}));
    assert_error(s, &b, 400, "one string");
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(100 << 10)}]});
    let (s, _) = call(&server, "POST", path, Some(&big.to_string()), None);
    assert_eq!(s, 413);
    let (s, b) = call(&server, "GET", "/v2/nothing", None, None);
    assert_error(s, &serde_json::from_str(&b).unwrap(), 404, "no such endpoint");
    server.shutdown();
}

#[test]
fn an_api_key_is_required_when_set() {
    let server = start(Config { api_key: Some("sesame".into()), ..Config::default() }, 128);
    let (s, b) = call(&server, "GET", "/v1/models", None, None);
    assert_error(s, &serde_json::from_str(&b).unwrap(), 401, "API key");
    let (s, _) = call(&server, "GET", "/v1/models", None, Some("wrong"));
    assert_eq!(s, 401);
    let (s, _) = call(&server, "GET", "/v1/models", None, Some("sesame"));
    assert_eq!(s, 200);
    // Health and metrics stay open (probes and scrapers).
    assert_eq!(call(&server, "GET", "/health", None, None).0, 200);
    server.shutdown();
}

fn gauge(server: &Running, name: &str) -> f64 {
    let (_, m) = call(server, "GET", "/metrics", None, None);
    let line = m.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {m}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a streaming request on a raw connection and returns it once the first bytes arrived.
fn open_stream(server: &Running, max_tokens: usize) -> TcpStream {
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "stream": true, "ignore_eos": true}).to_string();
    let mut c = TcpStream::connect(server.addr()).unwrap();
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    c
}

#[test]
fn a_client_that_goes_away_frees_its_slot_and_a_full_queue_is_429() {
    let server = start(Config { parallel: 1, max_queue: 1, ..Config::default() }, 32768);
    // A long answer (seconds) occupies the one slot; the client then disconnects.
    let c = open_stream(&server, 32000);
    wait_for("the slot to fill", || gauge(&server, "bitnet_active_sequences") == 1.0);
    // One more waits in the queue; a third is refused.
    let queued = open_stream_async(&server);
    wait_for("the queue", || gauge(&server, "bitnet_queue_depth") == 1.0);
    let (s, b) = post(&server, "/v1/completions", &json!({"prompt": "x", "max_tokens": 1}));
    assert_error(s, &b, 429, "waiting");
    drop(c);
    // The queued request gets the slot and finishes; nothing is left.
    let (s, _) = queued.join().unwrap();
    assert_eq!(s, 200);
    wait_for("every slot free", || {
        gauge(&server, "bitnet_active_sequences") == 0.0 && gauge(&server, "bitnet_queue_depth") == 0.0
    });
    assert!(gauge(&server, "bitnet_requests_cancelled_total") >= 1.0);
    assert!(gauge(&server, "bitnet_requests_rejected_total") >= 1.0);
    server.shutdown();
}

fn open_stream_async(server: &Running) -> std::thread::JoinHandle<(u16, String)> {
    let url = format!("http://{}/v1/completions", server.addr());
    std::thread::spawn(move || {
        let mut r = agent()
            .post(&url)
            .header("Content-Type", "application/json")
            .send(json!({"prompt": "x", "max_tokens": 4}).to_string())
            .unwrap();
        let s = r.status().as_u16();
        (s, r.body_mut().read_to_string().unwrap())
    })
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// 32 clients at once, a third of them leaving mid-answer: every request ends, every slot is
/// freed, and a second round leaves resident memory where the first did (within 10%).
#[test]
fn thirty_two_clients_with_random_disconnects() {
    let server = start(Config { parallel: 4, max_queue: 64, ..Config::default() }, 512);
    let round = |server: &Running| {
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let addr = server.addr();
                std::thread::spawn(move || {
                    let body =
                        json!({"prompt": format!("Story {i}:"), "max_tokens": 16 + i % 7, "stream": i % 2 == 0}).to_string();
                    let mut c = TcpStream::connect(addr).unwrap();
                    write!(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
                    let mut out = Vec::new();
                    if i % 3 == 0 {
                        let mut buf = [0u8; 64];
                        let _ = c.read(&mut buf);
                        return true; // leaves
                    }
                    c.read_to_end(&mut out).unwrap();
                    let text = String::from_utf8_lossy(&out);
                    text.starts_with("HTTP/1.1 200") && (i % 2 == 1 || text.contains("[DONE]"))
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap(), "a client got a bad answer");
        }
        wait_for("every slot free", || {
            gauge(server, "bitnet_active_sequences") == 0.0 && gauge(server, "bitnet_queue_depth") == 0.0
        });
    };
    round(&server);
    let after_first = resident_kib();
    round(&server);
    let after_second = resident_kib();
    assert!(
        after_second as f64 <= after_first as f64 * 1.1 + 2048.0,
        "resident memory grew from {after_first} KiB to {after_second} KiB"
    );
    server.shutdown();
}

#[test]
fn cors_only_when_asked_and_shutdown_lets_answers_finish() {
    // A grace period that an emulated CPU (the aarch64 pass under qemu) also finishes 300 tokens in.
    let grace = Duration::from_secs(600);
    let server = start(Config { cors: Some("https://app.example".into()), grace, ..Config::default() }, 2048);
    let resp = agent()
        .get(format!("http://{}/v1/models", server.addr()))
        .header("Origin", "https://app.example")
        .call()
        .unwrap();
    assert_eq!(resp.headers().get("access-control-allow-origin").unwrap(), "https://app.example");
    // An answer in flight when shutdown begins still ends with [DONE].
    let addr = server.addr();
    let inflight = std::thread::spawn(move || {
        let body = json!({"prompt": "Once", "max_tokens": 300, "stream": true, "ignore_eos": true}).to_string();
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    });
    wait_for("the answer to start", || gauge(&server, "bitnet_active_sequences") == 1.0);
    server.shutdown();
    let out = inflight.join().unwrap();
    assert!(
        out.contains("\"finish_reason\":\"length\"") && out.contains("[DONE]"),
        "{}",
        &out[out.len().saturating_sub(300)..]
    );

    let plain = start(Config::default(), 128);
    let resp = agent()
        .get(format!("http://{}/v1/models", plain.addr()))
        .header("Origin", "https://app.example")
        .call()
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    plain.shutdown();
}
