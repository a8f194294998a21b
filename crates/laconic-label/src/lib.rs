//! The trace-compression labeler: which parts of a reasoning trace matter, and shorter
//! versions of it that keep the math.
//!
//! Teacher traces are verbose: restated questions, filler, "wait, let me double-check" loops,
//! the same step twice. The labeler scores every word of a trace's reasoning and writes
//! compressed variants at target ratios (kept ÷ original tokens), which a student learns to
//! produce on request (TokenSkip-style ratio-conditioned training: the ratio is stated in the
//! prompt as `[compress 0.6]`).
//!
//! - [`steps`]: the reasoning split into steps (lines, sentences of long lines, paragraphs,
//!   R1-style restarts such as "Wait," and "Let me check").
//! - [`words`]: the words compression keeps or drops, and the protected ones (numbers,
//!   operators, equations, LaTeX math, the boxed answer), which are always kept.
//! - [`rules`]: the rule scorer: word lists (filler and stop words low; numbers, units,
//!   variables high) and step redundancy (re-verification, restated question, near-duplicate
//!   steps, filler steps).
//! - [`surprisal`]: the model scorer: each token's self-information under a scorer model.
//! - [`attention`]: the attention scorer: the attention each reasoning token receives from
//!   the final answer line.
//! - [`classifier`]: the learned token classifier: a linear head on a model's hidden states,
//!   trained (with Burn's autodiff) on what the other scorers or a user kept, saved and reused.
//! - [`sentences`]: whole sentences as the units of compression (`--granularity sentences`).
//! - [`compress`]: selection to a target ratio under the invariants, and tidy rendering.
//! - [`label`]: [`Labeler`], which labels one [`laconic_traces::Trace`] into a
//!   [`LabeledTrace`] with one re-graded variant per ratio.
//! - [`run`]: whole files, resumably ([`label_file`]), and the trace file of variants that
//!   `laconic train` reads ([`write_variants`]).
//! - [`report`]: per-ratio figures and a histogram (SVG and PNG).
//! - [`error`]: the error type, [`LabelError`].
//!
//! The output format and the measured figures are in `docs/LABELING.md`.
//!
//! ```no_run
//! use laconic_label::{LabelConfig, LabelJob, Labeler, label_file, read_labeled, write_report};
//! use laconic_traces::DatasetSpec;
//!
//! let labeler = Labeler::rules(LabelConfig::parse_ratios("0.5,0.7,0.9")?, None);
//! let job = LabelJob {
//!     input: DatasetSpec::parse("gsm8k:data/gsm8k/train.jsonl")?,
//!     out: "checkpoints/labeled.jsonl".into(),
//!     limit: None,
//!     grader: None,
//!     progress: true,
//!     batch: 16,
//! };
//! label_file(&labeler, &job)?;
//! let labeled = read_labeled(&job.out)?;
//! let report = write_report(&labeled, std::path::Path::new("checkpoints/label-report.json"))?;
//! println!("mean ratio at 0.5: {:.3}", report.ratios[0].mean);
//! # Ok::<(), laconic_label::LabelError>(())
//! ```

pub mod attention;
pub mod classifier;
pub mod compress;
pub mod error;
pub mod label;
pub mod report;
pub mod rules;
pub mod run;
pub mod sentences;
pub mod steps;
pub mod surprisal;
pub mod words;

pub use attention::AttentionScorer;
pub use classifier::{Examples, TokenClassifier, TrainSettings};
pub use error::{LabelError, Result};
pub use label::{Granularity, LabelConfig, LabeledTrace, Labeler, Scorer, StepLabel, Variant};
pub use report::{RatioReport, Report, build_report, svg_to_png, write_report};
pub use run::{LabelJob, RunSummary, VariantsSummary, label_file, read_labeled, write_variants};
pub use surprisal::SurprisalScorer;
