//! The distiller: asks a [`Teacher`] for K samples per problem, grades each against the gold
//! answer, keeps them per a [`Select`] policy, drops duplicates, and writes the kept ones as
//! traces with their provenance.
//!
//! ## Files, and why a killed run loses nothing
//!
//! For `--out traces.jsonl` a run writes three files:
//!
//! - `traces.jsonl`: the kept traces (the [`Trace`] schema), ready for `laconic train`.
//! - `traces.jsonl.samples.jsonl`: every answer the teacher gave, graded, one line per
//!   sample, appended (and fsynced) as it arrives. Teacher time is the expensive part; it is
//!   never asked twice for the same sample.
//! - `traces.jsonl.run.json`: the settings of the run (teacher, model, K, policy, sampling,
//!   prompt). A re-run with other settings is refused rather than mixed in.
//!
//! A problem is finished when all its samples are in the samples file; its kept traces are
//! then appended to the output. Selection is a pure function of the samples, so a re-run
//! recomputes it for every finished problem and appends whatever a killed run had not yet
//! written, asks the teacher only for the samples that are missing, and drops a half-written
//! last line in either file first. Nothing is duplicated and nothing already received is
//! lost. Each sample's seed is derived from the problem and its index
//! ([`crate::teacher::sample_seed`]), so a deterministic teacher gives a resumed run the same
//! traces as an uninterrupted one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Result, TraceError};
use crate::grade::Grader;
use crate::jsonl::{self, line_error};
use crate::schema::{Provenance, SCHEMA_VERSION, Trace, append_trace, drop_incomplete_tail};
use crate::teacher::{ChatMessage, SampleRequest, SamplingParams, Teacher, TeacherSample};

/// Which correct samples of a problem are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    /// The correct sample with the fewest reasoning tokens (ties: the lower index).
    ShortestCorrect,
    /// Every correct sample, duplicates dropped.
    AllCorrect,
    /// The correct sample with the lowest index.
    FirstCorrect,
}

impl Select {
    /// Parses `shortest-correct`, `all-correct` or `first-correct`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "shortest-correct" | "shortest" => Some(Self::ShortestCorrect),
            "all-correct" | "all" => Some(Self::AllCorrect),
            "first-correct" | "first" => Some(Self::FirstCorrect),
            _ => None,
        }
    }

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ShortestCorrect => "shortest-correct",
            Self::AllCorrect => "all-correct",
            Self::FirstCorrect => "first-correct",
        }
    }
}

/// The settings of a distillation run.
#[derive(Debug, Clone)]
pub struct DistillConfig {
    /// The trace file to write (the samples and run files sit beside it).
    pub out: PathBuf,
    /// Samples asked per problem (K).
    pub samples: usize,
    /// What is kept.
    pub select: Select,
    /// Sampling; `seed` is the base from which each sample's seed is derived.
    pub sampling: SamplingParams,
    /// The system prompt sent to the teacher (`None`: [`default_system_prompt`]).
    pub system: Option<String>,
    /// How answers are graded.
    pub grader: Grader,
}

/// The instruction sent to the teacher when none is given: reason step by step, then end in
/// the answer format the grader reads.
pub fn default_system_prompt(grader: Grader) -> &'static str {
    match grader {
        Grader::Gsm8k => {
            "Solve the problem step by step. Then write the final answer, a number alone, on \
             the last line as `#### <answer>`."
        }
        Grader::Math => "Solve the problem step by step. Put the final answer in \\boxed{}.",
    }
}

/// What [`distill`] reports as it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Problems in the run.
    pub problems: usize,
    /// Problems finished (including those finished by an earlier run).
    pub finished: usize,
    /// Samples this run asks for.
    pub requested: usize,
    /// Of those, answered or failed so far.
    pub answered: usize,
    /// Correct samples received so far.
    pub correct: usize,
    /// Samples that failed after their retries.
    pub failed: usize,
}

/// The closing account of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DistillSummary {
    /// Problems in the run.
    pub problems: usize,
    /// Problems an earlier run had finished.
    pub already_finished: usize,
    /// Problems finished by this run.
    pub finished: usize,
    /// Problems with samples that failed after their retries; a re-run asks again.
    pub incomplete: usize,
    /// Finished problems with at least one correct sample.
    pub solved: usize,
    /// Samples this run asked for.
    pub requested: usize,
    /// Of those, answered.
    pub received: usize,
    /// Of those, failed after their retries.
    pub failed: usize,
    /// Samples graded correct over all finished problems.
    pub correct: usize,
    /// Samples graded wrong (or without an answer) over all finished problems.
    pub rejected: usize,
    /// Correct samples dropped as duplicates of another of the same problem.
    pub duplicates: usize,
    /// Traces kept (lines of the output for this run's problems).
    pub accepted: usize,
    /// Traces this run appended to the output.
    pub written: usize,
    /// Mean reasoning tokens over every received sample (where the teacher counted them).
    pub mean_tokens_all: Option<f64>,
    /// Mean reasoning tokens over the kept traces.
    pub mean_tokens_kept: Option<f64>,
    /// Mean reasoning words over every received sample.
    pub mean_words_all: Option<f64>,
    /// Mean reasoning words over the kept traces.
    pub mean_words_kept: Option<f64>,
    /// Retried attempts by reason.
    pub retries: BTreeMap<String, u64>,
    /// The first errors of failed samples (up to 5).
    pub errors: Vec<String>,
    /// Wall-clock seconds of this run.
    pub seconds: f64,
    /// Samples received per second.
    pub samples_per_second: f64,
    /// Completion tokens received per second (where counted).
    pub tokens_per_second: f64,
}

/// One line of the samples file: a teacher's answer, graded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleRecord {
    /// The problem's id.
    pub problem: String,
    /// The sample's index (0-based).
    pub index: usize,
    /// The seed it was asked with.
    pub seed: u64,
    /// When it arrived (RFC 3339, UTC).
    pub created: String,
    /// Seconds the request took (retries included).
    pub seconds: f64,
    /// What the teacher answered.
    pub sample: TeacherSample,
    /// The answer the grader read from it.
    pub extracted: Option<String>,
    /// Whether it matches the gold answer.
    pub correct: bool,
}

/// The settings a run is resumed under; a different one is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunSettings {
    schema: u32,
    teacher: String,
    model: Option<String>,
    samples: usize,
    select: Select,
    sampling: SamplingParams,
    system: String,
    grader: String,
}

/// `<out>.<suffix>`.
fn beside(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// The samples file of a run writing `out`.
pub fn samples_path(out: &Path) -> PathBuf {
    beside(out, "samples.jsonl")
}

/// The settings file of a run writing `out`.
pub fn run_path(out: &Path) -> PathBuf {
    beside(out, "run.json")
}

/// Now, as RFC 3339 UTC with seconds (`2026-12-01T09:30:00Z`).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The reasoning of a sample: the teacher's separate reasoning if it sent one, else the
/// `<think>` part, else the whole reply without a closing `#### answer` line (which
/// [`Trace::completion`] writes back); see [`crate::formats::split_response`].
fn reasoning_of(sample: &TeacherSample) -> String {
    let explicit = sample.reasoning.as_deref().filter(|r| !r.trim().is_empty());
    crate::formats::split_response(explicit, &sample.content).0
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The reasoning tokens of a sample as the teacher counted them: its separate reasoning
/// count, else all generated tokens.
fn tokens(sample: &TeacherSample) -> Option<u64> {
    sample.reasoning_tokens.or(sample.completion_tokens)
}

/// Grades a sample on its reply (after its separate reasoning, if any, so that the reply's
/// final answer wins).
fn grade(grader: Grader, sample: &TeacherSample, gold: &str) -> crate::grade::Graded {
    match sample.reasoning.as_deref() {
        Some(r) if !r.trim().is_empty() => grader.grade(&format!("{r}\n{}", sample.content), gold),
        _ => grader.grade(&sample.content, gold),
    }
}

/// The samples kept for one problem (indices into `records`), and how many correct ones were
/// dropped as duplicates.
fn select(records: &[&SampleRecord], policy: Select) -> (Vec<usize>, usize) {
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    let mut duplicates = 0;
    for (i, r) in records.iter().enumerate() {
        if !r.correct {
            continue;
        }
        let reasoning = reasoning_of(&r.sample);
        if seen.insert(reasoning.split_whitespace().collect::<Vec<_>>().join(" ")) {
            unique.push(i);
        } else {
            duplicates += 1;
        }
    }
    let kept = match policy {
        Select::AllCorrect => unique,
        Select::FirstCorrect => unique.into_iter().take(1).collect(),
        Select::ShortestCorrect => unique
            .into_iter()
            .min_by_key(|&i| {
                let r = records[i];
                let len =
                    tokens(&r.sample).unwrap_or_else(|| words(&reasoning_of(&r.sample)) as u64);
                (len, r.index)
            })
            .into_iter()
            .collect(),
    };
    (kept, duplicates)
}

/// The trace for a kept sample.
fn to_trace(
    problem: &Trace,
    record: &SampleRecord,
    teacher: &dyn Teacher,
    config: &DistillConfig,
    note: &str,
) -> Trace {
    let reasoning = reasoning_of(&record.sample);
    let s = &record.sample;
    Trace {
        schema: SCHEMA_VERSION,
        id: format!("{}#{}", problem.id, record.index),
        system: problem.system.clone(),
        question: problem.question.clone(),
        reasoning,
        answer: record.extracted.clone().unwrap_or_default(),
        gold: problem.gold.clone(),
        ratio: None,
        provenance: Some(Provenance {
            source: problem
                .provenance
                .as_ref()
                .map_or_else(|| problem.id.clone(), |p| p.source.clone()),
            teacher: Some(teacher.spec()),
            model: s.model.clone().or_else(|| teacher.model()),
            sampling: Some(json!({
                "temperature": config.sampling.temperature,
                "top_p": config.sampling.top_p,
                "max_tokens": config.sampling.max_tokens,
                "seed": record.seed,
                "sample": record.index,
                "samples": config.samples,
                "select": config.select.name(),
                "finish_reason": s.finish_reason,
            })),
            created: Some(record.created.clone()),
            reasoning_tokens: tokens(s),
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            note: Some(note.to_string()),
        }),
    }
}

/// Appends serialized lines and makes them durable; a file that ends mid-line (a complete
/// last line without its newline) gets the newline first.
fn append_lines(file: &mut File, path: &Path, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let err = |source| TraceError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = String::new();
    if crate::schema::ends_mid_line(file).map_err(err)? {
        buf.push('\n');
    }
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    file.write_all(buf.as_bytes()).map_err(err)?;
    file.sync_data().map_err(err)
}

/// Reads the samples file of an earlier run (a missing file is an empty one).
fn read_samples(path: &Path) -> Result<HashMap<(String, usize), SampleRecord>> {
    let mut map = HashMap::new();
    if !path.exists() {
        return Ok(map);
    }
    drop_incomplete_tail(path)?;
    for line in jsonl::read_lines(path)? {
        let r: SampleRecord = jsonl::parse_line(path, &line)?;
        map.insert((r.problem.clone(), r.index), r);
    }
    Ok(map)
}

/// Checks the settings against an earlier run's, or records them for a new run. An output
/// file that exists without a settings file was not written by the distiller and is left
/// alone.
fn check_settings(out: &Path, settings: &RunSettings) -> Result<()> {
    let path = run_path(out);
    let fail = |message: String| TraceError::Distill {
        path: out.to_path_buf(),
        message,
    };
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|source| TraceError::Read {
            path: path.clone(),
            source,
        })?;
        let old: RunSettings = serde_json::from_str(&text)
            .map_err(|e| line_error(&path, e.line(), jsonl::json_message(&e)))?;
        // An HTTP teacher may move (another port, a load balancer); its model may not.
        let mut old = old;
        if old.teacher.starts_with("openai:") && settings.teacher.starts_with("openai:") {
            old.teacher = settings.teacher.clone();
        }
        if &old != settings {
            let (a, b) = (json!(old), json!(settings));
            let differ: Vec<String> = a
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| b.get(k.as_str()) != Some(v))
                .map(|(k, v)| format!("{k}: was {v}, now {}", b[k.as_str()]))
                .collect();
            return Err(fail(format!(
                "this output was started with other settings ({}); re-run with the same \
                 settings to resume, or choose another --out",
                differ.join("; ")
            )));
        }
        return Ok(());
    }
    let nonempty = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
    if nonempty(out) || nonempty(&samples_path(out)) {
        return Err(fail(format!(
            "the file exists but was not written by `laconic distill` (no {}); choose \
             another --out",
            path.display()
        )));
    }
    let text = serde_json::to_string_pretty(settings).map_err(|e| fail(e.to_string()))?;
    crate::jsonl::write_atomic(&path, |w| w.write_all(text.as_bytes()))
}

/// State of one problem during a run.
struct Pending {
    wanted: usize,
    failed: usize,
}

/// Runs the distiller over `problems` (each must carry a gold answer), calling `on_progress`
/// after every answered sample. Returns the run's account; problems whose samples failed
/// after their retries are counted as `incomplete` (a re-run asks for those samples again).
pub fn distill(
    problems: &[Trace],
    teacher: &dyn Teacher,
    config: &DistillConfig,
    on_progress: &dyn Fn(&Progress),
) -> Result<DistillSummary> {
    let out = config.out.as_path();
    let fail = |message: String| TraceError::Distill {
        path: out.to_path_buf(),
        message,
    };
    if config.samples == 0 {
        return Err(fail("--samples must be at least 1".into()));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    if let Some(p) = problems.iter().find(|p| p.gold.is_none()) {
        return Err(fail(format!(
            "problem `{}` has no gold answer to grade against",
            p.id
        )));
    }
    let mut ids = HashSet::new();
    if let Some(p) = problems.iter().find(|p| !ids.insert(p.id.as_str())) {
        return Err(fail(format!("problem id `{}` appears twice", p.id)));
    }
    let system = config
        .system
        .clone()
        .unwrap_or_else(|| default_system_prompt(config.grader).to_string());
    check_settings(
        out,
        &RunSettings {
            schema: 1,
            teacher: teacher.spec(),
            model: teacher.model(),
            samples: config.samples,
            select: config.select,
            sampling: config.sampling.clone(),
            system: system.clone(),
            grader: config.grader.name().to_string(),
        },
    )?;
    let samples_file = samples_path(out);
    let mut cached = read_samples(&samples_file)?;
    if out.exists() {
        drop_incomplete_tail(out)?;
    }
    let written_ids: HashSet<String> = if out.exists() {
        crate::schema::read_traces(out)?
            .into_iter()
            .map(|t| t.id)
            .collect()
    } else {
        HashSet::new()
    };
    let open = |path: &Path| {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| TraceError::Open {
                path: path.to_path_buf(),
                source,
            })
    };
    let mut out_file = open(out)?;
    let mut samples_out = open(&samples_file)?;
    let started = Instant::now();
    let mut summary = DistillSummary {
        problems: problems.len(),
        ..Default::default()
    };
    let mut all_tokens: Vec<u64> = Vec::new();
    let mut kept_tokens: Vec<u64> = Vec::new();
    let mut all_words: Vec<usize> = Vec::new();
    let mut kept_words: Vec<usize> = Vec::new();

    // Finishes a problem whose samples are all in: select, append what is not written yet.
    let mut finish = |problem: &Trace,
                      n: usize,
                      cached: &HashMap<(String, usize), SampleRecord>,
                      summary: &mut DistillSummary|
     -> Result<()> {
        let records: Vec<&SampleRecord> = (0..n)
            .filter_map(|i| cached.get(&(problem.id.clone(), i)))
            .collect();
        let (kept, duplicates) = select(&records, config.select);
        let correct = records.iter().filter(|r| r.correct).count();
        summary.correct += correct;
        summary.rejected += records.len() - correct;
        summary.duplicates += duplicates;
        summary.solved += usize::from(correct > 0);
        for r in &records {
            let reasoning = reasoning_of(&r.sample);
            all_words.push(words(&reasoning));
            all_tokens.extend(tokens(&r.sample));
        }
        let note = format!(
            "{} of {} samples ({} correct)",
            config.select.name(),
            records.len(),
            correct
        );
        for &k in &kept {
            let trace = to_trace(problem, records[k], teacher, config, &note);
            kept_words.push(words(&trace.reasoning));
            kept_tokens.extend(tokens(&records[k].sample));
            summary.accepted += 1;
            if !written_ids.contains(&trace.id) {
                append_trace(&mut out_file, &trace)?;
                summary.written += 1;
            }
        }
        Ok(())
    };

    // What is finished already, and what must be asked.
    let mut pending: HashMap<usize, Pending> = HashMap::new();
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for (pi, problem) in problems.iter().enumerate() {
        let n = teacher.samples_for(problem, config.samples);
        let missing: Vec<usize> = (0..n)
            .filter(|&i| !cached.contains_key(&(problem.id.clone(), i)))
            .collect();
        if missing.is_empty() {
            finish(problem, n, &cached, &mut summary)?;
            summary.already_finished += 1;
        } else {
            pending.insert(
                pi,
                Pending {
                    wanted: missing.len(),
                    failed: 0,
                },
            );
            jobs.extend(missing.into_iter().map(|i| (pi, i)));
        }
    }
    summary.requested = jobs.len();
    let mut progress = Progress {
        problems: problems.len(),
        finished: summary.already_finished,
        requested: jobs.len(),
        ..Default::default()
    };
    on_progress(&progress);
    let messages: Vec<Vec<ChatMessage>> = problems
        .iter()
        .map(|p| {
            vec![
                ChatMessage {
                    role: "system".into(),
                    content: system.clone(),
                },
                ChatMessage {
                    role: "user".into(),
                    content: p.prompt(),
                },
            ]
        })
        .collect();
    let queue = Mutex::new(jobs.into_iter());
    let workers = teacher.concurrency().max(1).min(summary.requested.max(1));
    // Problems are finished (their traces written) in problem order, whatever order the
    // workers answer in, so that the same run writes the same file; a problem whose samples
    // are all in waits for the ones before it.
    let order: Vec<usize> = {
        let mut v: Vec<usize> = pending.keys().copied().collect();
        v.sort_unstable();
        v
    };
    let mut next = 0usize;
    let mut ready: HashSet<usize> = HashSet::new();
    let mut completion_tokens = 0u64;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = mpsc::channel::<(usize, usize, u64, f64, Result<TeacherSample>)>();
        for _ in 0..workers {
            let tx = tx.clone();
            let queue = &queue;
            let messages = &messages;
            scope.spawn(move || {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.next());
                    let Some((pi, index)) = next else { break };
                    let problem = &problems[pi];
                    let seed =
                        crate::teacher::sample_seed(config.sampling.seed, &problem.id, index);
                    let request = SampleRequest {
                        problem,
                        index,
                        messages: &messages[pi],
                        sampling: SamplingParams {
                            seed,
                            ..config.sampling.clone()
                        },
                    };
                    let t0 = Instant::now();
                    let result = teacher.sample(&request);
                    if tx
                        .send((pi, index, seed, t0.elapsed().as_secs_f64(), result))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Group commit: take everything that has arrived, write it in one go, then finish
        // the problems it completed.
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let mut lines = Vec::with_capacity(batch.len());
            let mut completed = Vec::new();
            for (pi, index, seed, seconds, result) in batch {
                let problem = &problems[pi];
                progress.answered += 1;
                let Some(state) = pending.get_mut(&pi) else {
                    continue;
                };
                state.wanted -= 1;
                match result {
                    Ok(sample) => {
                        summary.received += 1;
                        completion_tokens += sample.completion_tokens.unwrap_or(0);
                        let graded = grade(
                            config.grader,
                            &sample,
                            problem.gold.as_deref().unwrap_or(""),
                        );
                        progress.correct += usize::from(graded.correct);
                        let record = SampleRecord {
                            problem: problem.id.clone(),
                            index,
                            seed,
                            created: utc_now(),
                            seconds,
                            sample,
                            extracted: graded.extracted,
                            correct: graded.correct,
                        };
                        lines
                            .push(serde_json::to_string(&record).map_err(|e| fail(e.to_string()))?);
                        cached.insert((problem.id.clone(), index), record);
                    }
                    Err(e) => {
                        summary.failed += 1;
                        progress.failed += 1;
                        state.failed += 1;
                        if summary.errors.len() < 5 {
                            summary.errors.push(e.to_string());
                        }
                    }
                }
                if state.wanted == 0 {
                    completed.push(pi);
                }
            }
            append_lines(&mut samples_out, &samples_file, &lines)?;
            ready.extend(completed);
            while next < order.len() && ready.remove(&order[next]) {
                let pi = order[next];
                next += 1;
                let state = pending.remove(&pi);
                if state.is_some_and(|s| s.failed > 0) {
                    summary.incomplete += 1;
                    continue;
                }
                let problem = &problems[pi];
                let n = teacher.samples_for(problem, config.samples);
                finish(problem, n, &cached, &mut summary)?;
                summary.finished += 1;
                progress.finished += 1;
            }
            on_progress(&progress);
        }
        Ok(())
    })?;
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let f = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let g = |v: &[usize]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    summary.mean_tokens_all = mean(&f(&all_tokens));
    summary.mean_tokens_kept = mean(&f(&kept_tokens));
    summary.mean_words_all = mean(&g(&all_words));
    summary.mean_words_kept = mean(&g(&kept_words));
    summary.retries = teacher.retries();
    summary.seconds = started.elapsed().as_secs_f64();
    if summary.seconds > 0.0 {
        summary.samples_per_second = summary.received as f64 / summary.seconds;
        summary.tokens_per_second = completion_tokens as f64 / summary.seconds;
    }
    let text = serde_json::to_string_pretty(&summary).map_err(|e| fail(e.to_string()))?;
    crate::jsonl::write_atomic(&beside(out, "summary.json"), |w| {
        w.write_all(text.as_bytes())
    })?;
    Ok(summary)
}
