//! GRPO rollouts on the tiny fixture model: G samples from the batched decoder, graded,
//! rewarded with a length budget, advantages normalised within the group.

mod common;

use burn::prelude::*;
use laconic_infer::generate::SamplingConfig;
use laconic_infer::policy::KvPolicyConfig;
use laconic_infer::{WeightFormat, load_with};
use laconic_traces::{Grader, Trace};
use laconic_train::data::Formatter;
use laconic_train::grpo::{RolloutConfig, rollout};
use laconic_train::reward::{RewardConfig, group_advantages};

use common::{addition, fixture};

fn config(group: usize) -> RolloutConfig {
    RolloutConfig {
        group,
        max_new_tokens: 16,
        sampling: SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        },
        kv_policy: KvPolicyConfig::Full,
        reward: RewardConfig::default(),
        halves: None,
    }
}

#[test]
fn a_group_is_sampled_graded_rewarded_and_normalised() {
    let device = Device::flex();
    let m = load_with(&fixture("llama"), &device, WeightFormat::F32).expect("model");
    let eos = m.config().eos_token_ids.first().copied();
    let f = Formatter::new(&m.tokenizer, m.chat_template.as_ref(), eos, None);
    let mut problem: Trace = serde_json::from_value(addition(0)).expect("trace");
    let cfg = config(6);
    let r = rollout(&m.model, &f, &problem, Some(8), Grader::Gsm8k, &cfg, 3).expect("rollout");
    assert_eq!(r.samples.len(), 6);
    let prompt = m.tokenizer.decode(&r.prompt, false).expect("decode");
    assert!(prompt.contains("[budget 8]"), "{prompt}");
    let texts: std::collections::HashSet<&str> =
        r.samples.iter().map(|s| s.text.as_str()).collect();
    assert!(
        texts.len() > 1,
        "six samples at temperature 1 were all the same"
    );

    // The same seed draws the same group; another seed another one.
    let again = rollout(&m.model, &f, &problem, Some(8), Grader::Gsm8k, &cfg, 3).expect("again");
    let tokens = |r: &laconic_train::grpo::Rollout| -> Vec<Vec<u32>> {
        r.samples.iter().map(|s| s.tokens.clone()).collect()
    };
    assert_eq!(tokens(&r), tokens(&again));
    let other = rollout(&m.model, &f, &problem, Some(8), Grader::Gsm8k, &cfg, 4).expect("other");
    assert_ne!(tokens(&r), tokens(&other));

    // With the gold set to what sample 0 answers, sample 0 is rewarded and wrong ones are not;
    // rewards follow the length budget, and advantages are the group-normalised rewards.
    let answer = r
        .samples
        .iter()
        .find_map(|s| s.extracted.clone())
        .expect("some sample states a number");
    problem.gold = Some(answer.clone());
    let r = rollout(&m.model, &f, &problem, Some(8), Grader::Gsm8k, &cfg, 3).expect("rollout");
    assert!(r.samples.iter().any(|s| s.correct));
    for s in &r.samples {
        assert!(s.reasoning_tokens <= cfg.max_new_tokens);
        assert_eq!(s.correct, s.extracted.as_deref() == Some(answer.as_str()));
        let expected = cfg.reward.reward(s.correct, s.reasoning_tokens, Some(8));
        assert_eq!(s.reward, expected);
        assert_eq!(s.correct, s.reward > 0.0);
        assert!(s.mean_logprob.is_finite() && s.mean_logprob <= 0.0);
    }
    let rewards: Vec<f64> = r.samples.iter().map(|s| s.reward).collect();
    let advantages: Vec<f64> = r.samples.iter().map(|s| s.advantage).collect();
    assert_eq!(advantages, group_advantages(&rewards));
    assert!(
        (r.accuracy() - r.samples.iter().filter(|s| s.correct).count() as f64 / 6.0).abs() < 1e-12
    );
}

#[test]
fn bad_settings_are_errors_not_panics() {
    let device = Device::flex();
    let m = load_with(&fixture("llama"), &device, WeightFormat::F32).expect("model");
    let f = Formatter::new(&m.tokenizer, m.chat_template.as_ref(), None, None);
    let mut problem: Trace = serde_json::from_value(addition(1)).expect("trace");
    let e = rollout(&m.model, &f, &problem, None, Grader::Gsm8k, &config(0), 1)
        .expect_err("group 0")
        .to_string();
    assert!(e.contains("group size"), "{e}");
    let e = rollout(
        &m.model,
        &f,
        &problem,
        Some(0),
        Grader::Gsm8k,
        &config(2),
        1,
    )
    .expect_err("budget 0")
    .to_string();
    assert!(e.contains("budget of 0"), "{e}");
    problem.gold = None;
    let e = rollout(&m.model, &f, &problem, None, Grader::Gsm8k, &config(2), 1)
        .expect_err("no gold")
        .to_string();
    assert!(e.contains("no gold answer"), "{e}");
}

/// The sum of each sample's sampled-token log-probabilities under `model`, per sample.
fn sample_logprobs(
    model: &laconic_infer::model::Model,
    r: &laconic_train::grpo::Rollout,
) -> Vec<f64> {
    use burn::data::dataloader::batcher::Batcher;
    use laconic_train::data::{CausalBatcher, Example};
    let device = model.embed_tokens.weight.device();
    r.samples
        .iter()
        .map(|s| {
            let mut ids = r.prompt.clone();
            ids.extend_from_slice(&s.tokens);
            let batch = CausalBatcher.batch(
                vec![Example {
                    id: "x".into(),
                    ids,
                    prompt_len: r.prompt.len(),
                }],
                &device,
            );
            let logits = laconic_train::trainer::forward_logits(model, &batch, false);
            -(laconic_train::trainer::cross_entropy_sum(logits, &batch).into_scalar::<f32>() as f64)
        })
        .collect()
}

#[test]
fn the_loss_is_the_token_weighted_advantage_and_a_step_follows_it() {
    use burn::optim::GradientsParams;
    use laconic_train::grpo::{LossConfig, loss, loss_grads};
    use laconic_train::recipe::{LoraSection, OptimSection};

    let device = Device::flex().autodiff();
    let m = load_with(&fixture("llama"), &device, WeightFormat::F32).expect("model");
    let lora = LoraSection {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec!["all-linear".into()],
    };
    let (model, _) = laconic_train::lora::attach(m.model, &lora, 1).expect("attach");
    let eos = m.tokenizer.token_to_id("<|endoftext|>");
    let f = Formatter::new(&m.tokenizer, m.chat_template.as_ref(), eos, None);
    let mut problem: Trace = serde_json::from_value(addition(2)).expect("trace");
    let cfg = config(6);
    let first = rollout(&model, &f, &problem, None, Grader::Gsm8k, &cfg, 11).expect("rollout");
    problem.gold = first.samples.iter().find_map(|s| s.extracted.clone());
    let r = rollout(&model, &f, &problem, None, Grader::Gsm8k, &cfg, 11).expect("rollout");
    assert!(
        r.samples.iter().any(|s| s.advantage > 0.0) && r.samples.iter().any(|s| s.advantage < 0.0),
        "the group needs both right and wrong samples: {:?}",
        r.samples.iter().map(|s| s.reward).collect::<Vec<_>>()
    );

    // At the start the adapter is zero: ratio 1, KL 0, so the loss is -Σ A·len / Σ len.
    let (l, stats) = loss(&model, std::slice::from_ref(&r), &LossConfig::default()).expect("loss");
    let len: usize = r.samples.iter().map(|s| s.tokens.len()).sum();
    let expected = -r
        .samples
        .iter()
        .map(|s| s.advantage * s.tokens.len() as f64)
        .sum::<f64>()
        / len as f64;
    let got = l.clone().into_scalar::<f32>() as f64;
    assert!(
        (got - expected).abs() < 1e-4,
        "loss {got}, expected {expected}"
    );
    assert_eq!(stats.tokens, len);
    assert!(
        stats.kl.abs() < 1e-6,
        "KL to the reference with a zero adapter: {}",
        stats.kl
    );

    // One optimizer step on the loss raises the log-probability of the samples with a positive
    // advantage relative to those with a negative one.
    let before = sample_logprobs(&model, &r);
    let grads = GradientsParams::from_grads(l.backward(), &model);
    let mut optim = laconic_train::optim::AdamW::new(OptimSection {
        lr: 1e-2,
        warmup_steps: 0,
        weight_decay: 0.0,
        ..OptimSection::default()
    });
    let (model, _) = optim.step(1e-2, model, grads);
    let after = sample_logprobs(&model, &r);
    let moved = |sign: f64| -> f64 {
        let picked: Vec<f64> = r
            .samples
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(s, _)| s.advantage * sign > 0.0)
            .map(|(s, (b, a))| (a - b) / s.tokens.len() as f64)
            .collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    };
    assert!(
        moved(1.0) > moved(-1.0),
        "positive-advantage samples moved {} per token, negative ones {}",
        moved(1.0),
        moved(-1.0)
    );
    // The adapter has moved away from the reference: the KL term is now positive.
    let (l, stats) = loss(&model, std::slice::from_ref(&r), &LossConfig::default()).expect("loss");
    assert!(stats.kl > 0.0);

    // `loss_grads`, which the training step calls, gives that loss, KL and gradients too.
    let value = l.clone().into_scalar::<f32>() as f64;
    let whole = GradientsParams::from_grads(l.backward(), &model);
    let rs = std::slice::from_ref(&r);
    let (v2, s2, step) = loss_grads(&model, rs, &LossConfig::default()).expect("loss_grads");
    assert!(
        (value - v2).abs() <= 1e-5 * value.abs().max(1.0),
        "{value} vs {v2}"
    );
    assert_eq!(s2.tokens, stats.tokens);
    assert!(
        (s2.kl - stats.kl).abs() <= 1e-4 * stats.kl,
        "{} vs {}",
        s2.kl,
        stats.kl
    );
    let (compared, worst) = common::grad_difference(&model, &whole, &step);
    assert!(compared > 10, "LoRA gradients compared: {compared}");
    assert!(worst < 1e-4, "gradients differ by {worst} of their scale");
}
