//! Quantized KV caches (q8_0, q4_0) on the demo model: logits near the exact f32 cache's, every
//! kernel set like the scalar set, long prompts' blocked attention like row by row, and a clear
//! error where a model's heads are not whole blocks.

use std::path::{Path, PathBuf};

use bitnet_kernels::Kernels;
use bitnet_model::{KvType, LoadOptions, Model, Tokenizer, argmax};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

fn load(kernels: Kernels) -> Model {
    Model::load(fixture("bitnet-demo.gguf"), LoadOptions { threads: 2, kernels: Some(kernels) }).unwrap()
}

/// `n` tokens of real text (so attention has something to attend to).
fn text_tokens(model: &Model, n: usize) -> Vec<u32> {
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    let text = std::fs::read_to_string(fixture("bitnet-demo-heldout.txt")).unwrap();
    let ids = tok.encode(&text, true).unwrap();
    assert!(ids.len() >= n, "{} tokens", ids.len());
    ids[..n].to_vec()
}

/// Every position's logits of `tokens` through a `kv` cache, then 8 greedy tokens after them.
fn run(model: &Model, tokens: &[u32], kv: KvType) -> (Vec<f32>, Vec<u32>) {
    let mut cache = model.new_cache_of(tokens.len() + 8, kv).unwrap();
    let logits = model.forward(tokens, &mut cache, true).unwrap();
    let vocab = model.config.vocab_size;
    let mut next = argmax(&logits[logits.len() - vocab..]);
    let mut greedy = vec![next];
    for _ in 1..8 {
        next = argmax(&model.forward(&[next], &mut cache, false).unwrap());
        greedy.push(next);
    }
    (logits, greedy)
}

/// The largest difference of any position's logits, as a fraction of that position's range.
fn worst(got: &[f32], want: &[f32], vocab: usize) -> f32 {
    got.chunks(vocab)
        .zip(want.chunks(vocab))
        .map(|(g, w)| {
            let range = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / range
        })
        .fold(0f32, f32::max)
}

/// The demo model's perplexity on held-out text (2048 tokens in chunks of 512, long enough for
/// the blocked attention path) through each cache type, against the exact f32 cache's: q8_0
/// costs less than 0.1% (0.005% measured), q4_0 about 1% (0.9% on the whole file). Reading a
/// wrong block or scale costs far more.
#[test]
fn quantized_caches_cost_little_perplexity() {
    let model = load(Kernels::best());
    let tok = Tokenizer::from_metadata(model.metadata()).unwrap();
    let text = std::fs::read_to_string(fixture("bitnet-demo-heldout.txt")).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    let ppl = |kv| bitnet_model::perplexity(&model, &tok, &ids[..2048], 512, kv, |_, _, _| {}).unwrap().perplexity;
    let exact = ppl(KvType::F32);
    for (kv, tol) in [(KvType::F16, 0.001), (KvType::Q8_0, 0.001), (KvType::Q4_0, 0.02)] {
        let cost = ppl(kv) / exact - 1.0;
        eprintln!("{kv}: perplexity {:+.3}% against the f32 cache's {exact:.3}", 100.0 * cost);
        assert!(cost.abs() <= tol, "{kv}: perplexity {:+.3}% against the f32 cache's", 100.0 * cost);
    }
}

/// 300 tokens and 8 generated after them: logits stay near the exact cache's. This tiny model's
/// int8 activations flip rounding ties on any change (f16 moves them by ~2% of their range), so
/// the bounds are loose; a wrong key or value moves them by several times more.
#[test]
fn quantized_caches_stay_near_the_exact_one() {
    let model = load(Kernels::best());
    let tokens = text_tokens(&model, 300);
    let vocab = model.config.vocab_size;
    let (exact, _) = run(&model, &tokens, KvType::F32);
    for (kv, tol) in [(KvType::F16, 0.05), (KvType::Q8_0, 0.05), (KvType::Q4_0, 0.4)] {
        let (logits, _) = run(&model, &tokens, kv);
        let d = worst(&logits, &exact, vocab);
        eprintln!("{kv}: logits within {d:.4} of each position's range of the f32 cache's");
        assert!(d <= tol, "{kv}: logits differ from the f32 cache's by {d} of their range");
    }
}

/// The SIMD sets read quantized caches like the scalar reference (the conformance tests check
/// the kernels themselves; here the summation order differs, which flips a few int8 rounding
/// ties over 300 tokens), through the prompt's blocked attention and single-token decoding.
#[test]
fn every_kernel_set_reads_quantized_caches_like_the_scalar_set() {
    let reference = load(Kernels::scalar());
    let tokens = text_tokens(&reference, 300);
    let vocab = reference.config.vocab_size;
    for kv in [KvType::Q8_0, KvType::Q4_0] {
        let (want, _) = run(&reference, &tokens, kv);
        for set in Kernels::available().into_iter().filter(|s| s.name() != "scalar") {
            let name = set.name();
            let (got, _) = run(&load(set), &tokens, kv);
            let d = worst(&got, &want, vocab);
            assert!(d <= 0.05, "{name} {kv}: logits differ from the scalar set's by {d} of their range");
            eprintln!("tested: {name} with a {kv} cache (logits within {d:.4} of the range)");
        }
    }
}

/// A prompt in one forward (blocks of query rows × keys) and in chunks of 16 (row by row).
#[test]
fn blocked_attention_over_quantized_caches_matches_row_by_row() {
    let model = load(Kernels::best());
    let tokens = text_tokens(&model, 400);
    for kv in [KvType::Q8_0, KvType::Q4_0] {
        let mut whole = model.new_cache_of(400, kv).unwrap();
        let a = model.forward(&tokens, &mut whole, false).unwrap();
        let mut rows = model.new_cache_of(400, kv).unwrap();
        let mut b = Vec::new();
        for chunk in tokens.chunks(16) {
            b = model.forward(chunk, &mut rows, false).unwrap();
        }
        let d = worst(&b, &a, model.config.vocab_size);
        assert!(d <= 0.05, "{kv}: blocked and row-by-row differ by {d} of the range");
    }
}

#[test]
fn heads_that_are_not_whole_blocks_cannot_have_a_quantized_cache() {
    let model = Model::load(fixture("tiny-bitnet-b1.58.gguf"), LoadOptions::default()).unwrap();
    assert_eq!(model.config.head_dim, 16);
    for kv in [KvType::Q8_0, KvType::Q4_0] {
        let err = model.new_cache_of(8, kv).unwrap_err().to_string();
        assert!(err.contains(&kv.to_string()) && err.contains("blocks of 32") && err.contains("16"), "{err}");
    }
    assert!(model.new_cache_of(8, KvType::F16).is_ok());
}

#[test]
fn bytes_per_token_follow_the_type() {
    let model = load(Kernels::scalar());
    let f16 = model.kv_bytes_per_token(KvType::F16);
    assert_eq!(model.kv_bytes_per_token(KvType::F32), 2 * f16);
    assert_eq!(model.kv_bytes_per_token(KvType::Q8_0) * 32, f16 * 17);
    assert_eq!(model.kv_bytes_per_token(KvType::Q4_0) * 32, f16 * 9);
}
