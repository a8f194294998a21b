//! `laconic score`.

use anyhow::Result;
use clap::Args;
use laconic_infer::generate::score_text_with_policy;

use crate::ModelArgs;

/// Arguments of `laconic score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score.
    #[arg(long, short = 't')]
    text: String,
    /// Print one JSON array of {"id", "token", "logprob"} objects.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    kv: crate::KvArgs,
}

/// Runs `laconic score`.
pub fn run(args: ScoreArgs) -> Result<()> {
    let m = super::load_model(&args.model)?;
    let policy = args.kv.config()?;
    let scores = score_text_with_policy(&m.model, &m.tokenizer, &args.text, &policy)?;
    if args.json {
        println!("{}", serde_json::to_string(&scores)?);
        return Ok(());
    }
    let mut nll = 0.0f64;
    let mut n = 0usize;
    println!("{:>4}  {:>8}  {:>10}  token", "#", "id", "logprob");
    for (i, s) in scores.iter().enumerate() {
        let lp = match s.logprob {
            Some(lp) => {
                nll -= lp as f64;
                n += 1;
                format!("{lp:10.4}")
            }
            None => format!("{:>10}", "-"),
        };
        println!("{i:>4}  {:>8}  {lp}  {:?}", s.id, s.token);
    }
    if n > 0 {
        println!(
            "{} tokens, mean NLL {:.4}, perplexity {:.3}",
            scores.len(),
            nll / n as f64,
            (nll / n as f64).exp()
        );
    }
    Ok(())
}
