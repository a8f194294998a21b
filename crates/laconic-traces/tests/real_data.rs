//! The readers and graders on the real GSM8K and MATH-500 files in `data/`.
//!
//! Each dataset's own solutions must grade correct against their own answers, and must mostly
//! grade wrong against a neighbour's answer (which shows the graders discriminate). The
//! expected values are read from the raw files here with plain serde_json, not through the
//! readers under test.

use std::path::{Path, PathBuf};

use laconic_traces::datasets::{read_gsm8k, read_math500};
use laconic_traces::{DatasetSpec, Grader, Trace};
use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data")).join(rel)
}

/// The raw JSON objects of a JSONL file, one per non-blank line.
fn raw_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read data file")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name].as_str().expect("string field")
}

/// The fraction of `(output, gold)` pairs that grade correct, and the indices that do not.
fn rate<'a>(grader: Grader, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> (f64, Vec<usize>) {
    let mut total = 0;
    let mut misses = Vec::new();
    for (i, (output, gold)) in pairs.enumerate() {
        total += 1;
        if !grader.grade(output, gold).correct {
            misses.push(i);
        }
    }
    assert!(total > 0);
    ((total - misses.len()) as f64 / total as f64, misses)
}

fn check_gsm8k(file: &str) {
    let path = data(file);
    let raw = raw_lines(&path);
    let traces = read_gsm8k(&path).expect("read GSM8K");
    assert_eq!(traces.len(), raw.len());
    let grader = Grader::Gsm8k;

    for (i, (trace, raw)) in traces.iter().zip(&raw).enumerate() {
        let solution = field(raw, "answer");
        let after = solution.rsplit("####").next().expect("####").trim();
        // The gold, computed independently: digits and sign, commas dropped, as an integer.
        let expected: i64 = after
            .replace(',', "")
            .parse()
            .expect("GSM8K answers are integers");
        assert_eq!(
            trace.gold.as_deref(),
            Some(expected.to_string().as_str()),
            "line {}",
            i + 1
        );
        assert_eq!(trace.answer, after);
        assert_eq!(trace.question, field(raw, "question"));
        assert!(!trace.reasoning.contains("<<") && !trace.reasoning.contains(">>"));
        assert!(!trace.reasoning.contains("####"));
        assert!(trace.completion().ends_with(&format!("\n#### {after}")));
    }

    let golds: Vec<&str> = traces
        .iter()
        .map(|t| t.gold.as_deref().expect("gold"))
        .collect();
    let (own, misses) = rate(
        grader,
        raw.iter()
            .map(|r| field(r, "answer"))
            .zip(golds.iter().copied()),
    );
    assert_eq!(
        own, 1.0,
        "{file}: raw solutions graded wrong at indices {misses:?}"
    );

    let completions: Vec<String> = traces.iter().map(Trace::completion).collect();
    let (own, misses) = rate(
        grader,
        completions
            .iter()
            .map(String::as_str)
            .zip(golds.iter().copied()),
    );
    assert_eq!(
        own, 1.0,
        "{file}: completions graded wrong at indices {misses:?}"
    );

    let (shifted, _) = rate(
        grader,
        raw.iter()
            .map(|r| field(r, "answer"))
            .zip(golds.iter().copied().skip(1)),
    );
    assert!(
        shifted < 0.05,
        "{file}: shifted pairing graded correct at {shifted}"
    );
}

#[test]
fn gsm8k_test_reads_and_self_grades() {
    check_gsm8k("gsm8k/test.jsonl");
}

#[test]
fn gsm8k_train_reads_and_self_grades() {
    check_gsm8k("gsm8k/train.jsonl");
}

#[test]
fn gsm8k_ids_and_provenance() {
    let spec =
        DatasetSpec::parse(&format!("gsm8k:{}", data("gsm8k/test.jsonl").display())).expect("spec");
    let traces = spec.load().expect("load");
    assert_eq!(traces[0].id, "gsm8k/test/0");
    assert_eq!(traces[17].id, "gsm8k/test/17");
    let source = &traces[17].provenance.as_ref().expect("provenance").source;
    assert!(
        source.starts_with("gsm8k:") && source.ends_with("test.jsonl:18"),
        "{source}"
    );
    // The first test problem, checked by eye against the file.
    assert_eq!(traces[0].answer, "18");
    assert_eq!(
        traces[0].reasoning,
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n\
         She makes 9 * 2 = $18 every day at the farmer\u{2019}s market."
    );
}

/// MATH-500 solution/answer pairs that the grader cannot match, with the reason. Empty: every
/// solution's last box normalizes to the same answer as its `answer` field.
const MATH_KNOWN_MISSES: &[&str] = &[];

#[test]
fn math500_reads_and_self_grades() {
    let path = data("math500/test.jsonl");
    let raw = raw_lines(&path);
    let traces = read_math500(&path).expect("read MATH-500");
    assert_eq!(traces.len(), 500);
    assert_eq!(raw.len(), 500);
    for (trace, raw) in traces.iter().zip(&raw) {
        assert_eq!(trace.id, field(raw, "unique_id"));
        assert_eq!(trace.gold.as_deref(), Some(field(raw, "answer")));
    }
    let grader = Grader::Math;
    let answers: Vec<&str> = raw.iter().map(|r| field(r, "answer")).collect();
    let solutions: Vec<&str> = raw.iter().map(|r| field(r, "solution")).collect();
    let describe = |misses: &[usize]| -> String {
        misses
            .iter()
            .map(|&i| {
                let graded = grader.grade(solutions[i], answers[i]);
                format!(
                    "\n  line {}: gold {:?} -> {:?}, extracted {:?}",
                    i + 1,
                    answers[i],
                    graded.gold,
                    graded.extracted
                )
            })
            .collect()
    };

    let (own, misses) = rate(
        grader,
        solutions.iter().copied().zip(answers.iter().copied()),
    );
    assert!(
        own >= 0.98 && misses.len() <= MATH_KNOWN_MISSES.len(),
        "self-grading {own}; misses:{}",
        describe(&misses)
    );

    let completions: Vec<String> = traces.iter().map(Trace::completion).collect();
    let (from_completion, completion_misses) = rate(
        grader,
        completions
            .iter()
            .map(String::as_str)
            .zip(answers.iter().copied()),
    );
    assert_eq!(
        from_completion,
        own,
        "misses:{}",
        describe(&completion_misses)
    );

    let (shifted, _) = rate(
        grader,
        solutions
            .iter()
            .copied()
            .zip(answers.iter().copied().skip(1)),
    );
    assert!(
        shifted < 0.05,
        "shifted pairing graded correct at {shifted}"
    );
}

/// Turns an answer into a response that states it.
type Variant = fn(&str) -> String;

/// Surface variants of every MATH-500 answer, as a model might write them, must still grade
/// correct: these exercise normalization on real answers rather than on hand-picked ones.
#[test]
fn math500_answer_variants_grade_correct() {
    let raw = raw_lines(&data("math500/test.jsonl"));
    let grader = Grader::Math;
    let variants: [(&str, Variant); 5] = [
        ("no spaces", |a| {
            format!("$\\boxed{{{}}}$", a.replace(' ', ""))
        }),
        ("dfrac", |a| {
            format!("$\\boxed{{{}}}$", a.replace("\\frac", "\\dfrac"))
        }),
        ("in a sentence", |a| {
            format!("Final Answer: The final answer is ${a}$. I hope it is correct.")
        }),
        ("in a box in a sentence", |a| {
            format!("Putting it together, the answer is $\\boxed{{{a}}}$.")
        }),
        ("after ####", |a| format!("So we are done.\n#### {a}")),
    ];
    for (name, variant) in variants {
        let mut misses = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let answer = field(r, "answer");
            let output = variant(answer);
            if !grader.grade(&output, answer).correct {
                misses.push(format!("line {}: {output:?}", i + 1));
            }
        }
        assert!(
            misses.is_empty(),
            "{name}: {} misses: {misses:#?}",
            misses.len()
        );
    }
}
