//! The error type of `laconic-label`.
//!
//! Every variant names what is at fault: the file and 1-based line of a bad line in a labeled
//! file, the field and both values when a labeled file was written with other settings, the
//! setting and its value for a bad option, the trace id when one trace cannot be labeled.
//! Errors from reading traces and loading models keep their own messages, which already name
//! the file and line (or tensor).

use std::path::PathBuf;

use laconic_infer::InferError;
use laconic_traces::TraceError;

/// Errors raised while labeling traces, reading or writing labeled files and reports.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// Reading the input traces or writing a trace file failed (the message names the file
    /// and line).
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// Loading or running the scorer model, or its tokenizer, failed.
    #[error("scorer model: {0}")]
    Model(#[from] InferError),
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// One line of a labeled file is bad (not JSON, a missing field, a duplicate id).
    #[error("{path}:{line}: {message}")]
    Line {
        /// The labeled file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// An existing output file was written with other settings than this run's, so that
    /// appending to it would mix two labelings.
    #[error(
        "{path}:{line}: field `{field}` is {found} but this run uses {expected}; \
         label into a new --out file or use the same settings"
    )]
    Mismatch {
        /// The labeled file.
        path: PathBuf,
        /// The 1-based line number of the first line, which is the one checked.
        line: usize,
        /// The field that differs.
        field: &'static str,
        /// What this run would write.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A setting is invalid (a ratio outside `(0, 1]`, an unknown grader).
    #[error("invalid {setting} `{value}`: {message}")]
    Setting {
        /// The setting's name, as the command line spells it (`--ratios`).
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// One trace could not be labeled.
    #[error("trace `{id}`: {message}")]
    Label {
        /// The trace's id.
        id: String,
        /// What went wrong.
        message: String,
    },
    /// A token-classifier file is unusable (not one, truncated, or trained on another
    /// encoder), or has nothing to learn from.
    #[error("{path}: {message}")]
    Classifier {
        /// The classifier file, or the labels file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Drawing the histogram, or rendering it to PNG, failed.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The SVG or PNG file.
        path: PathBuf,
        /// What the plotting backend said.
        message: String,
    },
}

impl LabelError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// The result type of `laconic-label`.
pub type Result<T> = std::result::Result<T, LabelError>;
