//! Eviction policies on a real (tiny) model: with a budget at least the sequence length every
//! policy matches the full cache exactly; under a budget the cache never holds more than
//! budget + buffer entries and keeps original positions.

mod common;

use burn::prelude::*;
use common::*;
use laconic_infer::generate::{GenerateConfig, generate, score_ids, score_ids_with_policy};
use laconic_infer::model::{ForwardOptions, Logits};
use laconic_infer::policy::{self, KvPolicyConfig};

fn policies(budget: usize) -> Vec<KvPolicyConfig> {
    vec![
        KvPolicyConfig::Window {
            sink: 4,
            window: budget - 4,
        },
        KvPolicyConfig::H2o {
            budget,
            window: budget / 2,
            sink: 4,
        },
        KvPolicyConfig::SnapKv {
            budget,
            window: 8,
            kernel: 7,
        },
        KvPolicyConfig::Rkv {
            budget,
            buffer: budget / 4,
            window: 8,
            lambda: 0.1,
            sink: 0,
        },
        KvPolicyConfig::Rkv {
            budget,
            buffer: budget / 4,
            window: 8,
            lambda: 0.1,
            sink: 4,
        },
    ]
}

#[test]
fn a_budget_beyond_the_sequence_matches_the_full_cache() {
    let m = load(&fixtures().join("qwen2"));
    let ids = ids(&read_json(&fixtures().join("qwen2/reference.json"))["token_ids"]);
    let full = score_ids(&m.model, &ids).expect("score");
    let prompt = &ids[..12];
    let base = GenerateConfig {
        max_new_tokens: 20,
        ..Default::default()
    };
    let mut cache = m.model.new_cache();
    let greedy_full = generate(&m.model, &m.tokenizer, prompt, &base, &mut cache, |_| {})
        .expect("generate")
        .tokens;
    for p in policies(1024) {
        let ours = score_ids_with_policy(&m.model, &ids, &p).expect("score");
        let d = ours
            .iter()
            .zip(&full)
            .skip(1)
            .map(|(a, b)| (a.unwrap() - b.unwrap()).abs())
            .fold(0.0, f32::max);
        assert!(
            d < 1e-4,
            "{p:?}: log-probs differ from the full cache by {d}"
        );
        let config = GenerateConfig {
            kv_policy: p.clone(),
            ..base.clone()
        };
        let mut cache = m.model.new_cache();
        let g = generate(&m.model, &m.tokenizer, prompt, &config, &mut cache, |_| {})
            .expect("generate");
        assert_eq!(g.tokens, greedy_full, "{p:?}: greedy tokens differ");
        assert_eq!(cache.len(), prompt.len() + 19, "{p:?}: nothing was evicted");
    }
}

#[test]
fn the_cache_stays_within_budget_and_keeps_positions() {
    let m = load(&fixtures().join("llama3"));
    let ids = ids(&read_json(&fixtures().join("llama3/reference.json"))["token_ids"]);
    let budget = 24;
    for p in policies(budget) {
        let mut policy = p.build(m.config().num_layers);
        let opts = ForwardOptions {
            logits: Logits::Last,
            attention: policy.wants_attention(),
            hidden: false,
            ..Default::default()
        };
        let mut cache = m.model.new_cache();
        let device = Device::flex();
        let input = |s: &[u32]| {
            Tensor::<2, Int>::from_data(
                TensorData::new(
                    s.iter().map(|&t| t as i32).collect::<Vec<_>>(),
                    [1, s.len()],
                ),
                &device,
            )
        };
        let prompt = 40;
        let out = m.model.forward(input(&ids[..prompt]), &mut cache, opts);
        policy::apply(policy.as_mut(), &mut cache, &out.attentions, prompt);
        let bytes_per_entry =
            m.config().num_layers * 2 * m.config().num_kv_heads * m.config().head_dim * 4;
        for (i, &t) in ids[prompt..].iter().enumerate() {
            let out = m.model.forward(input(&[t]), &mut cache, opts);
            policy::apply(policy.as_mut(), &mut cache, &out.attentions, 1);
            let seen = prompt + i + 1;
            assert_eq!(cache.next_position(), seen);
            if let Some(max) = p.max_entries() {
                assert!(cache.len() <= max, "{p:?}: {} entries > {max}", cache.len());
            }
            assert_eq!(cache.bytes(), cache.len() * bytes_per_entry, "{p:?}: bytes");
            for l in 0..cache.num_layers() {
                for h in 0..cache.layer(l).num_heads() {
                    let pos = cache.layer(l).head_positions(h);
                    assert!(
                        pos.windows(2).all(|w| w[0] < w[1]),
                        "{p:?}: positions out of order"
                    );
                    assert_eq!(
                        pos.last(),
                        Some(&(seen - 1)),
                        "{p:?}: the newest entry was evicted"
                    );
                }
            }
        }
        // Attention sinks survive every eviction.
        let sink = match p {
            KvPolicyConfig::Window { sink, .. }
            | KvPolicyConfig::H2o { sink, .. }
            | KvPolicyConfig::Rkv { sink, .. } => sink,
            _ => 0,
        };
        for l in 0..cache.num_layers() {
            for h in 0..cache.layer(l).num_heads() {
                let pos = cache.layer(l).head_positions(h);
                assert_eq!(
                    pos[..sink],
                    (0..sink).collect::<Vec<_>>(),
                    "{p:?}: a sink was evicted"
                );
            }
        }
        match p {
            KvPolicyConfig::SnapKv { budget, .. } => assert_eq!(
                cache.len(),
                budget + ids.len() - prompt,
                "snapkv keeps every generated entry"
            ),
            _ => assert!(cache.len() < ids.len() - 8, "{p:?}: nothing was evicted"),
        }
    }
}
