//! Generation: prefill, then incremental decode over the caller's KV cache, with greedy,
//! temperature, top-k and top-p sampling from a seeded RNG, stop tokens, stop strings, and
//! a streaming callback that only ever receives whole UTF-8 text that is final.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cache::KvCache;
use crate::error::{InferError, Result};
use crate::model::{ForwardOptions, Logits, Model};
use crate::policy::{self, KvPolicy, KvPolicyConfig};
use crate::tokenizer::Tokenizer;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy; otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = no limit).
    pub top_p: f32,
    /// Seed of the sampler's RNG.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(InferError::InvalidArgument(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(InferError::InvalidArgument(format!(
                "top-p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Picks tokens from logits.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded from its configuration.
    pub fn new(config: SamplingConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self { config, rng }
    }

    /// Chooses a token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &x)| {
                    if x > best.1 { (i, x) } else { best }
                })
                .0 as u32
        };
        if self.config.temperature == 0.0 {
            return argmax();
        }
        let t = self.config.temperature;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x / t))
            .collect();
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if self.config.top_k > 0 {
            cand.truncate(self.config.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|&(_, x)| (x - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.config.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|&p| {
                    acc += p;
                    acc >= self.config.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            let sum: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        let r: f32 = self.rng.random();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return cand[i].0;
            }
        }
        cand[probs.len() - 1].0
    }
}

/// Settings of one generation.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingConfig,
    /// Strings that end generation; they are not part of the returned text.
    pub stop_strings: Vec<String>,
    /// Token ids that end generation (EOS and end-of-turn tokens).
    pub stop_tokens: Vec<u32>,
    /// What the KV cache keeps as it grows.
    pub kv_policy: KvPolicyConfig,
    /// Budget forcing of the reasoning, if any.
    pub think: Option<ThinkConfig>,
}

/// Budget forcing (s1, Muennighoff et al. 2025): generation starts in the reasoning, which
/// ends when the model writes `end`. At `max_tokens` reasoning tokens, `end` is appended for
/// the model and it goes on to answer; if the model writes `end` (or a stop token) before
/// `min_tokens`, that is taken back and `wait` is appended instead, so it keeps reasoning.
#[derive(Debug, Clone, PartialEq)]
pub struct ThinkConfig {
    /// Most reasoning tokens before `end` is forced.
    pub max_tokens: Option<usize>,
    /// Fewest reasoning tokens before the model may end its reasoning.
    pub min_tokens: usize,
    /// The end-of-reasoning delimiter (`</think>`, "Final answer:").
    pub end: String,
    /// What replaces a premature end ("Wait").
    pub wait: String,
}

impl Default for ThinkConfig {
    fn default() -> Self {
        Self {
            max_tokens: None,
            min_tokens: 0,
            end: "</think>".into(),
            wait: "Wait".into(),
        }
    }
}

impl Default for GenerateConfig {
    /// 256 new tokens, greedy, no stop condition, full cache.
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            sampling: SamplingConfig::default(),
            stop_strings: Vec::new(),
            stop_tokens: Vec::new(),
            kv_policy: KvPolicyConfig::Full,
            think: None,
        }
    }
}

/// One forward pass of `ids` followed by the policy's look at the cache; returns the logits.
pub(crate) fn step(
    model: &Model,
    ids: &[u32],
    cache: &mut KvCache,
    policy: &mut dyn KvPolicy,
    device: &Device,
) -> Option<Tensor<3>> {
    step_batch(model, ids, 1, cache, policy, device)
}

/// [`step`] for a batch: `ids` holds `batch` rows of equal length, one after another, each
/// continuing its row of `cache`. Returns the last position's logits `[batch, 1, vocab]`.
pub(crate) fn step_batch(
    model: &Model,
    ids: &[u32],
    batch: usize,
    cache: &mut KvCache,
    policy: &mut dyn KvPolicy,
    device: &Device,
) -> Option<Tensor<3>> {
    let s = ids.len() / batch.max(1);
    let data: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(data, [batch, s]), device);
    let opts = ForwardOptions {
        logits: Logits::Last,
        attention: policy.wants_attention(),
        hidden: false,
        ..Default::default()
    };
    let out = model.forward(input, cache, opts);
    policy::apply(policy, cache, &out.attentions, s);
    out.logits
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced.
    Stop,
    /// A stop string appeared.
    StopString,
    /// `max_new_tokens` or the context length was reached.
    Length,
}

/// The result of a generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated token ids (a stop token, if any, included).
    pub tokens: Vec<u32>,
    /// Generated text, cut before a stop string and without special tokens.
    pub text: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Seconds spent in prefill (until the first token was chosen).
    pub prefill_seconds: f64,
    /// Seconds spent decoding after the first token.
    pub decode_seconds: f64,
    /// Reasoning tokens, when budget forcing was on (0 otherwise).
    pub think_tokens: usize,
    /// Most entries the KV cache held (in its largest layer, per KV head) between steps.
    pub peak_cache_entries: usize,
    /// Most bytes the KV cache held (keys and values, every layer) between steps.
    pub peak_cache_bytes: usize,
}

/// `ln Σ exp(x)` over a row of logits whose maximum is `max`, in f64.
pub(crate) fn log_sum_exp(row: &[f32], max: f32) -> f64 {
    let max = max as f64;
    max + row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// Reads logits back to the host as one flat vector (`[1, 1, vocab]`: one row).
pub(crate) fn logits_row(t: Tensor<3>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| InferError::TensorData(format!("{e:?}")))
}

/// The longest suffix of `text` that is a proper prefix of a stop string: held back from the
/// stream until it is known not to start a stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..i]) {
                hold = hold.max(i);
            }
        }
    }
    hold
}

/// Generates from `prompt` (token ids) over `cache`, which must be empty or hold exactly the
/// tokens before `prompt`. `on_text` receives the text as it becomes final.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    config: &GenerateConfig,
    cache: &mut KvCache,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    config.sampling.validate()?;
    if prompt.is_empty() {
        return Err(InferError::InvalidArgument("the prompt is empty".into()));
    }
    let context = model.config().max_position_embeddings;
    let start = cache.next_position();
    if start + prompt.len() >= context {
        return Err(InferError::ContextOverflow {
            tokens: start + prompt.len(),
            new_tokens: config.max_new_tokens,
            context,
        });
    }
    let budget = config.max_new_tokens.min(context - start - prompt.len());
    let device = model.embed_tokens.weight.device();
    config.kv_policy.validate()?;
    let mut policy = config.kv_policy.build(model.config().num_layers);
    let mut sampler = Sampler::new(config.sampling.clone());
    let t0 = std::time::Instant::now();
    let mut logits = step(model, prompt, cache, policy.as_mut(), &device);
    let mut peak = (cache.len(), cache.bytes());
    let mut prefill_seconds = 0.0;
    let mut tokens: Vec<u32> = Vec::new();
    let mut emitted = 0usize;
    let mut text = String::new();
    let mut finish = FinishReason::Length;
    // Budget forcing: the delimiter's ids, and the state of the reasoning.
    let think = match &config.think {
        Some(t) => Some((
            t,
            tokenizer.encode(&t.end, false)?,
            tokenizer.encode(&t.wait, false)?,
        )),
        None => None,
    };
    let mut thinking = think.is_some();
    let mut think_tokens = 0usize;
    let mut holdback = config.stop_strings.clone();
    if let Some((t, _, _)) = &think {
        holdback.push(t.end.clone());
    }
    while tokens.len() < budget {
        peak = (peak.0.max(cache.len()), peak.1.max(cache.bytes()));
        let Some(l) = logits.take() else { break };
        let next = sampler.sample(&logits_row(l)?);
        if tokens.is_empty() {
            prefill_seconds = t0.elapsed().as_secs_f64();
        }
        tokens.push(next);
        if let (true, Some((t, end_ids, wait_ids))) = (thinking, &think) {
            let fed = cache.next_position(); // where `next` would go: it is not fed yet
            let ends = config.stop_tokens.contains(&next)
                || (end_ids.len() == 1 && end_ids[0] == next)
                || tokenizer.decode(&tokens, false)?.contains(t.end.as_str());
            if ends && think_tokens < t.min_tokens {
                // Take the delimiter back (the sampled token is not in the cache yet; earlier
                // ones are), then keep reasoning after `wait`.
                tokens.pop();
                let mut dropped = 0;
                let delimiter = std::slice::from_ref(&t.end);
                while let Some(text) = (!tokens.is_empty())
                    .then(|| tokenizer.decode(&tokens, false))
                    .transpose()?
                {
                    // Neither the delimiter nor a start of it may remain.
                    if !text.contains(t.end.as_str()) && held_back(&text, delimiter) == 0 {
                        break;
                    }
                    tokens.pop();
                    dropped += 1;
                }
                cache.rewind(fed - dropped);
                think_tokens -= dropped.min(think_tokens);
                tokens.extend_from_slice(wait_ids);
                think_tokens += wait_ids.len();
                logits = step(model, wait_ids, cache, policy.as_mut(), &device);
                continue;
            } else if ends {
                thinking = false;
            } else {
                think_tokens += 1;
                if t.max_tokens.is_some_and(|m| think_tokens >= m) && tokens.len() < budget {
                    // Out of budget: close the reasoning for the model and let it answer.
                    thinking = false;
                    let mut feed = vec![next];
                    feed.extend_from_slice(end_ids);
                    tokens.extend_from_slice(end_ids);
                    logits = step(model, &feed, cache, policy.as_mut(), &device);
                    continue;
                }
            }
        }
        if config.stop_tokens.contains(&next) {
            finish = FinishReason::Stop;
            break;
        }
        text = tokenizer.decode(&tokens, true)?;
        if let Some(cut) = config
            .stop_strings
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
            finish = FinishReason::StopString;
            break;
        }
        // Emit what is final: not a dangling partial UTF-8 sequence, not a possible stop prefix.
        if !text.ends_with('\u{FFFD}') {
            let end = text.len() - held_back(&text, &holdback);
            if end > emitted && text.is_char_boundary(end) {
                on_text(&text[emitted..end]);
                emitted = end;
            }
        }
        if tokens.len() < budget {
            logits = step(model, &[next], cache, policy.as_mut(), &device);
        }
    }
    if finish == FinishReason::Stop {
        text = tokenizer.decode(&tokens[..tokens.len() - 1], true)?;
    }
    if text.len() > emitted && text.is_char_boundary(emitted) {
        on_text(&text[emitted..]);
    }
    let total = t0.elapsed().as_secs_f64();
    Ok(Generation {
        tokens,
        text,
        finish_reason: finish,
        prompt_tokens: prompt.len(),
        prefill_seconds,
        decode_seconds: total - prefill_seconds,
        think_tokens,
        peak_cache_entries: peak.0.max(cache.len()),
        peak_cache_bytes: peak.1.max(cache.bytes()),
    })
}

/// One token of a scored text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenScore {
    /// Token id.
    pub id: u32,
    /// The token's text.
    pub token: String,
    /// log p(token | tokens before it); `None` for the first token.
    pub logprob: Option<f32>,
}

/// Per-token log-probabilities of `ids` under the model (one forward pass over a fresh cache).
pub fn score_ids(model: &Model, ids: &[u32]) -> Result<Vec<Option<f32>>> {
    Ok(score_batch(model, &[ids])?.pop().unwrap_or_default())
}

/// Per-token log-probabilities of several sequences in one forward pass: each row of the
/// result is what [`score_ids`] gives that sequence alone (up to float summation order).
///
/// The sequences are padded on the right to the longest; causal attention keeps every real
/// token from seeing the padding after it, and every row starts at position 0, so no mask
/// and no position shift is needed. Scoring several texts at once amortizes what one pass
/// costs whatever its length (quantized weights are unpacked once per pass for a prefill),
/// at the price of the padding.
pub fn score_batch(model: &Model, seqs: &[&[u32]]) -> Result<Vec<Vec<Option<f32>>>> {
    let context = model.config().max_position_embeddings;
    if let Some(long) = seqs.iter().find(|s| s.len() > context) {
        return Err(InferError::ContextOverflow {
            tokens: long.len(),
            new_tokens: 0,
            context,
        });
    }
    let n = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    if n < 2 {
        return Ok(seqs.iter().map(|s| vec![None; s.len()]).collect());
    }
    let b = seqs.len();
    let device = model.embed_tokens.weight.device();
    let mut data = vec![0i32; b * n];
    for (row, s) in seqs.iter().enumerate() {
        for (i, &t) in s.iter().enumerate() {
            data[row * n + i] = t as i32;
        }
    }
    let targets: Vec<i32> = (0..b)
        .flat_map(|row| data[row * n + 1..(row + 1) * n].to_vec())
        .collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(data, [b, n]), &device);
    let mut cache = model.new_cache();
    let opts = ForwardOptions {
        logits: Logits::All,
        ..Default::default()
    };
    let logits = model
        .forward(input, &mut cache, opts)
        .logits
        .ok_or_else(|| InferError::TensorData("no logits".into()))?;
    let logp = log_softmax(logits.narrow(1, 0, n - 1), 2);
    let targets = Tensor::<3, Int>::from_data(TensorData::new(targets, [b, n - 1, 1]), &device);
    let picked: Vec<f32> = logp
        .gather(2, targets)
        .into_data()
        .try_into_vec()
        .map_err(|e| InferError::TensorData(format!("{e:?}")))?;
    Ok(seqs
        .iter()
        .enumerate()
        .map(|(row, s)| {
            let mut out = Vec::with_capacity(s.len());
            if !s.is_empty() {
                out.push(None);
            }
            out.extend(
                picked[row * (n - 1)..row * (n - 1) + s.len().saturating_sub(1)]
                    .iter()
                    .map(|&lp| Some(lp)),
            );
            out
        })
        .collect())
}

/// Per-token log-probabilities of `ids` with the cache under `kv_policy`: the first token is
/// a prefill, then the text is fed one token at a time and the policy evicts after each step,
/// as during generation. With the full cache this is [`score_ids`] (one pass).
pub fn score_ids_with_policy(
    model: &Model,
    ids: &[u32],
    kv_policy: &KvPolicyConfig,
) -> Result<Vec<Option<f32>>> {
    if *kv_policy == KvPolicyConfig::Full {
        return score_ids(model, ids);
    }
    Ok(step_through(model, ids, kv_policy)?
        .into_iter()
        .map(|(lp, _)| lp)
        .collect())
}

/// Feeds `ids` one token at a time under `kv_policy` and returns, per token, its
/// log-probability given the tokens before it (`None` for the first) and the model's argmax
/// prediction at the position before it (0 for the first): what KV-policy evaluations need.
pub fn step_through(
    model: &Model,
    ids: &[u32],
    kv_policy: &KvPolicyConfig,
) -> Result<Vec<(Option<f32>, u32)>> {
    step_through_from(model, ids, kv_policy, 1)
}

/// As [`step_through`], but the first `prefill` tokens go through the model in one pass (a
/// prompt, which a policy such as SnapKV compresses once), and the rest one at a time with
/// eviction after each step, as during generation.
pub fn step_through_from(
    model: &Model,
    ids: &[u32],
    kv_policy: &KvPolicyConfig,
    prefill: usize,
) -> Result<Vec<(Option<f32>, u32)>> {
    kv_policy.validate()?;
    let context = model.config().max_position_embeddings;
    if ids.len() > context {
        return Err(InferError::ContextOverflow {
            tokens: ids.len(),
            new_tokens: 0,
            context,
        });
    }
    let prefill = prefill.clamp(1, ids.len().max(1));
    let device = model.embed_tokens.weight.device();
    let mut policy = kv_policy.build(model.config().num_layers);
    let mut cache = model.new_cache();
    let mut out = Vec::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    out.push((None, 0));
    // One row of logits predicts the token after it.
    let mut push = |row: &[f32], next: u32| {
        let (argmax, max) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |b, (j, &x)| if x > b.1 { (j, x) } else { b },
            );
        let lse = log_sum_exp(row, max);
        out.push((
            Some((row[next as usize] as f64 - lse) as f32),
            argmax as u32,
        ));
    };
    let data: Vec<i32> = ids[..prefill].iter().map(|&t| t as i32).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(data, [1, prefill]), &device);
    let opts = ForwardOptions {
        logits: Logits::All,
        attention: policy.wants_attention(),
        hidden: false,
        ..Default::default()
    };
    let fwd = model.forward(input, &mut cache, opts);
    policy::apply(policy.as_mut(), &mut cache, &fwd.attentions, prefill);
    if let Some(l) = fwd.logits {
        let all = logits_row(l)?;
        let vocab = all.len() / prefill;
        for (i, row) in all.chunks_exact(vocab).enumerate() {
            if let Some(&next) = ids.get(i + 1) {
                push(row, next);
            }
        }
    }
    for i in prefill..ids.len() {
        let logits = step(model, &ids[i..i + 1], &mut cache, policy.as_mut(), &device);
        if let (Some(&next), Some(l)) = (ids.get(i + 1), logits) {
            push(&logits_row(l)?, next);
        }
    }
    Ok(out)
}

/// Tokenizes `text` (adding BOS if the model does) and scores every token.
pub fn score_text(model: &Model, tokenizer: &Tokenizer, text: &str) -> Result<Vec<TokenScore>> {
    score_text_with_policy(model, tokenizer, text, &KvPolicyConfig::Full)
}

/// [`score_text`] with the cache under `kv_policy` (see [`score_ids_with_policy`]).
pub fn score_text_with_policy(
    model: &Model,
    tokenizer: &Tokenizer,
    text: &str,
    kv_policy: &KvPolicyConfig,
) -> Result<Vec<TokenScore>> {
    let ids = tokenizer.encode(text, true)?;
    let logprobs = score_ids_with_policy(model, &ids, kv_policy)?;
    ids.iter()
        .zip(logprobs)
        .map(|(&id, logprob)| {
            Ok(TokenScore {
                id,
                token: tokenizer.decode(&[id], false)?,
                logprob,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_seeded_sampling() {
        let logits = [0.1, 2.0, 0.3, 1.9];
        assert_eq!(Sampler::new(SamplingConfig::default()).sample(&logits), 1);
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 7,
        };
        let a: Vec<u32> = (0..20)
            .map({
                let mut s = Sampler::new(cfg.clone());
                move |_| s.sample(&logits)
            })
            .collect();
        let b: Vec<u32> = (0..20)
            .map({
                let mut s = Sampler::new(cfg.clone());
                move |_| s.sample(&logits)
            })
            .collect();
        assert_eq!(a, b, "same seed, same draws");
        assert!(
            a.iter().all(|&t| t == 1 || t == 3),
            "top-k 2 keeps tokens 1 and 3: {a:?}"
        );
        assert!(
            a.contains(&1) && a.contains(&3),
            "both are drawn at T=1: {a:?}"
        );
        let mut s = Sampler::new(SamplingConfig { top_p: 0.5, ..cfg });
        assert!(
            (0..20).all(|_| s.sample(&logits) == 1),
            "top-p 0.5 keeps the single top token"
        );
    }

    #[test]
    fn stop_prefixes_are_held_back() {
        let stops = vec!["</answer>".to_string()];
        assert_eq!(held_back("x = 4 </an", &stops), 4);
        assert_eq!(held_back("x = 4", &stops), 0);
    }

    #[test]
    fn invalid_sampling_is_rejected() {
        let bad = SamplingConfig {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = SamplingConfig {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
