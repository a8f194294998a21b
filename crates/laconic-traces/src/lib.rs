//! Reasoning traces: the versioned trace schema, dataset readers and answer grading.
//!
//! - [`schema`]: [`Trace`], one JSONL line of a trace file, with its [`Trace::prompt`] (the
//!   question, plus a compression control string) and [`Trace::completion`] (the reasoning
//!   and one `#### answer` line); durable reading and writing.
//! - [`datasets`]: GSM8K and MATH-500 files read as traces, and [`DatasetSpec`]
//!   (`gsm8k:PATH`, `math500:PATH`, `traces:PATH`).
//! - [`grade`]: [`Grader`], which pulls the final answer out of a response and compares it
//!   with the reference, and [`grade::grade_file`] for a whole JSONL file.
//! - [`error`]: [`TraceError`], whose messages name the file and line at fault.
//!
//! The file formats are described in `docs/TRACES.md`.

pub mod datasets;
pub mod error;
pub mod grade;
mod jsonl;
pub mod schema;

pub use datasets::DatasetSpec;
pub use error::{Result, TraceError};
pub use grade::{GradeSummary, Graded, Grader};
pub use jsonl::write_atomic;
pub use schema::{Provenance, SCHEMA_VERSION, Trace};
