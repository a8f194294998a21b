//! The invariants on every GSM8K test solution and every MATH-500 solution: at every ratio,
//! every number survives, in order, and the final answer still extracts and matches gold.

use laconic_label::{LabelConfig, Labeler};
use laconic_traces::{DatasetSpec, Grader};

use crate::{assert_numbers_kept, repo, word_count};

const RATIOS: &str = "0.1,0.3,0.5,0.7,0.9,1";

#[test]
fn gsm8k_test_keeps_every_number_and_answer_at_every_ratio() {
    let spec = DatasetSpec::parse(&format!(
        "gsm8k:{}",
        repo("data/gsm8k/test.jsonl").display()
    ))
    .expect("spec");
    let labeler = Labeler::rules(LabelConfig::parse_ratios(RATIOS).expect("ratios"), None);
    let mut limited_at_low = 0;
    for t in spec.load().expect("reads") {
        let l = labeler.label(&t, Grader::Gsm8k).expect("labels");
        assert_numbers_kept(&l);
        let gold = t.gold.as_deref().expect("GSM8K has gold");
        for v in &l.variants {
            let g = Grader::Gsm8k.grade(&v.trace.completion(), gold);
            assert!(g.correct, "{} at {}: {:?}", t.id, v.target, g);
            assert_eq!(v.trace.answer, t.answer);
            assert_eq!(v.trace.question, t.question);
            // The achieved ratio is the words of the text written, never above the target
            // unless the invariants forced it.
            let achieved = word_count(&v.trace.reasoning) as f64 / word_count(&t.reasoning) as f64;
            assert!((achieved - v.achieved).abs() < 1e-12, "{}", t.id);
            assert!(
                v.limited || achieved <= v.target + 1e-12,
                "{} at {}",
                t.id,
                v.target
            );
        }
        limited_at_low += usize::from(l.variants[0].limited);
        // At ratio 1 the text is the original's words, in order.
        let full = &l.variants[5];
        assert_eq!(
            full.trace.reasoning.split_whitespace().collect::<Vec<_>>(),
            t.reasoning.split_whitespace().collect::<Vec<_>>(),
            "{}",
            t.id
        );
    }
    // GSM8K solutions are a third numbers and operators: 0.1 cannot be met.
    assert!(
        limited_at_low > 1000,
        "only {limited_at_low} limited at 0.1"
    );
}

#[test]
fn math500_keeps_numbers_and_the_boxed_answer_at_every_ratio() {
    let spec = DatasetSpec::parse(&format!(
        "math500:{}",
        repo("data/math500/test.jsonl").display()
    ))
    .expect("spec");
    let labeler = Labeler::rules(LabelConfig::parse_ratios(RATIOS).expect("ratios"), None);
    let mut shorter = 0;
    for t in spec.load().expect("reads") {
        let l = labeler.label(&t, Grader::Math).expect("labels");
        assert_numbers_kept(&l);
        let boxed = Grader::Math.extract(&t.reasoning);
        for v in &l.variants {
            assert_eq!(
                Grader::Math.extract(&v.trace.reasoning),
                boxed,
                "{} at {}",
                t.id,
                v.target
            );
            let g = Grader::Math.grade(&v.trace.completion(), t.gold.as_deref().expect("gold"));
            assert!(g.correct, "{} at {}: {:?}", t.id, v.target, g);
        }
        shorter += usize::from(l.variants[2].achieved < 0.9);
    }
    // LaTeX math is protected whole, so MATH compresses less, but it does compress.
    assert!(
        shorter > 250,
        "only {shorter} of 500 MATH solutions shorter at 0.5"
    );
}
