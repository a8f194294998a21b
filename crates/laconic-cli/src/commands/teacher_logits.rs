//! `laconic teacher-logits`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::*;
use clap::Args;
use laconic_traces::DatasetSpec;
use laconic_train::data::{Formatter, tokenize};
use laconic_train::distill::{Teacher, write_topk};

/// Arguments of `laconic teacher-logits`.
#[derive(Args, Debug)]
pub struct TeacherLogitsArgs {
    /// The teacher: a GGUF file or a Hugging Face directory. The student must share its
    /// tokenizer.
    #[arg(long)]
    teacher: PathBuf,
    /// The training data, as a recipe's `data.train` names it (`gsm8k:PATH`, `traces:PATH`, ...).
    #[arg(long)]
    data: String,
    /// Log-probabilities kept per position.
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// Leave out examples longer than this many tokens (as the recipe's `data.max_seq_len`).
    #[arg(long, default_value_t = 512)]
    max_seq_len: usize,
    /// Only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// A system message for every example (must match the recipe's `data.system`).
    #[arg(long)]
    system: Option<String>,
    /// The top-k file to write (JSONL; format in crates/laconic-train/src/distill.rs).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `laconic teacher-logits`.
pub fn run(args: TeacherLogitsArgs) -> Result<()> {
    let device = Device::flex();
    let loaded = laconic_infer::load_with(&args.teacher, &device, laconic_infer::WeightFormat::F32)
        .with_context(|| format!("loading teacher {}", args.teacher.display()))?;
    let mut traces = DatasetSpec::parse(&args.data)?.load()?;
    if let Some(n) = args.limit {
        traces.truncate(n);
    }
    let eos = loaded.config().eos_token_ids.first().copied();
    let f = Formatter::new(
        &loaded.tokenizer,
        loaded.chat_template.as_ref(),
        eos,
        args.system.clone(),
    );
    let ex = tokenize(&f, &traces, args.max_seq_len)?;
    let teacher = Teacher::load(&args.teacher, &device, &loaded.tokenizer)?;
    let bar = indicatif::ProgressBar::new(ex.examples.len() as u64);
    let n = write_topk(
        &teacher,
        &args.teacher.display().to_string(),
        &loaded.tokenizer,
        &ex.examples,
        args.top_k,
        &args.out,
        || bar.inc(1),
    )?;
    bar.finish_and_clear();
    eprintln!(
        "wrote top-{} teacher log-probabilities for {n} examples ({} left out as too long) to {}",
        args.top_k,
        ex.too_long,
        args.out.display()
    );
    Ok(())
}
