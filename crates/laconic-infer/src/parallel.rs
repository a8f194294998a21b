//! Parallel test-time scaling: N samples that share one prefill, decoded as one batch, then a
//! majority vote over their extracted answers (ties broken by mean log-probability).
//!
//! Decoding is memory-bound: one batched step reads the weights once for all N sequences, so N
//! samples cost little more wall time than one. The prompt is prefilled once at batch 1 and
//! its cache repeated N times. Eviction policies decide for each sequence (per lane of the
//! cache), so a sample keeps what it would keep decoded alone. On the CPU the samples decode
//! as two half batches side by side (each half with its own cache copy and policy,
//! [`decodes_in_halves`]): [`generate_samples_with`]. [`generate_batch`] decodes different
//! prompts together, for evaluations.
//!
//! Budget forcing works per sequence: a sequence that reaches `--think-budget` is fed the
//! end-of-thinking delimiter one token per step while the others keep sampling.

use std::collections::HashMap;

use burn::prelude::*;

use crate::cache::KvCache;
use crate::error::{InferError, Result};
use crate::generate::{
    FinishReason, GenerateConfig, Generation, Sampler, SamplingConfig, logits_row, step,
};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// One sample with its mean log-probability and extracted answer.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The generation.
    pub generation: Generation,
    /// Mean log-probability of its sampled tokens.
    pub mean_logprob: f64,
    /// The answer extracted from its text, if any.
    pub answer: Option<String>,
}

/// The outcome of a vote.
#[derive(Debug, Clone)]
pub struct Vote {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// The winning answer, if any sample had one.
    pub answer: Option<String>,
    /// Samples that gave the winning answer.
    pub votes: usize,
    /// Index of the sample presented as the result (the best-scoring one with the answer).
    pub chosen: usize,
}

/// The final answer of a reasoning text: the last `\boxed{...}`, else the last number on the
/// first line with a digit after the last answer marker ("Final answer", "The answer is",
/// "####", "</think>"), else the last number of the text. Numbers lose thousands separators
/// and a trailing ".0".
pub fn extract_answer(text: &str) -> Option<String> {
    if let Some(i) = text.rfind("\\boxed{") {
        let rest = &text[i + 7..];
        let mut depth = 1;
        for (j, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(rest[..j].trim().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let lower = text.to_lowercase();
    let marker = ["final answer", "the answer is", "####", "</think>"]
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| i + m.len()))
        .max();
    // The first non-empty line after the last marker: "Final answer: 7 * 12 = 84" gives 84.
    let line = marker.and_then(|i| {
        text[i..]
            .lines()
            .find(|l| l.chars().any(|c| c.is_ascii_digit()))
    });
    line.and_then(last_number).or_else(|| last_number(text))
}

fn last_number(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut end = None;
    for i in (0..bytes.len()).rev() {
        if bytes[i].is_ascii_digit() {
            end = Some(i + 1);
            break;
        }
    }
    let end = end?;
    let mut start = end;
    while start > 0 {
        let c = bytes[start - 1];
        let digit_follows = bytes.get(start).is_some_and(u8::is_ascii_digit);
        if c.is_ascii_digit()
            || ((c == b',' || c == b'.')
                && digit_follows
                && start >= 2
                && bytes[start - 2].is_ascii_digit())
        {
            start -= 1;
        } else {
            break;
        }
    }
    if start > 0 && bytes[start - 1] == b'-' {
        start -= 1;
    }
    let mut n = text[start..end].replace(',', "");
    if let Some(stripped) = n.strip_suffix(".0") {
        n = stripped.to_string();
    }
    Some(n)
}

/// Majority vote over samples; ties go to the answer whose best sample has the highest mean
/// log-probability.
pub fn vote(samples: Vec<Sample>) -> Vote {
    let mut tally: HashMap<&str, (usize, f64, usize)> = HashMap::new();
    for (i, s) in samples.iter().enumerate() {
        if let Some(a) = &s.answer {
            let e = tally.entry(a.as_str()).or_insert((0, f64::NEG_INFINITY, i));
            e.0 += 1;
            if s.mean_logprob > e.1 {
                e.1 = s.mean_logprob;
                e.2 = i;
            }
        }
    }
    let best = tally
        .iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(a.1.1.total_cmp(&b.1.1)))
        .map(|(a, &(n, _, i))| (a.to_string(), n, i));
    let (answer, votes, chosen) = match best {
        Some((a, n, i)) => (Some(a), n, i),
        None => {
            let i = (0..samples.len())
                .max_by(|&a, &b| samples[a].mean_logprob.total_cmp(&samples[b].mean_logprob))
                .unwrap_or(0);
            (None, 0, i)
        }
    };
    Vote {
        samples,
        answer,
        votes,
        chosen,
    }
}

/// Per-sequence decoding state.
struct Seq {
    sampler: Sampler,
    tokens: Vec<u32>,
    logprob_sum: f64,
    sampled: usize,
    done: Option<FinishReason>,
    think_tokens: usize,
    thinking: bool,
    /// Tokens to feed before sampling again (a forced delimiter).
    queued: std::collections::VecDeque<u32>,
    /// The first token's logits (the prefill's last row), until it is sampled.
    first: Vec<f32>,
    /// Most entries (per lane) and bytes of this sequence's rows the cache held.
    peak: (usize, usize),
    /// This sequence's share of the decode steps' time: each step's time divided by the
    /// sequences it advanced.
    seconds: f64,
}

impl Seq {
    fn new(sampling: SamplingConfig, thinking: bool, first: Vec<f32>) -> Self {
        Self {
            sampler: Sampler::new(sampling),
            tokens: Vec::new(),
            logprob_sum: 0.0,
            sampled: 0,
            done: None,
            think_tokens: 0,
            thinking,
            queued: Default::default(),
            first,
            peak: (0, 0),
            seconds: 0.0,
        }
    }

    /// Chooses the next token from `row` (or a queued one) and updates the reasoning and stop
    /// state; returns the token to feed.
    fn advance(&mut self, row: &[f32], group: &Group<'_>) -> Result<u32> {
        let config = group.config;
        let next = if let Some(q) = self.queued.pop_front() {
            q
        } else {
            let t = self.sampler.sample(row);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = crate::generate::log_sum_exp(row, max);
            self.logprob_sum += row[t as usize] as f64 - lse;
            self.sampled += 1;
            if self.thinking {
                let ends = config.stop_tokens.contains(&t)
                    || (group.end_ids.len() == 1 && group.end_ids[0] == t);
                if ends {
                    self.thinking = false;
                } else {
                    self.think_tokens += 1;
                    if group.max_think.is_some_and(|m| self.think_tokens >= m) {
                        self.thinking = false;
                        self.queued.extend(&group.end_ids);
                    }
                }
            }
            t
        };
        self.tokens.push(next);
        if self.thinking
            && let Some(t) = &config.think
            && group
                .tokenizer
                .decode(&self.tokens, false)?
                .contains(t.end.as_str())
        {
            self.thinking = false;
        }
        if config.stop_tokens.contains(&next) && self.queued.is_empty() {
            self.done = Some(FinishReason::Stop);
        } else if !config.stop_strings.is_empty() {
            let text = group.tokenizer.decode(&self.tokens, true)?;
            if config
                .stop_strings
                .iter()
                .any(|x| text.contains(x.as_str()))
            {
                self.done = Some(FinishReason::StopString);
            }
        }
        Ok(next)
    }

    /// The finished generation: its text without the stop token, cut before a stop string.
    fn finish(
        self,
        group: &Group<'_>,
        prompt_tokens: usize,
        prefill_seconds: f64,
        decode_seconds: f64,
    ) -> Result<(Generation, f64)> {
        let mut tokens = self.tokens;
        let finish = self.done.unwrap_or(FinishReason::Length);
        let shown = if finish == FinishReason::Stop {
            &tokens[..tokens.len() - 1]
        } else {
            &tokens[..]
        };
        let mut text = group.tokenizer.decode(shown, true)?;
        if finish == FinishReason::StopString
            && let Some(cut) = group
                .config
                .stop_strings
                .iter()
                .filter_map(|x| text.find(x.as_str()))
                .min()
        {
            text.truncate(cut);
        }
        tokens.shrink_to_fit();
        let mean_logprob = if self.sampled > 0 {
            self.logprob_sum / self.sampled as f64
        } else {
            0.0
        };
        let generation = Generation {
            tokens,
            text,
            finish_reason: finish,
            prompt_tokens,
            prefill_seconds,
            decode_seconds,
            think_tokens: self.think_tokens,
            peak_cache_entries: self.peak.0,
            peak_cache_bytes: self.peak.1,
        };
        Ok((generation, mean_logprob))
    }
}

/// What the decoding of a batch of sequences reads: the settings, the token budget and the
/// end-of-thinking delimiter.
struct Group<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    config: &'a GenerateConfig,
    end_ids: Vec<u32>,
    max_think: Option<usize>,
    budget: usize,
    device: Device,
}

impl<'a> Group<'a> {
    /// The decoding of sequences of at most `budget` new tokens under `config`.
    fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        config: &'a GenerateConfig,
        budget: usize,
    ) -> Result<Self> {
        let end_ids = match &config.think {
            Some(t) => tokenizer.encode(&t.end, false)?,
            None => Vec::new(),
        };
        Ok(Self {
            model,
            tokenizer,
            config,
            end_ids,
            max_think: config.think.as_ref().and_then(|t| t.max_tokens),
            budget,
            device: model.embed_tokens.weight.device(),
        })
    }
}

impl Group<'_> {
    /// Decodes `seqs` as one batch from `cache` (row `i` is sequence `i`'s, after its prompt)
    /// until each is done or the budget is spent. A sequence that finishes leaves the batch
    /// (its cache rows and policy state are dropped), so the others' steps get cheaper.
    fn decode(
        &self,
        mut seqs: Vec<Seq>,
        mut cache: KvCache,
        mut policy: Box<dyn crate::policy::KvPolicy>,
    ) -> Result<Vec<Seq>> {
        let n = seqs.len();
        let per_row = |cache: &KvCache, rows: usize| (cache.len(), cache.bytes() / rows.max(1));
        let start = per_row(&cache, n);
        for s in &mut seqs {
            s.peak = start;
        }
        // `active[r]`: the sequence in batch row r.
        let mut active: Vec<usize> = (0..n).collect();
        let mut rows: Vec<Vec<f32>> = seqs
            .iter_mut()
            .map(|s| std::mem::take(&mut s.first))
            .collect();
        for iteration in 0..self.budget {
            let mut feed = Vec::with_capacity(active.len());
            let mut going = Vec::with_capacity(active.len());
            for (r, (&i, row)) in active.iter().zip(&rows).enumerate() {
                let next = seqs[i].advance(row, self)?;
                if seqs[i].done.is_none() {
                    going.push(r);
                    feed.push(next);
                }
            }
            if going.is_empty() || iteration + 1 == self.budget {
                break;
            }
            if going.len() < active.len() {
                crate::policy::retain_rows(policy.as_mut(), &mut cache, &going);
                active = going.iter().map(|&r| active[r]).collect();
            }
            let t = std::time::Instant::now();
            let logits = crate::generate::step_batch(
                self.model,
                &feed,
                active.len(),
                &mut cache,
                policy.as_mut(),
                &self.device,
            )
            .ok_or_else(|| InferError::TensorData("no logits".into()))?;
            let all = logits_row(logits)?;
            let share = t.elapsed().as_secs_f64() / active.len() as f64;
            let now = per_row(&cache, active.len());
            for &i in &active {
                let s = &mut seqs[i];
                s.seconds += share;
                s.peak = (s.peak.0.max(now.0), s.peak.1.max(now.1));
            }
            let vocab = all.len() / active.len();
            rows = all.chunks_exact(vocab).map(<[f32]>::to_vec).collect();
        }
        Ok(seqs)
    }
}

/// Checks what [`generate_samples_with`] and [`generate_batch`] share: the settings, and that
/// a prompt is not empty and fits the context. Returns the token budget for `prompt`.
fn check(model: &Model, config: &GenerateConfig, prompt: &[u32]) -> Result<usize> {
    if config.think.as_ref().is_some_and(|t| t.min_tokens > 0) {
        return Err(InferError::InvalidArgument(
            "--min-think is not supported with --samples > 1 or batched generation yet".into(),
        ));
    }
    config.sampling.validate()?;
    config.kv_policy.validate()?;
    if prompt.is_empty() {
        return Err(InferError::InvalidArgument("the prompt is empty".into()));
    }
    let context = model.config().max_position_embeddings;
    if prompt.len() >= context {
        return Err(InferError::ContextOverflow {
            tokens: prompt.len(),
            new_tokens: config.max_new_tokens,
            context,
        });
    }
    Ok(config.max_new_tokens.min(context - prompt.len()))
}

/// Draws `n` samples for `prompt`, sharing its prefill, and votes. `config.think.min_tokens`
/// must be 0 (taking back a delimiter needs a per-sequence cache rewind). On the CPU with
/// more than one thread, two or more samples decode as two half batches side by side (see
/// [`generate_samples_with`]).
pub fn generate_samples(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    config: &GenerateConfig,
    n: usize,
) -> Result<Vote> {
    generate_samples_with(model, tokenizer, prompt, config, n, None)
}

/// Whether `n` samples on `device` decode as two half batches side by side by default: on
/// the CPU with two threads or more. Measured on SmolLM2-135M Q4_1 (docs/BENCHMARKS.md): four
/// samples take 64 steps/s as two halves, 50-52 as one batch whose products the spinning
/// helper splits (`crate::spin`), since most of Burn's per-step ops of one batch run on one
/// thread.
pub fn decodes_in_halves(n: usize, device: &Device) -> bool {
    n >= 2 && rayon::current_num_threads() >= 2 && *device == Device::flex()
}

/// [`generate_samples`], choosing how the batch decodes: `halves = Some(true)` splits the
/// samples into two half batches decoded side by side on the thread pool (each with its own
/// copy of the prompt's cache and of the eviction policy), `Some(false)` keeps one batch,
/// `None` splits on the CPU when the pool has two threads or more. Sequence i is drawn with
/// seed + i either way, and each sequence's cache keeps what the policy keeps for it, so the
/// samples are the same either way (up to float summation order).
pub fn generate_samples_with(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    config: &GenerateConfig,
    n: usize,
    halves: Option<bool>,
) -> Result<Vote> {
    if n == 0 {
        return Err(InferError::InvalidArgument(
            "--samples must be at least 1".into(),
        ));
    }
    let group = Group::new(model, tokenizer, config, check(model, config, prompt)?)?;
    let device = &group.device;
    let t0 = std::time::Instant::now();
    let mut policy = config.kv_policy.build(model.config().num_layers);
    let mut cache: KvCache = model.new_cache();
    let first = step(model, prompt, &mut cache, policy.as_mut(), device)
        .ok_or_else(|| InferError::TensorData("no logits".into()))?;
    let first = logits_row(first)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let seqs: Vec<Seq> = (0..n)
        .map(|i| {
            let sampling = SamplingConfig {
                seed: config.sampling.seed.wrapping_add(i as u64),
                ..config.sampling.clone()
            };
            Seq::new(sampling, config.think.is_some(), first.clone())
        })
        .collect();
    let halves = n >= 2 && halves.unwrap_or_else(|| decodes_in_halves(n, device));
    let seqs = if halves {
        let mut seqs = seqs;
        let second = seqs.split_off(n.div_ceil(2));
        let (mut cache_b, mut policy_b) = (cache.clone(), policy.fork());
        crate::policy::repeat_batch(policy.as_mut(), &mut cache, seqs.len());
        crate::policy::repeat_batch(policy_b.as_mut(), &mut cache_b, second.len());
        let (a, b) = rayon::join(
            || group.decode(seqs, cache, policy),
            || group.decode(second, cache_b, policy_b),
        );
        let mut seqs = a?;
        seqs.extend(b?);
        seqs
    } else {
        crate::policy::repeat_batch(policy.as_mut(), &mut cache, n);
        group.decode(seqs, cache, policy)?
    };
    let total = t0.elapsed().as_secs_f64();
    let samples = seqs
        .into_iter()
        .map(|s| {
            let (generation, mean_logprob) = s.finish(
                &group,
                prompt.len(),
                prefill_seconds,
                total - prefill_seconds,
            )?;
            Ok(Sample {
                answer: extract_answer(&generation.text),
                mean_logprob,
                generation,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(vote(samples))
}

/// Answers to several prompts, decoded in batches: what an evaluation over a dataset wants.
///
/// Prompts of the same length are decoded together, up to `batch` at a time (one prefill of
/// the batch, then one step for all of them per token; no padding, so each row is what
/// [`crate::generate::generate`] gives that prompt alone, up to float summation order), and
/// the batches run side by side on the thread pool. Each sequence samples with
/// `config.sampling` (its seed included, as a lone generation would) and keeps its own cache
/// under the policy; a finished sequence leaves its batch. Results are in prompt order; a
/// generation's `prefill_seconds` and `decode_seconds` are its share of its batch's time (a
/// step's time divided by the sequences it advanced), so tokens over seconds is the
/// throughput of one core. `config.think.min_tokens` must be 0.
///
/// `on_done(i, generation)` is called as soon as prompt `i`'s batch has finished (from the
/// thread that decoded it, in no particular order): for progress, or to save answers as they
/// come so that an interrupted run loses at most the batches in flight.
pub fn generate_batch(
    model: &Model,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    batch: usize,
    on_done: impl Fn(usize, &Generation) + Sync,
) -> Result<Vec<Generation>> {
    use rayon::prelude::*;
    let budgets = prompts
        .iter()
        .map(|p| check(model, config, p))
        .collect::<Result<Vec<_>>>()?;
    let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, p) in prompts.iter().enumerate() {
        by_len.entry(p.len()).or_default().push(i);
    }
    let chunks: Vec<&[usize]> = by_len
        .values()
        .flat_map(|v| v.chunks(batch.max(1)))
        .collect();
    let decode_chunk = |chunk: &[usize]| -> Result<Vec<(usize, Generation)>> {
        let k = chunk.len();
        let len = prompts[chunk[0]].len();
        let group = Group::new(model, tokenizer, config, budgets[chunk[0]])?;
        let t0 = std::time::Instant::now();
        let mut policy = config.kv_policy.build(model.config().num_layers);
        let mut cache = model.new_cache();
        let ids: Vec<u32> = chunk
            .iter()
            .flat_map(|&i| prompts[i].iter().copied())
            .collect();
        let logits =
            crate::generate::step_batch(model, &ids, k, &mut cache, policy.as_mut(), &group.device)
                .ok_or_else(|| InferError::TensorData("no logits".into()))?;
        let all = logits_row(logits)?;
        let vocab = all.len() / k;
        let seqs: Vec<Seq> = all
            .chunks_exact(vocab)
            .map(|row| {
                Seq::new(
                    config.sampling.clone(),
                    config.think.is_some(),
                    row.to_vec(),
                )
            })
            .collect();
        let prefill = t0.elapsed().as_secs_f64() / k as f64;
        let seqs = group.decode(seqs, cache, policy)?;
        let out = chunk
            .iter()
            .zip(seqs)
            .map(|(&i, s)| {
                let seconds = s.seconds;
                let (generation, _) = s.finish(&group, len, prefill, seconds)?;
                Ok((i, generation))
            })
            .collect::<Result<Vec<_>>>()?;
        for (i, g) in &out {
            on_done(*i, g);
        }
        Ok(out)
    };
    let done: Vec<Vec<(usize, Generation)>> = chunks
        .par_iter()
        .map(|c| decode_chunk(c))
        .collect::<Result<_>>()?;
    let mut out: Vec<Option<Generation>> = vec![None; prompts.len()];
    for (i, g) in done.into_iter().flatten() {
        out[i] = Some(g);
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_extracted_from_the_usual_places() {
        assert_eq!(
            extract_answer("so 3 + 4 = 7.\n#### 7").as_deref(),
            Some("7")
        );
        assert_eq!(
            extract_answer("x = 2, so \\boxed{\\frac{1}{2}} done").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            extract_answer("<think>12 or 13</think> It is 1,600 apples.").as_deref(),
            Some("1600")
        );
        assert_eq!(extract_answer("Final answer: -5.0").as_deref(), Some("-5"));
        assert_eq!(
            extract_answer("I guessed 41. The answer is 42.").as_deref(),
            Some("42")
        );
        assert_eq!(
            extract_answer("Final answer: 7 * 12 = 84 cows.\n3. Then").as_deref(),
            Some("84")
        );
        assert_eq!(extract_answer("no digits here"), None);
    }

    fn sample(answer: Option<&str>, lp: f64) -> Sample {
        Sample {
            generation: Generation {
                tokens: vec![],
                text: String::new(),
                finish_reason: FinishReason::Stop,
                prompt_tokens: 1,
                prefill_seconds: 0.0,
                decode_seconds: 0.0,
                think_tokens: 0,
                peak_cache_entries: 0,
                peak_cache_bytes: 0,
            },
            mean_logprob: lp,
            answer: answer.map(str::to_string),
        }
    }

    #[test]
    fn majority_wins_and_ties_go_to_the_likelier_answer() {
        let v = vote(vec![
            sample(Some("7"), -2.0),
            sample(Some("8"), -0.5),
            sample(Some("7"), -1.0),
        ]);
        assert_eq!((v.answer.as_deref(), v.votes, v.chosen), (Some("7"), 2, 2));
        let v = vote(vec![sample(Some("7"), -2.0), sample(Some("8"), -0.5)]);
        assert_eq!((v.answer.as_deref(), v.votes, v.chosen), (Some("8"), 1, 1));
        let v = vote(vec![sample(None, -2.0), sample(None, -0.5)]);
        assert_eq!((v.answer, v.chosen), (None, 1));
    }
}
