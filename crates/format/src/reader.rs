//! GGUF v2/v3 reader: parses the header, metadata and tensor infos, validates every field, and
//! hands out zero-copy views of tensor data.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::pages::{Pages, map_weights};
use crate::types::{Dialect, TensorType};
use crate::value::{Array, Value, ValueType};

/// The four magic bytes at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Longest metadata key accepted (the GGUF spec's limit).
pub const MAX_KEY_LEN: u64 = 65_535;
/// Longest tensor name accepted (ggml itself allows 63 bytes; we allow some slack).
pub const MAX_TENSOR_NAME_LEN: u64 = 256;
/// Deepest array nesting accepted (real files use 1; deep nesting would only exhaust the stack).
pub const MAX_NESTING: usize = 8;
/// Largest model size (hidden, heads, layers' inputs, vocabulary, context …) the converter writes
/// and the loader accepts: 2²⁸, orders of magnitude above any real model, small enough that it fits
/// the 32-bit GGUF fields and two sizes multiply without overflow.
pub const MAX_MODEL_DIM: u64 = 1 << 28;

/// Most dimensions a tensor may have (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;

/// Options for parsing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Interpret tensor type ids in this dialect instead of detecting it from the file.
    pub dialect: Option<Dialect>,
}

/// One tensor's description from the file's tensor-info section.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, fastest-varying first (ggml's `ne` order; a row-major `[rows, cols]` matrix is
    /// `[cols, rows]` here).
    pub shape: Vec<u64>,
    /// The resolved type.
    pub ty: TensorType,
    /// Offset of the tensor's data from the start of the data section.
    pub offset: u64,
    /// Bytes of data, as ggml computes them for this type and shape.
    pub size: u64,
    /// File offset at which this tensor's info record starts (for error messages).
    pub info_offset: u64,
}

impl TensorInfo {
    /// The number of elements.
    pub fn numel(&self) -> u64 {
        // Cannot overflow: the reader checked the byte size, which bounds the element count.
        self.shape.iter().product()
    }
}

/// Metadata key/value pairs in file order, with lookup by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// An empty set.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Inserts or replaces a key (a new key goes last; a replaced key keeps its place).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Removes a key, keeping the order of the others; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, value) = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(value)
    }

    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// An integer value of any width, as u64.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// A float or integer value, as f64.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `general.architecture`, if present.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
}

/// A parsed GGUF file over some byte source (a memory map, a `Vec<u8>`, a slice).
#[derive(Debug)]
pub struct Gguf<D> {
    data: D,
    version: u32,
    alignment: u64,
    data_offset: u64,
    dialect: Dialect,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

/// A GGUF file mapped into memory.
pub type GgufFile = Gguf<memmap2::Mmap>;

/// A tensor's description together with its bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl Gguf<memmap2::Mmap> {
    /// Maps a file and parses it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        Self::open_with(path, ReadOptions::default())
    }

    /// Maps a file and parses it with options.
    pub fn open_with(path: impl AsRef<Path>, options: ReadOptions) -> Result<GgufFile> {
        Gguf::parse_with(map_gguf(path.as_ref())?, options)
    }

    /// Maps a model file for streaming its weights, with 2 MiB pages where the system allows and
    /// read in (see [`crate::pages`]; this may re-read the file from disk once), and parses it.
    pub fn open_weights(path: impl AsRef<Path>, options: ReadOptions) -> Result<(GgufFile, Pages)> {
        let path = path.as_ref();
        let file = open_regular(path)?;
        let (map, pages) = map_weights(&file).map_err(|source| GgufError::Io { path: path.to_owned(), source })?;
        Ok((Gguf::parse_with(map, options)?, pages))
    }
}

impl Gguf<memmap2::Mmap> {
    /// Gives back this process's pages of `range` (bytes of the mapped file) wholly inside it:
    /// for weights repacked at load, whose file bytes are not read again, so that resident
    /// memory holds the repacked bytes instead of both. Reading the range later is still correct
    /// (the same file bytes fault back in); the page cache keeps them for the next load. A no-op
    /// off Linux.
    pub fn release_pages(&self, range: std::ops::Range<usize>) {
        #[cfg(target_os = "linux")]
        {
            let page = rustix::param::page_size();
            let (start, end) = (range.start.next_multiple_of(page), range.end.min(self.data.len()) / page * page);
            if start < end {
                // SAFETY: MADV_DONTNEED on a read-only file mapping only drops this process's
                // page-table entries: the next access maps the same file bytes again (the map is
                // never written through; a truncated or rewritten file is `map_file`'s caveat,
                // unchanged). Nothing any reference into the map reads can differ.
                let _ =
                    unsafe { self.data.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = range;
    }
}

/// Maps a file that should be a GGUF file, with errors naming the path.
fn map_gguf(path: &Path) -> Result<memmap2::Mmap> {
    map_file(&open_regular(path)?).map_err(|source| GgufError::Io { path: path.to_owned(), source })
}

/// Opens a file that should be a GGUF file, with errors naming the path.
fn open_regular(path: &Path) -> Result<std::fs::File> {
    let io = |source| GgufError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    // mmap of a directory or device fails with a cryptic "No such device": say what it is.
    let ty = file.metadata().map_err(io)?.file_type();
    if !ty.is_file() {
        let what = if ty.is_dir() { "a directory" } else { "not a regular file" };
        return Err(io(std::io::Error::other(format!("it is {what}, not a GGUF file"))));
    }
    Ok(file)
}

/// A read-only memory map of a whole file: the workspace's one mmap, so that the crates reading
/// model files (GGUF here, safetensors checkpoints in the converter) need no unsafe code.
pub fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and private to this process. Another process truncating or
    // rewriting the file while it is mapped is outside what any mmap-based reader can defend
    // against (llama.cpp has the same contract); we never write through the map.
    unsafe { memmap2::Mmap::map(file) }
}

impl<D: AsRef<[u8]>> Gguf<D> {
    /// Parses and validates a GGUF image, detecting the type-id dialect.
    pub fn parse(data: D) -> Result<Self> {
        Self::parse_with(data, ReadOptions::default())
    }

    /// Parses and validates a GGUF image.
    pub fn parse_with(data: D, options: ReadOptions) -> Result<Self> {
        let bytes = data.as_ref();
        let GgufHeader { version, alignment, data_offset, metadata, tensors: raw, file_len } =
            GgufHeader::parse(bytes)?;
        let mut by_name = HashMap::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            by_name.insert(r.name.clone(), i);
        }

        let dialect = options.dialect.unwrap_or_else(|| {
            let ids: Vec<u32> = raw.iter().map(|r| r.type_id).collect();
            Dialect::detect(metadata.architecture(), metadata.get_u64("general.file_type"), &ids)
        });

        let mut tensors = Vec::with_capacity(raw.len());
        for r in raw {
            let ty = TensorType::from_file_id(r.type_id, dialect).ok_or_else(|| GgufError::UnknownTensorType {
                tensor: r.name.clone(),
                offset: r.info_offset,
                type_id: r.type_id,
                dialect: dialect_name(dialect),
            })?;
            let size = ty.byte_size(&r.shape).map_err(|reason| GgufError::BadShape {
                tensor: r.name.clone(),
                offset: r.info_offset,
                shape: r.shape.clone(),
                ty: ty.to_string(),
                reason,
            })?;
            if r.offset % alignment != 0 {
                return Err(GgufError::MisalignedTensor { tensor: r.name, data_offset: r.offset, alignment });
            }
            let start = data_offset.checked_add(r.offset);
            let end = start.and_then(|s| s.checked_add(size));
            match (start, end) {
                (Some(_), Some(end)) if end <= file_len => {}
                _ => {
                    return Err(GgufError::TensorOutOfBounds {
                        tensor: r.name,
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    });
                }
            }
            tensors.push(TensorInfo {
                name: r.name,
                shape: r.shape,
                ty,
                offset: r.offset,
                size,
                info_offset: r.info_offset,
            });
        }

        let mut order: Vec<usize> = (0..tensors.len()).filter(|&i| tensors[i].size > 0).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for pair in order.windows(2) {
            let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
            if a.offset + a.size > b.offset {
                return Err(GgufError::OverlappingTensors { first: a.name.clone(), second: b.name.clone() });
            }
        }

        Ok(Gguf { data, version, alignment, data_offset, dialect, metadata, tensors, by_name })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of each tensor.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The dialect the tensor type ids were read in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The whole file image.
    pub fn bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// A tensor's info by name.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's info and bytes by name.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor_info(name).map(|info| TensorView { info, data: self.tensor_data(info) })
    }

    /// The bytes of a tensor of this file (zero copy).
    ///
    /// # Panics
    /// If `info` does not come from this file and lies outside it.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        // In range: checked against the file length while parsing.
        let start = (self.data_offset + info.offset) as usize;
        &self.data.as_ref()[start..start + info.size as usize]
    }
}

/// A tensor-info record as the file stores it, its type id not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Dimensions, fastest-varying first.
    pub shape: Vec<u64>,
    /// The raw type id (meaning depends on the [`Dialect`]; may be one this crate does not know).
    pub type_id: u32,
    /// Offset of the tensor's data from the start of the data section.
    pub offset: u64,
    /// File offset at which this tensor's info record starts.
    pub info_offset: u64,
}

/// A GGUF file's header (version, metadata, tensor table) parsed and validated without
/// resolving tensor types: what tools need to look at files of types this crate cannot size or
/// run (ik_llama.cpp's IQ2_BN, a future ggml type). [`Gguf`] is built on it.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// Alignment of the data section and of each tensor.
    pub alignment: u64,
    /// File offset where the data section starts.
    pub data_offset: u64,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor infos in file order (names unique, at most [`MAX_DIMS`] dimensions).
    pub tensors: Vec<RawTensorInfo>,
    /// Length of the whole file image.
    pub file_len: u64,
}

impl GgufHeader {
    /// Parses the header of a whole file image.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader> {
        let mut cur = Cursor { bytes, pos: 0 };

        let magic = cur.take(4, "magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic { found: magic.to_vec() });
        }
        let version = cur.u32("version")?;
        match version {
            2 | 3 => {}
            v if matches!(v.swap_bytes(), 1..=3) => return Err(GgufError::BigEndian { raw: v }),
            v => return Err(GgufError::UnsupportedVersion { version: v }),
        }
        let count_at = cur.pos;
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.u64("metadata count")?;
        // Bound both counts by what the rest of the file could hold before allocating.
        cur.check_count(n_kv, 13, "metadata count", count_at + 8)?;
        cur.check_count(n_tensors, 24, "tensor count", count_at)?;

        let mut metadata = Metadata::new();
        for i in 0..n_kv {
            let key_at = cur.pos as u64;
            let key = cur.string(&format!("metadata[{i}] key"), MAX_KEY_LEN)?;
            if metadata.get(&key).is_some() {
                return Err(GgufError::DuplicateKey { key, offset: key_at });
            }
            let field = format!("metadata {key:?} value");
            let type_at = cur.pos as u64;
            let type_id = cur.u32(&field)?;
            let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                field: field.clone(),
                offset: type_at,
                type_id,
            })?;
            let value = cur.value(ty, &field, 0)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get(ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(other) => {
                return Err(GgufError::BadAlignment { value: format!("{other} ({})", other.value_type().name()) });
            }
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let at = cur.pos as u64;
            let name = cur.string(&format!("tensor[{i}] name"), MAX_TENSOR_NAME_LEN)?;
            if !names.insert(name.clone()) {
                return Err(GgufError::DuplicateTensor { tensor: name, offset: at });
            }
            let field = format!("tensor {name:?}");
            let n_dims = cur.u32(&format!("{field} dimension count"))?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { tensor: name, offset: at, n_dims });
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                shape.push(cur.u64(&format!("{field} dimension {d}"))?);
            }
            let type_id = cur.u32(&format!("{field} type"))?;
            let offset = cur.u64(&format!("{field} data offset"))?;
            tensors.push(RawTensorInfo { name, shape, type_id, offset, info_offset: at });
        }
        let data_offset = (cur.pos as u64).next_multiple_of(alignment);
        Ok(GgufHeader { version, alignment, data_offset, metadata, tensors, file_len: bytes.len() as u64 })
    }

    /// Maps a file and parses its header (only the header's pages are read).
    pub fn read(path: impl AsRef<Path>) -> Result<GgufHeader> {
        GgufHeader::parse(&map_gguf(path.as_ref())?)
    }

    /// For each tensor in file order, the bytes from its data to the next tensor's data (the
    /// last one's to the end of the file): its size plus alignment padding, known even for
    /// types this crate cannot size. Fails when a tensor starts past the end of the file.
    pub fn extents(&self) -> Result<Vec<u64>> {
        let file_len = self.file_len;
        let mut starts: Vec<u64> = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            match self.data_offset.checked_add(t.offset) {
                Some(s) if s <= file_len => starts.push(s),
                start => {
                    return Err(GgufError::TensorOutOfBounds {
                        tensor: t.name.clone(),
                        start: start.unwrap_or(u64::MAX),
                        end: start.unwrap_or(u64::MAX),
                        file_len,
                    });
                }
            }
        }
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        Ok(starts
            .iter()
            .map(|&s| {
                let i = sorted.partition_point(|&o| o <= s);
                sorted.get(i).copied().unwrap_or(file_len) - s
            })
            .collect())
    }
}

pub(crate) fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Upstream => "upstream llama.cpp",
        Dialect::BitnetFork => "bitnet.cpp",
    }
}

/// A bounds-checked little-endian reader over the file image.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                field: field.to_owned(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, field)?);
        Ok(out)
    }

    fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Fails when `count` items of at least `min_size` bytes each cannot fit in the rest of the file.
    fn check_count(&self, count: u64, min_size: u64, field: &str, offset: usize) -> Result<()> {
        let limit = self.remaining() / min_size;
        if count > limit {
            return Err(GgufError::CountTooLarge { field: field.to_owned(), offset: offset as u64, count, limit });
        }
        Ok(())
    }

    fn string(&mut self, field: &str, max_len: u64) -> Result<String> {
        let at = self.pos as u64;
        let len = self.u64(field)?;
        if len > max_len {
            return Err(GgufError::StringTooLong { field: field.to_owned(), offset: at, len, limit: max_len });
        }
        let raw = self.take(len, field)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 { field: field.to_owned(), offset: at + 8 }),
        }
    }

    fn value(&mut self, ty: ValueType, field: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(field)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(field)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            ValueType::U32 => Value::U32(self.u32(field)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            ValueType::U64 => Value::U64(self.u64(field)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            ValueType::Bool => {
                let at = self.pos as u64;
                match self.array::<1>(field)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    value => return Err(GgufError::InvalidBool { field: field.to_owned(), offset: at, value }),
                }
            }
            ValueType::String => Value::String(self.string(field, u64::MAX)?),
            ValueType::Array => {
                let at = self.pos as u64;
                if depth >= MAX_NESTING {
                    return Err(GgufError::NestingTooDeep { field: field.to_owned(), offset: at, limit: MAX_NESTING });
                }
                let type_id = self.u32(field)?;
                let elem = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                    field: field.to_owned(),
                    offset: at,
                    type_id,
                })?;
                let count_at = self.pos;
                let count = self.u64(field)?;
                self.check_count(count, elem.min_encoded_size(), &format!("{field} array length"), count_at)?;
                let mut values = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    values.push(self.value(elem, field, depth + 1)?);
                }
                Value::Array(Array::new_unchecked(elem, values))
            }
        })
    }
}
