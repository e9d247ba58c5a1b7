//! BitNet b1.58 and ternary Llama/Falcon3 models: load a GGUF file, run the forward pass with a
//! KV cache, tokenize, sample.
//!
//! ```
//! use bitnet_model::{Model, LoadOptions, Tokenizer, Sampler, SamplingParams};
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/bitnet-demo.gguf");
//! let model = Model::load(path, LoadOptions::default())?;
//! let tok = Tokenizer::from_metadata(model.metadata())?;
//! let mut cache = model.new_cache(512)?;
//! let mut ids = tok.encode("The capital of France is", true)?;
//! let mut sampler = Sampler::new(SamplingParams::default());
//! let mut logits = model.forward(&ids, &mut cache, false)?;
//! for _ in 0..16 {
//!     let next = sampler.sample(&logits, &ids);
//!     ids.push(next);
//!     logits = model.forward(&[next], &mut cache, false)?;
//! }
//! println!("{}", tok.decode(&ids, false)?);
//! # Ok::<(), bitnet_model::ModelError>(())
//! ```

#![forbid(unsafe_code)]

pub mod chat;
pub mod config;
pub mod embed;
pub mod error;
pub mod eval;
pub mod generate;
pub mod model;
mod ops;
pub mod profile;
pub mod sampling;
mod scratch;
mod threads;
pub mod tokenizer;
mod weights;

pub use chat::{ChatTemplate, Message};
pub use config::{Activation, Config, Pooling, RopeStyle};
pub use embed::{EmbedOptions, Embeddings, embed_texts};
pub use error::{ModelError, Result};
pub use eval::{Perplexity, perplexity};
pub use generate::{Decoder, GenerateOptions, Generation, Piece, Sequence, StopReason};
pub use model::{KvCache, KvType, LoadOptions, Model, Repacked, Step};
pub use sampling::{Sampler, SamplingParams, argmax};
pub use threads::{MAX_THREADS, physical_cores};
pub use tokenizer::{StreamDecoder, Tokenizer};
