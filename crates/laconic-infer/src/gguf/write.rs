//! GGUF v3 writer: typed metadata, F32 tensors, and `Q8_0`/`Q4_0` blocks quantized exactly as
//! gguf-py 0.19 (and ggml's reference `quantize_row_*_ref`) quantize them.
//!
//! Layout, as the reader in this module's parent expects and as gguf-py writes it: the magic
//! `GGUF`, version 3, the tensor and metadata counts (u64), the key/value pairs in the order
//! they were added (`general.architecture` first), the tensor infos (name, rank, dims with the
//! contiguous dimension first, type, offset from the start of the data section), zero padding
//! to the alignment (32), then every tensor's bytes, each padded to the alignment.
//!
//! Metadata values carry their GGUF type ([`MetaValue`]): llama.cpp checks types when it reads
//! hyper-parameters (`block_count` must be a u32, `layer_norm_rms_epsilon` an f32, ...), so the
//! caller picks the types llama.cpp's converter writes.
//!
//! Tensor data is asked for one tensor at a time while the file is written, so that peak
//! memory holds one converted tensor, not the whole model twice. The file is written to
//! `PATH.tmp`, synced, and renamed over `PATH`: a kill leaves no half-written model behind.
//!
//! Tests: `laconic-train`'s `tests/export.rs` checks hand-made blocks, a round trip through
//! [`super::GgufFile`], and whole files byte for byte against the ones gguf-py wrote for the
//! `laconic-infer` fixtures.

use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;

use super::{GgmlType, GgufValue};
use crate::error::{InferError, Result};

/// The alignment of the data section and of every tensor in it (GGUF's default).
pub const ALIGNMENT: usize = 32;

/// Values per `Q8_0`/`Q4_0` block.
const BLOCK: usize = 32;

/// A metadata value with its GGUF type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 10.
    U64(u64),
    /// GGUF type 11.
    I64(i64),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 7.
    Bool(bool),
    /// GGUF type 8 (UTF-8).
    Str(String),
    /// An array of u32.
    U32s(Vec<u32>),
    /// An array of i32 (`tokenizer.ggml.token_type`).
    I32s(Vec<i32>),
    /// An array of f32 (`tokenizer.ggml.scores`).
    F32s(Vec<f32>),
    /// An array of strings (`tokenizer.ggml.tokens`, `merges`).
    Strs(Vec<String>),
}

impl MetaValue {
    /// Converts a value read from a GGUF file, choosing the types gguf-py writes: unsigned
    /// integers as u32 when they fit (u64 otherwise), signed as i32 when they fit, floats as
    /// f32, arrays of one element type. `None` for arrays that mix types or nest.
    pub fn from_read(v: &GgufValue) -> Option<Self> {
        Some(match v {
            GgufValue::U64(x) => u32::try_from(*x).map_or(Self::U64(*x), Self::U32),
            GgufValue::I64(x) => i32::try_from(*x).map_or(Self::I64(*x), Self::I32),
            GgufValue::F64(x) => Self::F32(*x as f32),
            GgufValue::Bool(b) => Self::Bool(*b),
            GgufValue::Str(s) => Self::Str(s.clone()),
            GgufValue::Array(items) => match items.first() {
                None => Self::Strs(Vec::new()),
                Some(GgufValue::Str(_)) => Self::Strs(
                    items
                        .iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect::<Option<_>>()?,
                ),
                Some(GgufValue::U64(_)) => Self::U32s(
                    items
                        .iter()
                        .map(|x| match x {
                            GgufValue::U64(v) => u32::try_from(*v).ok(),
                            _ => None,
                        })
                        .collect::<Option<_>>()?,
                ),
                Some(GgufValue::I64(_)) => Self::I32s(
                    items
                        .iter()
                        .map(|x| match x {
                            GgufValue::I64(v) => i32::try_from(*v).ok(),
                            _ => None,
                        })
                        .collect::<Option<_>>()?,
                ),
                Some(GgufValue::F64(_)) => Self::F32s(
                    items
                        .iter()
                        .map(|x| match x {
                            GgufValue::F64(v) => Some(*v as f32),
                            _ => None,
                        })
                        .collect::<Option<_>>()?,
                ),
                Some(_) => return None,
            },
        })
    }

    fn type_id(&self) -> u32 {
        match self {
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::Str(_) => 8,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::U32s(_) | Self::I32s(_) | Self::F32s(_) | Self::Strs(_) => 9,
        }
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        fn array<T>(
            out: &mut Vec<u8>,
            ty: u32,
            items: &[T],
            mut each: impl FnMut(&mut Vec<u8>, &T),
        ) {
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                each(out, x);
            }
        }
        match self {
            Self::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Self::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Self::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Self::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Self::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Self::Bool(v) => out.push(u8::from(*v)),
            Self::Str(s) => write_string(out, s),
            Self::U32s(v) => array(out, 4, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
            Self::I32s(v) => array(out, 5, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
            Self::F32s(v) => array(out, 6, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
            Self::Strs(v) => array(out, 8, v, |o, s| write_string(o, s)),
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The GGML type id of the types this writer stores.
fn type_id(ty: GgmlType) -> Option<u32> {
    match ty {
        GgmlType::F32 => Some(0),
        GgmlType::Q4_0 => Some(2),
        GgmlType::Q8_0 => Some(8),
        _ => None,
    }
}

/// Quantizes `values` (a whole number of blocks of 32) to `Q8_0` blocks as gguf-py does:
/// per block `d = max|x| / 127`, `q = round_half_away(x · (1/d))` in f32, then 34 bytes: `d`
/// as f16 and the 32 values as i8. `None` if the length is not a multiple of 32.
pub fn quantize_q8_0(values: &[f32]) -> Option<Vec<u8>> {
    if !values.len().is_multiple_of(BLOCK) {
        return None;
    }
    let mut out = Vec::with_capacity(values.len() / BLOCK * 34);
    for block in values.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        // f32::round rounds half away from zero, as gguf-py's `np_roundf`.
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    Some(out)
}

/// Quantizes `values` (a whole number of blocks of 32) to `Q4_0` blocks as gguf-py does:
/// per block the value of largest magnitude (the first one on ties) maps to -8 keeping its
/// sign, `d = max / -8`, `q = min(15, trunc(x · (1/d) + 8.5))` in f32; then 18 bytes: `d` as
/// f16 and 16 bytes whose low nibbles hold values 0..16 and high nibbles values 16..32.
/// `None` if the length is not a multiple of 32.
pub fn quantize_q4_0(values: &[f32]) -> Option<Vec<u8>> {
    if !values.len().is_multiple_of(BLOCK) {
        return None;
    }
    let mut out = Vec::with_capacity(values.len() / BLOCK * 18);
    for block in values.chunks_exact(BLOCK) {
        let max = block
            .iter()
            .fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        let d = max / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let q = |x: f32| ((x * id + 8.5).trunc() as u8).min(15);
        out.extend((0..BLOCK / 2).map(|j| q(block[j]) | (q(block[j + BLOCK / 2]) << 4)));
    }
    Some(out)
}

/// Encodes f32 values as `ty` stores them (F32 little endian, `Q8_0`, `Q4_0`). `None` for
/// another type or a length that is not a whole number of blocks.
pub fn encode(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    match ty {
        GgmlType::F32 => Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        GgmlType::Q8_0 => quantize_q8_0(values),
        GgmlType::Q4_0 => quantize_q4_0(values),
        _ => None,
    }
}

/// A tensor announced to the writer; its data comes when the file is written.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// llama.cpp's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Row-major shape (the contiguous dimension last), as PyTorch writes it.
    pub shape: Vec<usize>,
    /// How it is stored.
    pub ty: GgmlType,
}

impl TensorEntry {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Builds a GGUF v3 file: metadata and tensor directory first, data on [`GgufWriter::write`].
#[derive(Debug, Clone)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorEntry>,
}

impl GgufWriter {
    /// A writer whose first key is `general.architecture = architecture`.
    pub fn new(architecture: &str) -> Self {
        Self {
            metadata: vec![(
                "general.architecture".into(),
                MetaValue::Str(architecture.into()),
            )],
            tensors: Vec::new(),
        }
    }

    /// Sets a metadata key (replacing an earlier value of the same key in place).
    pub fn set(&mut self, key: impl Into<String>, value: MetaValue) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// The metadata set so far, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The tensors announced so far, in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// Announces a tensor of row-major `shape` stored as `ty` (F32, `Q8_0` or `Q4_0`). A
    /// quantized tensor's last dimension must be a whole number of blocks of 32.
    pub fn add_tensor(&mut self, name: &str, shape: &[usize], ty: GgmlType) -> Result<()> {
        let bad =
            |reason: String| InferError::InvalidArgument(format!("GGUF tensor '{name}': {reason}"));
        if type_id(ty).is_none() {
            return Err(bad(format!(
                "type {} cannot be written (F32, Q8_0 and Q4_0 can)",
                ty.name()
            )));
        }
        if shape.is_empty() || shape.len() > 4 {
            return Err(bad(format!("rank {} (1 to 4 allowed)", shape.len())));
        }
        if ty != GgmlType::F32 && !shape[shape.len() - 1].is_multiple_of(BLOCK) {
            return Err(bad(format!(
                "{} needs rows of whole blocks of {BLOCK}, shape is {shape:?}",
                ty.name()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(bad("added twice".into()));
        }
        self.tensors.push(TensorEntry {
            name: name.into(),
            shape: shape.to_vec(),
            ty,
        });
        Ok(())
    }

    /// Everything before the data section: header, metadata, tensor infos, padding.
    fn head(&self) -> Result<(Vec<u8>, Vec<usize>)> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            value.write_to(&mut out);
        }
        let mut sizes = Vec::with_capacity(self.tensors.len());
        let mut offset = 0usize;
        for t in &self.tensors {
            let size = t.ty.byte_size(t.numel()).ok_or_else(|| {
                InferError::InvalidArgument(format!("GGUF tensor '{}': bad size", t.name))
            })?;
            let id = type_id(t.ty).ok_or_else(|| {
                InferError::InvalidArgument(format!("GGUF tensor '{}': bad type", t.name))
            })?;
            write_string(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            sizes.push(size);
            offset += size.div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        Ok((out, sizes))
    }

    /// Writes the file: `data(i)` gives tensor `i`'s f32 values (row-major), which are
    /// encoded as announced. Written to `PATH.tmp`, synced, then renamed over `path`.
    /// Returns the file size in bytes.
    pub fn write(
        &self,
        path: &Path,
        mut data: impl FnMut(usize, &TensorEntry) -> Result<Vec<f32>>,
    ) -> Result<u64> {
        let (head, sizes) = self.head()?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |e: std::io::Error| InferError::io(&tmp, e);
        let mut write = || -> Result<u64> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
            f.write_all(&head).map_err(io)?;
            let mut total = head.len() as u64;
            for (i, (t, &size)) in self.tensors.iter().zip(&sizes).enumerate() {
                let values = data(i, t)?;
                if values.len() != t.numel() {
                    return Err(InferError::InvalidArgument(format!(
                        "GGUF tensor '{}': {} values given for shape {:?}",
                        t.name,
                        values.len(),
                        t.shape
                    )));
                }
                let bytes = encode(t.ty, &values).ok_or_else(|| {
                    InferError::InvalidArgument(format!("GGUF tensor '{}': cannot encode", t.name))
                })?;
                debug_assert_eq!(bytes.len(), size);
                f.write_all(&bytes).map_err(io)?;
                let padded = size.div_ceil(ALIGNMENT) * ALIGNMENT;
                f.write_all(&vec![0u8; padded - size]).map_err(io)?;
                total += padded as u64;
            }
            let file = f.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
            Ok(total)
        };
        match write() {
            Ok(total) => {
                std::fs::rename(&tmp, path).map_err(|e| InferError::io(path, e))?;
                Ok(total)
            }
            Err(e) => {
                // Nothing half-written is left behind.
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}
