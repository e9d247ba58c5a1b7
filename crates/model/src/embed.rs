//! Text embeddings: tokenize, batch by tokens, run [`Model::embed`], for `bitnet embed` and the
//! server's `/v1/embeddings`.

use crate::config::Pooling;
use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// How to embed.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// The pooling (`None`: the one the model file declares).
    pub pooling: Option<Pooling>,
    /// Scale every vector to unit length (L2), as the embedding models expect.
    pub normalize: bool,
    /// Cut texts longer than the context (keeping the EOS the tokenizer appends) instead of
    /// refusing them.
    pub truncate: bool,
    /// Most tokens run in one pass (texts are grouped up to this; a longer text runs alone).
    pub batch_tokens: usize,
    /// Longest text in tokens (`None`: the model's training context).
    pub ctx: Option<usize>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { pooling: None, normalize: true, truncate: false, batch_tokens: 2048, ctx: None }
    }
}

/// What [`embed_texts`] returns.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// One vector per text, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens each text ran as (after truncation).
    pub tokens: Vec<usize>,
    /// The pooling used.
    pub pooling: Pooling,
    /// Texts that were truncated.
    pub truncated: usize,
}

/// The pooling to use: the requested one, else the model's; an error naming the choices when a
/// (generative) model declares none.
pub fn pooling_for(model: &Model, requested: Option<Pooling>) -> Result<Pooling> {
    requested.or(model.config.pooling).ok_or_else(|| {
        ModelError::Invalid(format!(
            "{} model declares no pooling (it is not an embedding model): choose one (mean, cls or last)",
            model.config.architecture
        ))
    })
}

/// Qwen3-Embedding's query format: `Instruct: {task}\nQuery: {text}` (documents go without).
pub fn with_instruction(instruction: &str, text: &str) -> String {
    format!("Instruct: {instruction}\nQuery: {text}")
}

/// Embeds `texts`: each tokenized as the model's tokenizer does for embedding (BOS / EOS where it
/// adds them), checked against the context, grouped into passes of at most
/// `opts.batch_tokens` tokens; `progress(done, total)` after each pass.
///
/// ```
/// # use bitnet_model::{LoadOptions, Model, Pooling, Tokenizer};
/// # use bitnet_model::embed::{EmbedOptions, embed_texts};
/// # let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf"), LoadOptions::default())?;
/// let tok = Tokenizer::from_metadata(model.metadata())?;
/// let opts = EmbedOptions { pooling: Some(Pooling::Mean), ..Default::default() };
/// let e = embed_texts(&model, &tok, &["a cat", "a dog"], &opts, &mut |_, _| {})?;
/// assert_eq!(e.vectors.len(), 2);
/// # Ok::<(), bitnet_model::ModelError>(())
/// ```
pub fn embed_texts(
    model: &Model,
    tok: &Tokenizer,
    texts: &[&str],
    opts: &EmbedOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Embeddings> {
    let pooling = pooling_for(model, opts.pooling)?;
    let ctx = opts.ctx.unwrap_or(model.config.context_length).min(model.config.context_length);
    let mut truncated = 0;
    let mut ids = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let mut t = tok.encode_for_embedding(text)?;
        if t.is_empty() {
            return Err(ModelError::Invalid(format!("input {i} is empty (no tokens)")));
        }
        if t.len() > ctx {
            if !opts.truncate {
                return Err(ModelError::Invalid(format!(
                    "input {i} is {} tokens long, longer than the context of {ctx} tokens",
                    t.len()
                )));
            }
            let last = *t.last().expect("not empty");
            t.truncate(ctx);
            // Last-token pooling reads the appended EOS: keep it last.
            if tok.add_eos && Some(last) == tok.eos {
                t[ctx - 1] = last;
            }
            truncated += 1;
        }
        ids.push(t);
    }
    let mut vectors = Vec::with_capacity(texts.len());
    let mut start = 0;
    while start < ids.len() {
        let mut end = start + 1;
        let mut tokens = ids[start].len();
        while end < ids.len() && tokens + ids[end].len() <= opts.batch_tokens.max(1) {
            tokens += ids[end].len();
            end += 1;
        }
        let batch: Vec<&[u32]> = ids[start..end].iter().map(Vec::as_slice).collect();
        vectors.extend(model.embed(&batch, pooling, opts.normalize)?);
        start = end;
        progress(start, ids.len());
    }
    Ok(Embeddings { vectors, tokens: ids.iter().map(Vec::len).collect(), pooling, truncated })
}

/// Cosine similarity of two vectors (computed in f64).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}
