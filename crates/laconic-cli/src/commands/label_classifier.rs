//! `laconic label-classifier`: trains the labeler's learned token classifier.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use laconic_label::classifier::{Metrics, examples_from_labeled, examples_from_pairs};
use laconic_label::{TokenClassifier, TrainSettings, read_labeled};

/// Arguments of `laconic label-classifier`.
#[derive(Args, Debug)]
pub struct LabelClassifierArgs {
    /// Labels from a labeled file written by `laconic label`: each trace's variant at
    /// --ratio is what compression kept.
    #[arg(long, conflicts_with = "pairs", required_unless_present = "pairs")]
    labels: Option<PathBuf>,
    /// Labels supplied by hand or by another tool: JSONL lines {"question", "reasoning",
    /// "compressed"} (optionally "id", and "latex": true for LaTeX traces), where
    /// `compressed` is the reasoning with words dropped.
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// With --labels: the variant's target ratio (default: each file's first).
    #[arg(long)]
    ratio: Option<f64>,
    /// The encoder whose hidden states the classifier reads (GGUF file or Hugging Face
    /// directory); `laconic label --scorer-kind classifier` must use the same one.
    #[arg(long)]
    encoder: PathBuf,
    /// The classifier file to write (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Train on the first N traces only.
    #[arg(long)]
    limit: Option<usize>,
    /// Share of the traces held out to measure the classifier, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    valid_share: f64,
    /// Passes over the training tokens.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 5e-3)]
    lr: f64,
    /// Tokens per minibatch.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Seed of the held-out draw and the minibatch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device for the encoder: flex (CPU), cuda, wgpu or tch.
    #[arg(long, default_value = "flex")]
    device: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// One line of figures.
fn describe(m: &Metrics) -> String {
    format!(
        "{} tokens, {:.1}% kept; accuracy {:.1}% (majority baseline {:.1}%), AUC {:.3}, \
         log-loss {:.3}",
        m.tokens,
        100.0 * m.kept_share,
        100.0 * m.accuracy,
        100.0 * m.baseline_accuracy,
        m.auc,
        m.log_loss
    )
}

/// Runs `laconic label-classifier`.
pub fn run(args: LabelClassifierArgs) -> Result<()> {
    if let Some(r) = args.ratio {
        if !(r > 0.0 && r <= 1.0) {
            bail!("--ratio {r} is not in (0, 1]");
        }
        if args.pairs.is_some() {
            bail!("--ratio is for --labels (a pairs file has one compression per line)");
        }
    }
    if !(0.0..1.0).contains(&args.valid_share) {
        bail!("--valid-share {} must be in [0, 1)", args.valid_share);
    }
    if args.epochs == 0 || args.batch == 0 {
        bail!("--epochs and --batch must be at least 1");
    }
    if args.lr.is_nan() || args.lr <= 0.0 {
        bail!("--lr {} must be positive", args.lr);
    }
    if !args.encoder.exists() {
        bail!(
            "--encoder {}: no such model file or directory",
            args.encoder.display()
        );
    }
    let mut examples = match (&args.labels, &args.pairs) {
        (Some(path), _) => {
            let labeled = read_labeled(path)?;
            examples_from_labeled(&labeled, args.ratio, path)?
        }
        (None, Some(path)) => examples_from_pairs(path)?,
        (None, None) => bail!("give --labels FILE or --pairs FILE"),
    };
    if let Some(limit) = args.limit {
        examples.examples.truncate(limit);
    }
    for (id, why) in examples.skipped.iter().take(5) {
        eprintln!("skipped `{id}`: {why}");
    }
    if examples.skipped.len() > 5 {
        eprintln!("... {} pairs skipped in all", examples.skipped.len());
    }
    if examples.examples.is_empty() {
        bail!("no usable examples in {}", examples.source);
    }
    let device = crate::device::parse(&args.device)?;
    let model = laconic_infer::load(&args.encoder, &device)
        .with_context(|| format!("loading encoder {}", args.encoder.display()))?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(examples.examples.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "encoding {bar:30} {pos}/{len} traces [{elapsed_precise}<{eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let settings = TrainSettings {
        epochs: args.epochs,
        lr: args.lr,
        batch: args.batch,
        seed: args.seed,
        ..Default::default()
    };
    let classifier = TokenClassifier::train(
        model,
        args.encoder.display().to_string(),
        &examples,
        args.valid_share,
        &settings,
        &|| bar.inc(1),
    )?;
    bar.finish_and_clear();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    classifier.save(&args.out)?;
    let r = &classifier.meta().report;
    eprintln!(
        "trained on {} traces ({} held out, {} skipped): encoding {:.1}s, training {:.1}s",
        r.train_traces, r.valid_traces, r.skipped, r.encode_seconds, r.train_seconds
    );
    eprintln!("  train:    {}", describe(&r.train));
    if let Some(v) = &r.valid {
        eprintln!("  held out: {}", describe(v));
    }
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
