//! Weights kept quantized in memory (`WeightFormat`), checked against the reference.
//!
//! - GGUF `Q8_0`/`Q4_0` files load without dequantizing (`Auto`); a prefill (dequantized
//!   matmul) and a token-at-a-time pass (the packed SIMD kernel) both match what
//!   `transformers` computes on the dequantized weights within 1e-4, the f32 tolerance.
//! - Quantizing f32 safetensors in laconic (`--weights q8_0`, `--weights int4`) reproduces
//!   gguf-py's quantizers: the model matches the reference for the GGUF file that gguf-py
//!   quantized from the same weights, also within 1e-4.
//! - int8 per output channel has no reference file; it must stay close to f32 and hold its
//!   weights in about a quarter of the bytes.

mod common;

use burn::prelude::*;
use common::*;
use laconic_infer::generate::{score_ids, step_through};
use laconic_infer::policy::KvPolicyConfig;
use laconic_infer::{LoadedModel, WeightFormat, load_with};

const TOL: f64 = 1e-4;
const FAMILIES: [&str; 4] = ["llama", "llama3", "qwen2", "qwen3"];

fn load_as(family: &str, rel: &str, weights: WeightFormat) -> LoadedModel {
    // These tests check the weights: f32 activations make a quantized model equal the dense
    // model on its dequantized weights. int8 activations are checked in `qmatrix`'s unit
    // tests and on SmolLM2 (`tests/smollm2.rs`).
    exact_activations();
    let path = fixtures().join(family).join(rel);
    load_with(&path, &Device::flex(), weights)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Checks both the one-pass score and the token-at-a-time pass against `reference[key]`.
fn check(family: &str, m: &LoadedModel, key: &str, what: &str) {
    let reference = read_json(&fixtures().join(family).join("reference.json"));
    let tokens = ids(&reference["token_ids"]);
    let want = logprobs(&reference["logprobs"][key]);
    let prefill = score_ids(&m.model, &tokens).expect("score");
    let d = max_abs_diff(&prefill, &want);
    assert!(
        d < TOL,
        "{family} {what}, one pass: max |Δ logprob| = {d:e} vs reference[{key}]"
    );
    let stepped: Vec<Option<f32>> = step_through(&m.model, &tokens, &KvPolicyConfig::Full)
        .expect("step")
        .into_iter()
        .map(|(lp, _)| lp)
        .collect();
    let d = max_abs_diff(&stepped, &want);
    assert!(
        d < TOL,
        "{family} {what}, token by token: max |Δ logprob| = {d:e} vs reference[{key}]"
    );
}

fn assert_packed(m: &LoadedModel, what: &str) {
    let l = &m.model.layers[0];
    for (name, p) in [
        ("q_proj", &l.self_attn.q_proj),
        ("k_proj", &l.self_attn.k_proj),
        ("down_proj", &l.mlp.down_proj),
    ] {
        assert!(
            p.quant().is_some() && p.weight.is_none(),
            "{what}: {name} is not kept quantized"
        );
    }
}

#[test]
fn gguf_q8_0_and_q4_0_stay_quantized_and_match_the_reference() {
    for f in FAMILIES {
        for (file, key) in [
            ("model-q8_0.gguf", "gguf-q8_0"),
            ("model-q4_0.gguf", "gguf-q4_0"),
        ] {
            let m = load_as(f, file, WeightFormat::Auto);
            assert_packed(&m, &format!("{f}/{file}"));
            check(f, &m, key, file);
            let dense = load_as(f, file, WeightFormat::F32);
            assert!(dense.model.layers[0].self_attn.q_proj.quant().is_none());
            assert!(
                m.model.decode_weight_bytes() * 2 < dense.model.decode_weight_bytes(),
                "{f}/{file}: {} bytes kept quantized vs {} as f32",
                m.model.decode_weight_bytes(),
                dense.model.decode_weight_bytes()
            );
        }
    }
}

#[test]
fn quantizing_f32_weights_reproduces_gguf_py() {
    for f in FAMILIES {
        let q8 = load_as(f, ".", WeightFormat::Q8_0);
        assert_packed(&q8, &format!("{f} --weights q8_0"));
        check(f, &q8, "gguf-q8_0", "--weights q8_0");
        let q4 = load_as(f, ".", WeightFormat::Int4);
        assert_packed(&q4, &format!("{f} --weights int4"));
        check(f, &q4, "gguf-q4_0", "--weights int4");
    }
}

#[test]
fn int8_per_channel_stays_close_to_f32() {
    for f in FAMILIES {
        let m = load_as(f, ".", WeightFormat::Int8);
        assert_packed(&m, &format!("{f} --weights int8"));
        let dense = load_as(f, ".", WeightFormat::F32);
        // int8 values plus one f32 scale per row: a bit over a quarter of f32.
        let (q, d) = (
            m.model.decode_weight_bytes(),
            dense.model.decode_weight_bytes(),
        );
        assert!(q * 10 < d * 3, "{f}: int8 holds {q} bytes vs {d} for f32");
        let reference = read_json(&fixtures().join(f).join("reference.json"));
        let tokens = ids(&reference["token_ids"]);
        let ours = score_ids(&m.model, &tokens).expect("score");
        let d8 = max_abs_diff(&ours, &logprobs(&reference["logprobs"]["hf"]));
        // Q8_0 (a scale per 32 values) moves these peaked models by up to 0.55 (the fixture
        // stats); one scale per row is coarser but must stay the same order.
        assert!(
            d8 < 1.5,
            "{f}: int8 per channel moves log-probabilities by {d8}"
        );
        assert!(
            d8 > 0.0,
            "{f}: int8 per channel changed nothing; is it applied?"
        );
    }
}

#[test]
fn packing_a_loaded_f32_model_equals_loading_it_quantized() {
    // `Model::pack_weights` (GRPO's sampling copy) on an f32 model gives what `--weights
    // q8_0` gives at load time, so it matches gguf-py's Q8_0 reference too.
    for f in FAMILIES {
        let mut m = load_as(f, ".", WeightFormat::F32);
        let matrices = m.model.pack_weights(WeightFormat::Q8_0);
        assert_packed(&m, &format!("{f} packed"));
        assert_eq!(
            matrices,
            7 * m.model.layers.len() + 1,
            "{f}: every projection and the head"
        );
        assert!(m.model.lm_head.as_ref().and_then(|h| h.quant()).is_some());
        check(f, &m, "gguf-q8_0", "pack_weights(Q8_0)");
        assert_eq!(
            m.model.pack_weights(WeightFormat::F32),
            0,
            "{f}: f32 packs nothing"
        );
    }
}
