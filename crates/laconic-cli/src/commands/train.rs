//! `laconic train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use laconic_train::{Recipe, TrainOptions, train};

/// Arguments of `laconic train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The recipe (TOML): model, data, method, hyper-parameters, evaluation, export.
    recipe: PathBuf,
    /// Continue the run from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Write the run here instead of the recipe's run directory.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Skip the generation eval before and after training (the held-out loss still runs).
    #[arg(long)]
    no_eval: bool,
    /// Stop with a checkpoint after this many steps in total (continue later with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `laconic train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    let options = TrainOptions {
        resume: args.resume,
        run_dir: args.run_dir.clone(),
        progress: !args.quiet,
        skip_eval: args.no_eval,
        stop_after: args.stop_after,
    };
    let r = train(&recipe, &options)?;
    let before = r
        .valid_loss_before
        .map_or("(resumed)".to_string(), |l| format!("{l:.4}"));
    eprintln!(
        "trained {} steps on {} examples ({} left out as too long); held-out loss {before} -> {:.4}",
        r.steps, r.examples.0, r.examples.1, r.valid_loss_after
    );
    if let Some((b, a)) = &r.eval {
        eprintln!(
            "eval {}: accuracy {:.1}% -> {:.1}% ({} problems), mean completion tokens {:.0} -> {:.0}",
            b.dataset,
            100.0 * b.accuracy,
            100.0 * a.accuracy,
            a.problems,
            b.mean_completion_tokens,
            a.mean_completion_tokens
        );
    }
    println!("{}", r.run_dir.display());
    Ok(())
}
