//! Model configuration: a serde mirror of Hugging Face's `config.json` and the validated
//! runtime [`ModelConfig`] that the decoder is built from.
//!
//! Both spellings of `config.json` are read: the classic one (`rope_theta`, `rope_scaling`,
//! `torch_dtype`) and the newer one that transformers writes since 4.56 (`rope_parameters`,
//! `dtype`). GGUF metadata is turned into the same [`ModelConfig`] by the GGUF loader.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{InferError, Result};

/// Model families that share the one decoder, with their per-family switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama 2/3.x, SmolLM2, TinyLlama.
    Llama,
    /// Qwen2, Qwen2.5 and DeepSeek-R1-Distill-Qwen: bias on q/k/v.
    Qwen2,
    /// Qwen3: per-head RMSNorm on q and k, explicit head_dim.
    Qwen3,
}

impl Family {
    /// Parses a Hugging Face `model_type` or GGUF `general.architecture`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// The canonical name (`llama`, `qwen2`, `qwen3`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }
}

/// How rotary frequencies are scaled for long context.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (Hugging Face `linear`).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's wavelength-dependent scaling (Hugging Face `llama3`).
    Llama3 {
        /// Scale for low frequencies.
        factor: f64,
        /// Wavelength boundary factor for low frequencies.
        low_freq_factor: f64,
        /// Wavelength boundary factor for high frequencies.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors given explicitly (GGUF `rope_freqs.weight`).
    Factors(Vec<f32>),
}

/// Rotary embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Base of the frequencies (`rope_theta`).
    pub theta: f64,
    /// Long-context scaling.
    pub scaling: RopeScaling,
}

/// The validated runtime configuration of a decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which family's switches apply.
    pub family: Family,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Rotary embedding settings.
    pub rope: RopeConfig,
    /// Longest sequence the model supports.
    pub max_position_embeddings: usize,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections carry a bias (Qwen2, or Llama with `attention_bias`).
    pub attention_bias: bool,
    /// Whether queries and keys get a per-head RMSNorm (Qwen3).
    pub qk_norm: bool,
    /// Beginning-of-sequence token id, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
    /// Data type the weights were stored in (informational).
    pub dtype: String,
}

impl ModelConfig {
    /// Checks the invariants the decoder relies on.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| Err(InferError::config(path, reason));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim ({}) must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if let RopeScaling::Factors(f) = &self.rope.scaling
            && f.len() != self.head_dim / 2
        {
            return bad(format!(
                "rope frequency factors have {} entries, expected head_dim/2 = {}",
                f.len(),
                self.head_dim / 2
            ));
        }
        Ok(())
    }

    /// Number of parameters implied by the configuration.
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let mut attn = h * q + 2 * h * kv + q * h;
        if self.attention_bias {
            attn += q + 2 * kv;
        }
        if self.qk_norm {
            attn += 2 * self.head_dim;
        }
        let mlp = 3 * h * self.intermediate_size;
        let layer = attn + mlp + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_layers * layer + h + head
    }
}

/// A serde mirror of the fields of `config.json` that laconic reads.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

/// Reads and validates a Hugging Face `config.json`.
pub fn read_hf_config(path: &Path) -> Result<ModelConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| InferError::io(path, e))?;
    parse_hf_config(&text, path)
}

/// Parses the text of a Hugging Face `config.json`; `path` is used in error messages.
pub fn parse_hf_config(text: &str, path: &Path) -> Result<ModelConfig> {
    let raw: HfConfig = serde_json::from_str(text)
        .map_err(|e| InferError::config(path, format!("not valid config JSON: {e}")))?;
    let model_type = raw
        .model_type
        .clone()
        .or_else(|| raw.architectures.first().cloned())
        .ok_or_else(|| InferError::config(path, "no `model_type` field"))?;
    let family = Family::parse(&model_type).ok_or_else(|| InferError::UnsupportedArchitecture {
        path: path.to_path_buf(),
        found: model_type.clone(),
    })?;
    let need = |v: Option<usize>, key: &str| {
        v.ok_or_else(|| InferError::config(path, format!("missing required field `{key}`")))
    };
    let hidden_size = need(raw.hidden_size, "hidden_size")?;
    let num_heads = need(raw.num_attention_heads, "num_attention_heads")?;
    if raw.mlp_bias == Some(true) {
        return Err(InferError::config(
            path,
            "`mlp_bias: true` is not supported",
        ));
    }
    let head_dim = match raw.head_dim {
        Some(d) => d,
        None if num_heads > 0 => hidden_size / num_heads,
        None => 0,
    };
    let rope = parse_rope(&raw, path)?;
    let token_ids = |v: &Option<Value>| -> Vec<u32> {
        match v {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64().map(|x| x as u32))
                .collect(),
            _ => Vec::new(),
        }
    };
    let cfg = ModelConfig {
        family,
        vocab_size: need(raw.vocab_size, "vocab_size")?,
        hidden_size,
        intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
        num_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
        num_heads,
        num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
        head_dim,
        rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
        rope,
        max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        attention_bias: match family {
            Family::Qwen2 => true,
            _ => raw.attention_bias.unwrap_or(false),
        },
        qk_norm: family == Family::Qwen3,
        bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
        eos_token_ids: token_ids(&raw.eos_token_id),
        dtype: raw
            .dtype
            .or(raw.torch_dtype)
            .unwrap_or_else(|| "float32".to_string()),
    };
    cfg.validate(path)?;
    Ok(cfg)
}

fn parse_rope(raw: &HfConfig, path: &Path) -> Result<RopeConfig> {
    // Newer transformers put theta and scaling together in `rope_parameters`.
    let params = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
    let theta = raw
        .rope_parameters
        .as_ref()
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
        .or(raw.rope_theta)
        .unwrap_or(10000.0);
    let Some(Value::Object(p)) = params else {
        return Ok(RopeConfig {
            theta,
            scaling: RopeScaling::None,
        });
    };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> Result<f64> {
        p.get(key).and_then(Value::as_f64).ok_or_else(|| {
            InferError::config(
                path,
                format!("rope scaling '{kind}' needs a numeric `{key}`"),
            )
        })
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        },
        other => {
            return Err(InferError::config(
                path,
                format!(
                    "unsupported rope scaling type '{other}' (supported: default, linear, llama3)"
                ),
            ));
        }
    };
    Ok(RopeConfig { theta, scaling })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig> {
        parse_hf_config(text, Path::new("config.json"))
    }

    const BASE: &str = r#""vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2"#;

    #[test]
    fn classic_and_new_rope_spellings_agree() {
        let classic = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_theta": 500000.0, "torch_dtype": "bfloat16",
            "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        let new = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "dtype": "bfloat16",
            "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        assert_eq!(classic, new);
        assert_eq!(classic.rope.theta, 500000.0);
        assert!(matches!(classic.rope.scaling, RopeScaling::Llama3 { .. }));
        assert_eq!(classic.head_dim, 16);
        assert_eq!(classic.dtype, "bfloat16");
    }

    #[test]
    fn family_switches() {
        let q2 = parse(&format!(r#"{{"model_type": "qwen2", {BASE}}}"#)).unwrap();
        assert!(q2.attention_bias && !q2.qk_norm);
        let q3 = parse(&format!(
            r#"{{"model_type": "qwen3", {BASE}, "head_dim": 32}}"#
        ))
        .unwrap();
        assert!(q3.qk_norm && q3.head_dim == 32);
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let e = parse(&format!(r#"{{"model_type": "gpt_neox", {BASE}}}"#)).unwrap_err();
        assert!(e.to_string().contains("gpt_neox"), "{e}");
        let e = parse(r#"{"model_type": "llama", "vocab_size": 10}"#).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
        let e = parse(&format!(
            r#"{{"model_type": "llama", {BASE}, "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}}}"#
        ))
        .unwrap_err();
        assert!(e.to_string().contains("yarn"), "{e}");
        let e = parse("{not json").unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }
}
