//! `laconic distill`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use laconic_traces::distill::{DistillConfig, Progress, Select, distill};
use laconic_traces::formats::FieldMap;
use laconic_traces::teacher::{ClientOptions, SamplingParams, TeacherSpec};
use laconic_traces::{DatasetSpec, Grader};

/// Arguments of `laconic distill`.
#[derive(Args, Debug)]
pub struct DistillArgs {
    /// The problems: `gsm8k:PATH`, `math500:PATH`, `jsonl:PATH` (generic JSONL; see the
    /// `--*-field` flags), `procedural:count=N,seed=S,difficulty=D` (generated arithmetic word
    /// problems) or a trace file. Each needs a gold answer.
    #[arg(long)]
    problems: String,
    /// The teacher: `openai:URL` (an OpenAI-compatible server: vLLM, SGLang, llama-server,
    /// Ollama, a hosted API, `laconic serve`), `local:PATH` (a checkpoint run in-process),
    /// `file:SPEC` (traces that exist already, graded and selected like fresh ones) or
    /// `procedural:verbose` (a stand-in teacher for procedural problems: verbose, R1-style).
    #[arg(long)]
    teacher: String,
    /// The model name sent to an `openai:` teacher (default: the first one it lists).
    #[arg(long)]
    model: Option<String>,
    /// Samples per problem (K).
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Which correct samples are kept: shortest-correct, all-correct or first-correct.
    #[arg(long, default_value = "shortest-correct")]
    select: String,
    /// The trace file to write. Re-running the same command continues it.
    #[arg(long)]
    out: PathBuf,
    /// Only the first N problems.
    #[arg(long)]
    limit: Option<usize>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.6)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Base seed; each sample's seed derives from it, the problem and the sample index.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// System prompt for the teacher (default: step by step, ending in the grader's answer format).
    #[arg(long)]
    system: Option<String>,
    /// `gsm8k` or `math`: how answers are graded (default: the dataset's; gsm8k otherwise).
    #[arg(long)]
    grader: Option<String>,
    /// Requests in flight at once (openai: teachers).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds one request may take, from connect to the last byte.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Retries of a request after its first attempt (429, 5xx, timeouts, dropped connections).
    #[arg(long, default_value_t = 6)]
    max_retries: u32,
    /// Seconds before the first retry; doubles per retry, with jitter, up to 60 s.
    #[arg(long, default_value_t = 0.5)]
    backoff: f64,
    /// Environment variable with the API key (default: OPENAI_API_KEY, if set).
    #[arg(long)]
    api_key_env: Option<String>,
    /// jsonl: problems: the id field.
    #[arg(long)]
    id_field: Option<String>,
    /// jsonl: problems: the question field (default question, then problem, prompt).
    #[arg(long)]
    question_field: Option<String>,
    /// jsonl: problems: the gold answer field (default answer, then gold).
    #[arg(long)]
    answer_field: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        bail!("--{flag} must be a positive number of seconds, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Runs `laconic distill`.
pub fn run(args: DistillArgs) -> Result<()> {
    let select = Select::parse(&args.select).ok_or_else(|| {
        anyhow!(
            "unknown --select '{}' (choose shortest-correct, all-correct or first-correct)",
            args.select
        )
    })?;
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        max_tokens: args.max_tokens,
        seed: args.seed,
    };
    if !(sampling.temperature >= 0.0 && sampling.temperature.is_finite()) {
        bail!("--temperature must be >= 0, got {}", args.temperature);
    }
    if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {}", args.top_p);
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let mut spec = DatasetSpec::parse(&args.problems)?;
    if args.id_field.is_some() || args.question_field.is_some() || args.answer_field.is_some() {
        let DatasetSpec::Jsonl(_, _) = spec else {
            bail!("--id-field, --question-field and --answer-field are for `jsonl:PATH` problems");
        };
        let mut fields = FieldMap::default();
        if let Some(f) = &args.id_field {
            fields.id = Some(f.clone());
        }
        if let Some(f) = &args.question_field {
            fields.question = f.clone();
        }
        if let Some(f) = &args.answer_field {
            fields.answer = f.clone();
        }
        spec = spec.with_fields(fields);
    }
    let grader = match &args.grader {
        Some(g) => Grader::parse(g)
            .ok_or_else(|| anyhow!("unknown --grader '{g}' (choose gsm8k or math)"))?,
        None => spec.grader().unwrap_or(Grader::Gsm8k),
    };
    let mut problems = spec.load()?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    if problems.is_empty() {
        bail!("{}: no problems", args.problems);
    }
    let teacher_spec = TeacherSpec::parse(&args.teacher)?;
    let options = ClientOptions {
        model: args.model.clone(),
        api_key_env: args.api_key_env.clone(),
        concurrency: args.concurrency,
        timeout: seconds("timeout", args.timeout)?,
        max_retries: args.max_retries,
        backoff_base: seconds("backoff", args.backoff)?,
        ..ClientOptions::default()
    };
    if args.model.is_some() && !matches!(teacher_spec, TeacherSpec::OpenAi(_)) {
        bail!("--model names the model of an openai: teacher");
    }
    let teacher = teacher_spec
        .open(&options)
        .with_context(|| format!("opening teacher {teacher_spec}"))?;
    let config = DistillConfig {
        out: args.out.clone(),
        samples: args.samples,
        select,
        sampling,
        system: args.system.clone(),
        grader,
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(problems.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} problems {pos}/{len} [{bar:30}] {msg} ETA {eta}")
            .map_err(|e| anyhow!("{e}"))?
            .progress_chars("=> "),
    );
    let on_progress = |p: &Progress| {
        bar.set_position(p.finished as u64);
        let accept = if p.answered > p.failed {
            100.0 * p.correct as f64 / (p.answered - p.failed) as f64
        } else {
            0.0
        };
        bar.set_message(format!(
            "samples {}/{} correct {:.0}% failed {}",
            p.answered, p.requested, accept, p.failed
        ));
    };
    eprintln!(
        "distill: {} problems × {} samples from {} ({}) into {}",
        problems.len(),
        args.samples,
        teacher.spec(),
        teacher.model().unwrap_or_else(|| "-".into()),
        args.out.display()
    );
    let s = distill(&problems, teacher.as_ref(), &config, &on_progress)?;
    bar.finish_and_clear();
    let opt = |x: Option<f64>| x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"));
    eprintln!(
        "distill: {} problems ({} finished before, {} now, {} incomplete); {} of {} samples \
         received, {} failed; {} correct, {} rejected, {} duplicates; {} traces kept ({} \
         written now) in {}",
        s.problems,
        s.already_finished,
        s.finished,
        s.incomplete,
        s.received,
        s.requested,
        s.failed,
        s.correct,
        s.rejected,
        s.duplicates,
        s.accepted,
        s.written,
        args.out.display()
    );
    eprintln!(
        "distill: mean reasoning tokens {} over all samples, {} kept (words {} → {}); \
         {:.1} s, {:.2} samples/s, {:.0} tokens/s; retries {:?}",
        opt(s.mean_tokens_all),
        opt(s.mean_tokens_kept),
        opt(s.mean_words_all),
        opt(s.mean_words_kept),
        s.seconds,
        s.samples_per_second,
        s.tokens_per_second,
        s.retries
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    }
    if s.incomplete > 0 {
        bail!(
            "{} problems are incomplete: {} samples failed after their retries (first: {}); \
             re-run the same command to ask for them again",
            s.incomplete,
            s.failed,
            s.errors.first().map_or("-", String::as_str)
        );
    }
    Ok(())
}
