//! `POST /v1/embeddings` end to end on the tiny Qwen3 embedding checkpoint (converted here): the
//! vectors equal the library's (and so transformers', see crates/model/tests/embedding.rs), in
//! both encodings, for every input shape OpenAI's API allows; errors in OpenAI's shape.

use std::path::Path;

use base64::Engine as _;
use bitnet_model::{LoadOptions, Model, Pooling, Tokenizer};
use bitnet_server::{Config, Running};
use serde_json::{Value, json};

mod common;
use common::convert;

/// `--max-queue 1`: the many requests below, one after the other, must each find room (the
/// engine gives a finished request's place back).
fn start(path: &std::path::Path) -> Running {
    common::serve(path, "emb", 256, Config { max_queue: 1, ..Config::default() })
}

fn post(server: &Running, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent
        .post(&format!("http://{}/v1/embeddings", server.addr()))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn vector(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn embeddings_endpoint() {
    let path = convert("tiny-qwen3-embedding");
    let model = Model::load(&path, LoadOptions { threads: 1, kernels: None }).unwrap();
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    let texts = ["query: What is BitNet?", "The quick brown fox jumps over the lazy dog."];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode_for_embedding(t).unwrap()).collect();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let expected = model.embed(&refs, Pooling::Last, true).unwrap();
    let server = start(&path);

    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    let (s, body) = post(&server, &json!({"model": "emb", "input": texts}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "emb");
    let tokens = ids.iter().map(Vec::len).sum::<usize>();
    assert_eq!(body["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    for (i, d) in body["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!((d["object"].as_str(), d["index"].as_u64()), (Some("embedding"), Some(i as u64)));
        assert!(close(&vector(&d["embedding"]), &expected[i]), "text {i}");
    }
    // One string; token ids (one list, a list of lists); base64 of little-endian f32s.
    let (s, body) = post(&server, &json!({"input": texts[1]}));
    assert!(s == 200 && close(&vector(&body["data"][0]["embedding"]), &expected[1]));
    let (s, body) = post(&server, &json!({"input": ids[0]}));
    assert!(s == 200 && close(&vector(&body["data"][0]["embedding"]), &expected[0]));
    let (s, body) = post(&server, &json!({"input": ids, "encoding_format": "base64"}));
    assert_eq!(s, 200, "{body}");
    for (i, d) in body["data"].as_array().unwrap().iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(d["embedding"].as_str().unwrap()).unwrap();
        let v: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert!(close(&v, &expected[i]));
    }
    // Bad input: 400 with OpenAI's error shape, naming the parameter.
    let long = "word ".repeat(700);
    for (body, param, says) in [
        (json!({"input": long}), "input", "longer than the model's context of 512 tokens"),
        (json!({"input": []}), "input", "empty"),
        (json!({"input": 3.5}), "input", "must be"),
        (json!({"input": [1, 100000]}), "input", "outside the vocabulary"),
        (json!({"input": "x", "encoding_format": "int8"}), "encoding_format", "float"),
        (json!({"input": "x", "dimensions": 64}), "dimensions", "not supported"),
    ] {
        let (s, r) = post(&server, &body);
        assert_eq!(s, 400, "{body}: {r}");
        assert_eq!(r["error"]["param"], param, "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains(says), "{r}");
    }
    server.shutdown();
}

/// A generative model has no pooling: /v1/embeddings says so instead of inventing one.
#[test]
fn generative_model_refuses_embeddings() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/bitnet-demo.gguf");
    let server = start(&demo);
    let (s, r) = post(&server, &json!({"input": "hello"}));
    assert_eq!(s, 400);
    assert!(r["error"]["message"].as_str().unwrap().contains("not an embedding model"), "{r}");
    server.shutdown();
}
