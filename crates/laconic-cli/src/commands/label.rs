//! `laconic label`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use laconic_infer::gguf::GgufFile;
use laconic_infer::tokenizer::Tokenizer;
use laconic_label::{
    AttentionScorer, Granularity, LabelConfig, LabelJob, Labeler, SurprisalScorer, TokenClassifier,
    label_file, read_labeled, write_report, write_variants,
};
use laconic_traces::{DatasetSpec, Grader};

/// Arguments of `laconic label`.
#[derive(Args, Debug)]
pub struct LabelArgs {
    /// The traces to label: a trace file (`traces:PATH` or a bare path), or a dataset whose
    /// reference solutions serve as the traces (`gsm8k:PATH`, `math500:PATH`).
    #[arg(long = "in")]
    input: String,
    /// `rules` (word lists and step rules), or a scorer model (GGUF file or Hugging Face
    /// directory) whose scores (--scorer-kind) are mixed with the rules; ratios then count
    /// its tokens.
    #[arg(long, default_value = "rules")]
    scorer: String,
    /// With a scorer model: `surprisal` (each token's -log p after the question; the
    /// default), `attention` (the attention each token receives from the final answer line),
    /// `both`, or `classifier` (a learned token classifier, --classifier, on the model's
    /// hidden states).
    #[arg(long)]
    scorer_kind: Option<String>,
    /// With `--scorer-kind classifier`: the classifier file (`laconic label-classifier`),
    /// trained on the --scorer model.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// With `--scorer-kind classifier`: the weight of the classifier's score against the
    /// rules, in [0, 1] (default 1).
    #[arg(long)]
    classifier_weight: Option<f32>,
    /// Target ratios (kept ÷ original reasoning tokens), comma-separated, each in (0, 1].
    #[arg(long, default_value = "0.5,0.7,0.9")]
    ratios: String,
    /// What compression keeps or drops as one piece: `words` (token-level pruning, as
    /// TokenSkip; any ratio) or `sentences` (whole sentences: fluent text, the equations,
    /// every number found and the answer kept; a ratio below those is limited).
    #[arg(long, default_value = "words")]
    granularity: String,
    /// The labeled file (JSONL, one line per trace). Re-running continues it.
    #[arg(long)]
    out: PathBuf,
    /// Write the report (JSON) here, with a histogram of achieved ratios beside it (.svg and
    /// .png).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the compressed variants as a trace file for `laconic train` (`traces:PATH`).
    #[arg(long)]
    variants_out: Option<PathBuf>,
    /// With --variants-out: also write each original trace, at ratio 1.
    #[arg(long)]
    keep_original: bool,
    /// Label only the first N traces.
    #[arg(long)]
    limit: Option<usize>,
    /// With `--scorer rules`: count ratios and masks in this model's tokens (GGUF file or
    /// Hugging Face directory) instead of whitespace words.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// `gsm8k` or `math`: how variants are re-graded (default: the dataset's; for a trace
    /// file, guessed per trace from its answer).
    #[arg(long)]
    grader: Option<String>,
    /// With a scorer model: the weight of its surprisal against the rules, in [0, 1]
    /// (default 0.5; 0.25 with `--scorer-kind both`).
    #[arg(long)]
    surprisal_weight: Option<f32>,
    /// With `--scorer-kind attention` or `both`: the weight of the attention score against
    /// the rules, in [0, 1] (default 0.5; 0.25 with `both`, where the two weights may add up
    /// to at most 1).
    #[arg(long)]
    attention_weight: Option<f32>,
    /// Device for the scorer model: flex (CPU), cuda, wgpu or tch.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Traces labeled together: the surprisal scorer scores them in batched forward passes
    /// of up to 2,048 tokens. Default: 1 on the CPU (flex), where a pass is compute-bound
    /// and batching only adds memory (docs/LABELING.md), 16 on a GPU.
    #[arg(long)]
    batch: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// What a scorer model scores (`--scorer-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScorerKind {
    /// Each token's surprisal after the question.
    Surprisal,
    /// The attention each token receives from the final answer line.
    Attention,
    /// Both, from the same model.
    Both,
    /// A learned token classifier on the model's hidden states.
    Classifier,
}

impl ScorerKind {
    /// Parses `--scorer-kind` (absent: surprisal).
    fn parse(kind: Option<&str>) -> Result<Self> {
        Ok(match kind {
            None | Some("surprisal") => Self::Surprisal,
            Some("attention") => Self::Attention,
            Some("both") => Self::Both,
            Some("classifier") => Self::Classifier,
            Some(other) => {
                bail!(
                    "unknown --scorer-kind '{other}' (choose surprisal, attention, both or \
                     classifier)"
                )
            }
        })
    }
}

/// Loads only the tokenizer of a GGUF file or a Hugging Face directory.
fn load_tokenizer(path: &std::path::Path) -> Result<Tokenizer> {
    if path.is_dir() {
        return Ok(Tokenizer::from_file(&path.join("tokenizer.json"), None)?);
    }
    if !path.exists() {
        bail!("--tokenizer {}: no such file or directory", path.display());
    }
    Ok(Tokenizer::from_gguf(&GgufFile::open(path)?)?)
}

/// Runs `laconic label`.
pub fn run(args: LabelArgs) -> Result<()> {
    let mut config = LabelConfig::parse_ratios(&args.ratios)?;
    config.granularity = Granularity::parse(&args.granularity)?;
    let kind = ScorerKind::parse(args.scorer_kind.as_deref())?;
    for (flag, weight) in [
        ("--surprisal-weight", args.surprisal_weight),
        ("--attention-weight", args.attention_weight),
        ("--classifier-weight", args.classifier_weight),
    ] {
        if let Some(w) = weight.filter(|w| !(0.0..=1.0).contains(w)) {
            bail!("{flag} {w} must be in [0, 1]");
        }
    }
    if args.scorer == "rules" {
        if args.scorer_kind.is_some() {
            bail!("--scorer-kind needs a scorer model (--scorer MODEL)");
        }
    } else {
        if args.surprisal_weight.is_some() && kind == ScorerKind::Attention {
            bail!("--surprisal-weight is for `--scorer-kind surprisal` or `both`");
        }
        if args.attention_weight.is_some()
            && matches!(kind, ScorerKind::Surprisal | ScorerKind::Classifier)
        {
            bail!("--attention-weight is for `--scorer-kind attention` or `both`");
        }
        if args.surprisal_weight.is_some() && kind == ScorerKind::Classifier {
            bail!("--surprisal-weight is for `--scorer-kind surprisal` or `both`");
        }
    }
    if (kind == ScorerKind::Classifier) != args.classifier.is_some() {
        bail!("--scorer-kind classifier and --classifier FILE go together");
    }
    if args.classifier_weight.is_some() && kind != ScorerKind::Classifier {
        bail!("--classifier-weight is for `--scorer-kind classifier`");
    }
    if let Some(w) = args.classifier_weight {
        config.classifier_weight = w;
    }
    let default_weight = if kind == ScorerKind::Both { 0.25 } else { 0.5 };
    config.surprisal_weight = args.surprisal_weight.unwrap_or(default_weight);
    config.attention_weight = args.attention_weight.unwrap_or(default_weight);
    if kind == ScorerKind::Both && config.surprisal_weight + config.attention_weight > 1.0 {
        bail!(
            "--surprisal-weight {} and --attention-weight {} add up to more than 1",
            config.surprisal_weight,
            config.attention_weight
        );
    }
    if args.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    let grader = args
        .grader
        .as_deref()
        .map(|g| {
            Grader::parse(g).ok_or_else(|| anyhow!("unknown --grader '{g}' (choose gsm8k or math)"))
        })
        .transpose()?;
    if args.keep_original && args.variants_out.is_none() {
        bail!("--keep-original needs --variants-out");
    }
    let input = DatasetSpec::parse(&args.input)?;
    let labeler = if args.scorer == "rules" {
        let tokenizer = match &args.tokenizer {
            Some(p) => Some((
                load_tokenizer(p)
                    .with_context(|| format!("loading --tokenizer {}", p.display()))?,
                p.display().to_string(),
            )),
            None => None,
        };
        Labeler::rules(config, tokenizer)
    } else {
        if args.tokenizer.is_some() {
            bail!("--tokenizer is for `--scorer rules`; a scorer model counts its own tokens");
        }
        let path = PathBuf::from(&args.scorer);
        if !path.exists() {
            bail!(
                "--scorer {}: neither `rules` nor an existing model file or directory",
                args.scorer
            );
        }
        let loading = || format!("loading scorer model {}", path.display());
        match kind {
            ScorerKind::Surprisal => Labeler::surprisal(
                SurprisalScorer::load(&path, &args.device).with_context(loading)?,
                config,
            ),
            ScorerKind::Attention | ScorerKind::Both => Labeler::attention(
                AttentionScorer::load(&path, &args.device).with_context(loading)?,
                kind == ScorerKind::Both,
                config,
            ),
            ScorerKind::Classifier => {
                let file = args.classifier.as_deref().unwrap_or(path.as_path());
                let device = crate::device::parse(&args.device)?;
                let model = laconic_infer::load(&path, &device).with_context(loading)?;
                let classifier = TokenClassifier::load(file, model, path.display().to_string())?;
                Labeler::classifier(classifier, config)
            }
        }
    };
    let job = LabelJob {
        input,
        out: args.out.clone(),
        limit: args.limit,
        grader,
        progress: !args.quiet,
        batch: args.batch.unwrap_or(if args.device == "flex" {
            1
        } else {
            laconic_label::run::LABEL_BATCH
        }),
    };
    let s = label_file(&labeler, &job)?;
    eprintln!(
        "labeled {} traces in {:.1}s ({} of {} were already in {}{})",
        s.labeled,
        s.seconds,
        s.already_done,
        s.inputs,
        args.out.display(),
        if s.dropped_partial_line {
            "; a truncated last line was removed first"
        } else {
            ""
        }
    );
    if args.report.is_none() && args.variants_out.is_none() {
        return Ok(());
    }
    let labeled = read_labeled(&args.out)?;
    if let Some(path) = &args.variants_out {
        let v = write_variants(&labeled, path, args.keep_original)?;
        eprintln!(
            "wrote {} traces to {} ({} variants left out: their answer changed)",
            v.written,
            path.display(),
            v.skipped
        );
    }
    if let Some(path) = &args.report {
        let report = write_report(&labeled, path)?;
        let svg = laconic_label::report::histogram_path(path);
        eprintln!(
            "report: {} (histogram {} and {})",
            path.display(),
            svg.display(),
            svg.with_extension("png").display()
        );
        for r in &report.ratios {
            eprintln!(
                "  target {:.2}: mean achieved {:.3} (min {:.3}, median {:.3}, max {:.3}) in {}; \
                 {} limited; answers correct {:.1}%, preserved {:.1}%; saved {} of {}",
                r.target,
                r.mean,
                r.min,
                r.p50,
                r.max,
                report.unit,
                r.limited,
                100.0 * r.correct_share,
                100.0 * r.preserved_share,
                r.tokens_saved,
                r.original_tokens
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The `laconic label` arguments as the command line gives them.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LabelArgs,
    }

    fn parse(args: &[&str]) -> LabelArgs {
        Cli::try_parse_from(std::iter::once("laconic-label").chain(args.iter().copied()))
            .expect("arguments parse")
            .args
    }

    fn data(path: &str) -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        root.join(path).display().to_string()
    }

    #[test]
    fn label_end_to_end_on_a_slice_of_gsm8k() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("labeled.jsonl");
        let variants = dir.path().join("variants.jsonl");
        let report = dir.path().join("report.json");
        let input = format!("gsm8k:{}", data("data/gsm8k/test.jsonl"));
        let argv = [
            "--in",
            input.as_str(),
            "--scorer",
            "rules",
            "--ratios",
            "0.5,0.7",
            "--out",
            out.to_str().expect("utf-8 path"),
            "--report",
            report.to_str().expect("utf-8 path"),
            "--variants-out",
            variants.to_str().expect("utf-8 path"),
            "--keep-original",
            "--limit",
            "12",
            "--quiet",
        ];
        run(parse(&argv)).expect("label runs");

        let labeled = read_labeled(&out).expect("labeled file reads");
        assert_eq!(labeled.len(), 12);
        let traces = laconic_traces::schema::read_traces(&variants).expect("a trace file");
        // Each problem: the original at ratio 1, then its two variants.
        assert_eq!(traces.len(), 36);
        assert_eq!(traces[0].id, "gsm8k/test/0@1");
        assert_eq!(traces[1].id, "gsm8k/test/0@0.5");
        assert_eq!(traces[2].id, "gsm8k/test/0@0.7");
        assert_eq!(traces[1].prompt().lines().last(), Some("[compress 0.5]"));
        assert!(traces[1].reasoning.len() < traces[0].reasoning.len());

        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
                .expect("report is JSON");
        assert_eq!(r["traces"], 12);
        assert_eq!(r["ratios"][0]["variants"], 12);
        assert_eq!(r["histogram"], "report.svg");
        assert_eq!(r["histogram_png"], "report.png");
        let svg = std::fs::read_to_string(dir.path().join("report.svg")).expect("svg written");
        assert!(svg.starts_with("<svg"));
        let png = std::fs::read(dir.path().join("report.png")).expect("png written");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().expect("4 bytes"));
        assert_eq!((be(16), be(20)), (800, 480));

        // Running again labels nothing new and leaves the file as it was.
        let before = std::fs::read_to_string(&out).expect("read");
        run(parse(&argv)).expect("second run");
        assert_eq!(std::fs::read_to_string(&out).expect("read"), before);
    }

    #[test]
    fn label_with_the_attention_scorer_of_a_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = data("crates/laconic-infer/tests/fixtures/llama");
        let input = format!("gsm8k:{}", data("data/gsm8k/test.jsonl"));
        for (kind, scorer, surprisal) in [
            ("attention", "attention+rules:", false),
            ("both", "surprisal+attention+rules:", true),
        ] {
            let out = dir.path().join(format!("{kind}.jsonl"));
            let argv = [
                "--in",
                input.as_str(),
                "--scorer",
                fixture.as_str(),
                "--scorer-kind",
                kind,
                "--ratios",
                "0.6",
                "--out",
                out.to_str().expect("utf-8 path"),
                "--limit",
                "3",
                "--quiet",
            ];
            run(parse(&argv)).expect("label runs");
            let labeled = read_labeled(&out).expect("labeled file reads");
            assert_eq!(labeled.len(), 3);
            for l in &labeled {
                assert!(l.scorer.starts_with(scorer), "{}", l.scorer);
                let attention = l.attention.as_ref().expect("attention written");
                assert_eq!(attention.len(), l.tokens.len());
                assert_eq!(l.surprisal.is_some(), surprisal);
                assert!(l.variants.iter().all(|v| v.correct));
            }
        }
    }

    #[test]
    fn the_shipped_recipe_trains_on_what_its_label_command_writes() {
        let path = std::path::Path::new(&data("recipes/smollm2-135m-gsm8k-compressed-lora.toml"))
            .to_path_buf();
        let recipe = laconic_train::Recipe::load(&path).expect("the recipe reads");
        let text = std::fs::read_to_string(&path).expect("read");
        let command = text
            .lines()
            .find_map(|l| {
                l.trim_start_matches('#')
                    .trim()
                    .strip_prefix("laconic label ")
            })
            .expect("the header names the label command");
        let args = parse(&command.split_whitespace().collect::<Vec<_>>());
        assert_eq!(args.input, "gsm8k:data/gsm8k/train.jsonl");
        assert_eq!(args.scorer, "rules");
        let variants = args.variants_out.expect("--variants-out");
        assert_eq!(recipe.data.train, format!("traces:{}", variants.display()));
        assert!(variants.starts_with("checkpoints/") && args.out.starts_with("checkpoints/"));
        assert!(args.keep_original);
        // Ratios are counted in the student's own tokens.
        assert_eq!(args.tokenizer.as_deref(), Some(recipe.model.path.as_path()));
    }

    #[test]
    fn label_refuses_bad_flags_before_any_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("o.jsonl");
        let out = out.to_str().expect("utf-8 path");
        let input = format!("gsm8k:{}", data("data/gsm8k/test.jsonl"));
        let fixture = data("crates/laconic-infer/tests/fixtures/llama");
        for (extra, expected) in [
            (vec!["--ratios", "0.5,2"], "--ratios"),
            (vec!["--granularity", "lines"], "--granularity"),
            (vec!["--grader", "chess"], "unknown --grader 'chess'"),
            (vec!["--batch", "0"], "--batch must be at least 1"),
            (
                vec!["--scorer", "no/such/model.gguf"],
                "--scorer no/such/model.gguf",
            ),
            (
                vec!["--keep-original"],
                "--keep-original needs --variants-out",
            ),
            (
                vec!["--scorer-kind", "attention"],
                "--scorer-kind needs a scorer model",
            ),
            (
                vec!["--scorer", fixture.as_str(), "--scorer-kind", "gaze"],
                "unknown --scorer-kind 'gaze'",
            ),
            (
                vec!["--scorer", fixture.as_str(), "--attention-weight", "0.3"],
                "--attention-weight is for",
            ),
            (
                vec![
                    "--scorer",
                    fixture.as_str(),
                    "--scorer-kind",
                    "both",
                    "--surprisal-weight",
                    "0.6",
                    "--attention-weight",
                    "0.6",
                ],
                "add up to more than 1",
            ),
        ] {
            let mut argv = vec!["--in", input.as_str(), "--out", out, "--quiet"];
            argv.extend(extra);
            let e = format!("{:#}", run(parse(&argv)).expect_err("refused"));
            assert!(e.contains(expected), "{e}");
        }
        assert!(!std::path::Path::new(out).exists());
        let e = format!(
            "{:#}",
            run(parse(&[
                "--in",
                "gsm8k:no/such.jsonl",
                "--out",
                out,
                "--quiet"
            ]))
            .expect_err("missing input")
        );
        assert!(e.contains("no/such.jsonl"), "{e}");
    }
}
