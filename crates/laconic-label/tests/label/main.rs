//! Integration tests of the labeler, on the real datasets in `data/`, hand-written R1-style
//! text (marked as such), and the tiny fixture model of `laconic-infer` (surprisal and
//! attention scorers).

mod attention_scorer;
mod bad_input;
mod classifier;
mod compression;
mod invariants;
mod model_scorer;
mod resume;
mod sentences;
mod steps_real;

use std::path::PathBuf;

use laconic_label::LabeledTrace;

/// A path under the repository root.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The digit runs of a text, in order: `16 - 3 = 13, $1,600` gives `16 3 13 1 600`.
pub fn numbers(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

/// Whitespace words of a text.
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Panics unless every variant keeps every number of the original, in order.
pub fn assert_numbers_kept(l: &LabeledTrace) {
    let original = numbers(&l.trace.reasoning);
    for v in &l.variants {
        assert_eq!(
            numbers(&v.trace.reasoning),
            original,
            "{} at {}: numbers changed\noriginal: {}\ncompressed: {}",
            l.id,
            v.target,
            l.trace.reasoning,
            v.trace.reasoning
        );
    }
}
