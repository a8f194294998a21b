//! The learned token classifier on the tiny fixture model of `laconic-infer` (a 2-layer
//! Llama, hidden size 64), trained on labels the rules scorer wrote for real GSM8K solutions.

use laconic_infer::LoadedModel;
use laconic_label::classifier::{Examples, examples_from_labeled, read_meta};
use laconic_label::{LabelConfig, LabelError, Labeler, TokenClassifier, TrainSettings};
use laconic_traces::{DatasetSpec, Grader};

use crate::{assert_numbers_kept, repo};

fn load(family: &str) -> LoadedModel {
    let device = laconic_infer::device::parse_device("flex").expect("flex");
    laconic_infer::load(
        &repo(&format!("crates/laconic-infer/tests/fixtures/{family}")),
        &device,
    )
    .expect("fixture loads")
}

/// Rules labels at ratio 0.5, in the fixture's tokens, for the first `n` GSM8K test solutions.
fn rule_examples(n: usize) -> Examples {
    let spec = DatasetSpec::parse(&format!(
        "gsm8k:{}",
        repo("data/gsm8k/test.jsonl").display()
    ))
    .expect("spec");
    let mut traces = spec.load().expect("reads");
    traces.truncate(n);
    let model = load("llama");
    let labeler = Labeler::rules(
        LabelConfig::parse_ratios("0.5").expect("ratios"),
        Some((model.tokenizer.clone(), "llama".into())),
    );
    let labeled: Vec<_> = traces
        .iter()
        .map(|t| labeler.label(t, Grader::Gsm8k).expect("labels"))
        .collect();
    examples_from_labeled(&labeled, None, std::path::Path::new("rules")).expect("examples")
}

fn settings() -> TrainSettings {
    TrainSettings {
        epochs: 30,
        lr: 1e-2,
        batch: 256,
        ..Default::default()
    }
}

/// A classifier trained on all of `examples` (none held out), saved as `c.safetensors` in a
/// fresh temporary directory.
fn train_and_save(examples: &Examples) -> (TokenClassifier, tempfile::TempDir) {
    let trained = TokenClassifier::train(
        load("llama"),
        "llama".into(),
        examples,
        0.0,
        &settings(),
        &|| {},
    )
    .expect("trains");
    let dir = tempfile::tempdir().expect("tempdir");
    trained
        .save(&dir.path().join("c.safetensors"))
        .expect("saves");
    (trained, dir)
}

#[test]
fn the_classifier_learns_rule_labels_and_not_shuffled_ones() {
    let examples = rule_examples(80);
    assert!(examples.skipped.is_empty(), "{:?}", examples.skipped);
    let real = TokenClassifier::train(
        load("llama"),
        "llama".into(),
        &examples,
        0.25,
        &settings(),
        &|| {},
    )
    .expect("trains");
    let r = &real.meta().report;
    assert_eq!((r.train_traces, r.valid_traces), (60, 20));
    let valid = r.valid.expect("held-out figures");
    // The control: the same tokens with their labels shuffled across the corpus.
    let mut shuffled = examples.clone();
    let mut all: Vec<bool> = shuffled
        .examples
        .iter()
        .flat_map(|e| e.labels.iter().flatten().copied())
        .collect();
    let third = all.len() / 3;
    all.rotate_left(third);
    all.reverse();
    let mut it = all.into_iter();
    for e in &mut shuffled.examples {
        for l in e.labels.iter_mut().flatten() {
            *l = it.next().expect("as many labels");
        }
    }
    let control = TokenClassifier::train(
        load("llama"),
        "llama".into(),
        &shuffled,
        0.25,
        &settings(),
        &|| {},
    )
    .expect("trains");
    let cv = control.meta().report.valid.expect("held-out figures");
    eprintln!("real {valid:?}\ntrain {:?}\ncontrol {cv:?}", r.train);
    assert!(valid.tokens > 500, "{valid:?}");
    // A 2-layer random-weight model with 64 hidden units and a byte-level vocabulary hides
    // most of what the rules look at (whole words), so the margin is modest here; SmolLM2's
    // figures are in docs/LABELING.md.
    assert!(
        valid.auc > 0.55 && valid.auc > cv.auc + 0.05,
        "held-out AUC {:.3} against {:.3} for shuffled labels",
        valid.auc,
        cv.auc
    );
    assert!(r.train.auc > valid.auc - 0.05, "{:?}", r.train);
}

#[test]
fn a_saved_classifier_scores_the_same_and_compresses_within_the_invariants() {
    let examples = rule_examples(30);
    let (trained, dir) = train_and_save(&examples);
    let path = dir.path().join("c.safetensors");
    let meta = read_meta(&path).expect("metadata reads");
    assert_eq!(meta.hidden_size, 64);
    assert!(meta.labels.contains("ratio 0.5"), "{}", meta.labels);
    let loaded = TokenClassifier::load(&path, load("llama"), "llama".into()).expect("loads");
    assert_eq!(loaded.head(), trained.head());
    let e = &examples.examples[3];
    let (t1, p1) = trained.scores(&e.question, &e.reasoning).expect("scores");
    let (t2, p2) = loaded.scores(&e.question, &e.reasoning).expect("scores");
    assert_eq!((t1, &p1), (t2, &p2));
    assert!(p1.iter().all(|p| (0.0..=1.0).contains(p)));

    let labeler = Labeler::classifier(
        loaded,
        LabelConfig::parse_ratios("0.5,0.7").expect("ratios"),
    );
    assert_eq!(labeler.scorer_name(), "classifier+rules:llama");
    let spec = DatasetSpec::parse(&format!(
        "gsm8k:{}",
        repo("data/gsm8k/test.jsonl").display()
    ))
    .expect("spec");
    let traces = spec.load().expect("reads");
    for t in &traces[100..106] {
        let l = labeler.label(t, Grader::Gsm8k).expect("labels");
        let probs = l.classifier.as_ref().expect("classifier scores written");
        assert_eq!(probs.len(), l.tokens.len());
        assert!(l.variants.iter().all(|v| v.correct), "{}", l.id);
        assert!(l.variants[0].kept <= l.variants[1].kept);
        assert_numbers_kept(&l);
    }
}

#[test]
fn a_classifier_refuses_another_encoder_and_broken_files() {
    let (_, dir) = train_and_save(&rule_examples(6));
    let path = dir.path().join("c.safetensors");
    // qwen2's fixture has the same hidden size but another tokenizer.
    let e = TokenClassifier::load(&path, load("qwen2"), "qwen2".into()).expect_err("refused");
    assert!(matches!(e, LabelError::Classifier { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("c.safetensors") && msg.contains("tokenizer"),
        "{msg}"
    );
    // A truncated file.
    let bytes = std::fs::read(&path).expect("read");
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).expect("write");
    let msg = TokenClassifier::load(&cut, load("llama"), "llama".into())
        .expect_err("refused")
        .to_string();
    assert!(
        msg.contains("cut.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
    // A model's weights are not a classifier.
    let weights = repo("crates/laconic-infer/tests/fixtures/llama/model.safetensors");
    let msg = TokenClassifier::load(&weights, load("llama"), "llama".into())
        .expect_err("refused")
        .to_string();
    assert!(msg.contains("not a laconic-token-classifier file"), "{msg}");
}
