//! Parallel sampling shares one prefill and decodes as a batch, and batched generation decodes
//! different prompts together: each sequence must be exactly what a lone generation with its
//! seed gives, under every eviction policy (each sequence keeps its own cache).

mod common;

use common::*;
use laconic_infer::LoadedModel;
use laconic_infer::generate::{GenerateConfig, SamplingConfig, ThinkConfig, generate};
use laconic_infer::parallel::{generate_batch, generate_samples, generate_samples_with};
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

/// Under every policy, one batch and two half batches draw the same samples, and each is the
/// lone generation with its seed.
#[test]
fn two_half_batches_draw_the_same_samples_as_one_batch() {
    let m = load(&fixtures().join("llama"));
    let prompt = m.tokenizer.encode("The robot said", false).expect("encode");
    for kv_policy in policies() {
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
        // Each sequence keeps its own cache: sample i is the lone generation with seed + i.
        for (i, s) in one.samples.iter().enumerate() {
            let mut alone_config = config.clone();
            alone_config.sampling.seed = 5 + i as u64;
            let alone = lone(&m, &prompt, &alone_config);
            assert_eq!(
                s.generation.tokens, alone.tokens,
                "{kv_policy:?}: sample {i} differs from its lone generation"
            );
            assert_eq!(
                s.generation.peak_cache_entries, alone.peak_cache_entries,
                "{kv_policy:?}: sample {i} holds a different cache"
            );
        }
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

/// Every policy, with budgets small enough that each evicts within a few tokens.
fn policies() -> Vec<KvPolicyConfig> {
    vec![
        KvPolicyConfig::Full,
        KvPolicyConfig::Window { sink: 2, window: 5 },
        KvPolicyConfig::H2o {
            budget: 6,
            window: 2,
            sink: 1,
        },
        KvPolicyConfig::SnapKv {
            budget: 4,
            window: 2,
            kernel: 3,
        },
        KvPolicyConfig::Rkv {
            budget: 5,
            buffer: 2,
            window: 2,
            lambda: 0.1,
            sink: 0,
        },
    ]
}

/// A lone generation of `prompt` under `config`.
fn lone(
    m: &LoadedModel,
    prompt: &[u32],
    config: &GenerateConfig,
) -> laconic_infer::generate::Generation {
    let mut cache = m.model.new_cache();
    generate(&m.model, &m.tokenizer, prompt, config, &mut cache, |_| {}).expect("generate")
}

#[test]
fn batched_prompts_answer_as_they_would_alone() {
    let m = load(&fixtures().join("llama"));
    // Two prompts of length 3 and three of length 5 (in two batches of at most 2), mixed.
    let prompts: Vec<Vec<u32>> = vec![
        vec![5, 17, 33],
        vec![40, 2, 9, 61, 7],
        vec![9, 2, 41],
        vec![12, 13, 14, 15, 16],
        vec![100, 7, 8, 9, 10],
    ];
    // A stop token that the first prompt produces early, so that it leaves its batch while
    // the other sequence goes on.
    let free = lone(
        &m,
        &prompts[0],
        &GenerateConfig {
            max_new_tokens: 12,
            ..Default::default()
        },
    );
    let stop = free.tokens[3];
    for kv_policy in policies() {
        let config = GenerateConfig {
            max_new_tokens: 12,
            stop_tokens: vec![stop],
            kv_policy: kv_policy.clone(),
            ..Default::default()
        };
        let done = std::sync::Mutex::new(Vec::new());
        let batched = generate_batch(&m.model, &m.tokenizer, &prompts, &config, 2, |i, g| {
            if let Ok(mut d) = done.lock() {
                d.push((i, g.tokens.clone()));
            }
        })
        .expect("batch");
        assert_eq!(batched.len(), prompts.len());
        let mut done = done.into_inner().expect("lock");
        done.sort();
        let expected: Vec<(usize, Vec<u32>)> = batched
            .iter()
            .enumerate()
            .map(|(i, g)| (i, g.tokens.clone()))
            .collect();
        assert_eq!(
            done, expected,
            "on_done reports each prompt once, with its answer"
        );
        let mut stopped = 0;
        for (i, (g, p)) in batched.iter().zip(&prompts).enumerate() {
            let alone = lone(&m, p, &config);
            stopped += usize::from(g.tokens.len() < 12);
            assert_eq!(g.tokens, alone.tokens, "{kv_policy:?}: prompt {i} differs");
            assert_eq!(g.text, alone.text);
            assert_eq!(g.finish_reason, alone.finish_reason);
            assert_eq!(g.prompt_tokens, p.len());
            assert_eq!(
                (g.peak_cache_entries, g.peak_cache_bytes),
                (alone.peak_cache_entries, alone.peak_cache_bytes),
                "{kv_policy:?}: prompt {i}'s cache is accounted differently"
            );
        }
        assert!(
            stopped >= 1 && stopped < prompts.len(),
            "{kv_policy:?}: {stopped} stopped early"
        );
    }
    let bad = generate_batch(
        &m.model,
        &m.tokenizer,
        &[prompts[0].clone(), Vec::new()],
        &GenerateConfig::default(),
        4,
        |_, _| {},
    );
    assert!(bad.is_err(), "an empty prompt is an error");
}
