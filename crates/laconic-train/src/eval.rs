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

/// One evaluated problem: a line of the JSONL file [`evaluate`] writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemResult {
    /// The problem's id.
    pub id: String,
    /// The question as the dataset gives it.
    pub question: String,
    /// The generated text.
    pub output: String,
    /// The answer the grader extracted from `output`, normalized.
    pub extracted: Option<String>,
    /// The reference answer, normalized.
    pub gold: String,
    /// Whether `extracted` matches `gold`.
    pub correct: bool,
    /// Generated tokens (a final stop token included).
    pub completion_tokens: usize,
    /// Tokens the length budget counts: every generated token but a final stop token.
    pub reasoning_tokens: usize,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Most bytes the KV cache held while answering.
    pub peak_kv_bytes: usize,
    /// Most entries (per layer and KV head) the cache held while answering.
    pub peak_kv_entries: usize,
    /// Seconds spent decoding after the first token (in a batch, this problem's share).
    pub decode_seconds: f64,
    /// `stop` or `length`.
    pub finish_reason: String,
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
    /// What names the model being evaluated (for instance its file and adapter). It is saved
    /// with the answers of an interrupted evaluation, which a re-run resumes only if this, the
    /// prompts and the decoding settings are the same.
    pub model_id: String,
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
    // An interrupted evaluation resumes from `OUT.partial`: the answers it saved, one line per
    // problem as each batch finished, if they were made with these settings.
    let partial = out.map(|o| Partial::open(o, header(model, spec, config, &gen_config, &prompts)));
    let partial = partial.transpose()?;
    let mut results: Vec<Option<ProblemResult>> = vec![None; problems.len()];
    if let Some(p) = &partial {
        for (i, r) in p.done.iter() {
            if *i < results.len() {
                results[*i] = Some(r.clone());
            }
        }
    }
    let todo: Vec<usize> = (0..problems.len())
        .filter(|&i| results[i].is_none())
        .collect();
    if let (Some(p), true) = (&partial, progress && todo.len() < problems.len()) {
        eprintln!(
            "eval: resuming an interrupted evaluation, {} of {} answers read back from {}",
            problems.len() - todo.len(),
            problems.len(),
            p.path.display()
        );
    }
    if let Some(b) = &bar {
        b.set_position((problems.len() - todo.len()) as u64);
    }
    let result_of = |i: usize, g: &Generation| {
        let p = &problems[i];
        let gold = p.gold.clone().unwrap_or_else(|| p.answer.clone());
        let graded = grader.grade(&g.text, &gold);
        let ends_in_stop = g.tokens.last().is_some_and(|t| stops.contains(t));
        ProblemResult {
            id: p.id.clone(),
            question: p.question.clone(),
            output: g.text.clone(),
            extracted: graded.extracted,
            gold: graded.gold.unwrap_or(gold),
            correct: graded.correct,
            completion_tokens: g.tokens.len(),
            reasoning_tokens: g.tokens.len() - usize::from(ends_in_stop),
            prompt_tokens: g.prompt_tokens,
            peak_kv_bytes: g.peak_cache_bytes,
            peak_kv_entries: g.peak_cache_entries,
            decode_seconds: g.decode_seconds,
            finish_reason: match g.finish_reason {
                laconic_infer::generate::FinishReason::Length => "length",
                _ => "stop",
            }
            .to_string(),
        }
    };
    // Each answer is graded once, as soon as its batch finishes, and saved to the partial
    // file; the first error saving one is reported after the batches in flight end.
    let save_error: std::sync::Mutex<Option<TrainError>> = std::sync::Mutex::new(None);
    let fresh: std::sync::Mutex<Vec<(usize, ProblemResult)>> =
        std::sync::Mutex::new(Vec::with_capacity(todo.len()));
    let on_done = |k: usize, g: &Generation| {
        let i = todo[k];
        let r = result_of(i, g);
        if let Some(p) = &partial
            && let Err(e) = p.append(i, &r)
            && let Ok(mut slot) = save_error.lock()
        {
            slot.get_or_insert(e);
        }
        if let Ok(mut f) = fresh.lock() {
            f.push((i, r));
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
    };
    // Greedy decoding of one sequence keeps about one core busy: problems (or batches of
    // problems) run side by side on the thread pool (results stay in problem order).
    let tokenizer = formatter.tokenizer();
    let todo_prompts: Vec<Vec<u32>> = todo.iter().map(|&i| prompts[i].clone()).collect();
    if config.batch > 1 {
        laconic_infer::parallel::generate_batch(
            model,
            tokenizer,
            &todo_prompts,
            &gen_config,
            config.batch,
            on_done,
        )?;
    } else {
        todo_prompts
            .par_iter()
            .enumerate()
            .try_for_each(|(k, prompt)| {
                let mut cache = model.new_cache();
                let g = generate(model, tokenizer, prompt, &gen_config, &mut cache, |_| {})?;
                on_done(k, &g);
                Ok::<(), laconic_infer::InferError>(())
            })?;
    }
    if let Some(e) = save_error.into_inner().ok().flatten() {
        return Err(e);
    }
    for (i, r) in fresh
        .into_inner()
        .map_err(|_| TrainError::Invalid("an evaluation thread panicked".into()))?
    {
        results[i] = Some(r);
    }
    let results: Vec<ProblemResult> = results.into_iter().flatten().collect();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Some(out) = out {
        let mut text = Vec::new();
        for r in &results {
            let line = serde_json::to_string(r).map_err(|e| TrainError::Invalid(e.to_string()))?;
            writeln!(text, "{line}").map_err(|e| TrainError::io(out, e))?;
        }
        crate::checkpoint::write_atomic(out, &text)?;
    }
    if let Some(p) = partial {
        p.remove()?;
    }
    let (mut correct, mut unextracted, mut tokens, mut reasoning) = (0, 0, 0, 0);
    let (mut peak_bytes, mut peak_entries, mut decode_tokens, mut decode_seconds) =
        (0usize, 0usize, 0usize, 0.0f64);
    for r in &results {
        correct += usize::from(r.correct);
        unextracted += usize::from(r.extracted.is_none());
        tokens += r.completion_tokens;
        reasoning += r.reasoning_tokens;
        peak_bytes += r.peak_kv_bytes;
        peak_entries += r.peak_kv_entries;
        decode_tokens += r.completion_tokens.saturating_sub(1);
        decode_seconds += r.decode_seconds;
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

/// The settings an evaluation's answers depend on, saved as the first line of `OUT.partial`.
fn header(
    model: &Model,
    spec: &DatasetSpec,
    config: &EvalConfig,
    generation: &GenerateConfig,
    prompts: &[Vec<u32>],
) -> serde_json::Value {
    // FNV-1a over every prompt's token ids: the dataset, the chat template, the system
    // message and the control strings all show up here.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for p in prompts {
        for t in p.iter().chain(std::iter::once(&u32::MAX)) {
            for b in t.to_le_bytes() {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    json!({
        "laconic_eval_partial": 1,
        "model": config.model_id,
        "layers": model.config().num_layers,
        "dataset": spec.to_string(),
        "problems": prompts.len(),
        "prompts_fnv1a": format!("{hash:016x}"),
        "max_new_tokens": generation.max_new_tokens,
        "stop_tokens": generation.stop_tokens,
        "kv_policy": format!("{:?}", generation.kv_policy),
    })
}

/// One saved answer of an interrupted evaluation.
#[derive(Serialize, Deserialize)]
struct PartialLine {
    index: usize,
    result: ProblemResult,
}

/// `OUT.partial`: the answers of an evaluation saved as they come, after a header with its
/// settings, so that an interrupted run resumes instead of starting over.
struct Partial {
    path: std::path::PathBuf,
    file: std::sync::Mutex<std::fs::File>,
    done: Vec<(usize, ProblemResult)>,
}

impl Partial {
    /// Opens (or starts) the partial file beside `out`; an existing one must have been made
    /// with `header`'s settings.
    fn open(out: &Path, header: serde_json::Value) -> Result<Self> {
        let mut name = out.as_os_str().to_owned();
        name.push(".partial");
        let path = std::path::PathBuf::from(name);
        let mut done = Vec::new();
        let exists = path.exists();
        if exists {
            // The header first: a file made with other settings is left exactly as it is.
            let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
            let first = text.lines().next().unwrap_or("");
            let saved: Option<serde_json::Value> = serde_json::from_str(first).ok();
            if !first.is_empty() && saved.as_ref() != Some(&header) {
                let field = header
                    .as_object()
                    .and_then(|h| {
                        h.iter()
                            .find(|(k, v)| saved.as_ref().and_then(|s| s.get(*k)) != Some(*v))
                    })
                    .map_or("format".to_string(), |(k, _)| k.clone());
                return Err(TrainError::Invalid(format!(
                    "{}: holds the answers of an interrupted evaluation made with other settings ({field} differs); delete it to start over, or re-run with the settings it was made with",
                    path.display()
                )));
            }
            laconic_traces::schema::drop_incomplete_tail(&path)?;
            let lines: Vec<serde_json::Value> = laconic_traces::read_json_lines(&path)?;
            for (n, v) in lines.into_iter().enumerate().skip(1) {
                let l: PartialLine = serde_json::from_value(v).map_err(|e| {
                    TrainError::Invalid(format!(
                        "{}:{}: not a saved answer ({e})",
                        path.display(),
                        n + 1
                    ))
                })?;
                done.push((l.index, l.result));
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        let empty = file.metadata().map_err(|e| TrainError::io(&path, e))?.len() == 0;
        if empty {
            laconic_traces::append_json_line(&mut file, &header)
                .map_err(|e| TrainError::io(&path, e))?;
        }
        Ok(Self {
            path,
            file: std::sync::Mutex::new(file),
            done,
        })
    }

    /// Saves problem `index`'s answer (one line, synced).
    fn append(&self, index: usize, result: &ProblemResult) -> Result<()> {
        let mut file = self.file.lock().map_err(|_| {
            TrainError::Invalid(format!("{}: a writer panicked", self.path.display()))
        })?;
        let line = PartialLine {
            index,
            result: result.clone(),
        };
        laconic_traces::append_json_line(&mut file, &line)
            .map_err(|e| TrainError::io(&self.path, e))
    }

    /// Removes the file once the whole evaluation is written.
    fn remove(self) -> Result<()> {
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(|e| TrainError::io(&self.path, e))
    }
}
