//! Hostile files and requests: every one is a clear error naming what is wrong, never a panic,
//! an abort or a silently wrong model (issue 13's cases).

use std::path::{Path, PathBuf};

use bitnet_format::{GgufFile, Metadata, Value, rewrite_metadata};
use bitnet_model::{
    GenerateOptions, KvType, LoadOptions, MAX_THREADS, Model, ModelError, SamplingParams, Sequence, StopReason,
    Tokenizer,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

const TINY: &str = "tiny-bitnet-b1.58.gguf";
const ARCH: &str = "bitnet-b1.58";

/// The tiny model with its metadata edited by `edit`, written to a fresh temporary file (removed
/// when the returned path is dropped).
fn edited(tag: &str, edit: impl FnOnce(&mut Metadata)) -> tempfile::TempPath {
    let src = GgufFile::open(fixture(TINY)).unwrap();
    let mut m = src.metadata().clone();
    edit(&mut m);
    let prefix = format!("bitnet-model-hardening-{tag}-");
    let path = tempfile::Builder::new().prefix(&prefix).suffix(".gguf").tempfile().unwrap().into_temp_path();
    let bytes = rewrite_metadata(&src, m, Vec::new()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load_error(tag: &str, edit: impl FnOnce(&mut Metadata)) -> String {
    let path = edited(tag, edit);
    match Model::load(&path, LoadOptions { threads: 1, ..Default::default() }) {
        Ok(_) => panic!("{tag}: the edited model loaded"),
        Err(e) => e.to_string(),
    }
}

fn load(name: &str) -> (Model, Tokenizer) {
    let model = Model::load(fixture(name), LoadOptions { threads: 2, ..Default::default() }).unwrap();
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    (model, tok)
}

#[test]
fn block_count_must_match_the_tensors() {
    // 2^31 and u64::MAX aborted or panicked preallocating layers; 0 and 1 ran a shrunken model.
    for (tag, value) in [("2^31", Value::U64(1 << 31)), ("max", Value::U64(u64::MAX))] {
        let err = load_error(tag, |m| m.insert(format!("{ARCH}.block_count"), value));
        assert!(err.contains("block_count") && err.contains("out of range"), "{tag}: {err}");
    }
    let err = load_error("zero", |m| m.insert(format!("{ARCH}.block_count"), 0u32));
    assert!(err.contains("block_count = 0"), "{err}");
    let err = load_error("one", |m| m.insert(format!("{ARCH}.block_count"), 1u32));
    assert!(err.contains("block_count = 1 but the file has tensors for 2 blocks"), "{err}");
    let err = load_error("three", |m| m.insert(format!("{ARCH}.block_count"), 3u32));
    assert!(err.contains("block_count = 3 but the file has tensors for 2 blocks"), "{err}");
}

#[test]
fn every_hyperparameter_is_validated_with_its_key() {
    let eps = format!("{ARCH}.attention.layer_norm_rms_epsilon");
    let base = format!("{ARCH}.rope.freq_base");
    let cases: Vec<(&str, String, Value, &str)> = vec![
        ("eps-nan", eps.clone(), Value::F32(f32::NAN), "must be a finite number above 0"),
        ("eps-neg", eps.clone(), Value::F32(-1e-5), "must be a finite number above 0"),
        ("base-zero", base.clone(), Value::F32(0.0), "must be a finite number above 0"),
        ("base-nan", base.clone(), Value::F32(f32::NAN), "must be a finite number above 0"),
        ("rope-zero", format!("{ARCH}.rope.dimension_count"), Value::U32(0), "out of range"),
        ("rope-odd", format!("{ARCH}.rope.dimension_count"), Value::U32(3), "must be even"),
        ("ctx-zero", format!("{ARCH}.context_length"), Value::U32(0), "out of range"),
        ("heads-type", format!("{ARCH}.attention.head_count"), Value::String("4".into()), "wrong type"),
        ("eps-type", eps.clone(), Value::String("1e-5".into()), "wrong type"),
        ("hidden-huge", format!("{ARCH}.embedding_length"), Value::U64(1 << 40), "out of range"),
    ];
    for (tag, key, value, want) in cases {
        let err = load_error(tag, |m| m.insert(key.clone(), value));
        assert!(err.contains(&key) && err.contains(want), "{tag}: {err}");
    }
    let err = load_error("missing", |m| {
        m.remove(&format!("{ARCH}.feed_forward_length"));
    });
    assert!(err.contains("feed_forward_length is missing"), "{err}");
}

#[test]
fn forward_rejects_an_empty_token_list() {
    let (model, _) = load(TINY);
    let mut cache = model.new_cache(8).unwrap();
    let err = model.forward(&[], &mut cache, false).unwrap_err();
    assert!(err.to_string().contains("no tokens"), "{err}");
}

#[test]
fn kv_cache_size_is_checked_and_grows_with_use() {
    let (model, _) = load(TINY);
    // ctx × kv_dim overflowed and panicked at 2^58; 10^12 would have allocated terabytes.
    for ctx in [1usize << 58, usize::MAX, 1_000_000_000_000] {
        let err = model.new_cache_of(ctx, KvType::F16).unwrap_err().to_string();
        assert!(err.contains("KV cache") && (err.contains("too large") || err.contains("GiB")), "{ctx}: {err}");
    }
    assert!(model.new_cache(0).is_err());
    // A cache far larger than what is used costs nothing up front and works.
    let mut cache = model.new_cache_of(1 << 20, KvType::F32).unwrap();
    model.forward(&[1, 2, 3], &mut cache, false).unwrap();
    assert_eq!(cache.len(), 3);
}

#[test]
fn thread_counts_are_bounded() {
    let load = |threads| Model::load(fixture(TINY), LoadOptions { threads, ..Default::default() });
    let err = load(MAX_THREADS + 1).unwrap_err().to_string();
    assert!(err.contains("at most"), "{err}");
    assert_eq!(load(3).unwrap().threads(), 3);
}

#[test]
fn sampling_parameters_are_validated() {
    let ok = SamplingParams::default();
    assert!(ok.validate().is_ok());
    let bad = [
        SamplingParams { temperature: f32::NAN, ..ok },
        SamplingParams { temperature: -1.0, ..ok },
        SamplingParams { top_p: 2.0, ..ok },
        SamplingParams { top_p: 0.0, ..ok },
        SamplingParams { min_p: 2.0, ..ok },
        SamplingParams { repeat_penalty: 0.0, ..ok },
        SamplingParams { repeat_penalty: f32::INFINITY, ..ok },
    ];
    for p in bad {
        assert!(matches!(p.validate(), Err(ModelError::Invalid(_))), "{p:?}");
    }
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, ignore_eos: true, ..GenerateOptions::default() }
}

fn run(seq: &mut Sequence, model: &Model, tok: &Tokenizer, prompt: &[u32], opts: &GenerateOptions) -> Vec<u32> {
    let mut g = seq.generate(model, tok, prompt, opts).unwrap();
    for piece in g.by_ref() {
        piece.unwrap();
    }
    g.token_ids().to_vec()
}

#[test]
fn a_capped_answer_then_a_new_turn_equals_one_fresh_run() {
    // Chat recorded the last token of an answer stopped by -n as cached without running it, so
    // the next turn started one position early and answered differently.
    let (model, tok) = load("bitnet-demo.gguf");
    let turn1 = tok.encode("The Rust compiler", true).unwrap();
    let mut seq = Sequence::new(&model, 128, KvType::F32).unwrap();
    let answer = run(&mut seq, &model, &tok, &turn1, &greedy(8));
    assert_eq!(answer.len(), 8);
    assert_eq!(seq.tokens().len(), turn1.len() + 7, "the last sampled token is not run");
    let mut turn2 = turn1.clone();
    turn2.extend_from_slice(&answer);
    turn2.extend(tok.encode(" and the standard library", false).unwrap());
    let continued = run(&mut seq, &model, &tok, &turn2, &greedy(8));
    let mut fresh = Sequence::new(&model, 128, KvType::F32).unwrap();
    assert_eq!(continued, run(&mut fresh, &model, &tok, &turn2, &greedy(8)));
}

#[test]
fn generation_stops_on_stop_strings_and_max_tokens() {
    let (model, tok) = load("bitnet-demo.gguf");
    let prompt = tok.encode("The Rust compiler", true).unwrap();
    let mut seq = Sequence::new(&model, 128, KvType::F32).unwrap();
    let text = |seq: &mut Sequence, opts: &GenerateOptions| {
        let mut g = seq.generate(&model, &tok, &prompt, opts).unwrap();
        let s: String = g.by_ref().map(|p| p.unwrap().text).collect();
        (s, g.stop_reason())
    };
    let (full, why) = text(&mut seq, &greedy(24));
    assert_eq!(why, Some(StopReason::MaxTokens));
    // Stop at a word from the middle of the full text: everything before it, nothing after.
    let cut = full.char_indices().map(|(i, _)| i).find(|&i| i > full.len() / 2 && full[i..].starts_with(' ')).unwrap();
    let stop = full[cut..].chars().take(3).collect::<String>();
    let opts = GenerateOptions { stop_strings: vec![stop.clone()], ..greedy(24) };
    let (cut_text, why) = text(&mut seq, &opts);
    assert_eq!(why, Some(StopReason::StopString));
    assert_eq!(cut_text, full[..full.find(&stop).unwrap()]);
    // The context bounds the answer.
    let mut small = Sequence::new(&model, prompt.len() + 3, KvType::F32).unwrap();
    let mut g = small.generate(&model, &tok, &prompt, &greedy(100)).unwrap();
    assert_eq!(g.by_ref().count(), 3);
    assert_eq!(g.stop_reason(), Some(StopReason::ContextFull));
}

#[test]
fn streaming_llama_cpp_vocabularies_never_splits_a_character() {
    // These files' byte-fallback pieces made the stream decoder slice inside a character.
    for name in ["tiny-bitnet-1bitllm-256-llamacpp-tq1_0.gguf", "tiny-bitnet-1bitllm-256-llamacpp-tq2_0.gguf"] {
        let (model, tok) = load(name);
        let prompt = tok.encode("Hello", true).unwrap();
        for seed in 0..4 {
            let opts = GenerateOptions {
                max_tokens: 48,
                ignore_eos: true,
                sampling: SamplingParams { temperature: if seed == 0 { 0.0 } else { 1.5 }, seed, ..Default::default() },
                ..GenerateOptions::default()
            };
            let mut seq = Sequence::new(&model, 64, KvType::F16).unwrap();
            let streamed: String =
                seq.generate(&model, &tok, &prompt, &opts).unwrap().map(|p| p.unwrap().text).collect();
            assert!(!streamed.is_empty(), "{name}");
        }
    }
}

#[test]
fn a_batched_step_equals_each_sequence_run_alone() {
    use bitnet_model::Step;
    let (model, tok) = load("bitnet-demo.gguf");
    let a_prompt = tok.encode("The Rust compiler", true).unwrap();
    let b_prompt = tok.encode("fn main", true).unwrap();
    // Alone.
    let mut a = model.new_cache(64).unwrap();
    let mut b = model.new_cache(64).unwrap();
    model.forward(&a_prompt, &mut a, false).unwrap();
    let want_a = model.forward(&[42, 7], &mut a, true).unwrap();
    let want_b = model.forward(&b_prompt, &mut b, false).unwrap();
    // Together: `a` one step further than `b`, different lengths and logits wanted.
    let (mut a2, mut b2) = (model.new_cache(64).unwrap(), model.new_cache(64).unwrap());
    model.forward(&a_prompt, &mut a2, false).unwrap();
    let got = model
        .forward_batch(&mut [
            Step { tokens: &[42, 7], cache: &mut a2, all_logits: true },
            Step { tokens: &b_prompt, cache: &mut b2, all_logits: false },
        ])
        .unwrap();
    let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-4 * (1.0 + q.abs()));
    assert_eq!((got[0].len(), got[1].len()), (want_a.len(), want_b.len()));
    assert!(close(&got[0], &want_a) && close(&got[1], &want_b));
    assert_eq!((a2.len(), b2.len()), (a.len(), b.len()));
    // A bad step leaves every cache untouched.
    let err = model.forward_batch(&mut [
        Step { tokens: &[1], cache: &mut a2, all_logits: false },
        Step { tokens: &[], cache: &mut b2, all_logits: false },
    ]);
    assert!(err.is_err());
    assert_eq!((a2.len(), b2.len()), (a.len(), b.len()));
}
