//! Generation-based evaluation: greedy answers to a dataset's problems, graded by
//! `laconic-traces`, with one JSONL line per problem.

use std::io::Write;
use std::path::Path;

use laconic_infer::generate::{GenerateConfig, Generation, generate};
use laconic_infer::model::Model;
use laconic_infer::policy::KvPolicyConfig;
use laconic_traces::DatasetSpec;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::Formatter;
use crate::error::{Result, TrainError};

/// Accuracy and length over an evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// The dataset spec.
    pub dataset: String,
    /// Problems evaluated.
    pub problems: usize,
    /// Answers graded correct.
    pub correct: usize,
    /// `correct / problems`.
    pub accuracy: f64,
    /// Outputs with no answer the grader could extract.
    pub unextracted: usize,
    /// Mean generated tokens per problem.
    pub mean_completion_tokens: f64,
    /// Mean tokens the length budget counts per problem: every generated token but a final
    /// stop token (GRPO's definition).
    #[serde(default)]
    pub mean_reasoning_tokens: f64,
    /// Mean over problems of the most bytes the KV cache held while answering.
    #[serde(default)]
    pub mean_peak_kv_bytes: f64,
    /// Mean over problems of the most entries (per layer and KV head) the cache held.
    #[serde(default)]
    pub mean_peak_kv_entries: f64,
    /// Decode speed of one core: generated tokens over decode seconds, summed over problems
    /// (problems, or batches of them, run side by side on the thread pool, so the machine's
    /// total throughput is higher; in a batch a problem's seconds are its share of each
    /// step).
    #[serde(default)]
    pub decode_tok_s: f64,
}

/// What to evaluate and how to decode.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Evaluate the first N problems.
    pub limit: usize,
    /// Most tokens generated per problem.
    pub max_new_tokens: usize,
    /// What the KV cache keeps while decoding.
    pub kv_policy: KvPolicyConfig,
    /// Ask for this compression ratio (the control string a ratio-conditioned student
    /// learned; see `laconic_traces::schema::ratio_control`).
    pub ratio: Option<f64>,
    /// Ask a budget-trained student for this reasoning budget in tokens (its control
    /// string, `[budget N]`; see `laconic_traces::schema::budget_control`).
    pub budget: Option<usize>,
    /// Problems whose prompts have the same length decode together, up to this many per
    /// batch (`laconic_infer::parallel::generate_batch`); 1 decodes each problem alone.
    /// Answers are the same either way (up to float summation order).
    pub batch: usize,
}

/// Answers the first `config.limit` problems of `spec` greedily, grades them, and writes one
/// line per problem to `out` (question, output, extracted answer, gold, correct, tokens),
/// atomically.
pub fn evaluate(
    model: &Model,
    formatter: &Formatter,
    spec: &DatasetSpec,
    config: &EvalConfig,
    out: Option<&Path>,
    progress: bool,
) -> Result<EvalSummary> {
    let grader = spec.grader().ok_or_else(|| {
        TrainError::Invalid(format!(
            "evaluation needs a dataset with gold answers and a grader (gsm8k:PATH or math500:PATH), got {}",
            spec
        ))
    })?;
    let mut problems = spec.load()?;
    problems.truncate(config.limit);
    let gen_config = GenerateConfig {
        max_new_tokens: config.max_new_tokens,
        stop_tokens: formatter.stop_tokens(&model.config().eos_token_ids),
        kv_policy: config.kv_policy.clone(),
        ..Default::default()
    };
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(problems.len() as u64);
        if let Ok(s) =
            indicatif::ProgressStyle::with_template("eval {pos}/{len} [{bar:30}] {msg} eta {eta}")
        {
            b.set_style(s);
        }
        b
    });
    let mut lines = Vec::with_capacity(problems.len());
    let (mut correct, mut unextracted, mut tokens, mut reasoning) = (0, 0, 0, 0);
    let (mut peak_bytes, mut peak_entries, mut decode_tokens, mut decode_seconds) =
        (0usize, 0usize, 0usize, 0.0f64);
    let stops = gen_config.stop_tokens.clone();
    let mut prompts = Vec::with_capacity(problems.len());
    for p in problems.iter_mut() {
        if config.ratio.is_some() {
            p.ratio = config.ratio;
        }
        if config.budget.is_some() {
            *p = crate::grpo::with_budget(p, config.budget);
        }
        prompts.push(formatter.prompt_ids(p)?);
    }
    // Greedy decoding of one sequence keeps about one core busy: problems (or batches of
    // problems) run side by side on the thread pool (results stay in problem order).
    let tokenizer = formatter.tokenizer();
    let generations: Vec<Generation> = if config.batch > 1 {
        laconic_infer::parallel::generate_batch(
            model,
            tokenizer,
            &prompts,
            &gen_config,
            config.batch,
            |n| {
                if let Some(b) = &bar {
                    b.inc(n as u64);
                }
            },
        )?
    } else {
        prompts
            .par_iter()
            .map(|prompt| {
                let mut cache = model.new_cache();
                let g = generate(model, tokenizer, prompt, &gen_config, &mut cache, |_| {});
                if let Some(b) = &bar {
                    b.inc(1);
                }
                g
            })
            .collect::<std::result::Result<_, _>>()?
    };
    for (p, g) in problems.iter().zip(generations) {
        let gold = p.gold.clone().unwrap_or_else(|| p.answer.clone());
        let graded = grader.grade(&g.text, &gold);
        correct += usize::from(graded.correct);
        unextracted += usize::from(graded.extracted.is_none());
        tokens += g.tokens.len();
        let ends_in_stop = g.tokens.last().is_some_and(|t| stops.contains(t));
        let reasoning_tokens = g.tokens.len() - usize::from(ends_in_stop);
        reasoning += reasoning_tokens;
        peak_bytes += g.peak_cache_bytes;
        peak_entries += g.peak_cache_entries;
        decode_tokens += g.tokens.len().saturating_sub(1);
        decode_seconds += g.decode_seconds;
        lines.push(json!({
            "id": p.id, "question": p.question, "output": g.text,
            "extracted": graded.extracted, "gold": graded.gold.unwrap_or(gold),
            "correct": graded.correct, "completion_tokens": g.tokens.len(),
            "reasoning_tokens": reasoning_tokens, "prompt_tokens": g.prompt_tokens,
            "peak_kv_bytes": g.peak_cache_bytes, "peak_kv_entries": g.peak_cache_entries,
            "decode_seconds": g.decode_seconds,
            "finish_reason": match g.finish_reason {
                laconic_infer::generate::FinishReason::Length => "length",
                _ => "stop",
            },
        }));
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Some(out) = out {
        let mut text = Vec::new();
        for l in &lines {
            writeln!(text, "{l}").map_err(|e| TrainError::io(out, e))?;
        }
        crate::checkpoint::write_atomic(out, &text)?;
    }
    let n = problems.len();
    Ok(EvalSummary {
        dataset: spec.to_string(),
        problems: n,
        correct,
        accuracy: correct as f64 / n.max(1) as f64,
        unextracted,
        mean_completion_tokens: tokens as f64 / n.max(1) as f64,
        mean_reasoning_tokens: reasoning as f64 / n.max(1) as f64,
        mean_peak_kv_bytes: peak_bytes as f64 / n.max(1) as f64,
        mean_peak_kv_entries: peak_entries as f64 / n.max(1) as f64,
        decode_tok_s: if decode_seconds > 0.0 {
            decode_tokens as f64 / decode_seconds
        } else {
            0.0
        },
    })
}
