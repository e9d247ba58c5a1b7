//! GGUF read and write for ternary LLMs, compatible with llama.cpp and bitnet.cpp.
//!
//! * [`Gguf`] parses GGUF v2/v3 from any byte source; [`GgufFile`] maps a file with `memmap2`
//!   and hands out tensor bytes without copying.
//! * [`GgufBuilder`] / [`GgufWriter`] write files tensor by tensor with correct padding.
//! * [`TensorType`] is the ggml type table, including bitnet.cpp's I2_S, TL1 and TL2 with the
//!   exact byte counts of its llama.cpp fork; [`Dialect`] resolves the type ids that forks disagree on.
//!
//! Every field of a file is validated before use: a truncated or hostile file gives a
//! [`GgufError`] naming the field and its offset, never a panic or an unbounded allocation
//! (metadata takes memory proportional to the file size).
//!
//! ```no_run
//! use bitnet_format::GgufFile;
//! let file = GgufFile::open("model.gguf")?;
//! println!("{:?}", file.metadata().architecture());
//! for t in file.tensors() {
//!     let bytes = file.tensor_data(t);
//!     println!("{} {} {:?} {} bytes", t.name, t.ty, t.shape, bytes.len());
//! }
//! # Ok::<(), bitnet_format::GgufError>(())
//! ```
//!
//! Why our own parser: no crate on crates.io reads bitnet.cpp's type ids correctly (measured:
//! `gguf-rs-lib` rejects id 36, `gguf-rs` maps 36–39 to other types, `ggus` has UB on unknown ids,
//! and the suggested `gguf-rs-lite` does not exist), and ids 36–39 mean different things in
//! different forks, which a fixed enum cannot express. See docs/decisions.md.

pub mod error;
pub mod pages;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use error::{GgufError, Result};
pub use pages::{Pages, WeightBuffer, map_weights};
pub use reader::{
    Gguf, GgufFile, GgufHeader, MAX_MODEL_DIM, Metadata, RawTensorInfo, ReadOptions, TensorInfo, TensorView, map_file,
};
pub use types::{Dialect, Layout, ShapeError, TensorType};
pub use value::{Array, Value, ValueType};
pub use writer::{GgufBuilder, GgufWriter, buffered, rewrite_metadata};
