//! `laconic eval`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use laconic_traces::DatasetSpec;
use laconic_train::data::Formatter;
use laconic_train::eval::{EvalConfig, evaluate};

use crate::ModelArgs;

/// Arguments of `laconic eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// `gsm8k` or `math500` (the copies in data/), or `gsm8k:PATH` / `math500:PATH`.
    #[arg(long)]
    dataset: String,
    /// Evaluate the first N problems.
    #[arg(long)]
    limit: Option<usize>,
    /// Most tokens generated per problem.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Write one JSON line per problem (question, output, extracted, gold, correct).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A LoRA adapter directory (PEFT layout, as `laconic train` writes) to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Ask a ratio-conditioned student for this compression ratio (appends its control
    /// string, e.g. `[compress 0.5]`, to every question).
    #[arg(long)]
    ratio: Option<f64>,
    /// Ask a budget-trained student (GRPO with a length budget) to reason in about N tokens
    /// (appends its control string, `[budget N]`, to every question).
    #[arg(long)]
    budget: Option<usize>,
    /// A system message for every prompt.
    #[arg(long)]
    system: Option<String>,
    /// Decode problems whose prompts have the same length together, up to N per batch (the
    /// answers are the same as one at a time, up to float summation order; several times
    /// the throughput on a large set). 1 decodes each problem alone.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[command(flatten)]
    kv: crate::KvArgs,
}

/// The spec a `--dataset` value names: a bare name reads the copy shipped in `data/`.
pub fn dataset_spec(s: &str) -> Result<DatasetSpec> {
    let s = match s {
        "gsm8k" => "gsm8k:data/gsm8k/test.jsonl",
        "math500" | "math" => "math500:data/math500/test.jsonl",
        other => other,
    };
    Ok(DatasetSpec::parse(s)?)
}

/// What names the evaluated model in an interrupted evaluation's saved answers: each file's
/// path, size and modification time (a re-exported checkpoint is another model).
fn model_id(model: &std::path::Path, adapter: Option<&std::path::Path>) -> String {
    let stamp = |p: &std::path::Path| {
        let meta = std::fs::metadata(p).ok();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let modified = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        format!("{} ({size} bytes, modified {modified})", p.display())
    };
    match adapter {
        Some(a) => format!("{} + adapter {}", stamp(model), stamp(a)),
        None => stamp(model),
    }
}

/// Runs `laconic eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let spec = dataset_spec(&args.dataset)?;
    let mut m = super::load_model(&args.model)?;
    if let Some(dir) = &args.adapter {
        let n = laconic_train::lora::load_peft(&mut m.model, dir)
            .with_context(|| format!("loading adapter {}", dir.display()))?;
        eprintln!("adapter: {n} LoRA layers from {}", dir.display());
    }
    let eos = m.config().eos_token_ids.first().copied();
    let formatter = Formatter::new(
        &m.tokenizer,
        m.chat_template.as_ref(),
        eos,
        args.system.clone(),
    );
    let config = EvalConfig {
        limit: args.limit.unwrap_or(usize::MAX),
        max_new_tokens: args.max_new_tokens,
        kv_policy: args.kv.config()?,
        ratio: args.ratio,
        budget: args.budget,
        batch: args.batch,
        model_id: format!(
            "{}, weights {}",
            model_id(&args.model.model, args.adapter.as_deref()),
            args.model.weights
        ),
    };
    if args.budget == Some(0) {
        anyhow::bail!("--budget must be at least 1 token");
    }
    if args.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let s = evaluate(
        &m.model,
        &formatter,
        &spec,
        &config,
        args.out.as_deref(),
        true,
    )?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
