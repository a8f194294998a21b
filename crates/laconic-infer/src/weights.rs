//! Where weights come from: a Hugging Face directory or a GGUF file, both seen through one
//! [`WeightSource`] that answers Hugging Face tensor names with f32 data in Hugging Face
//! layout (`[out, in]` for linear weights).
//!
//! The GGUF side maps llama.cpp's names (`blk.0.attn_q.weight`) back to Hugging Face's and
//! undoes the row permutation that llama.cpp's converter applies to the query and key weights
//! of the `llama` architecture (its rotary kernel pairs adjacent dimensions, Hugging Face's
//! pairs `i` with `i + d/2`). Qwen2/Qwen3 GGUFs are not permuted.

use std::path::{Path, PathBuf};

use crate::config::{Family, ModelConfig, RopeConfig, RopeScaling};
use crate::error::{InferError, Result};
use crate::gguf::{GgufFile, GgufValue};
use crate::qmatrix::QMatrix;
use crate::safetensors::SafetensorsDir;

/// Named f32 tensors in Hugging Face naming and layout.
pub trait WeightSource {
    /// The file or directory the weights come from.
    fn path(&self) -> &Path;

    /// The tensor `name` as f32, checked to have `shape`. A missing tensor or a wrong shape is
    /// an error naming the file and the tensor.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// The 2-D tensor `name` (`[rows, cols]`, Hugging Face layout) in the quantized form the
    /// source stores it in, if that is one [`QMatrix`] can hold without dequantizing;
    /// `Ok(None)` otherwise (the caller then asks [`WeightSource::tensor`]).
    fn quantized(&self, name: &str, shape: &[usize]) -> Result<Option<QMatrix>> {
        let _ = (name, shape);
        Ok(None)
    }
}

fn check_shape(path: &Path, name: &str, found: Vec<usize>, expected: &[usize]) -> Result<()> {
    if found != expected {
        return Err(InferError::ShapeMismatch {
            path: path.to_path_buf(),
            name: name.to_string(),
            expected: expected.to_vec(),
            found,
        });
    }
    Ok(())
}

impl WeightSource for SafetensorsDir {
    fn path(&self) -> &Path {
        self.dir()
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (data, found, file) =
            self.tensor_f32(name)?
                .ok_or_else(|| InferError::MissingTensor {
                    path: self.dir().to_path_buf(),
                    name: name.to_string(),
                })?;
        check_shape(file, name, found, shape)?;
        Ok(data)
    }
}

/// A GGUF file seen with Hugging Face names.
pub struct GgufSource {
    file: GgufFile,
    family: Family,
    num_heads: usize,
    num_kv_heads: usize,
}

impl GgufSource {
    /// Wraps a parsed GGUF file whose configuration has been read.
    pub fn new(file: GgufFile, config: &ModelConfig) -> Self {
        Self {
            file,
            family: config.family,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
        }
    }

    /// The underlying file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

/// llama.cpp's name for a Hugging Face tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let short = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{suffix}"))
}

/// The row order that undoes llama.cpp's q/k `permute` for `rows` rows in `n_head` heads:
/// row `i` of Hugging Face's layout is row `perm[i]` of the file.
fn unpermute_order(rows: usize, n_head: usize) -> Vec<usize> {
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut perm = vec![0; rows];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                perm[h * head_dim + j * half + i] = h * head_dim + 2 * i + j;
            }
        }
    }
    perm
}

/// Undoes llama.cpp's `permute` of q/k rows (see [`unpermute_order`]) on f32 data with
/// `cols` values per row (1 for a bias).
fn unpermute(data: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    unpermute_order(data.len() / cols, n_head)
        .into_iter()
        .flat_map(|r| &data[r * cols..(r + 1) * cols])
        .copied()
        .collect()
}

impl GgufSource {
    /// The heads whose rows llama.cpp permuted in the GGUF tensor `gname`: the query and key
    /// weights and biases of the `llama` architecture; `None` for every other tensor.
    fn permuted_heads(&self, gname: &str) -> Option<usize> {
        if self.family != Family::Llama {
            return None;
        }
        if gname.ends_with("attn_q.weight") || gname.ends_with("attn_q.bias") {
            Some(self.num_heads)
        } else if gname.ends_with("attn_k.weight") || gname.ends_with("attn_k.bias") {
            Some(self.num_kv_heads)
        } else {
            None
        }
    }
}

impl WeightSource for GgufSource {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let missing = || InferError::MissingTensor {
            path: self.file.path().to_path_buf(),
            name: gguf_name(name).map_or(name.to_string(), |g| {
                format!("{g}' (Hugging Face '{name}')")
            }),
        };
        let gname = gguf_name(name).ok_or_else(missing)?;
        let (data, found) = self.file.tensor_f32(&gname)?.ok_or_else(missing)?;
        check_shape(self.file.path(), &gname, found, shape)?;
        Ok(match self.permuted_heads(&gname) {
            Some(heads) => {
                let cols = if shape.len() == 2 { shape[1] } else { 1 };
                unpermute(&data, heads, cols)
            }
            None => data,
        })
    }

    fn quantized(&self, name: &str, shape: &[usize]) -> Result<Option<QMatrix>> {
        let Some(gname) = gguf_name(name) else {
            return Ok(None);
        };
        let Some(info) = self.file.tensor_info(&gname) else {
            return Ok(None);
        };
        if shape.len() != 2 || info.shape() != shape {
            return Ok(None); // `tensor` reports the mismatch
        }
        let bytes = self.file.tensor_bytes(info)?;
        let Some(q) = QMatrix::from_ggml(info.ty, bytes, shape[0], shape[1]) else {
            return Ok(None);
        };
        Ok(Some(match self.permuted_heads(&gname) {
            Some(heads) => q.permute_rows(&unpermute_order(shape[0], heads)),
            None => q,
        }))
    }
}

/// Reads the model configuration from GGUF metadata (`{arch}.block_count`, ...).
pub fn gguf_config(file: &GgufFile) -> Result<ModelConfig> {
    let path: PathBuf = file.path().to_path_buf();
    let arch = file
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| InferError::config(&path, "no general.architecture in the GGUF metadata"))?;
    let family = Family::parse(arch).ok_or_else(|| InferError::UnsupportedArchitecture {
        path: path.clone(),
        found: arch.to_string(),
    })?;
    let key = |k: &str| format!("{arch}.{k}");
    let uint = |k: &str| -> Option<usize> {
        file.get(&key(k))
            .and_then(GgufValue::as_u64)
            .map(|v| v as usize)
    };
    let need = |k: &str| -> Result<usize> {
        uint(k)
            .ok_or_else(|| InferError::config(&path, format!("missing GGUF metadata '{}'", key(k))))
    };
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let embd = file
        .tensor_info("token_embd.weight")
        .ok_or_else(|| InferError::MissingTensor {
            path: path.clone(),
            name: "token_embd.weight".into(),
        })?;
    let vocab = uint("vocab_size")
        .or_else(|| embd.dims.get(1).copied())
        .unwrap_or(0);
    let theta = file
        .get(&key("rope.freq_base"))
        .and_then(GgufValue::as_f64)
        .unwrap_or(10000.0);
    let scaling = if let Some((factors, _)) = file.tensor_f32("rope_freqs.weight")? {
        RopeScaling::Factors(factors)
    } else {
        match file
            .get(&key("rope.scaling.type"))
            .and_then(GgufValue::as_str)
        {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: file
                    .get(&key("rope.scaling.factor"))
                    .and_then(GgufValue::as_f64)
                    .ok_or_else(|| {
                        InferError::config(
                            &path,
                            format!("'{}' is linear but has no factor", key("rope.scaling.type")),
                        )
                    })?,
            },
            Some(other) => {
                return Err(InferError::config(
                    &path,
                    format!(
                        "unsupported rope scaling type '{other}' (supported: none, linear, rope_freqs)"
                    ),
                ));
            }
        }
    };
    let token = |k: &str| file.get(k).and_then(GgufValue::as_u64).map(|v| v as u32);
    let mut eos: Vec<u32> = token("tokenizer.ggml.eos_token_id").into_iter().collect();
    if let Some(eot) = token("tokenizer.ggml.eot_token_id")
        && !eos.contains(&eot)
    {
        eos.push(eot);
    }
    let file_type = file
        .get("general.file_type")
        .and_then(GgufValue::as_u64)
        .map(|t| format!("gguf file_type {t}"))
        .unwrap_or_else(|| "gguf".into());
    let config = ModelConfig {
        family,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: need("feed_forward_length")?,
        num_layers: need("block_count")?,
        num_heads: heads,
        num_kv_heads: uint("attention.head_count_kv").unwrap_or(heads),
        head_dim: uint("attention.key_length").unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
        rms_norm_eps: file
            .get(&key("attention.layer_norm_rms_epsilon"))
            .and_then(GgufValue::as_f64)
            .unwrap_or(1e-5),
        rope: RopeConfig { theta, scaling },
        max_position_embeddings: uint("context_length").unwrap_or(2048),
        tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        attention_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
        qk_norm: file.tensor_info("blk.0.attn_q_norm.weight").is_some(),
        bos_token_id: token("tokenizer.ggml.bos_token_id"),
        eos_token_ids: eos,
        dtype: file_type,
    };
    config.validate(&path)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp() {
        assert_eq!(
            gguf_name("model.layers.3.self_attn.q_proj.weight").as_deref(),
            Some("blk.3.attn_q.weight")
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.k_proj.bias").as_deref(),
            Some("blk.0.attn_k.bias")
        );
        assert_eq!(
            gguf_name("model.layers.1.post_attention_layernorm.weight").as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
        assert_eq!(
            gguf_name("model.layers.1.self_attn.q_norm.weight").as_deref(),
            Some("blk.1.attn_q_norm.weight")
        );
        assert_eq!(
            gguf_name("lm_head.weight").as_deref(),
            Some("output.weight")
        );
        assert_eq!(gguf_name("model.layers.1.unknown.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // One head of dim 4, 1 column: HF rows [a0 a1 b0 b1] are stored as [a0 b0 a1 b1].
        let stored = [0.0, 2.0, 1.0, 3.0];
        assert_eq!(unpermute(&stored, 1, 1), vec![0.0, 1.0, 2.0, 3.0]);
        // Two heads, two columns.
        let hf: Vec<f32> = (0..16).map(|x| x as f32).collect();
        // permute as llama.cpp: reshape(n_head, 2, half, cols).swapaxes(1, 2)
        let (n_head, hd, cols) = (2, 4, 2);
        let mut stored = vec![0.0; 16];
        for h in 0..n_head {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    for c in 0..cols {
                        stored[((h * hd) + 2 * i + j) * cols + c] =
                            hf[((h * hd) + j * hd / 2 + i) * cols + c];
                    }
                }
            }
        }
        assert_eq!(unpermute(&stored, n_head, cols), hf);
    }
}
