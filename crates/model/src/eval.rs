//! Perplexity: how well a model predicts a text.

use crate::error::Result;
use crate::model::{KvType, Model};
use crate::tokenizer::Tokenizer;

/// The result of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood per predicted token).
    pub perplexity: f64,
    /// Tokens predicted.
    pub tokens: usize,
    /// Chunks evaluated.
    pub chunks: usize,
}

/// Scores `ids` in independent chunks of at most `chunk` tokens, each starting with BOS when
/// the model wants one; every token after the first of a chunk is predicted from those before it,
/// through a KV cache of type `kv` (F32 is exact; a smaller type's cost shows here).
/// `progress(done, total, ppl_so_far)` is called after each chunk.
///
/// ```
/// # use bitnet_model::{KvType, LoadOptions, Model, Tokenizer, perplexity};
/// # let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"), LoadOptions::default())?;
/// let tok = Tokenizer::from_metadata(model.metadata())?;
/// let ids = tok.encode("The compiler checks that every reference is valid.", false)?;
/// let r = perplexity(&model, &tok, &ids, 8, KvType::F32, |_done, _total, _so_far| {})?;
/// assert!(r.perplexity.is_finite() && r.perplexity > 1.0);
/// # Ok::<(), bitnet_model::ModelError>(())
/// ```
pub fn perplexity(
    model: &Model,
    tok: &Tokenizer,
    ids: &[u32],
    chunk: usize,
    kv: KvType,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    let bos = if tok.add_bos { tok.bos } else { None };
    let body = chunk.saturating_sub(usize::from(bos.is_some())).max(1);
    let vocab = model.config.vocab_size;
    let n_chunks = ids.len().div_ceil(body);
    let (mut nll, mut count) = (0f64, 0usize);
    for (i, part) in ids.chunks(body).enumerate() {
        let tokens: Vec<u32> = bos.into_iter().chain(part.iter().copied()).collect();
        if tokens.len() >= 2 {
            let mut cache = model.new_cache_of(tokens.len(), kv)?;
            let logits = model.forward(&tokens, &mut cache, true)?;
            for (p, row) in logits.chunks_exact(vocab).take(tokens.len() - 1).enumerate() {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = f64::from(max) + row.iter().map(|&l| f64::from(l - max).exp()).sum::<f64>().ln();
                nll += lse - f64::from(row[tokens[p + 1] as usize]);
                count += 1;
            }
        }
        progress(i + 1, n_chunks, (nll / count.max(1) as f64).exp());
    }
    Ok(Perplexity { perplexity: (nll / count.max(1) as f64).exp(), tokens: count, chunks: n_chunks })
}
