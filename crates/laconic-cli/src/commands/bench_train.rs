//! `laconic bench-train`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use laconic_train::recipe::LoraSection;
use laconic_train::trainer::bench_steps;

/// Arguments of `laconic bench-train`.
#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// A GGUF file or a Hugging Face directory (trained in f32).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// `lora` (rank --rank on every linear layer) or `sft` (every weight).
    #[arg(long, default_value = "lora")]
    method: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Compute device (flex = CPU).
    #[arg(long, default_value = "flex")]
    device: String,
}

/// Runs `laconic bench-train`.
pub fn run(args: BenchTrainArgs) -> Result<()> {
    if args.batch == 0 || args.seq_len == 0 || args.steps == 0 {
        bail!("--batch, --seq-len and --steps must be at least 1");
    }
    let device = crate::device::parse(&args.device)?.autodiff();
    let m = laconic_infer::load_with(&args.model, &device, laconic_infer::WeightFormat::F32)?;
    let model = match args.method.as_str() {
        "sft" => m.model,
        "lora" => {
            let lora = LoraSection {
                rank: args.rank,
                alpha: 2.0 * args.rank as f64,
                dropout: 0.0,
                targets: vec!["all-linear".into()],
            };
            laconic_train::lora::attach(m.model, &lora, 0)?.0
        }
        other => bail!("unknown --method '{other}' (choose lora or sft)"),
    };
    let threads = rayon::current_num_threads();
    let r = bench_steps(model, args.batch, args.seq_len, args.warmup, args.steps);
    println!(
        "{}",
        serde_json::json!({
            "engine": "laconic", "method": args.method, "threads": threads,
            "batch": r.batch, "seq_len": r.seq_len, "steps": r.steps,
            "step_s": r.step_s, "tokens_per_s": r.tokens_per_s,
            "trainable_params": r.trainable_params,
        })
    );
    Ok(())
}
