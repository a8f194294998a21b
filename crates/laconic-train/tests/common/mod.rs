//! Test data shared by the training, distillation and export tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The tiny fixture models of `laconic-infer` (random weights saved by `transformers`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../laconic-infer/tests/fixtures")
}

/// One fixture model directory (`llama`, `llama3`, `qwen2`, `qwen3`).
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Writes `dir/traces.jsonl` with `n` traces made by `trace(i)` (hand-written test data,
/// not from a dataset) and returns its path.
pub fn write_traces(dir: &Path, n: usize, trace: impl Fn(usize) -> serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join("traces.jsonl");
    let text: String = (0..n).map(|i| format!("{}\n", trace(i))).collect();
    std::fs::write(&path, text).expect("write traces");
    path
}

/// A short addition trace: "What is a + b?" with its one-line reasoning and gold answer.
pub fn addition(i: usize) -> serde_json::Value {
    let (a, b) = (i % 7 + 1, i % 5 + 2);
    serde_json::json!({
        "schema": 1,
        "id": format!("hand/{i}"),
        "question": format!("What is {a} + {b}?"),
        "reasoning": format!("{a} + {b} = {}.", a + b),
        "answer": format!("{}", a + b),
        "gold": format!("{}", a + b),
    })
}
