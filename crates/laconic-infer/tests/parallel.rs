//! Parallel sampling shares one prefill and decodes as a batch: each sequence must be exactly
//! what a lone generation with its seed gives.

mod common;

use common::*;
use laconic_infer::generate::{GenerateConfig, SamplingConfig, ThinkConfig, generate};
use laconic_infer::parallel::{generate_samples, generate_samples_with};
use laconic_infer::policy::KvPolicyConfig;

#[test]
fn batched_greedy_samples_equal_a_lone_generation() {
    for family in ["llama", "qwen3"] {
        let m = load(&fixtures().join(family));
        let prompt = m.tokenizer.encode("The robot said", false).expect("encode");
        let config = GenerateConfig {
            max_new_tokens: 16,
            ..Default::default()
        };
        let mut cache = m.model.new_cache();
        let lone = generate(&m.model, &m.tokenizer, &prompt, &config, &mut cache, |_| {})
            .expect("generate");
        let v = generate_samples(&m.model, &m.tokenizer, &prompt, &config, 3).expect("samples");
        assert_eq!(v.samples.len(), 3);
        for s in &v.samples {
            assert_eq!(
                s.generation.tokens, lone.tokens,
                "{family}: a batched greedy sample differs"
            );
            assert_eq!(s.generation.text, lone.text);
        }
    }
}

#[test]
fn sampled_sequences_are_seeded_and_distinct() {
    let m = load(&fixtures().join("qwen2"));
    let prompt = m
        .tokenizer
        .encode("Once upon a time", false)
        .expect("encode");
    let config = GenerateConfig {
        max_new_tokens: 12,
        sampling: SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 11,
        },
        kv_policy: KvPolicyConfig::Window { sink: 2, window: 6 },
        think: Some(ThinkConfig {
            max_tokens: Some(4),
            end: " #### ".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = generate_samples(&m.model, &m.tokenizer, &prompt, &config, 4).expect("samples");
    let b = generate_samples(&m.model, &m.tokenizer, &prompt, &config, 4).expect("samples");
    let tokens = |v: &laconic_infer::parallel::Vote| {
        v.samples
            .iter()
            .map(|s| s.generation.tokens.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(tokens(&a), tokens(&b), "same seed, same samples");
    let t = tokens(&a);
    assert!(
        t.iter().any(|x| *x != t[0]),
        "four samples at T=1 are all identical"
    );
    let end_ids = m.tokenizer.encode(" #### ", false).expect("encode");
    for s in &a.samples {
        assert_eq!(
            s.generation.think_tokens, 4,
            "each sequence reasons 4 tokens"
        );
        assert_eq!(
            s.generation.tokens[4..4 + end_ids.len()],
            end_ids[..],
            "then gets the delimiter"
        );
        assert!(s.mean_logprob < 0.0);
    }
    assert!(a.chosen < 4);
}

#[test]
fn two_half_batches_draw_the_same_samples_as_one_batch() {
    let m = load(&fixtures().join("llama"));
    let prompt = m.tokenizer.encode("The robot said", false).expect("encode");
    for kv_policy in [
        KvPolicyConfig::Full,
        KvPolicyConfig::Window { sink: 2, window: 5 },
    ] {
        let config = GenerateConfig {
            max_new_tokens: 14,
            sampling: SamplingConfig {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 5,
            },
            kv_policy: kv_policy.clone(),
            ..Default::default()
        };
        let run = |halves| {
            generate_samples_with(&m.model, &m.tokenizer, &prompt, &config, 5, Some(halves))
                .expect("samples")
        };
        let (one, two) = (run(false), run(true));
        let tokens = |v: &laconic_infer::parallel::Vote| {
            v.samples
                .iter()
                .map(|s| s.generation.tokens.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(tokens(&one), tokens(&two), "{kv_policy:?}: halves differ");
        let t = tokens(&one);
        assert!(
            t.iter().any(|x| *x != t[0]),
            "five samples at T=1 are identical"
        );
        assert_eq!(one.answer, two.answer);
        let peak = |v: &laconic_infer::parallel::Vote| {
            let g = &v.samples[0].generation;
            (g.peak_cache_entries, g.peak_cache_bytes)
        };
        assert_eq!(peak(&one), peak(&two), "the cache is accounted alike");
    }
}
