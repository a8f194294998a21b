//! The real model: SmolLM2-135M-Instruct, Q4_1 GGUF, as `scripts/setup.sh` installs it.
//! Reference values: `transformers` loading the same GGUF (it dequantizes to f32) and
//! llama.cpp through llama-cpp-python, both in `tests/fixtures/smollm2/reference.json`.

mod common;

use std::path::PathBuf;

use common::*;
use laconic_infer::chat::Message;
use laconic_infer::generate::score_ids;

fn model_path() -> PathBuf {
    let p = workspace().join("checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh --model first",
        p.display()
    );
    p
}

fn reference() -> serde_json::Value {
    read_json(&fixtures().join("smollm2/reference.json"))
}

fn perplexity(lp: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = lp.collect();
    (-v.iter().sum::<f64>() / v.len() as f64).exp()
}

/// laconic dequantizes to f32 as `transformers` does, so log-probabilities match it to 2e-3.
/// llama.cpp's Q4_1 matmuls also quantize the activations to Q8, which moves its log-probs by
/// up to 0.67 here (on an F32 copy of the same weights it agrees with `transformers` to 4e-5;
/// see the fixture). The perplexity is compared with llama.cpp's default settings (f16 KV
/// cache), the figure a llama.cpp user sees: 9.40, against 9.26 from `transformers`. With an
/// f32 KV cache llama.cpp reports 9.48 (2.4% away); both are in the fixture.
#[test]
fn smollm2_logprobs_match_transformers_and_perplexity_matches_llama_cpp() {
    let r = reference();
    let m = load(&model_path());
    let tokens = ids(&r["token_ids"]);
    let ours = score_ids(&m.model, &tokens).expect("score");
    let diff = max_abs_diff(&ours, &logprobs(&r["logprobs_transformers"]));
    assert!(diff < 2e-3, "max |logprob - transformers| = {diff:e}");
    let ppl = perplexity(ours.iter().skip(1).map(|x| x.expect("logprob") as f64));
    let ppl_cpp = r["perplexity_llama_cpp_default_settings"]
        .as_f64()
        .expect("llama.cpp perplexity");
    let rel = (ppl - ppl_cpp).abs() / ppl_cpp;
    eprintln!(
        "SmolLM2: max |logprob - transformers| {diff:.2e}; perplexity laconic {ppl:.4}, transformers {:.4}, llama.cpp {ppl_cpp:.4} ({:.2}% apart)",
        r["perplexity_transformers"].as_f64().unwrap_or(f64::NAN),
        rel * 100.0
    );
    assert!(
        rel < 0.02,
        "perplexity {ppl:.4} vs llama.cpp {ppl_cpp:.4}: {:.2}% apart",
        rel * 100.0
    );
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    let r = reference();
    let m = load(&model_path());
    let text = r["text"].as_str().expect("text");
    assert_eq!(
        m.tokenizer.encode(text, true).expect("encode"),
        ids(&r["token_ids_llama_cpp"])
    );
    let chatml = &r["chatml"];
    let prompt = chatml["prompt"].as_str().expect("prompt");
    assert_eq!(
        m.tokenizer.encode(prompt, true).expect("encode"),
        ids(&chatml["prompt_ids"])
    );
}

#[test]
fn smollm2_greedy_chatml_says_paris() {
    let r = reference();
    let m = load(&model_path());
    let chatml = &r["chatml"];
    let prompt = ids(&chatml["prompt_ids"]);
    let expected = ids(&chatml["greedy_transformers_ids"]);
    // The reference ran a fixed 16 tokens without stopping at <|im_end|>.
    let ours = greedy(&m, &prompt, expected.len(), false);
    assert_eq!(ours, expected, "greedy ids differ from transformers");
    let text = m.tokenizer.decode(&ours, true).expect("decode");
    assert!(text.contains("Paris"), "{text:?}");
}

#[test]
fn smollm2_chat_template_renders_as_transformers() {
    let r = reference();
    let m = load(&model_path());
    let ct = &r["chat_template"];
    let messages: Vec<Message> = serde_json::from_value(ct["messages"].clone()).expect("messages");
    let rendered = m
        .chat_template
        .as_ref()
        .expect("template")
        .render(&messages, true)
        .expect("render");
    assert_eq!(rendered, ct["rendered"].as_str().expect("rendered"));
    assert_eq!(
        m.tokenizer.encode(&rendered, true).expect("encode"),
        ids(&ct["rendered_ids"])
    );
}

/// The default decode path: Q4_1 weights kept packed, activations quantized to int8 per block
/// of 32 as llama.cpp does. Token by token (every matmul through the packed kernel), the
/// perplexity must stay within 4% of llama.cpp's and of `transformers`'.
///
/// Rounding activations to int8 is discontinuous, so kernels that only sum in another order
/// land on different sides of a rounding step now and then, and on these 101 tokens the
/// perplexity moves by a few percent: 9.27 with the scalar kernel, 9.30 with AVX2, 9.12 with
/// AVX-512 (the kernels agree to 2e-5 on the same inputs, and on 1,024 tokens of GSM8K text
/// `laconic kv-eval` gives 4.678 with AVX-512 and 4.679 with AVX2).
#[test]
fn smollm2_packed_int8_decode_stays_with_the_references() {
    let r = reference();
    let m = load(&model_path());
    assert!(
        m.model.layers[0].self_attn.q_proj.quant().is_some(),
        "the Q4_1 weights should stay packed"
    );
    let tokens = ids(&r["token_ids"]);
    let stepped = laconic_infer::generate::step_through(
        &m.model,
        &tokens,
        &laconic_infer::policy::KvPolicyConfig::Full,
    )
    .expect("step");
    let lps: Vec<Option<f32>> = stepped.iter().map(|(lp, _)| *lp).collect();
    let diff = max_abs_diff(&lps, &logprobs(&r["logprobs_transformers"]));
    let ppl = perplexity(lps.iter().skip(1).map(|x| x.expect("logprob") as f64));
    for key in [
        "perplexity_llama_cpp_default_settings",
        "perplexity_transformers",
    ] {
        let want = r[key].as_f64().expect(key);
        let rel = (ppl - want).abs() / want;
        eprintln!(
            "packed int8 decode: perplexity {ppl:.4} vs {key} {want:.4} ({:.2}%), max |Δ logprob| {diff:.3}",
            rel * 100.0
        );
        assert!(rel < 0.04, "perplexity {ppl:.4} vs {key} {want:.4}");
    }
}
