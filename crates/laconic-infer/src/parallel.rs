//! Parallel test-time scaling: N samples that share one prefill, decoded as one batch, then a
//! majority vote over their extracted answers (ties broken by mean log-probability).
//!
//! Decoding is memory-bound: one batched step reads the weights once for all N sequences, so N
//! samples cost little more wall time than one. The prompt is prefilled once at batch 1 and
//! its cache repeated N times. Eviction policies decide for the batch together (their scores
//! are summed over the sequences), so the sequences keep one cache layout. On the CPU the
//! samples decode as two half batches side by side (each half with its own cache copy and
//! policy, [`decodes_in_halves`]): [`generate_samples_with`].
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
}

/// What the decoding of a group of sequences reads: the prompt, its settings and the
/// prefill's last logits.
struct Group<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    config: &'a GenerateConfig,
    prompt: &'a [u32],
    end_ids: &'a [u32],
    max_think: Option<usize>,
    budget: usize,
    first: &'a [f32],
    device: &'a Device,
}

impl Group<'_> {
    /// Decodes `seqs` as one batch from `cache` (the prompt's, at batch 1) until each is done
    /// or the budget is spent; returns them with the most entries and bytes the cache held.
    fn decode(
        &self,
        mut seqs: Vec<Seq>,
        mut cache: KvCache,
        mut policy: Box<dyn crate::policy::KvPolicy>,
    ) -> Result<(Vec<Seq>, (usize, usize))> {
        let Group {
            model,
            tokenizer,
            config,
            prompt,
            end_ids,
            max_think,
            budget,
            first,
            device,
        } = *self;
        let n = seqs.len();
        cache.repeat_batch(n);
        let mut peak = (cache.len(), cache.bytes());
        let vocab = first.len();
        let mut rows: Vec<Vec<f32>> = vec![first.to_vec(); n];
        for iteration in 0..budget {
            let mut feed = Vec::with_capacity(n);
            for (s, row) in seqs.iter_mut().zip(&rows) {
                if s.done.is_some() {
                    feed.push(*s.tokens.last().unwrap_or(&prompt[prompt.len() - 1]));
                    continue;
                }
                let next = if let Some(q) = s.queued.pop_front() {
                    q
                } else {
                    let t = s.sampler.sample(row);
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let lse = crate::generate::log_sum_exp(row, max);
                    s.logprob_sum += row[t as usize] as f64 - lse;
                    s.sampled += 1;
                    if s.thinking {
                        let ends = config.stop_tokens.contains(&t)
                            || (end_ids.len() == 1 && end_ids[0] == t);
                        if ends {
                            s.thinking = false;
                        } else {
                            s.think_tokens += 1;
                            if max_think.is_some_and(|m| s.think_tokens >= m) {
                                s.thinking = false;
                                s.queued.extend(end_ids);
                            }
                        }
                    }
                    t
                };
                s.tokens.push(next);
                if s.thinking
                    && let Some(t) = &config.think
                    && tokenizer.decode(&s.tokens, false)?.contains(t.end.as_str())
                {
                    s.thinking = false;
                }
                if config.stop_tokens.contains(&next) && s.queued.is_empty() {
                    s.done = Some(FinishReason::Stop);
                } else if !config.stop_strings.is_empty() {
                    let text = tokenizer.decode(&s.tokens, true)?;
                    if config
                        .stop_strings
                        .iter()
                        .any(|x| text.contains(x.as_str()))
                    {
                        s.done = Some(FinishReason::StopString);
                    }
                }
                feed.push(next);
            }
            if seqs.iter().all(|s| s.done.is_some()) || iteration + 1 == budget {
                break;
            }
            let data: Vec<i32> = feed.iter().map(|&t| t as i32).collect();
            let input = Tensor::<2, Int>::from_data(TensorData::new(data, [n, 1]), device);
            let opts = crate::model::ForwardOptions {
                logits: crate::model::Logits::Last,
                attention: policy.wants_attention(),
                hidden: false,
                ..Default::default()
            };
            let out = model.forward(input, &mut cache, opts);
            crate::policy::apply(policy.as_mut(), &mut cache, &out.attentions, 1);
            peak = (peak.0.max(cache.len()), peak.1.max(cache.bytes()));
            let logits = out
                .logits
                .ok_or_else(|| InferError::TensorData("no logits".into()))?;
            let all = logits_row(logits)?;
            rows = all.chunks_exact(vocab).map(<[f32]>::to_vec).collect();
        }
        Ok((seqs, peak))
    }
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
/// copy of the prompt's cache and of the eviction policy, which then decides per half),
/// `Some(false)` keeps one batch, `None` splits on the CPU when the pool has two threads or
/// more. Sequence i is drawn with seed + i either way; with the full cache (or any policy
/// that does not read attention) the samples are the same.
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
    if config.think.as_ref().is_some_and(|t| t.min_tokens > 0) {
        return Err(InferError::InvalidArgument(
            "--min-think is not supported with --samples > 1 yet".into(),
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
    let budget = config.max_new_tokens.min(context - prompt.len());
    let device = model.embed_tokens.weight.device();
    let end_ids = match &config.think {
        Some(t) => tokenizer.encode(&t.end, false)?,
        None => Vec::new(),
    };
    let max_think = config.think.as_ref().and_then(|t| t.max_tokens);
    let t0 = std::time::Instant::now();
    let mut policy = config.kv_policy.build(model.config().num_layers);
    let mut cache: KvCache = model.new_cache();
    let first = step(model, prompt, &mut cache, policy.as_mut(), &device)
        .ok_or_else(|| InferError::TensorData("no logits".into()))?;
    let first = logits_row(first)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let seqs: Vec<Seq> = (0..n)
        .map(|i| Seq {
            sampler: Sampler::new(SamplingConfig {
                seed: config.sampling.seed.wrapping_add(i as u64),
                ..config.sampling.clone()
            }),
            tokens: Vec::new(),
            logprob_sum: 0.0,
            sampled: 0,
            done: None,
            think_tokens: 0,
            thinking: config.think.is_some(),
            queued: Default::default(),
        })
        .collect();
    let group = Group {
        model,
        tokenizer,
        config,
        prompt,
        end_ids: &end_ids,
        max_think,
        budget,
        first: &first,
        device: &device,
    };
    let halves = n >= 2 && halves.unwrap_or_else(|| decodes_in_halves(n, &device));
    let (seqs, peak) = if halves {
        let mut seqs = seqs;
        let second = seqs.split_off(n.div_ceil(2));
        let (cache_b, policy_b) = (cache.clone(), policy.fork());
        let (a, b) = rayon::join(
            || group.decode(seqs, cache, policy),
            || group.decode(second, cache_b, policy_b),
        );
        let ((mut seqs, pa), (rest, pb)) = (a?, b?);
        seqs.extend(rest);
        (seqs, (pa.0.max(pb.0), pa.1 + pb.1))
    } else {
        group.decode(seqs, cache, policy)?
    };
    let total = t0.elapsed().as_secs_f64();
    let samples = seqs
        .into_iter()
        .map(|s| {
            let mut tokens = s.tokens;
            let finish = s.done.unwrap_or(FinishReason::Length);
            let shown = if finish == FinishReason::Stop {
                &tokens[..tokens.len() - 1]
            } else {
                &tokens[..]
            };
            let mut text = tokenizer.decode(shown, true)?;
            if finish == FinishReason::StopString
                && let Some(cut) = config
                    .stop_strings
                    .iter()
                    .filter_map(|x| text.find(x.as_str()))
                    .min()
            {
                text.truncate(cut);
            }
            tokens.shrink_to_fit();
            Ok(Sample {
                answer: extract_answer(&text),
                mean_logprob: if s.sampled > 0 {
                    s.logprob_sum / s.sampled as f64
                } else {
                    0.0
                },
                generation: Generation {
                    tokens,
                    text,
                    finish_reason: finish,
                    prompt_tokens: prompt.len(),
                    prefill_seconds,
                    decode_seconds: total - prefill_seconds,
                    think_tokens: s.think_tokens,
                    peak_cache_entries: peak.0,
                    peak_cache_bytes: peak.1 / n.max(1),
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(vote(samples))
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
