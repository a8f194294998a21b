//! The error type of `laconic-infer`.
//!
//! Every variant names the file, tensor or field at fault and what was expected, so that a
//! user who points the tool at a broken checkpoint learns what to fix without a debugger.

use std::path::PathBuf;

/// Errors raised while loading, tokenizing or running a model.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The model path does not exist.
    #[error("model path {0} does not exist")]
    NotFound(PathBuf),
    /// A path is neither a GGUF file nor a Hugging Face directory.
    #[error("{path}: {reason}")]
    UnrecognizedModel {
        /// The path given.
        path: PathBuf,
        /// Why it was not recognized.
        reason: String,
    },
    /// A configuration file (config.json, tokenizer_config.json, GGUF metadata) is invalid.
    #[error("{path}: invalid configuration: {reason}")]
    Config {
        /// The file that holds the configuration.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The architecture is not one laconic supports.
    #[error(
        "{path}: unsupported model_type/architecture '{found}' (supported: llama, qwen2, qwen3)"
    )]
    UnsupportedArchitecture {
        /// The file that names the architecture.
        path: PathBuf,
        /// The architecture found.
        found: String,
    },
    /// A weight file is malformed or truncated.
    #[error("{path}: malformed file: {reason}")]
    Format {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// The tensor name looked up.
        name: String,
    },
    /// A tensor has a shape other than the configuration implies.
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Shape the configuration implies.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a data type or quantization laconic cannot read.
    #[error("{path}: tensor '{name}' has unsupported type {dtype}")]
    UnsupportedDType {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The type found.
        dtype: String,
    },
    /// The tokenizer could not be built or used.
    #[error("tokenizer ({source_name}): {reason}")]
    Tokenizer {
        /// Where the tokenizer came from (a file path or "GGUF metadata").
        source_name: String,
        /// What failed.
        reason: String,
    },
    /// A chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The input does not fit the model.
    #[error(
        "input of {tokens} tokens plus {new_tokens} new tokens exceeds the model's context length of {context}"
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        tokens: usize,
        /// Tokens asked to generate.
        new_tokens: usize,
        /// The model's maximum context.
        context: usize,
    },
    /// An argument is invalid (empty prompt, a sampling value out of range, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A tensor operation produced data that could not be read back.
    #[error("tensor data: {0}")]
    TensorData(String),
}

/// Result type of `laconic-infer`.
pub type Result<T> = std::result::Result<T, InferError>;

impl InferError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed-file error.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An invalid-configuration error.
    pub fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
