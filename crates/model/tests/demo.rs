//! The trained demo model shipped in fixtures/ (tools/train-tiny): it agrees with transformers,
//! its greedy continuations and held-out perplexity are pinned by snapshots.

mod common;

use std::path::{Path, PathBuf};

use bitnet_model::{LoadOptions, Model, Tokenizer, argmax, perplexity};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

fn demo() -> (Model, Tokenizer) {
    let model = Model::load(fixture("bitnet-demo.gguf"), LoadOptions { threads: 2, ..Default::default() }).unwrap();
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    (model, tok)
}

#[test]
fn demo_model_matches_transformers() {
    let (model, _) = demo();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("bitnet-demo.reference.json")).unwrap()).unwrap();
    common::check_against_reference(&model, &reference, "demo model");
}

#[test]
fn demo_greedy_continuations() {
    let (model, tok) = demo();
    let mut report = String::new();
    for prompt in ["The Rust compiler", "Return a list of", "In this chapter, we"] {
        let mut ids = tok.encode(prompt, true).unwrap();
        let n_prompt = ids.len();
        let mut cache = model.new_cache(128).unwrap();
        let mut logits = model.forward(&ids, &mut cache, false).unwrap();
        for _ in 0..24 {
            let next = argmax(&logits);
            if tok.stop_tokens.contains(&next) {
                break;
            }
            ids.push(next);
            logits = model.forward(&[next], &mut cache, false).unwrap();
        }
        report.push_str(&format!("{prompt} ⟶ {}\n", tok.decode(&ids[n_prompt..], false).unwrap()));
    }
    insta::assert_snapshot!(report);
}

#[test]
fn demo_perplexity_on_held_out_text() {
    let (model, tok) = demo();
    let text = std::fs::read_to_string(fixture("bitnet-demo-heldout.txt")).unwrap();
    // The first 2048 tokens keep the test quick; `bitnet perplexity` reports the whole file.
    let ids = tok.encode(&text, false).unwrap();
    let r =
        perplexity(&model, &tok, &ids[..2048.min(ids.len())], 256, bitnet_model::KvType::F32, |_, _, _| {}).unwrap();
    // One decimal: the SIMD kernels sum in an order that depends on the CPU's vector width
    // (60.953 scalar, 60.939 AVX-512), so more digits would tie the snapshot to one machine.
    insta::assert_snapshot!(format!("perplexity {:.1} over {} tokens in {} chunks", r.perplexity, r.tokens, r.chunks));
}

/// A prompt's norms, activations, residuals and RoPE run split by rows over the threads (and its
/// matmuls by output rows): every thread count gives the same bits, prompt and next token alike.
#[test]
fn thread_counts_agree_bit_for_bit() {
    let text = std::fs::read_to_string(fixture("bitnet-demo-heldout.txt")).unwrap();
    let run = |threads| {
        let model = Model::load(fixture("bitnet-demo.gguf"), LoadOptions { threads, ..Default::default() }).unwrap();
        let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
        let ids = tok.encode(&text, false).unwrap();
        let mut cache = model.new_cache(256).unwrap();
        let mut logits = model.forward(&ids[..100], &mut cache, true).unwrap();
        logits.extend(model.forward(&ids[100..101], &mut cache, false).unwrap());
        logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads differ from one");
    }
}

/// A prompt's attention runs as small matrix products over f32 copies of the cache, one token's
/// straight on the stored cache: the two agree (to rounding) for every cache type, at every
/// position of a 70-token prompt (three blocks of rows, the last one partial).
#[test]
fn a_prompt_in_one_pass_matches_it_token_by_token() {
    let (model, tok) = demo();
    let text = std::fs::read_to_string(fixture("bitnet-demo-heldout.txt")).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    let ids = &ids[..70];
    for ty in [bitnet_model::KvType::F32, bitnet_model::KvType::F16, bitnet_model::KvType::Q8_0] {
        let mut whole = model.new_cache_of(128, ty).unwrap();
        let all = model.forward(ids, &mut whole, true).unwrap();
        let mut steps = model.new_cache_of(128, ty).unwrap();
        let vocab = model.config.vocab_size;
        for (i, &t) in ids.iter().enumerate() {
            let one = model.forward(&[t], &mut steps, false).unwrap();
            let want = &all[i * vocab..(i + 1) * vocab];
            let range = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = one.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            // Rounding differs between the two (sums in another order), and a last-bit change
            // can flip an int8 activation code on a rounding tie downstream: up to ~2% of the
            // logits' range on this model (a wrong mask or key would be far more).
            assert!(worst <= 0.03 * range, "{ty:?} token {i}: logits differ by {worst} (range {range})");
        }
    }
}
