//! Sentence-level compression (`--granularity sentences`) on the procedural teacher's
//! verbose traces (caught slips included) and on every GSM8K test solution: every kept
//! sentence is the original's, every correct computation and the answer survive, a caught
//! slip does not.

use laconic_label::steps::sentence_spans;
use laconic_label::{Granularity, LabelConfig, Labeler};
use laconic_traces::procedural::{ProblemConfig, Slip, generate_problem, verbose_answer};
use laconic_traces::{DatasetSpec, Grader, SCHEMA_VERSION, Trace};

use crate::repo;

fn labeler(ratios: &str) -> Labeler {
    let mut config = LabelConfig::parse_ratios(ratios).expect("ratios");
    config.granularity = Granularity::Sentences;
    Labeler::rules(config, None)
}

/// Panics unless every sentence of every line of `compressed` is a piece of `original`
/// (whitespace runs read as one space: rendering tidies them).
fn assert_whole_sentences(original: &str, compressed: &str, id: &str) {
    let original = original.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut offset = 0;
    for line in compressed.split('\n') {
        let start = offset;
        offset += line.len() + 1;
        if line.trim().is_empty() {
            continue;
        }
        for (s, e) in sentence_spans(compressed, start, start + line.trim_end().len()) {
            let sentence = &compressed[s..e];
            assert!(
                original.contains(sentence),
                "{id}: `{sentence}` is not a sentence of the original\n{original}\n---\n{compressed}"
            );
        }
    }
}

/// The results written after `prefix` where no digit comes right before it (`3 * 4 = `
/// gives `14` and `12` in a trace that slipped and corrected itself; `13 * 4 = ` is not one).
fn results_after(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .filter(|(at, _)| !text[..*at].ends_with(|c: char| c.is_ascii_digit()))
        .map(|(at, _)| {
            text[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect()
        })
        .collect()
}

#[test]
fn procedural_traces_keep_their_computations_and_lose_their_slips() {
    let config = ProblemConfig::parse("count=120,seed=5,difficulty=2").expect("config");
    let labeler = labeler("0.5,0.7");
    let (mut caught, mut kept_tokens, mut total_tokens) = (0, 0, 0);
    for i in 0..config.count {
        let problem = generate_problem(&config, i);
        let Some(correct) = problem.computations() else {
            continue;
        };
        for seed in 0..3u64 {
            let Some(sample) = verbose_answer(&problem, seed) else {
                continue;
            };
            if sample.slip == Slip::Uncaught {
                continue;
            }
            let id = format!("procedural/5/{i}#{seed}");
            let answer = sample.answer.to_string();
            let trace = Trace {
                schema: SCHEMA_VERSION,
                id: id.clone(),
                system: None,
                question: problem.question.clone(),
                reasoning: sample.reasoning.clone(),
                answer: answer.clone(),
                gold: Some(answer.clone()),
                ratio: None,
                provenance: None,
            };
            let l = labeler.label(&trace, Grader::Gsm8k).expect("labels");
            assert_eq!(l.granularity, "sentences");
            caught += usize::from(sample.slip == Slip::Caught);
            for v in &l.variants {
                let text = &v.trace.reasoning;
                assert_whole_sentences(&sample.reasoning, text, &id);
                assert!(v.correct && v.preserved, "{id} at {}", v.target);
                assert!(text.contains(&answer), "{id}: the answer is gone\n{text}");
                for c in &correct {
                    let prefix = format!("{} {} {} = ", c.left, c.op, c.right);
                    if !sample.reasoning.contains(&prefix) {
                        continue;
                    }
                    let written = results_after(text, &prefix);
                    assert!(
                        written.contains(&c.result.to_string()),
                        "{id} at {}: `{c}` is gone\n{}\n---\n{text}",
                        v.target,
                        sample.reasoning
                    );
                    assert!(
                        written.iter().all(|r| *r == c.result.to_string()),
                        "{id} at {}: a slip on `{prefix}` survived\n{text}",
                        v.target
                    );
                }
                assert!(!v.limited || v.target < 0.6, "{id} limited at {}", v.target);
                if v.target == 0.5 {
                    kept_tokens += v.kept;
                    total_tokens += v.total;
                }
            }
        }
    }
    assert!(
        caught > 5,
        "only {caught} caught slips: the test lost its teeth"
    );
    let ratio = kept_tokens as f64 / total_tokens as f64;
    assert!((0.4..=0.5).contains(&ratio), "ratio at 0.5: {ratio:.3}");
}

#[test]
fn gsm8k_solutions_stay_whole_sentences_with_their_answers() {
    let spec = DatasetSpec::parse(&format!(
        "gsm8k:{}",
        repo("data/gsm8k/test.jsonl").display()
    ))
    .expect("spec");
    let labeler = labeler("0.5,0.9");
    let mut limited = 0;
    let traces = spec.load().expect("reads");
    for t in &traces {
        let l = labeler.label(t, Grader::Gsm8k).expect("labels");
        let gold = t.gold.as_deref().expect("GSM8K has gold");
        for v in &l.variants {
            assert_whole_sentences(&t.reasoning, &v.trace.reasoning, &t.id);
            assert!(
                Grader::Gsm8k.grade(&v.trace.completion(), gold).correct,
                "{}",
                t.id
            );
            assert!(v.limited || v.achieved <= v.target + 1e-12, "{}", t.id);
        }
        limited += usize::from(l.variants[0].limited);
    }
    // GSM8K solutions are mostly equations: half of one is rarely reachable in whole
    // sentences, and the labeler says so instead of breaking one.
    assert!(limited > traces.len() / 2, "only {limited} limited at 0.5");
}
