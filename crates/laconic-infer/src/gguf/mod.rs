//! GGUF v2/v3 reader: metadata, tensor directory, and tensors dequantized to f32.
//!
//! Layout (ggml's `docs/gguf.md`): magic `GGUF`, a u32 version, u64 tensor and metadata
//! counts, the metadata key/value pairs, the tensor infos (name, dims with the contiguous
//! dimension first, type, offset), then the data section aligned to `general.alignment`
//! (32 by default). Every read is bounds-checked so that a truncated file is an error naming
//! the file and what was being read, never a panic.

pub mod quant;
pub mod vocab;
pub mod write;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{InferError, Result};
pub use quant::GgmlType;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U64(v) => Some(v),
            Self::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F64(v) => Some(v),
            Self::U64(v) => Some(v as f64),
            Self::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: the contiguous dimension first.
    pub dims: Vec<usize>,
    /// Storage type.
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: usize,
}

impl GgufTensorInfo {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Dimensions in row-major (PyTorch) order: the contiguous dimension last.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: HashMap<String, GgufValue>,
    /// Tensor directory, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    index: HashMap<String, usize>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(InferError::format(
                self.path,
                format!(
                    "truncated: needed {n} bytes for {what} at offset {}, file has {}",
                    self.pos,
                    self.bytes.len()
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn len(&mut self, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        // A length can never exceed what is left of the file; reject it before allocating.
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(InferError::format(
                self.path,
                format!(
                    "{what}: length {n} at offset {} runs past the end of the file",
                    self.pos
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| InferError::format(self.path, format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, what: &str) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U64(self.array::<1>(what)?[0] as u64),
            1 => GgufValue::I64(self.array::<1>(what)?[0] as i8 as i64),
            2 => GgufValue::U64(u16::from_le_bytes(self.array(what)?) as u64),
            3 => GgufValue::I64(i16::from_le_bytes(self.array(what)?) as i64),
            4 => GgufValue::U64(self.u32(what)? as u64),
            5 => GgufValue::I64(i32::from_le_bytes(self.array(what)?) as i64),
            6 => GgufValue::F64(f32::from_le_bytes(self.array(what)?) as f64),
            7 => GgufValue::Bool(self.array::<1>(what)?[0] != 0),
            8 => GgufValue::Str(self.string(what)?),
            9 => {
                let item_ty = self.u32(what)?;
                let n = self.len(what)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(item_ty, what)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(InferError::format(
                    self.path,
                    format!("{what}: unknown metadata value type {other}"),
                ));
            }
        })
    }
}

impl GgufFile {
    /// Opens and parses a GGUF file; tensor data stays memory-mapped until asked for.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| InferError::io(path, e))?;
        // SAFETY: the map is read-only; laconic never writes to a model file while it runs.
        // As with every mmap, a file truncated by another process meanwhile would fault.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| InferError::io(path, e))?;
        let mut r = Reader {
            bytes: &mmap,
            pos: 0,
            path,
        };
        let magic = r.take(4, "the magic number").map_err(|_| {
            InferError::format(path, "not a GGUF file: shorter than the 4-byte magic")
        })?;
        if magic != b"GGUF" {
            return Err(InferError::format(
                path,
                format!("not a GGUF file: magic is {magic:?}, expected \"GGUF\""),
            ));
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(InferError::format(
                path,
                format!("GGUF version {version} is not supported (2 and 3 are)"),
            ));
        }
        let n_tensors = r.u64("the tensor count")? as usize;
        let n_kv = r.u64("the metadata count")? as usize;
        let mut metadata = HashMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key #{i}"))?;
            let ty = r.u32(&format!("the type of metadata '{key}'"))?;
            let value = r.value(ty, &format!("metadata '{key}'"))?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16));
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor #{i}"))?;
            let n_dims = r.u32(&format!("the rank of tensor '{name}'"))? as usize;
            if n_dims > 4 {
                return Err(InferError::format(
                    path,
                    format!("tensor '{name}' has {n_dims} dimensions (at most 4 allowed)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64(&format!("the dims of tensor '{name}'"))? as usize);
            }
            let ty = GgmlType::from_id(r.u32(&format!("the type of tensor '{name}'"))?);
            let offset = r.u64(&format!("the offset of tensor '{name}'"))? as usize;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .unwrap_or(32) as usize;
        if alignment == 0 {
            return Err(InferError::format(path, "general.alignment is 0"));
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let file = Self {
            path: path.to_path_buf(),
            mmap,
            version,
            metadata,
            tensors,
            index,
            data_start,
        };
        file.check_extents()?;
        Ok(file)
    }

    /// Checks that every readable tensor lies inside the file (catches truncation up front).
    fn check_extents(&self) -> Result<()> {
        for t in &self.tensors {
            let Some(size) = t.ty.byte_size(t.numel()) else {
                continue; // unsupported types are reported when the tensor is read
            };
            let end = self.data_start + t.offset + size;
            if end > self.mmap.len() {
                return Err(InferError::format(
                    &self.path,
                    format!(
                        "truncated: tensor '{}' ({} values of {}) ends at byte {end}, but the file has {} bytes",
                        t.name,
                        t.numel(),
                        t.ty.name(),
                        self.mmap.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A tensor's directory entry.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor, as stored.
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let size = info
            .ty
            .byte_size(info.numel())
            .ok_or_else(|| self.unsupported(info))?;
        let start = self.data_start + info.offset;
        self.mmap.get(start..start + size).ok_or_else(|| {
            InferError::format(
                &self.path,
                format!("truncated: tensor '{}' runs past the end", info.name),
            )
        })
    }

    fn unsupported(&self, info: &GgufTensorInfo) -> InferError {
        InferError::UnsupportedDType {
            path: self.path.clone(),
            name: info.name.clone(),
            dtype: format!(
                "{} (laconic reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
                info.ty.name()
            ),
        }
    }

    /// A tensor dequantized to f32, with its row-major shape. `None` if the name is absent.
    pub fn tensor_f32(&self, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Some(info) = self.tensor_info(name) else {
            return Ok(None);
        };
        let bytes = self.tensor_bytes(info)?;
        let mut out = Vec::with_capacity(info.numel());
        if !quant::dequantize_into(info.ty, bytes, &mut out) {
            return Err(self.unsupported(info));
        }
        Ok(Some((out, info.shape())))
    }
}
