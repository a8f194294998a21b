//! Reasoning traces: the versioned trace schema, dataset readers and answer grading.
//!
//! - [`schema`]: [`Trace`], one JSONL line of a trace file, with its [`Trace::prompt`] (the
//!   question, plus a compression control string) and [`Trace::completion`] (the reasoning
//!   and one `#### answer` line); durable reading and writing.
//! - [`datasets`]: GSM8K and MATH-500 files read as traces, and [`DatasetSpec`]
//!   (`gsm8k:PATH`, `math500:PATH`, `jsonl:PATH`, `traces:PATH`, `procedural:OPTIONS`).
//! - [`grade`]: [`Grader`], which pulls the final answer out of a response and compares it
//!   with the reference, and [`grade::grade_file`] for a whole JSONL file.
//! - [`formats`]: traces people already have (R1 `<think>` text, OpenAI chat `messages`,
//!   DeepSeek `reasoning_content`) and generic JSONL with [`formats::FieldMap`] field names.
//! - [`teacher`]: [`teacher::Teacher`]s (`openai:URL`, `local:PATH`, `file:PATH`,
//!   `procedural:verbose`) and the
//!   OpenAI client with its retries.
//! - [`distill`]: [`distill::distill`], K samples per problem, graded, selected, resumable.
//! - [`procedural`]: a stand-in for a dataset and a teacher on machines too small for a
//!   reasoning model: seeded arithmetic word problems (`procedural:count=N,seed=S`) and a
//!   wordy R1-style teacher (`procedural:verbose`), both labeled as generated.
//! - [`error`]: [`TraceError`], whose messages name the file and line at fault.
//!
//! The file formats are described in `docs/TRACES.md`.

pub mod datasets;
pub mod distill;
pub mod error;
pub mod formats;
pub mod grade;
mod jsonl;
pub mod procedural;
pub mod schema;
pub mod teacher;

pub use datasets::DatasetSpec;
pub use error::{Result, TraceError};
pub use grade::{GradeSummary, Graded, Grader};
pub use jsonl::{append_json_line, read_json_lines, write_atomic};
pub use schema::{Provenance, SCHEMA_VERSION, Trace};
