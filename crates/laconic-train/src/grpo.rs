//! GRPO rollouts: for one problem, G samples drawn by `laconic-infer`'s own batched decoder
//! (one shared prefill, the recipe's sampling and KV policy, so training sees the cache the
//! edge will use), graded by `laconic-traces`, rewarded with a length budget ([`crate::reward`])
//! and turned into group-relative advantages.
//!
//! [`loss`] is GRPO's clipped policy-gradient objective over these samples with a KL term to
//! the frozen reference (the base with the adapter switched off). The `method = "grpo"`
//! training loop and recipe that put the two together come next.

use burn::optim::GradientsParams;
use burn::prelude::*;
use laconic_infer::generate::{GenerateConfig, SamplingConfig};
use laconic_infer::model::Model;
use laconic_infer::parallel::generate_samples_with;
use laconic_infer::policy::KvPolicyConfig;
use laconic_traces::{Grader, Trace};
use rayon::prelude::*;

use crate::data::Formatter;
use crate::error::{Result, TrainError};
use crate::reward::{RewardConfig, budget_control, group_advantages};
use crate::trainer::completion_logprobs;

/// How a group of samples is drawn and rewarded.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// Samples per prompt (G).
    pub group: usize,
    /// Most tokens per sample.
    pub max_new_tokens: usize,
    /// Sampling (temperature, top-p, top-k); the seed is set per prompt.
    pub sampling: SamplingConfig,
    /// What the KV cache keeps while sampling.
    pub kv_policy: KvPolicyConfig,
    /// The reward.
    pub reward: RewardConfig,
    /// How the group decodes (`laconic_infer::parallel::generate_samples_with`): `None`
    /// splits it into two half batches on the CPU; a step that rolls out several prompts
    /// side by side keeps each group one batch (`Some(false)`), which is faster there.
    pub halves: Option<bool>,
}

/// One sample of a group.
#[derive(Debug, Clone)]
pub struct RolloutSample {
    /// Generated token ids (a stop token, if any, included).
    pub tokens: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// The answer the grader read.
    pub extracted: Option<String>,
    /// Whether it matches the gold answer.
    pub correct: bool,
    /// Tokens the length budget counts: every generated token but a final stop token.
    pub reasoning_tokens: usize,
    /// Its reward.
    pub reward: f64,
    /// Its group-relative advantage.
    pub advantage: f64,
    /// Mean log-probability of its sampled tokens under the sampling policy.
    pub mean_logprob: f64,
}

/// A problem's group of samples.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The prompt's token ids (with the budget's control string, when there is a budget).
    pub prompt: Vec<u32>,
    /// The budget the prompt stated.
    pub budget: Option<usize>,
    /// The samples, in order (sample i was drawn with seed + i).
    pub samples: Vec<RolloutSample>,
}

impl Rollout {
    /// Share of correct samples.
    pub fn accuracy(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().filter(|s| s.correct).count() as f64 / self.samples.len() as f64
    }

    /// Mean reward.
    pub fn mean_reward(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().map(|s| s.reward).sum::<f64>() / self.samples.len() as f64
    }
}

/// The problem as the student sees it under a budget: the question with `[budget N]` on its
/// own last line.
pub fn with_budget(problem: &Trace, budget: Option<usize>) -> Trace {
    let mut p = problem.clone();
    if let Some(b) = budget {
        p.question = format!("{}\n{}", p.question.trim_end(), budget_control(b));
    }
    p
}

/// Draws, grades and rewards a group of `config.group` samples for `problem` (which needs a
/// gold answer) with `seed`.
pub fn rollout(
    model: &Model,
    formatter: &Formatter<'_>,
    problem: &Trace,
    budget: Option<usize>,
    grader: Grader,
    config: &RolloutConfig,
    seed: u64,
) -> Result<Rollout> {
    if config.group == 0 {
        return Err(TrainError::Invalid(
            "the GRPO group size must be at least 1".into(),
        ));
    }
    if budget == Some(0) {
        return Err(TrainError::Invalid("a budget of 0 tokens".into()));
    }
    config.reward.validate()?;
    let gold = problem.gold.as_deref().ok_or_else(|| {
        TrainError::Invalid(format!(
            "problem `{}` has no gold answer to reward against",
            problem.id
        ))
    })?;
    let prompt = formatter.prompt_ids(&with_budget(problem, budget))?;
    let stop_tokens = formatter.stop_tokens(&model.config().eos_token_ids);
    let generation = GenerateConfig {
        max_new_tokens: config.max_new_tokens,
        sampling: SamplingConfig {
            seed,
            ..config.sampling.clone()
        },
        stop_tokens: stop_tokens.clone(),
        kv_policy: config.kv_policy.clone(),
        ..GenerateConfig::default()
    };
    let vote = generate_samples_with(
        model,
        formatter.tokenizer(),
        &prompt,
        &generation,
        config.group,
        config.halves,
    )?;
    let mut samples: Vec<RolloutSample> = vote
        .samples
        .into_iter()
        .map(|s| {
            let g = s.generation;
            let graded = grader.grade(&g.text, gold);
            let ends_in_stop = g.tokens.last().is_some_and(|t| stop_tokens.contains(t));
            let reasoning_tokens = g.tokens.len() - usize::from(ends_in_stop);
            RolloutSample {
                reward: config
                    .reward
                    .reward(graded.correct, reasoning_tokens, budget),
                tokens: g.tokens,
                text: g.text,
                extracted: graded.extracted,
                correct: graded.correct,
                reasoning_tokens,
                advantage: 0.0,
                mean_logprob: s.mean_logprob,
            }
        })
        .collect();
    let rewards: Vec<f64> = samples.iter().map(|s| s.reward).collect();
    for (s, a) in samples.iter_mut().zip(group_advantages(&rewards)) {
        s.advantage = a;
    }
    Ok(Rollout {
        prompt,
        budget,
        samples,
    })
}

/// Settings of the GRPO objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// PPO clipping range ε: the ratio to the sampling policy is kept in `[1-ε, 1+ε]`.
    pub clip: f64,
    /// Weight β of the KL term to the frozen reference (the base with the adapter off);
    /// 0 leaves it out (and skips the reference pass).
    pub kl: f64,
}

impl Default for LossConfig {
    /// ε = 0.2, β = 0.04 (DeepSeekMath's GRPO).
    fn default() -> Self {
        Self {
            clip: 0.2,
            kl: 0.04,
        }
    }
}

/// What [`loss`] measured besides the loss.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossStats {
    /// Sampled tokens the loss is averaged over.
    pub tokens: usize,
    /// Mean per-token KL to the reference (the k3 estimator), 0 when β = 0.
    pub kl: f64,
}

/// The GRPO loss of a set of rollouts (one policy step per rollout, so the sampling policy is
/// the current one: its log-probabilities are this pass's, detached). Per sampled token:
/// `-min(r·A, clip(r, 1-ε, 1+ε)·A) + β·KL`, with `r = exp(logp - logp_sampling)`, `A` the
/// sample's advantage and `KL = exp(ref - logp) - (ref - logp) - 1`; averaged over every
/// sampled token of every sample (token-level mean, so long samples are not down-weighted
/// per token). Samples with no tokens are skipped.
pub fn loss(
    model: &Model,
    rollouts: &[Rollout],
    config: &LossConfig,
) -> Result<(Tensor<1>, LossStats)> {
    let parts = loss_examples(rollouts)?;
    let (total, tokens, kl_sum) = examples_loss(model, &parts, config)?;
    let kl = kl_sum / tokens.max(1) as f64;
    Ok((total, LossStats { tokens, kl }))
}

/// Each sample with tokens, as a training example (prompt, then the sample) with its advantage.
fn loss_examples(rollouts: &[Rollout]) -> Result<Vec<(crate::data::Example, f32)>> {
    let mut examples = Vec::new();
    for (ri, r) in rollouts.iter().enumerate() {
        for (si, s) in r.samples.iter().enumerate() {
            if s.tokens.is_empty() {
                continue;
            }
            let mut ids = r.prompt.clone();
            ids.extend_from_slice(&s.tokens);
            let example = crate::data::Example {
                id: format!("rollout{ri}/sample{si}"),
                ids,
                prompt_len: r.prompt.len(),
            };
            examples.push((example, s.advantage as f32));
        }
    }
    if examples.is_empty() {
        return Err(TrainError::Invalid(
            "GRPO loss: no sampled tokens in any rollout".into(),
        ));
    }
    Ok(examples)
}

/// [`loss`] over the samples as examples: the mean over their tokens, the token count and
/// the KL summed over the tokens (0 when β = 0).
fn examples_loss(
    model: &Model,
    part: &[(crate::data::Example, f32)],
    config: &LossConfig,
) -> Result<(Tensor<1>, usize, f64)> {
    use burn::data::dataloader::batcher::Batcher;
    let device = model.embed_tokens.weight.device();
    let batch =
        crate::data::CausalBatcher.batch(part.iter().map(|p| p.0.clone()).collect(), &device);
    // Per sampled token, in the batch's loss-position order (sample by sample).
    let advantages: Vec<f32> = part
        .iter()
        .flat_map(|(e, a)| std::iter::repeat_n(*a, e.target_tokens()))
        .collect();
    if advantages.len() != batch.target_tokens {
        return Err(TrainError::Invalid(format!(
            "GRPO loss: {} advantages for {} sampled tokens",
            advantages.len(),
            batch.target_tokens
        )));
    }
    let logp = completion_logprobs(model, &batch, false, false);
    let ratio = logp.clone().sub(logp.clone().detach()).exp();
    let adv = Tensor::<1>::from_data(TensorData::new(advantages, [batch.target_tokens]), &device);
    let unclipped = ratio.clone().mul(adv.clone());
    let clipped = ratio.clamp(1.0 - config.clip, 1.0 + config.clip).mul(adv);
    let mut per_token = unclipped.min_pair(clipped).neg();
    let mut kl_sum = 0.0;
    if config.kl > 0.0 {
        let reference = completion_logprobs(model, &batch, false, true).detach();
        let diff = reference.sub(logp);
        let kl = diff.clone().exp().sub(diff).sub_scalar(1.0);
        kl_sum = kl.clone().sum().into_scalar::<f32>() as f64;
        per_token = per_token.add(kl.mul_scalar(config.kl));
    }
    let tokens = batch.target_tokens;
    Ok((
        per_token.sum().div_scalar(tokens.max(1) as f64),
        tokens,
        kl_sum,
    ))
}

/// [`loss`] and its gradients, with the value of the loss (one forward and backward pass over
/// every sample, on one thread: see `trainer::micro_batch_grads` for why not two).
pub fn loss_grads(
    model: &Model,
    rollouts: &[Rollout],
    config: &LossConfig,
) -> Result<(f64, LossStats, GradientsParams)> {
    let (l, stats) = loss(model, rollouts, config)?;
    let value = l.clone().into_scalar::<f32>() as f64;
    Ok((
        value,
        stats,
        GradientsParams::from_grads(l.backward(), model),
    ))
}

/// What one GRPO step measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StepStats {
    /// Mean reward over every sample of the step.
    pub reward: f64,
    /// Share of correct samples.
    pub accuracy: f64,
    /// Mean reasoning tokens per sample.
    pub mean_tokens: f64,
    /// Mean reasoning tokens per sample, by the budget its prompt stated (`none` without).
    pub tokens_by_budget: std::collections::BTreeMap<String, f64>,
    /// Mean per-token KL to the reference.
    pub kl: f64,
    /// Sampled tokens the loss averaged over.
    pub tokens: usize,
    /// Seconds spent drawing the rollouts (prefill and batched decoding of every group).
    pub rollout_seconds: f64,
}

/// The problems of step `step`: `per_step` of them, walking through `n` problems in an order
/// shuffled per epoch by a stable hash of `seed` (so a resumed run takes the same ones).
pub fn step_problems(n: usize, per_step: usize, step: usize, seed: u64) -> Vec<(usize, u64)> {
    if n == 0 {
        return Vec::new();
    }
    let order = |epoch: u64| {
        let key = |i: usize| {
            crate::reward::mix64(
                seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    ^ (i as u64).wrapping_mul(0xd6e8_feb8_6659_fd93),
            )
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_cached_key(|&i| key(i));
        order
    };
    // A step spans at most two epochs: shuffle each once, not once per prompt.
    let mut orders: Vec<(u64, Vec<usize>)> = Vec::new();
    (0..per_step)
        .map(|j| {
            let global = (step * per_step + j) as u64;
            let (epoch, pos) = (global / n as u64, (global % n as u64) as usize);
            if !orders.iter().any(|(e, _)| *e == epoch) {
                orders.push((epoch, order(epoch)));
            }
            let shuffled = orders
                .iter()
                .find(|(e, _)| *e == epoch)
                .map_or(&[][..], |(_, o)| o.as_slice());
            (shuffled[pos], epoch)
        })
        .collect()
}

/// What a GRPO step reads besides the step number.
#[derive(Clone, Copy)]
pub struct StepContext<'a> {
    /// The policy being trained (on the autodiff device).
    pub model: &'a Model,
    /// The same weights without the autodiff tape, for sampling.
    pub sampler: &'a Model,
    /// The student's prompt format.
    pub formatter: &'a Formatter<'a>,
    /// The training problems (with gold answers).
    pub problems: &'a [Trace],
    /// The run's seed.
    pub seed: u64,
    /// The `[grpo]` settings.
    pub grpo: &'a crate::recipe::GrpoSection,
    /// What the KV cache keeps while sampling.
    pub kv_policy: &'a KvPolicyConfig,
}

/// One GRPO step's loss: rollouts for this step's problems (budgets drawn per problem), then
/// [`loss`] over them with its gradients ([`loss_grads`]). Returns the loss's value, the gradients and what the step measured.
pub fn step_loss(ctx: &StepContext<'_>, step: usize) -> Result<(f64, GradientsParams, StepStats)> {
    let StepContext {
        model,
        sampler,
        formatter,
        problems,
        seed,
        grpo: g,
        kv_policy,
    } = *ctx;
    if problems.is_empty() {
        return Err(TrainError::Invalid("GRPO: no training problems".into()));
    }
    let grader = Grader::parse(&g.grader)
        .ok_or_else(|| TrainError::Invalid(format!("grpo.grader = {:?}", g.grader)))?;
    let buckets = if g.budgets.is_empty() {
        None
    } else {
        Some(crate::reward::BudgetBuckets::new(g.budgets.clone())?)
    };
    let config = RolloutConfig {
        group: g.group,
        max_new_tokens: g.max_new_tokens,
        sampling: SamplingConfig {
            temperature: g.temperature as f32,
            top_k: 0,
            top_p: g.top_p as f32,
            seed: 0,
        },
        kv_policy: kv_policy.clone(),
        reward: RewardConfig {
            correct: 1.0,
            softness: g.softness,
        },
        // Several prompts already keep the threads busy side by side (below).
        halves: (g.prompts_per_step >= 2).then_some(false),
    };
    let started = std::time::Instant::now();
    let jobs: Vec<(usize, Option<usize>, u64)> =
        step_problems(problems.len(), g.prompts_per_step, step, seed)
            .into_iter()
            .enumerate()
            .map(|(j, (index, epoch))| {
                let budget = buckets.as_ref().map(|b| b.draw(seed, epoch, index as u64));
                let rollout_seed =
                    seed ^ ((step as u64) << 24) ^ (j as u64).wrapping_mul(0x1000_0001);
                (index, budget, rollout_seed)
            })
            .collect();
    // The step's prompts run side by side on the thread pool, each group as one batch on its
    // own thread (inside the pool laconic-infer's spinning helper stays out of the way). Each has its own seed and the results keep prompt order, so
    // the step is the same however the threads interleave (resume stays bit-exact).
    let rollouts: Vec<Rollout> = jobs
        .par_iter()
        .map(|&(index, budget, rollout_seed)| {
            rollout(
                sampler,
                formatter,
                &problems[index],
                budget,
                grader,
                &config,
                rollout_seed,
            )
        })
        .collect::<Result<_>>()?;
    let rollout_seconds = started.elapsed().as_secs_f64();
    let (total, ls, grads) = loss_grads(
        model,
        &rollouts,
        &LossConfig {
            clip: g.clip,
            kl: g.kl,
        },
    )?;
    let samples: Vec<(&Rollout, &RolloutSample)> = rollouts
        .iter()
        .flat_map(|r| r.samples.iter().map(move |s| (r, s)))
        .collect();
    let n = samples.len().max(1) as f64;
    let mut by_budget: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for (r, s) in &samples {
        let key = r
            .budget
            .map_or_else(|| "none".to_string(), |b| b.to_string());
        let e = by_budget.entry(key).or_default();
        e.0 += s.reasoning_tokens as f64;
        e.1 += 1;
    }
    let stats = StepStats {
        reward: samples.iter().map(|(_, s)| s.reward).sum::<f64>() / n,
        accuracy: samples.iter().filter(|(_, s)| s.correct).count() as f64 / n,
        mean_tokens: samples
            .iter()
            .map(|(_, s)| s.reasoning_tokens as f64)
            .sum::<f64>()
            / n,
        tokens_by_budget: by_budget
            .into_iter()
            .map(|(k, (sum, count))| (k, sum / count as f64))
            .collect(),
        kl: ls.kl,
        tokens: ls.tokens,
        rollout_seconds,
    };
    Ok((total, grads, stats))
}
