//! Helpers shared by the integration tests: fixture paths and reference JSON.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use laconic_infer::LoadedModel;
use laconic_infer::generate::{GenerateConfig, SamplingConfig, generate};
use serde_json::Value;

/// `crates/laconic-infer/tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Reads a JSON fixture.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an id array: {v}"))
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// A JSON array of log-probabilities, the first null.
pub fn logprobs(v: &Value) -> Vec<Option<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a logprob array: {v}"))
        .iter()
        .map(Value::as_f64)
        .collect()
}

/// Makes quantized matmuls use f32 activations, so that quantized models equal the dense
/// model on the dequantized weights (what the parity tests compare); the default int8
/// activations are checked in `tests/quantized.rs` and `tests/smollm2.rs`.
pub fn exact_activations() {
    laconic_infer::qmatrix::set_exact_activations(true);
}

/// Loads a model on the CPU.
pub fn load(path: &Path) -> LoadedModel {
    laconic_infer::load(path, &Device::flex())
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Largest absolute difference between two log-probability sequences (both `None` first).
pub fn max_abs_diff(ours: &[Option<f32>], reference: &[Option<f64>]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "token count differs");
    assert!(
        ours[0].is_none() && reference[0].is_none(),
        "the first token has no log-probability"
    );
    ours.iter()
        .zip(reference)
        .skip(1)
        .map(|(a, b)| (a.expect("logprob") as f64 - b.expect("reference logprob")).abs())
        .fold(0.0, f64::max)
}

/// Greedy continuation of `prompt` for up to `n` tokens; with `stop_at_eos`, stopping after
/// EOS as `transformers`' `generate` does by default.
pub fn greedy(m: &LoadedModel, prompt: &[u32], n: usize, stop_at_eos: bool) -> Vec<u32> {
    let config = GenerateConfig {
        max_new_tokens: n,
        sampling: SamplingConfig::default(),
        stop_strings: vec![],
        stop_tokens: if stop_at_eos {
            m.config().eos_token_ids.clone()
        } else {
            vec![]
        },
        ..Default::default()
    };
    let mut cache = m.model.new_cache();
    generate(&m.model, &m.tokenizer, prompt, &config, &mut cache, |_| {})
        .expect("generate")
        .tokens
}
