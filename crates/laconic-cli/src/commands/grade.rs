//! `laconic grade`.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;
use laconic_traces::grade::{Grader, grade_file};

/// Arguments of `laconic grade`.
#[derive(Args, Debug)]
pub struct GradeArgs {
    /// Which grader: `gsm8k` or `math` (`math500`).
    #[arg(long)]
    dataset: String,
    /// JSONL with `output` (a model's full response) and `gold` (a GSM8K solution ending in
    /// `#### n`, a MATH solution, or a bare answer) on every line.
    #[arg(long = "in")]
    input: PathBuf,
    /// Write every input line back with `extracted` and `correct` added, in input order.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `laconic grade`.
pub fn run(args: GradeArgs) -> Result<()> {
    let grader = Grader::parse(&args.dataset).ok_or_else(|| {
        anyhow!(
            "unknown --dataset '{}' (choose gsm8k or math)",
            args.dataset
        )
    })?;
    let s = grade_file(grader, &args.input, args.out.as_deref())?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
