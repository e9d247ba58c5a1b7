//! SentencePiece (`tokenizer.ggml.model = "llama"`) tokenizers against Google's sentencepiece:
//! fixtures/reference/spm.json holds a BPE vocabulary trained by sentencepiece with Llama's options
//! (tools/reference/spm_fixture.py) and the ids and text sentencepiece gives for a set of strings.
//! The GGUF metadata is built the way llama.cpp's converter writes it (pieces, scores, types).

use bitnet_format::{Array, Metadata, Value, ValueType};
use bitnet_model::Tokenizer;
use serde_json::Value as Json;

fn fixture() -> Json {
    let path = format!("{}/../../fixtures/reference/spm.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn metadata(f: &Json) -> Metadata {
    let mut m = Metadata::new();
    m.insert("tokenizer.ggml.model", "llama");
    let tokens: Vec<String> = f["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    m.insert("tokenizer.ggml.tokens", Array::strings(tokens));
    let scores = f["scores"].as_array().unwrap().iter().map(|s| Value::F32(s.as_f64().unwrap() as f32)).collect();
    m.insert("tokenizer.ggml.scores", Array::new(ValueType::F32, scores).unwrap());
    let types = f["token_type"].as_array().unwrap().iter().map(|t| Value::I32(t.as_i64().unwrap() as i32)).collect();
    m.insert("tokenizer.ggml.token_type", Array::new(ValueType::I32, types).unwrap());
    m.insert("tokenizer.ggml.bos_token_id", f["bos"].as_u64().unwrap() as u32);
    m.insert("tokenizer.ggml.eos_token_id", f["eos"].as_u64().unwrap() as u32);
    m.insert("tokenizer.ggml.unknown_token_id", f["unk"].as_u64().unwrap() as u32);
    m
}

#[test]
fn sentencepiece_bpe_matches_sentencepiece() {
    let f = fixture();
    let tok = Tokenizer::from_metadata(&metadata(&f)).unwrap();
    for c in f["cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(text, false).unwrap(), want, "encode {text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), c["decoded"].as_str().unwrap(), "decode {text:?}");
    }
    // BOS comes first when asked for, as llama.cpp adds it for these models.
    let with_bos = tok.encode("Hello", true).unwrap();
    assert_eq!(with_bos[0], f["bos"].as_u64().unwrap() as u32);
}

#[test]
fn missing_scores_are_a_clear_error() {
    let f = fixture();
    let mut m = Metadata::new();
    for (k, v) in metadata(&f).iter() {
        if k != "tokenizer.ggml.scores" {
            m.insert(k, v.clone());
        }
    }
    let err = Tokenizer::from_metadata(&m).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.scores"), "{err}");
}
