//! The surprisal scorer on the tiny fixture model of `laconic-infer` (a 2-layer Llama with a
//! 512-token vocabulary and a 256-token context), not on SmolLM2 (too slow for a test).

use laconic_infer::generate::score_ids;
use laconic_label::{LabelConfig, Labeler, SurprisalScorer};
use laconic_traces::{DatasetSpec, Grader, Trace};

use crate::{assert_numbers_kept, repo};

fn fixture() -> std::path::PathBuf {
    repo("crates/laconic-infer/tests/fixtures/llama")
}

fn gsm8k_test(n: usize) -> Vec<Trace> {
    let spec = DatasetSpec::parse(&format!(
        "gsm8k:{}",
        repo("data/gsm8k/test.jsonl").display()
    ))
    .expect("spec");
    let mut t = spec.load().expect("reads");
    t.truncate(n);
    t
}

#[test]
fn surprisal_is_the_models_negative_log_probability_after_the_question() {
    let scorer = SurprisalScorer::load(&fixture(), "flex").expect("fixture loads");
    let trace = &gsm8k_test(1)[0];
    let (tokens, surprisal) = scorer.surprisal("Q?", &trace.reasoning).expect("scores");
    let tok = scorer.tokenizer();
    assert_eq!(
        tokens.ids,
        tok.encode(&trace.reasoning, false).expect("encode")
    );
    assert_eq!(surprisal.len(), tokens.ids.len());
    // The same numbers straight from the decoder.
    let device = laconic_infer::device::parse_device("flex").expect("flex");
    let model = laconic_infer::load(&fixture(), &device).expect("loads");
    let mut ids = tok.encode("Q?\n", true).expect("encode");
    let prefix = ids.len();
    ids.extend(&tokens.ids);
    assert!(ids.len() <= 256, "fits one window: {}", ids.len());
    let lp = score_ids(&model.model, &ids).expect("scores");
    for (i, s) in surprisal.iter().enumerate() {
        let direct = -lp[prefix + i].expect("scored");
        assert!((s - direct).abs() < 1e-4, "token {i}: {s} vs {direct}");
        assert!(*s >= 0.0);
    }
}

#[test]
fn model_scored_labels_count_tokens_and_keep_the_invariants() {
    let scorer = SurprisalScorer::load(&fixture(), "flex").expect("fixture loads");
    let tok = scorer.tokenizer().clone();
    let labeler = Labeler::surprisal(
        scorer,
        LabelConfig::parse_ratios("0.5,0.8").expect("ratios"),
    );
    assert!(labeler.scorer_name().starts_with("surprisal+rules:"));
    let mut traces = gsm8k_test(3);
    // One reasoning longer than the fixture's 256-token context: scored in windows.
    let mut long = traces[1].clone();
    long.id = "long".into();
    long.reasoning = gsm8k_test(12)
        .iter()
        .map(|t| t.reasoning.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    long.answer = traces[1].answer.clone();
    traces.push(long);
    for t in &traces {
        let l = labeler.label(t, Grader::Gsm8k).expect("labels");
        assert!(l.unit.starts_with("tokens:"), "{}", l.unit);
        let n = tok.encode(&t.reasoning, false).expect("encode").len();
        assert_eq!(l.tokens.len(), n);
        assert_eq!(l.protected.len(), n);
        let surprisal = l.surprisal.as_ref().expect("surprisal written");
        assert_eq!(surprisal.len(), n);
        assert!(surprisal.iter().all(|s| s.is_finite() && *s >= 0.0));
        assert_numbers_kept(&l);
        for v in &l.variants {
            assert_eq!(v.keep.len(), n);
            assert_eq!(v.total, n);
            let kept = tok.encode(&v.trace.reasoning, false).expect("encode").len();
            assert_eq!(v.kept, kept);
            assert!((v.achieved - kept as f64 / n as f64).abs() < 1e-12);
            assert!(v.correct, "{} at {}", t.id, v.target);
        }
    }
    // The long one really is longer than the context.
    assert!(
        tok.encode(&traces[3].reasoning, false)
            .expect("encode")
            .len()
            > 256
    );
}

#[test]
fn rules_with_a_tokenizer_count_its_tokens_and_meet_the_target_in_them() {
    let tok =
        laconic_infer::tokenizer::Tokenizer::from_file(&fixture().join("tokenizer.json"), None)
            .expect("fixture tokenizer");
    let labeler = Labeler::rules(
        LabelConfig::parse_ratios("0.6,0.8").expect("ratios"),
        Some((tok.clone(), "fixture".into())),
    );
    assert_eq!(labeler.unit_name(), "tokens:fixture");
    let mut met = 0;
    for t in gsm8k_test(200) {
        let l = labeler.label(&t, Grader::Gsm8k).expect("labels");
        let n = tok.encode(&t.reasoning, false).expect("encode").len();
        assert_eq!(
            (l.tokens.len(), l.scores.len(), l.protected.len()),
            (n, n, n)
        );
        assert!(l.surprisal.is_none());
        assert_numbers_kept(&l);
        for v in &l.variants {
            let kept = tok.encode(&v.trace.reasoning, false).expect("encode").len();
            assert_eq!((v.kept, v.total), (kept, n));
            // Unless the numbers alone are too many, the written text is within the target.
            let goal = (v.target * n as f64 + 1e-9).floor() as usize;
            assert_eq!(v.limited, kept > goal, "{} at {}", t.id, v.target);
            met += usize::from(!v.limited);
            assert!(v.correct, "{} at {}", t.id, v.target);
        }
    }
    assert!(
        met > 300,
        "the target was met for only {met} of 400 variants"
    );
}

#[test]
fn batched_labeling_gives_what_labeling_one_at_a_time_gives() {
    let scorer = SurprisalScorer::load(&fixture(), "flex").expect("fixture loads");
    let labeler = Labeler::surprisal(
        scorer,
        LabelConfig::parse_ratios("0.5,0.8").expect("ratios"),
    );
    let traces = gsm8k_test(7);
    let items: Vec<(&Trace, Grader)> = traces.iter().map(|t| (t, Grader::Gsm8k)).collect();
    let batched = labeler.label_batch(&items).expect("labels");
    assert_eq!(batched.len(), traces.len());
    for (t, b) in traces.iter().zip(&batched) {
        let alone = labeler.label(t, Grader::Gsm8k).expect("labels");
        assert_eq!(b.id, alone.id);
        assert_eq!(b.tokens, alone.tokens);
        let (sb, sa) = (
            b.surprisal.as_ref().expect("surprisal"),
            alone.surprisal.as_ref().expect("surprisal"),
        );
        for (x, y) in sb.iter().zip(sa) {
            assert!((x - y).abs() <= 2e-3, "{}: {x} vs {y}", t.id);
        }
        for (vb, va) in b.variants.iter().zip(&alone.variants) {
            assert_eq!(vb.trace.reasoning, va.trace.reasoning, "{}", t.id);
        }
    }
}
