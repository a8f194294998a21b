//! Opening a checkpoint: a Hugging Face directory or a GGUF file, detected by content.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::Value;

use crate::chat::ChatTemplate;
use crate::config::{ModelConfig, read_hf_config};
use crate::error::{InferError, Result};
use crate::gguf::{GgufFile, GgufValue};
use crate::model::{Model, WeightFormat};
use crate::safetensors::SafetensorsDir;
use crate::tokenizer::Tokenizer;
use crate::weights::{GgufSource, gguf_config};

/// The on-disk format a model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// A Hugging Face directory with safetensors weights.
    Safetensors,
    /// A GGUF file of the given version.
    Gguf(u32),
}

/// Facts about a checkpoint that `laconic inspect` prints.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Where the model came from.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Count of tensors per storage type (`F32`, `BF16`, `Q4_1`, ...).
    pub tensor_types: Vec<(String, usize)>,
    /// Whether a chat template was found.
    pub has_chat_template: bool,
}

/// A model ready to run: weights, tokenizer, chat template, facts.
#[derive(Debug)]
pub struct LoadedModel {
    /// The decoder.
    pub model: Model,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template, if it ships one.
    pub chat_template: Option<ChatTemplate>,
    /// Facts about the checkpoint.
    pub info: ModelInfo,
}

impl LoadedModel {
    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }
}

fn is_gguf(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| InferError::io(path, e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| InferError::io(path, e))?;
    Ok(n == 4 && &magic == b"GGUF")
}

/// Reads only the configuration of a checkpoint (no weights).
pub fn load_config(path: &Path) -> Result<ModelConfig> {
    if !path.exists() {
        return Err(InferError::NotFound(path.to_path_buf()));
    }
    if path.is_dir() {
        let cfg = path.join("config.json");
        if !cfg.is_file() {
            return Err(no_config(path));
        }
        read_hf_config(&cfg)
    } else {
        gguf_config(&GgufFile::open(path)?)
    }
}

fn no_config(path: &Path) -> InferError {
    InferError::UnrecognizedModel {
        path: path.to_path_buf(),
        reason: "directory has no config.json (expected a Hugging Face model directory)".into(),
    }
}

/// Loads a model from a Hugging Face directory or a GGUF file onto `device`, with
/// [`WeightFormat::Auto`]: GGUF `Q8_0`/`Q4_0`/`Q4_1` weights stay quantized on the CPU.
pub fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_with(path, device, WeightFormat::Auto)
}

/// Loads a model as [`load`] does, holding its projection weights as `weights` says.
pub fn load_with(path: &Path, device: &Device, weights: WeightFormat) -> Result<LoadedModel> {
    if !path.exists() {
        return Err(InferError::NotFound(path.to_path_buf()));
    }
    if path.is_dir() {
        load_hf_dir(path, device, weights)
    } else if is_gguf(path)? {
        load_gguf(path, device, weights)
    } else if path.file_name().is_some_and(|n| n == "config.json") {
        load_hf_dir(path.parent().unwrap_or(Path::new(".")), device, weights)
    } else {
        Err(InferError::UnrecognizedModel {
            path: path.to_path_buf(),
            reason: "neither a GGUF file (magic \"GGUF\") nor a Hugging Face model directory"
                .into(),
        })
    }
}

fn load_gguf(path: &Path, device: &Device, weights: WeightFormat) -> Result<LoadedModel> {
    let file = GgufFile::open(path)?;
    let config = gguf_config(&file)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let token_str = |key: &str| {
        file.get(key)
            .and_then(GgufValue::as_u64)
            .and_then(|id| tokenizer.id_to_token(id as u32))
            .unwrap_or_default()
    };
    let chat_template = match file
        .get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
    {
        Some(src) => Some(ChatTemplate::new(
            src,
            token_str("tokenizer.ggml.bos_token_id"),
            token_str("tokenizer.ggml.eos_token_id"),
        )?),
        None => None,
    };
    let mut counts: Vec<(String, usize)> = Vec::new();
    for t in &file.tensors {
        let name = t.ty.name();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    let info = ModelInfo {
        path: path.to_path_buf(),
        format: Format::Gguf(file.version),
        tensor_types: counts,
        has_chat_template: chat_template.is_some(),
    };
    let source = GgufSource::new(file, &config);
    let model = Model::load_with(config, &source, device, weights)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        info,
    })
}

/// A special-token field of `tokenizer_config.json`: a string or `{"content": ..}`.
fn token_field(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

fn load_hf_dir(dir: &Path, device: &Device, weights: WeightFormat) -> Result<LoadedModel> {
    let cfg_path = dir.join("config.json");
    if !cfg_path.is_file() {
        return Err(no_config(dir));
    }
    let config = read_hf_config(&cfg_path)?;
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(InferError::Tokenizer {
            source_name: tok_path.display().to_string(),
            reason: "file not found (a Hugging Face directory needs tokenizer.json)".into(),
        });
    }
    let tokenizer = Tokenizer::from_file(&tok_path, config.bos_token_id)?;
    let tc_path = dir.join("tokenizer_config.json");
    let tc: Value = if tc_path.is_file() {
        let text = std::fs::read_to_string(&tc_path).map_err(|e| InferError::io(&tc_path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| InferError::config(&tc_path, format!("not valid JSON: {e}")))?
    } else {
        Value::Null
    };
    let jinja = dir.join("chat_template.jinja");
    let template_src = match tc.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Value::as_str))
            .map(str::to_string),
        _ if jinja.is_file() => {
            Some(std::fs::read_to_string(&jinja).map_err(|e| InferError::io(&jinja, e))?)
        }
        _ => None,
    };
    let chat_template = match template_src {
        Some(src) => Some(ChatTemplate::new(
            src,
            token_field(tc.get("bos_token")),
            token_field(tc.get("eos_token")),
        )?),
        None => None,
    };
    let source = SafetensorsDir::open(dir)?;
    let info = ModelInfo {
        path: dir.to_path_buf(),
        format: Format::Safetensors,
        tensor_types: source.dtype_counts(),
        has_chat_template: chat_template.is_some(),
    };
    let model = Model::load_with(config, &source, device, weights)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        info,
    })
}
