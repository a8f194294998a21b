//! Hugging Face safetensors: single files and sharded directories.
//!
//! A file is an 8-byte little-endian header length, a JSON header mapping each tensor name to
//! `{dtype, shape, data_offsets}`, then the data. A sharded checkpoint adds
//! `model.safetensors.index.json`, whose `weight_map` names the shard of every tensor.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use serde_json::Value;

use crate::error::{InferError, Result};

#[derive(Debug, Clone)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// One memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    entries: HashMap<String, Entry>,
    data_start: usize,
}

impl SafetensorsFile {
    /// Opens a file and parses its header; data stays mapped until read.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| InferError::io(path, e))?;
        // SAFETY: read-only map of a checkpoint that laconic never writes while it runs.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| InferError::io(path, e))?;
        let bad = |reason: String| InferError::format(path, reason);
        let len_bytes: [u8; 8] =
            mmap.get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "truncated: {} bytes, shorter than the 8-byte header length",
                        mmap.len()
                    ))
                })?;
        let header_len = u64::from_le_bytes(len_bytes) as usize;
        let header = mmap
            .get(8..8usize.saturating_add(header_len))
            .ok_or_else(|| {
                bad(format!(
                    "truncated: header of {header_len} bytes runs past the end of the {}-byte file",
                    mmap.len()
                ))
            })?;
        let header: HashMap<String, Value> = serde_json::from_slice(header)
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = mmap.len() - data_start;
        let mut entries = HashMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let dtype = v
                .get("dtype")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let shape: Option<Vec<usize>> = v.get("shape").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            });
            let offsets: Option<Vec<usize>> =
                v.get("data_offsets").and_then(Value::as_array).map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().map(|x| x as usize))
                        .collect()
                });
            let (Some(shape), Some(offsets)) = (shape, offsets) else {
                return Err(bad(format!(
                    "header entry '{name}' lacks shape or data_offsets"
                )));
            };
            let [start, end] = offsets[..] else {
                return Err(bad(format!(
                    "header entry '{name}' has malformed data_offsets"
                )));
            };
            if start > end || end > data_len {
                return Err(bad(format!(
                    "truncated: tensor '{name}' spans data bytes {start}..{end}, but only {data_len} data bytes are present"
                )));
            }
            entries.insert(
                name,
                Entry {
                    dtype,
                    shape,
                    start,
                    end,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            entries,
            data_start,
        })
    }

    /// The header's `__metadata__` (string values; empty when there is none).
    pub fn metadata(&self) -> HashMap<String, String> {
        let Some(len) = self
            .mmap
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
        else {
            return HashMap::new();
        };
        let header: Option<HashMap<String, Value>> = self
            .mmap
            .get(8..8usize.saturating_add(len as usize))
            .and_then(|h| serde_json::from_slice(h).ok());
        header
            .and_then(|mut h| h.remove("__metadata__"))
            .and_then(|m| m.as_object().cloned())
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of the tensors in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The dtype string of a tensor (`F32`, `BF16`, ...).
    pub fn dtype(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|e| e.dtype.as_str())
    }

    /// A tensor converted to f32, with its shape; `None` if absent.
    pub fn tensor_f32(&self, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        let bytes = &self.mmap[self.data_start + e.start..self.data_start + e.end];
        let numel: usize = e.shape.iter().product();
        let width = match e.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => {
                return Err(InferError::UnsupportedDType {
                    path: self.path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other} (laconic reads F32, F16, BF16)"),
                });
            }
        };
        if bytes.len() != numel * width {
            return Err(InferError::format(
                &self.path,
                format!(
                    "tensor '{name}' has {} data bytes, but shape {:?} of {} needs {}",
                    bytes.len(),
                    e.shape,
                    e.dtype,
                    numel * width
                ),
            ));
        }
        let data = match e.dtype.as_str() {
            "F32" => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "F16" => bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        Ok(Some((data, e.shape.clone())))
    }
}

/// A tensor's f32 data, its shape, and the shard file it came from.
pub type ShardTensor<'a> = (Vec<f32>, Vec<usize>, &'a Path);

/// The weights of a Hugging Face directory: one file or several shards.
pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<SafetensorsFile>,
    owner: HashMap<String, usize>,
}

impl SafetensorsDir {
    /// Opens `model.safetensors`, or the shards that `model.safetensors.index.json` names.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let paths: Vec<PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| InferError::io(&index, e))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| InferError::format(&index, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| InferError::format(&index, "no `weight_map` object"))?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(InferError::UnrecognizedModel {
                path: dir.to_path_buf(),
                reason: "no model.safetensors or model.safetensors.index.json in this directory"
                    .into(),
            });
        };
        let mut files = Vec::new();
        let mut owner = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            if !p.is_file() {
                return Err(InferError::format(
                    &index,
                    format!("shard {} named in the index does not exist", p.display()),
                ));
            }
            let f = SafetensorsFile::open(p)?;
            for n in f.names() {
                owner.insert(n.to_string(), i);
            }
            files.push(f);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            owner,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A tensor converted to f32, with its shape and the file it came from.
    pub fn tensor_f32(&self, name: &str) -> Result<Option<ShardTensor<'_>>> {
        let Some(&i) = self.owner.get(name) else {
            return Ok(None);
        };
        let f = &self.files[i];
        Ok(f.tensor_f32(name)?.map(|(d, s)| (d, s, f.path.as_path())))
    }

    /// Counts of tensors per dtype.
    pub fn dtype_counts(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for f in &self.files {
            for e in f.entries.values() {
                *counts.entry(e.dtype.clone()).or_default() += 1;
            }
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }
}

/// Writes f32 tensors `(name, shape, values)` to a safetensors file, atomically: the bytes go
/// to `PATH.tmp`, are synced, then renamed over `path`. `metadata` becomes the header's
/// `__metadata__` (string values, as the format requires).
pub fn write_f32(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &[(String, String)],
) -> Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(meta));
    }
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(InferError::InvalidArgument(format!(
                "tensor '{name}': shape {shape:?} holds {n} values, got {}",
                values.len()
            )));
        }
        let end = offset + 4 * n;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| InferError::format(path, e.to_string()))?;
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    while (8 + head.len()) % 8 != 0 {
        head.push(b' ');
    }
    let tmp = path.with_extension("safetensors.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(File::create(&tmp)?);
        f.write_all(&(head.len() as u64).to_le_bytes())?;
        f.write_all(&head)?;
        for (_, _, values) in tensors {
            for v in values {
                f.write_all(&v.to_le_bytes())?;
            }
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| InferError::io(path, e))
}
