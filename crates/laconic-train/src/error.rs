//! Errors of the training crate: each names the file, key or step it is about.

use std::path::PathBuf;

/// What can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A recipe is malformed: unknown key, wrong type, bad value.
    #[error("recipe {path}: {reason}")]
    Recipe {
        /// The recipe file.
        path: PathBuf,
        /// What is wrong, with the key and line.
        reason: String,
    },
    /// A checkpoint is missing, truncated or does not fit the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Training data could not be used.
    #[error("data {path}: {reason}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An invalid setting.
    #[error("{0}")]
    Invalid(String),
    /// Loading or running the model failed.
    #[error(transparent)]
    Infer(#[from] laconic_infer::InferError),
    /// Reading traces failed.
    #[error(transparent)]
    Traces(#[from] laconic_traces::TraceError),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint problem.
    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
