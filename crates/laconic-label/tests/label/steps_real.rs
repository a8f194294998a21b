//! Steps on real GSM8K and MATH-500 solutions, and on a hand-written R1-style trace.

use laconic_label::rules::Reason;
use laconic_label::steps::{StepKind, split_steps};
use laconic_label::{LabelConfig, Labeler};
use laconic_traces::{DatasetSpec, Grader, SCHEMA_VERSION, Trace};

use crate::{assert_numbers_kept, repo};

/// Panics unless the steps are in order, do not overlap, and cover every non-whitespace byte.
fn assert_covers(text: &str, id: &str) {
    let steps = split_steps(text);
    let mut covered = vec![false; text.len()];
    let mut last_end = 0;
    for s in &steps {
        assert!(
            s.start >= last_end && s.end > s.start,
            "{id}: step {s:?} out of order"
        );
        assert_eq!(s.text(text), s.text(text).trim(), "{id}: untrimmed step");
        last_end = s.end;
        covered[s.start..s.end].iter_mut().for_each(|c| *c = true);
    }
    for (i, b) in text.bytes().enumerate() {
        assert!(
            b.is_ascii_whitespace() || covered[i],
            "{id}: byte {i} in no step"
        );
    }
}

#[test]
fn gsm8k_solutions_split_into_their_lines() {
    let spec = DatasetSpec::parse(&format!(
        "gsm8k:{}",
        repo("data/gsm8k/test.jsonl").display()
    ))
    .expect("spec");
    let traces = spec.load().expect("GSM8K test reads");
    assert_eq!(traces.len(), 1319);
    for t in &traces {
        assert_covers(&t.reasoning, &t.id);
        let lines = t.reasoning.lines().filter(|l| !l.trim().is_empty()).count();
        assert!(split_steps(&t.reasoning).len() >= lines, "{}", t.id);
    }
    // The first problem (docs/TRACES.md): two lines, two steps.
    let first = &traces[0].reasoning;
    let steps = split_steps(first);
    let texts: Vec<&str> = steps.iter().map(|s| s.text(first)).collect();
    assert_eq!(
        texts,
        [
            "Janet sells 16 - 3 - 4 = 9 duck eggs a day.",
            "She makes 9 * 2 = $18 every day at the farmer’s market."
        ]
    );
}

#[test]
fn math500_solutions_split_long_lines_into_sentences() {
    let spec = DatasetSpec::parse(&format!(
        "math500:{}",
        repo("data/math500/test.jsonl").display()
    ))
    .expect("spec");
    let traces = spec.load().expect("MATH-500 reads");
    assert_eq!(traces.len(), 500);
    let mut sentences = 0;
    for t in &traces {
        assert_covers(&t.reasoning, &t.id);
        let steps = split_steps(&t.reasoning);
        for s in steps.iter().filter(|s| s.kind == StepKind::Sentence) {
            sentences += 1;
            // A sentence step starts a sentence: after `. ` (or `? ` / `! `) in its line.
            let before = t.reasoning[..s.start].trim_end();
            assert!(
                before.ends_with(['.', '?', '!', '"', ')', '\'']),
                "{}: sentence step after {:?}",
                t.id,
                &before[before.len().saturating_sub(20)..]
            );
        }
    }
    assert!(
        sentences > 500,
        "only {sentences} sentence steps in MATH-500"
    );
}

/// HAND-WRITTEN test data (not from a model): a verbose R1-style trace for the first GSM8K
/// test problem, with a re-check, a "Hmm," and an alternative approach.
const R1_STYLE: &str = "Okay, so I need to figure out how much Janet makes every day at the farmers' market. Let me start by understanding the problem.

Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins with 4. So the eggs left are 16 - 3 - 4 = 9.
She sells each egg for $2, so she makes 9 * 2 = $18.
Wait, let me double-check that. 16 - 3 = 13, and 13 - 4 = 9. Yes, 9 eggs.
Hmm, and 9 * 2 = 18. That seems right.
Alternatively, I could compute the eggs she uses first: 3 + 4 = 7, and 16 - 7 = 9, so 9 * 2 = $18 again.
So the answer is $18.";

#[test]
fn hand_written_r1_trace_splits_at_restarts() {
    let steps = split_steps(R1_STYLE);
    let got: Vec<(&str, StepKind, usize)> = steps
        .iter()
        .map(|s| (s.text(R1_STYLE), s.kind, s.paragraph))
        .collect();
    use StepKind::*;
    assert_eq!(
        got,
        [
            (
                "Okay, so I need to figure out how much Janet makes every day at the farmers' market.",
                Line,
                0
            ),
            ("Let me start by understanding the problem.", Sentence, 0),
            ("Janet's ducks lay 16 eggs per day.", Line, 1),
            (
                "She eats 3 for breakfast and bakes muffins with 4.",
                Sentence,
                1
            ),
            ("So the eggs left are 16 - 3 - 4 = 9.", Sentence, 1),
            (
                "She sells each egg for $2, so she makes 9 * 2 = $18.",
                Line,
                1
            ),
            (
                "Wait, let me double-check that. 16 - 3 = 13, and 13 - 4 = 9. Yes, 9 eggs.",
                Restart,
                1
            ),
            ("Hmm, and 9 * 2 = 18. That seems right.", Restart, 1),
            (
                "Alternatively, I could compute the eggs she uses first: 3 + 4 = 7, and 16 - 7 = 9, so 9 * 2 = $18 again.",
                Restart,
                1
            ),
            ("So the answer is $18.", Line, 1),
        ]
    );
}

#[test]
fn hand_written_r1_trace_loses_its_rechecks_first() {
    let trace = Trace {
        schema: SCHEMA_VERSION,
        id: "hand-written/r1/0".into(),
        system: None,
        question: "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning \
                   and bakes muffins for her friends every day with four. She sells the remainder \
                   at the farmers' market daily for $2 per fresh duck egg. How much in dollars \
                   does she make every day at the farmers' market?"
            .into(),
        reasoning: R1_STYLE.into(),
        answer: "18".into(),
        gold: Some("18".into()),
        ratio: None,
        provenance: None,
    };
    let labeler = Labeler::rules(LabelConfig::parse_ratios("0.5,0.7").expect("ratios"), None);
    let l = labeler.label(&trace, Grader::Gsm8k).expect("labels");
    let reasons: Vec<&[Reason]> = l.steps.iter().map(|s| s.reasons.as_slice()).collect();
    assert!(reasons[6].contains(&Reason::Reverification), "{reasons:?}");
    assert!(reasons[7].contains(&Reason::Reverification), "{reasons:?}");
    assert!(reasons[8].contains(&Reason::Alternative), "{reasons:?}");
    assert!(
        reasons[2].is_empty() && reasons[5].is_empty(),
        "{reasons:?}"
    );
    assert_numbers_kept(&l);
    for v in &l.variants {
        assert!(v.correct && v.preserved);
        assert!(v.achieved <= v.target || v.limited, "{v:?}");
    }
    // Per step, the share of non-number words kept at 0.5: the restarts keep less than the
    // steps that carry the solution.
    let words = laconic_label::words::split_words(R1_STYLE);
    let prot = laconic_label::words::protected(R1_STYLE, &words, false);
    let keep: Vec<bool> = l.variants[0].keep.chars().map(|c| c == '1').collect();
    assert_eq!(keep.len(), words.len());
    let kept_share = |step: usize| {
        let s = &l.steps[step];
        let (mut kept, mut all) = (0, 0);
        for (i, w) in words.iter().enumerate() {
            if w.start >= s.start && w.end <= s.end && !prot[i] {
                all += 1;
                kept += usize::from(keep[i]);
            }
        }
        kept as f64 / all as f64
    };
    let restarts = (kept_share(6) + kept_share(7) + kept_share(8)) / 3.0;
    let solution = (kept_share(2) + kept_share(3) + kept_share(5)) / 3.0;
    assert!(
        restarts < solution,
        "restarts keep {restarts:.2}, solution steps {solution:.2}"
    );
}
