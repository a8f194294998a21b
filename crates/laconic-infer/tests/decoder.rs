//! The decoder's own contracts, on the tiny fixture models: incremental decoding over the cache
//! equals one full pass; the explicit attention path (which returns weights) equals the fused
//! one; the cache keeps original positions through eviction; generation stops and streams
//! correctly.

mod common;

use burn::prelude::*;
use common::*;
use laconic_infer::generate::{FinishReason, GenerateConfig, SamplingConfig, generate};
use laconic_infer::model::{ForwardOptions, Logits};

fn tokens(ids: &[u32]) -> Tensor<2, Int> {
    let data: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), &Device::flex())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec().expect("f32 data")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn reference_ids(family: &str) -> Vec<u32> {
    ids(&read_json(&fixtures().join(family).join("reference.json"))["token_ids"])
}

#[test]
fn incremental_decode_equals_one_full_pass() {
    for family in ["llama3", "qwen2", "qwen3"] {
        let m = load(&fixtures().join(family));
        let ids = &reference_ids(family)[..24];
        let all = ForwardOptions {
            logits: Logits::All,
            ..Default::default()
        };
        let mut cache = m.model.new_cache();
        let full = m
            .model
            .forward(tokens(ids), &mut cache, all)
            .logits
            .expect("logits");
        let vocab = full.dims()[2];
        // Prefill 10 tokens, then feed the rest one by one, in chunks of 1 and 3.
        let mut cache = m.model.new_cache();
        let mut pieces = vec![
            m.model
                .forward(tokens(&ids[..10]), &mut cache, all)
                .logits
                .expect("logits"),
        ];
        let mut i = 10;
        while i < ids.len() {
            let n = if i % 2 == 0 { 1 } else { 3.min(ids.len() - i) };
            pieces.push(
                m.model
                    .forward(tokens(&ids[i..i + n]), &mut cache, all)
                    .logits
                    .expect("logits"),
            );
            i += n;
        }
        let inc = Tensor::cat(pieces, 1);
        assert_eq!(inc.dims(), [1, ids.len(), vocab]);
        let d = max_diff(&values(full), &values(inc));
        assert!(
            d < 1e-4,
            "{family}: incremental vs full logits differ by {d}"
        );
        assert_eq!(cache.next_position(), ids.len());
        assert_eq!(
            cache.layer(0).positions(),
            (0..ids.len()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn attention_weights_path_matches_fused_path() {
    let m = load(&fixtures().join("qwen3"));
    let cfg = m.config().clone();
    let ids = &reference_ids("qwen3")[..12];
    let fused = ForwardOptions {
        logits: Logits::All,
        ..Default::default()
    };
    let explicit = ForwardOptions {
        logits: Logits::All,
        attention: true,
        hidden: true,
        ..Default::default()
    };
    let mut c1 = m.model.new_cache();
    let a = m
        .model
        .forward(tokens(&ids[..8]), &mut c1, fused)
        .logits
        .expect("logits");
    let mut c2 = m.model.new_cache();
    let out = m.model.forward(tokens(&ids[..8]), &mut c2, explicit);
    let d = max_diff(&values(a), &values(out.logits.expect("logits")));
    assert!(d < 1e-4, "explicit attention changes logits by {d}");
    assert_eq!(out.hidden.expect("hidden").dims(), [1, 8, cfg.hidden_size]);
    assert_eq!(out.attentions.len(), cfg.num_layers);
    let w = out.attentions[0].clone();
    assert_eq!(w.dims(), [1, cfg.num_heads, 8, 8]);
    let w = values(w);
    for h in 0..cfg.num_heads {
        for q in 0..8 {
            let row = &w[(h * 8 + q) * 8..(h * 8 + q + 1) * 8];
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "head {h} query {q} sums to {sum}");
            assert!(
                row[q + 1..].iter().all(|&x| x == 0.0),
                "query {q} attends to the future: {row:?}"
            );
        }
    }
    // A decode step over the cache: one query row over all 9 entries.
    let out = m.model.forward(tokens(&ids[8..9]), &mut c2, explicit);
    assert_eq!(out.attentions[1].dims(), [1, cfg.num_heads, 1, 9]);
}

#[test]
fn eviction_keeps_original_positions() {
    let m = load(&fixtures().join("llama"));
    let ids = reference_ids("llama");
    let opts = ForwardOptions::default();
    let mut cache = m.model.new_cache();
    m.model.forward(tokens(&ids[..16]), &mut cache, opts);
    let full_bytes = cache.bytes();
    // Keep 4 sink tokens and the last 4 (a StreamingLLM window), in every layer.
    let keep: Vec<usize> = (0..4).chain(12..16).collect();
    for layer in cache.layers_mut() {
        layer.retain(&keep);
    }
    assert_eq!(cache.len(), 8);
    assert_eq!(
        cache.bytes(),
        full_bytes / 2,
        "bytes shrink with the entries"
    );
    assert_eq!(
        cache.next_position(),
        16,
        "positions keep counting past evicted entries"
    );
    m.model.forward(tokens(&ids[16..18]), &mut cache, opts);
    assert_eq!(
        cache.layer(1).positions(),
        [0, 1, 2, 3, 12, 13, 14, 15, 16, 17]
    );
    // The new keys were rotated at positions 16 and 17, not 8 and 9: compare with a full cache.
    let mut full = m.model.new_cache();
    m.model.forward(tokens(&ids[..18]), &mut full, opts);
    let k_full = full.layer(0).keys().expect("keys").clone().narrow(2, 16, 2);
    let k_evicted = cache.layer(0).keys().expect("keys").clone().narrow(2, 8, 2);
    // Layer 0's inputs for the new tokens do not depend on the cache, so keys match exactly.
    let d = max_diff(&values(k_full), &values(k_evicted));
    assert!(
        d < 1e-5,
        "new keys were not rotated at their original positions ({d})"
    );
}

fn run(
    m: &laconic_infer::LoadedModel,
    prompt: &[u32],
    stop_strings: Vec<String>,
    sampling: SamplingConfig,
) -> (laconic_infer::generate::Generation, String) {
    let config = GenerateConfig {
        max_new_tokens: 24,
        sampling,
        stop_strings,
        stop_tokens: vec![],
        ..Default::default()
    };
    let mut cache = m.model.new_cache();
    let mut streamed = String::new();
    let g = generate(&m.model, &m.tokenizer, prompt, &config, &mut cache, |t| {
        streamed.push_str(t)
    })
    .expect("generate");
    (g, streamed)
}

#[test]
fn stop_strings_and_streaming() {
    let m = load(&fixtures().join("llama"));
    let prompt = m
        .tokenizer
        .encode("Once upon a time", false)
        .expect("encode");
    let (g, streamed) = run(&m, &prompt, vec![], SamplingConfig::default());
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(g.tokens.len(), 24);
    assert_eq!(streamed, g.text, "the stream adds up to the text");
    // Stop on a string from the middle of that text: the output ends right before it.
    let chars: Vec<char> = g.text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let cut = g.text.find(&stop).expect("stop string occurs");
    let (g2, streamed2) = run(&m, &prompt, vec![stop.clone()], SamplingConfig::default());
    assert_eq!(g2.finish_reason, FinishReason::StopString);
    assert_eq!(g2.text, g.text[..cut], "stop {stop:?}");
    assert_eq!(
        streamed2, g2.text,
        "nothing of the stop string was streamed"
    );
}

#[test]
fn sampling_is_seeded() {
    let m = load(&fixtures().join("qwen2"));
    let prompt = m.tokenizer.encode("The robot said", false).expect("encode");
    let s = |seed| SamplingConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.95,
        seed,
    };
    let (a, _) = run(&m, &prompt, vec![], s(1));
    let (b, _) = run(&m, &prompt, vec![], s(1));
    assert_eq!(a.tokens, b.tokens, "same seed, same tokens");
    let others: Vec<Vec<u32>> = (2..6)
        .map(|seed| run(&m, &prompt, vec![], s(seed)).0.tokens)
        .collect();
    assert!(
        others.iter().any(|t| *t != a.tokens),
        "different seeds never differ"
    );
    let (greedy, _) = run(&m, &prompt, vec![], SamplingConfig::default());
    assert!(
        others
            .iter()
            .chain([&a.tokens])
            .any(|t| *t != greedy.tokens),
        "sampling equals greedy every time"
    );
}

#[test]
fn think_budget_forces_the_end_and_min_think_forces_wait() {
    use laconic_infer::generate::ThinkConfig;
    let m = load(&fixtures().join("llama"));
    let prompt = m
        .tokenizer
        .encode("Once upon a time", false)
        .expect("encode");
    let base = GenerateConfig {
        max_new_tokens: 24,
        ..Default::default()
    };
    let mut cache = m.model.new_cache();
    let free =
        generate(&m.model, &m.tokenizer, &prompt, &base, &mut cache, |_| {}).expect("generate");

    // --think-budget 5 with an end delimiter the model never writes by itself here.
    let end = " THE END.".to_string();
    assert!(!free.text.contains(&end));
    let end_ids = m.tokenizer.encode(&end, false).expect("encode");
    let config = GenerateConfig {
        think: Some(ThinkConfig {
            max_tokens: Some(5),
            end: end.clone(),
            ..Default::default()
        }),
        ..base.clone()
    };
    let mut cache = m.model.new_cache();
    let g =
        generate(&m.model, &m.tokenizer, &prompt, &config, &mut cache, |_| {}).expect("generate");
    assert_eq!(g.think_tokens, 5);
    assert_eq!(
        g.tokens[..5],
        free.tokens[..5],
        "the reasoning is the model's own until the budget"
    );
    assert_eq!(
        g.tokens[5..5 + end_ids.len()],
        end_ids[..],
        "then the delimiter is appended"
    );
    assert!(g.text.contains(&end));
    assert_eq!(cache.next_position(), prompt.len() + g.tokens.len() - 1);

    // --min-think 20 with a delimiter the model writes early: it is taken back for "Wait".
    // The first clean ASCII word after the start, so that the delimiter is plain text.
    let word = free
        .text
        .split_whitespace()
        .skip(1)
        .find(|w| w.len() >= 2 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| panic!("no plain word in {:?}", free.text));
    let end = format!(" {word}");
    let cut = free.text.find(&end).expect("delimiter occurs");
    let config = GenerateConfig {
        think: Some(ThinkConfig {
            min_tokens: 20,
            end: end.clone(),
            wait: " Wait".into(),
            ..Default::default()
        }),
        ..base
    };
    let mut cache = m.model.new_cache();
    let mut streamed = String::new();
    let g = generate(&m.model, &m.tokenizer, &prompt, &config, &mut cache, |t| {
        streamed.push_str(t)
    })
    .expect("generate");
    let wait = g.text.find(" Wait").unwrap_or_else(|| {
        panic!(
            "no Wait: free {:?} end {end:?} got {:?} think {}",
            free.text, g.text, g.think_tokens
        )
    });
    // Everything before "Wait" is the model's own text, cut before the delimiter (at a token
    // boundary, so possibly a little earlier).
    assert!(
        free.text[..cut].starts_with(&g.text[..wait]),
        "{:?} vs {:?}",
        g.text,
        free.text
    );
    assert!(
        !g.text[..wait].contains(&end),
        "the premature delimiter was taken back"
    );
    assert!(
        g.think_tokens >= 20 || g.tokens.len() == 24,
        "reasoning ended early: {g:?}"
    );
    assert_eq!(
        streamed, g.text,
        "the stream never showed the taken-back delimiter"
    );
    assert_eq!(
        cache.next_position(),
        prompt.len() + g.tokens.len() - 1,
        "the cache holds exactly the kept tokens"
    );
}

#[test]
fn batched_scoring_equals_scoring_each_sequence_alone() {
    use laconic_infer::generate::{score_batch, score_ids};
    for family in ["llama", "qwen3"] {
        let m = load(&fixtures().join(family));
        let ids = reference_ids(family);
        // Three lengths (the longest sets the padding) and a one-token sequence.
        let seqs: Vec<&[u32]> = vec![&ids[..17], &ids[3..40], &ids[10..11], &ids[5..29]];
        let batch = score_batch(&m.model, &seqs).expect("batch scores");
        assert_eq!(batch.len(), seqs.len());
        for (s, got) in seqs.iter().zip(&batch) {
            let alone = score_ids(&m.model, s).expect("scores");
            assert_eq!(got.len(), alone.len());
            assert_eq!(got[0], None);
            for (a, b) in got.iter().zip(&alone).skip(1) {
                let (a, b) = (a.expect("scored"), b.expect("scored"));
                assert!((a - b).abs() < 1e-4, "{family}: {a} vs {b}");
            }
        }
    }
}
