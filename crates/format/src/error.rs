//! Typed errors. Every parse error names the field and the byte offset where it went wrong.

use std::path::PathBuf;

use crate::types::ShapeError;

/// What went wrong reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write failed: {0}")]
    Write(#[from] std::io::Error),
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported GGUF version {version} at offset 4 (this reader handles versions 2 and 3)")]
    UnsupportedVersion { version: u32 },
    #[error("big-endian GGUF files are not supported (version field reads {raw:#010x} at offset 4)")]
    BigEndian { raw: u32 },
    #[error("file truncated: {field} at offset {offset} needs {needed} bytes, only {available} left")]
    Truncated { field: String, offset: u64, needed: u64, available: u64 },
    #[error("{field} at offset {offset} is {count}, more than the {limit} the rest of the file could hold")]
    CountTooLarge { field: String, offset: u64, count: u64, limit: u64 },
    #[error("{field} at offset {offset} is {len} bytes long, more than the limit of {limit}")]
    StringTooLong { field: String, offset: u64, len: u64, limit: u64 },
    #[error("{field} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { field: String, offset: u64 },
    #[error("{field} at offset {offset} has unknown value type {type_id}")]
    UnknownValueType { field: String, offset: u64, type_id: u32 },
    #[error("{field} at offset {offset} is a bool with byte value {value} (must be 0 or 1)")]
    InvalidBool { field: String, offset: u64, value: u8 },
    #[error("{field} at offset {offset}: arrays nested deeper than {limit} levels")]
    NestingTooDeep { field: String, offset: u64, limit: usize },
    #[error("metadata key {key:?} at offset {offset} appears twice")]
    DuplicateKey { key: String, offset: u64 },
    #[error("general.alignment must be a non-zero power of two of type UINT32, got {value}")]
    BadAlignment { value: String },
    #[error("tensor {tensor:?} (info at offset {offset}) has {n_dims} dimensions, at most 4 allowed")]
    TooManyDims { tensor: String, offset: u64, n_dims: u32 },
    #[error("tensor {tensor:?} (info at offset {offset}) has unknown type id {type_id} for the {dialect} dialect")]
    UnknownTensorType { tensor: String, offset: u64, type_id: u32, dialect: &'static str },
    #[error("tensor {tensor:?} (info at offset {offset}) has shape {shape:?} that cannot hold type {ty}: {reason}")]
    BadShape { tensor: String, offset: u64, shape: Vec<u64>, ty: String, reason: ShapeError },
    #[error("tensor {tensor:?} has data offset {data_offset}, not a multiple of the alignment {alignment}")]
    MisalignedTensor { tensor: String, data_offset: u64, alignment: u64 },
    #[error("tensor {tensor:?} data spans file bytes {start}..{end}, past the end of the file ({file_len} bytes)")]
    TensorOutOfBounds { tensor: String, start: u64, end: u64, file_len: u64 },
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    OverlappingTensors { first: String, second: String },
    #[error("tensor name {tensor:?} at offset {offset} appears twice")]
    DuplicateTensor { tensor: String, offset: u64 },
    #[error("writer: {0}")]
    Writer(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
