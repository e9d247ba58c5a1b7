//! Streaming GGUF writer.
//!
//! Describe the file first (metadata and tensor infos, so offsets are known), then stream each
//! tensor's bytes in the declared order; nothing but the header is held in memory.
//!
//! ```
//! use bitnet_format::{GgufBuilder, TensorType, Gguf};
//! let mut b = GgufBuilder::new();
//! b.metadata_mut().insert("general.architecture", "demo");
//! b.add_tensor("w", TensorType::F32, &[2, 2])?;
//! let mut w = b.start(Vec::new())?;
//! w.write_tensor("w", &[0u8; 16])?;
//! let bytes = w.finish()?;
//! let file = Gguf::parse(bytes)?;
//! assert_eq!(file.tensor("w").unwrap().data, &[0u8; 16]);
//! # Ok::<(), bitnet_format::GgufError>(())
//! ```

use std::collections::HashSet;
use std::io::Write;

use crate::error::{GgufError, Result};
use crate::reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, Metadata};
use crate::types::TensorType;
use crate::value::Value;

/// A tensor declared for writing.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    shape: Vec<u64>,
    ty: TensorType,
    offset: u64,
    size: u64,
}

/// `file` buffered for [`GgufBuilder::start`] in 8 MiB writes: the page cache then holds the new
/// file in large folios, which the kernel maps with 2 MiB pages when a model is loaded from it
/// (small writes leave small folios, and the loader would re-read the file from disk once to get
/// huge pages: see [`crate::pages`]).
pub fn buffered(file: std::fs::File) -> std::io::BufWriter<std::fs::File> {
    std::io::BufWriter::with_capacity(8 << 20, file)
}

/// Collects metadata and tensor descriptions, then starts a [`GgufWriter`].
#[derive(Debug, Clone)]
pub struct GgufBuilder {
    version: u32,
    metadata: Metadata,
    tensors: Vec<Planned>,
    /// Names declared so far (a duplicate check per tensor without a scan of all before it).
    names: HashSet<String>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    /// A GGUF v3 file with default alignment.
    pub fn new() -> GgufBuilder {
        GgufBuilder { version: 3, metadata: Metadata::new(), tensors: Vec::new(), names: HashSet::new() }
    }

    /// Writes version 2 or 3 (identical layouts for little-endian files).
    pub fn version(&mut self, version: u32) -> Result<&mut Self> {
        if !matches!(version, 2 | 3) {
            return Err(GgufError::Writer(format!("cannot write GGUF version {version}; use 2 or 3")));
        }
        self.version = version;
        Ok(self)
    }

    /// The metadata to write, in insertion order. Set `general.alignment` (UINT32) here to change
    /// the alignment.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Copies the metadata of an existing file.
    pub fn with_metadata(&mut self, metadata: Metadata) -> &mut Self {
        self.metadata = metadata;
        self
    }

    fn alignment(&self) -> Result<u64> {
        match self.metadata.get(ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
            Some(other) => Err(GgufError::BadAlignment { value: format!("{other} ({})", other.value_type().name()) }),
        }
    }

    /// Declares a tensor (`shape` fastest dimension first). Tensors are written in declaration order.
    pub fn add_tensor(&mut self, name: impl Into<String>, ty: TensorType, shape: &[u64]) -> Result<&mut Self> {
        let name = name.into();
        if shape.len() > MAX_DIMS as usize {
            return Err(GgufError::TooManyDims { tensor: name, offset: 0, n_dims: shape.len() as u32 });
        }
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor { tensor: name, offset: 0 });
        }
        let size = ty.byte_size(shape).map_err(|reason| GgufError::BadShape {
            tensor: name.clone(),
            offset: 0,
            shape: shape.to_vec(),
            ty: ty.to_string(),
            reason,
        })?;
        self.names.insert(name.clone());
        self.tensors.push(Planned { name, shape: shape.to_vec(), ty, offset: 0, size });
        Ok(self)
    }

    /// Writes the header, metadata and tensor infos to `out` and returns the writer that takes
    /// the tensor data.
    pub fn start<W: Write>(mut self, mut out: W) -> Result<GgufWriter<W>> {
        let alignment = self.alignment()?;
        let mut offset = 0u64;
        for t in &mut self.tensors {
            t.offset = offset;
            offset = offset
                .checked_add(t.size)
                .and_then(|o| o.checked_next_multiple_of(alignment))
                .ok_or_else(|| GgufError::Writer("total tensor data overflows u64".into()))?;
        }

        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&self.version.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_string(&mut head, key);
            head.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut head, value);
        }
        for t in &self.tensors {
            put_string(&mut head, &t.name);
            head.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&t.offset.to_le_bytes());
        }
        let padded = (head.len() as u64).next_multiple_of(alignment) as usize;
        head.resize(padded, 0);
        out.write_all(&head)?;
        Ok(GgufWriter { out, alignment, tensors: self.tensors, next: 0, written: 0 })
    }
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(u8::from(*x)),
        Value::String(s) => put_string(buf, s),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            buf.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
            buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for e in a.values() {
                put_value(buf, e);
            }
        }
    }
}

/// Takes tensor data in declaration order, padding between tensors.
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    out: W,
    alignment: u64,
    tensors: Vec<Planned>,
    next: usize,
    /// Bytes of the current tensor written so far.
    written: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Writes a whole tensor's bytes.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let index = self.next;
        self.write_tensor_chunk(name, data)?;
        if self.next == index {
            let t = &self.tensors[index];
            return Err(GgufError::Writer(format!(
                "tensor {name:?} ({} {:?}) needs {} bytes, got {}",
                t.ty, t.shape, t.size, self.written
            )));
        }
        Ok(())
    }

    /// Writes part of the current tensor's bytes; call repeatedly to stream a large tensor. The
    /// tensor is complete once its declared byte count has been written.
    pub fn write_tensor_chunk(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let Some(t) = self.tensors.get(self.next) else {
            return Err(GgufError::Writer(format!("tensor {name:?} was not declared, or all tensors are written")));
        };
        if t.name != name {
            return Err(GgufError::Writer(format!("expected data for tensor {:?}, got {name:?}", t.name)));
        }
        let after = self.written + data.len() as u64;
        if after > t.size {
            return Err(GgufError::Writer(format!(
                "tensor {name:?} ({} {:?}) needs {} bytes, got at least {after}",
                t.ty, t.shape, t.size
            )));
        }
        self.out.write_all(data)?;
        self.written = after;
        if self.written == t.size {
            let pad = t.size.next_multiple_of(self.alignment) - t.size;
            // The last tensor is padded too, as gguf-py and llama.cpp do.
            self.out.write_all(&vec![0u8; pad as usize])?;
            self.next += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Checks every declared tensor was written, flushes and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(GgufError::Writer(format!("tensor {:?} was declared but its data was not written", t.name)));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a copy of `file` with `metadata` in place of its own (tensors byte for byte, in
/// order): for tools that edit a model's metadata, and the tests and fuzz targets that mutate it.
pub fn rewrite_metadata<D: AsRef<[u8]>, W: Write>(
    file: &crate::reader::Gguf<D>,
    metadata: Metadata,
    out: W,
) -> Result<W> {
    let mut b = GgufBuilder::new();
    b.with_metadata(metadata);
    for t in file.tensors() {
        b.add_tensor(t.name.clone(), t.ty, &t.shape)?;
    }
    let mut w = b.start(out)?;
    for t in file.tensors() {
        w.write_tensor(&t.name, file.tensor_data(t))?;
    }
    w.finish()
}
