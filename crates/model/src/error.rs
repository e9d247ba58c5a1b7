//! Typed errors for loading and running models.

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] bitnet_format::GgufError),
    #[error(transparent)]
    Quant(#[from] bitnet_quant::QuantError),
    #[error("unknown architecture {name:?}; supported: {supported}")]
    UnknownArchitecture { name: String, supported: String },
    #[error("metadata key {0} is missing")]
    MissingMetadata(String),
    #[error("bad metadata: {0}")]
    BadMetadata(String),
    #[error("tensor {0} is missing")]
    MissingTensor(String),
    #[error("tensor {name}: {message}")]
    BadTensor { name: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("context full: {needed} tokens do not fit the context of {ctx} (use a larger --ctx-size)")]
    ContextFull { needed: usize, ctx: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("kernel: {0}")]
    Kernel(String),
}

/// Shorthand.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
