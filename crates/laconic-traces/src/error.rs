//! The error type of `laconic-traces`.
//!
//! Every variant names what is at fault: the file and its 1-based line number for a bad input
//! line (`data/x.jsonl:17: missing field `question``), the path for a file that cannot be
//! opened or written, the trace id for a trace that cannot be written. Bad input is always an
//! error, never a panic.

use std::path::PathBuf;

/// Errors raised while reading, writing or grading traces and datasets.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A file could not be opened (most often: it does not exist).
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file was opened but reading it failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Writing, syncing or renaming a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file being written (for an atomic write: the final path, not the temporary one).
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// One line of a JSONL file is bad: not JSON, a missing or unknown field, a value out of
    /// range, a schema version this build does not know, a duplicate id.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A trace handed to a writer is invalid (so it is not written).
    #[error("trace `{id}`: {message}")]
    InvalidTrace {
        /// The trace's id (may be empty, if that is the problem).
        id: String,
        /// What is wrong with it.
        message: String,
    },
    /// Appending a trace to an open file failed.
    #[error("cannot append trace `{id}`: {source}")]
    Append {
        /// The id of the trace being appended.
        id: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A dataset spec (`gsm8k:PATH`, `math500:PATH`, `jsonl:PATH`, `traces:PATH` or a bare
    /// path) is invalid.
    #[error("invalid dataset spec `{spec}`: {message}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// A teacher spec (`openai:URL`, `local:PATH`, `file:PATH`, `procedural:verbose`) is invalid.
    #[error("invalid teacher `{spec}`: {message}")]
    TeacherSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// A teacher could not be opened or did not answer (after its retries).
    #[error("teacher {teacher}: {message}")]
    Teacher {
        /// The teacher's spec.
        teacher: String,
        /// What went wrong.
        message: String,
    },
    /// A distillation run cannot go on (settings that differ from the run being resumed,
    /// problems without a gold answer, samples that failed).
    #[error("distill {path}: {message}")]
    Distill {
        /// The output file of the run.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The result type of `laconic-traces`.
pub type Result<T> = std::result::Result<T, TraceError>;
