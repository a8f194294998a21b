//! The distiller's grading, selection, accounting and resumption, with a scripted teacher (a
//! test double: the real teachers are exercised over sockets in `laconic-cli/tests/distill.rs`).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use laconic_traces::distill::{
    DistillConfig, DistillSummary, SampleRecord, Select, distill, samples_path,
};
use laconic_traces::schema::read_traces;
use laconic_traces::teacher::{SampleRequest, SamplingParams, Teacher, TeacherSample};
use laconic_traces::{Grader, SCHEMA_VERSION, Trace, TraceError};

/// A scripted teacher: sample `i` of a problem whose gold is `g` has `3 + (i * 7) % 5` steps
/// and answers `g` when `i` is odd or `i == 2`, `g + 1` otherwise; samples listed in `fail`
/// fail. Sample 3 repeats sample 1 word for word (a duplicate). It records every call.
struct Scripted {
    fail: HashSet<(String, usize)>,
    calls: Mutex<Vec<(String, usize, u64)>>,
}

impl Scripted {
    fn new(fail: &[(&str, usize)]) -> Self {
        Self {
            fail: fail.iter().map(|(p, i)| (p.to_string(), *i)).collect(),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<(String, usize, u64)> {
        let mut c = self.calls.lock().expect("lock").clone();
        c.sort();
        c
    }
}

fn script(gold: i64, index: usize) -> (String, u64) {
    let index_for_text = if index == 3 { 1 } else { index };
    let steps = 3 + (index_for_text * 7) % 5;
    let answer = if index_for_text % 2 == 1 || index_for_text == 2 {
        gold
    } else {
        gold + 1
    };
    let mut text = String::new();
    for s in 0..steps {
        text.push_str(&format!(
            "Step {s}: think about {gold} and {index_for_text}.\n"
        ));
    }
    text.push_str(&format!("#### {answer}"));
    (text, 10 * steps as u64)
}

impl Teacher for Scripted {
    fn spec(&self) -> String {
        "scripted:test".into()
    }
    fn model(&self) -> Option<String> {
        Some("scripted-model".into())
    }
    fn concurrency(&self) -> usize {
        3
    }
    fn sample(&self, r: &SampleRequest<'_>) -> laconic_traces::Result<TeacherSample> {
        self.calls
            .lock()
            .expect("lock")
            .push((r.problem.id.clone(), r.index, r.sampling.seed));
        if self.fail.contains(&(r.problem.id.clone(), r.index)) {
            return Err(TraceError::Teacher {
                teacher: self.spec(),
                message: "scripted failure".into(),
            });
        }
        let gold: i64 = r
            .problem
            .gold
            .as_deref()
            .and_then(|g| g.parse().ok())
            .expect("numeric gold");
        let (content, tokens) = script(gold, r.index);
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].content, r.problem.question);
        Ok(TeacherSample {
            content,
            completion_tokens: Some(tokens),
            prompt_tokens: Some(20),
            finish_reason: Some("stop".into()),
            attempts: 1,
            ..Default::default()
        })
    }
    fn retries(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

fn problems(n: usize) -> Vec<Trace> {
    (0..n)
        .map(|i| Trace {
            schema: SCHEMA_VERSION,
            id: format!("p{i}"),
            system: None,
            question: format!("What is {i} times 10?"),
            reasoning: String::new(),
            answer: String::new(),
            gold: Some(format!("{}", i * 10)),
            ratio: None,
            provenance: None,
        })
        .collect()
}

fn config(out: &Path, select: Select) -> DistillConfig {
    DistillConfig {
        out: out.to_path_buf(),
        samples: 4,
        select,
        sampling: SamplingParams::default(),
        system: None,
        grader: Grader::Gsm8k,
    }
}

fn run(problems: &[Trace], teacher: &Scripted, config: &DistillConfig) -> DistillSummary {
    distill(problems, teacher, config, &|_| {}).expect("distill runs")
}

/// The output as sorted lines without the arrival times (which differ between runs).
fn content(out: &Path) -> Vec<String> {
    let mut traces = read_traces(out).expect("output reads");
    for t in &mut traces {
        if let Some(p) = t.provenance.as_mut() {
            p.created = None;
        }
    }
    let mut lines: Vec<String> = traces
        .iter()
        .map(|t| serde_json::to_string(t).expect("json"))
        .collect();
    lines.sort();
    lines
}

#[test]
fn each_policy_keeps_what_it_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ps = problems(3);
    // Samples 1, 2, 3 are correct; 3 duplicates 1; lengths (steps): 0→3, 1→5, 2→7.
    let out = dir.path().join("shortest.jsonl");
    let s = run(
        &ps,
        &Scripted::new(&[]),
        &config(&out, Select::ShortestCorrect),
    );
    assert_eq!((s.correct, s.rejected, s.duplicates), (9, 3, 3));
    assert_eq!(
        (s.accepted, s.written, s.solved, s.incomplete),
        (3, 3, 3, 0)
    );
    let traces = read_traces(&out).expect("reads");
    let ids: Vec<&str> = traces.iter().map(|t| t.id.as_str()).collect();
    // Correct lengths: 1 → 50 tokens, 2 → 70: the shortest correct is 1.
    assert_eq!(ids, ["p0#1", "p1#1", "p2#1"]);
    let t = &traces[1];
    assert_eq!(t.answer, "10");
    assert_eq!(t.gold.as_deref(), Some("10"));
    assert!(
        !t.reasoning.contains("####"),
        "answer line left in: {}",
        t.reasoning
    );
    assert!(t.completion().ends_with("\n#### 10"));
    let p = t.provenance.as_ref().expect("provenance");
    assert_eq!(p.teacher.as_deref(), Some("scripted:test"));
    assert_eq!(p.model.as_deref(), Some("scripted-model"));
    assert_eq!(p.completion_tokens, Some(50));
    let sampling = p.sampling.as_ref().expect("sampling");
    assert_eq!(sampling["sample"], 1);
    assert_eq!(sampling["temperature"].as_f64(), Some(0.6f32 as f64));
    assert!(p.created.as_deref().is_some_and(|c| c.ends_with('Z')));
    // Mean tokens: all samples (3+5+7+5 steps) ×10 / 4 = 50; kept: 50.
    assert_eq!(s.mean_tokens_all, Some(50.0));
    assert_eq!(s.mean_tokens_kept, Some(50.0));

    let out = dir.path().join("first.jsonl");
    run(
        &ps,
        &Scripted::new(&[]),
        &config(&out, Select::FirstCorrect),
    );
    assert!(
        read_traces(&out)
            .expect("reads")
            .iter()
            .all(|t| t.id.ends_with("#1"))
    );

    let out = dir.path().join("all.jsonl");
    let s = run(&ps, &Scripted::new(&[]), &config(&out, Select::AllCorrect));
    let ids: Vec<String> = read_traces(&out)
        .expect("reads")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert!(ids.contains(&"p0#2".to_string()) && !ids.contains(&"p0#3".to_string()));
    assert_eq!(s.duplicates, 3);
}

#[test]
fn failed_samples_leave_the_problem_for_the_next_run_which_asks_only_for_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ps = problems(5);
    let reference = dir.path().join("reference.jsonl");
    let whole = Scripted::new(&[]);
    run(&ps, &whole, &config(&reference, Select::AllCorrect));

    let out = dir.path().join("out.jsonl");
    let flaky = Scripted::new(&[("p1", 2), ("p3", 0), ("p3", 3)]);
    let s = run(&ps, &flaky, &config(&out, Select::AllCorrect));
    assert_eq!((s.requested, s.received, s.failed), (20, 17, 3));
    assert_eq!((s.finished, s.incomplete), (3, 2));
    assert_eq!(s.errors.len(), 3);
    assert!(
        read_traces(&out)
            .expect("reads")
            .iter()
            .all(|t| !t.id.starts_with("p1#") && !t.id.starts_with("p3#"))
    );

    let again = Scripted::new(&[]);
    let s = run(&ps, &again, &config(&out, Select::AllCorrect));
    let asked: Vec<(String, usize)> = again.calls().into_iter().map(|(p, i, _)| (p, i)).collect();
    assert_eq!(
        asked,
        [("p1".into(), 2), ("p3".into(), 0), ("p3".into(), 3)]
    );
    assert_eq!((s.already_finished, s.finished, s.incomplete), (3, 2, 0));
    assert_eq!(content(&out), content(&reference));
    // The seeds asked again are the ones an uninterrupted run uses.
    let seeds: HashSet<(String, usize, u64)> = whole.calls().into_iter().collect();
    assert!(again.calls().iter().all(|c| seeds.contains(c)));

    // A third run has nothing to do and writes nothing.
    let idle = Scripted::new(&[]);
    let s = run(&ps, &idle, &config(&out, Select::AllCorrect));
    assert!(idle.calls().is_empty());
    assert_eq!((s.requested, s.written, s.already_finished), (0, 0, 5));
    assert_eq!(content(&out), content(&reference));
}

#[test]
fn truncated_last_lines_and_unwritten_traces_are_repaired_on_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ps = problems(4);
    let reference = dir.path().join("reference.jsonl");
    run(
        &ps,
        &Scripted::new(&[]),
        &config(&reference, Select::AllCorrect),
    );

    let out = dir.path().join("out.jsonl");
    run(&ps, &Scripted::new(&[]), &config(&out, Select::AllCorrect));
    // As a kill leaves it: the output lost its last two traces and ends mid-line, the
    // samples file lost its last sample and ends mid-line.
    let text = fs::read_to_string(&out).expect("out");
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines.len() - 2;
    let mut cut = lines[..keep].join("\n");
    cut.push('\n');
    cut.push_str(&lines[keep][..lines[keep].len() / 2]);
    fs::write(&out, cut).expect("write");
    let samples = samples_path(&out);
    let text = fs::read_to_string(&samples).expect("samples");
    let lines: Vec<&str> = text.lines().collect();
    let last: SampleRecord = serde_json::from_str(lines[lines.len() - 1]).expect("record");
    let mut cut = lines[..lines.len() - 1].join("\n");
    cut.push('\n');
    cut.push_str(&lines[lines.len() - 1][..20]);
    fs::write(&samples, cut).expect("write");

    let again = Scripted::new(&[]);
    let s = run(&ps, &again, &config(&out, Select::AllCorrect));
    let asked: Vec<(String, usize)> = again.calls().into_iter().map(|(p, i, _)| (p, i)).collect();
    assert_eq!(asked, [(last.problem.clone(), last.index)]);
    assert_eq!(
        s.written, 2,
        "the two lost traces are written again, nothing else"
    );
    assert_eq!(content(&out), content(&reference));
    let records = fs::read_to_string(&samples).expect("samples");
    assert_eq!(
        records.lines().count(),
        16,
        "one line per sample, none twice"
    );
}

#[test]
fn other_settings_and_foreign_files_are_refused_without_touching_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ps = problems(2);
    let out = dir.path().join("out.jsonl");
    run(&ps, &Scripted::new(&[]), &config(&out, Select::AllCorrect));
    let before = fs::read(&out).expect("out");
    let mut other = config(&out, Select::AllCorrect);
    other.samples = 8;
    other.sampling.temperature = 1.0;
    let e = distill(&ps, &Scripted::new(&[]), &other, &|_| {})
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("samples: was 4, now 8") && e.contains("temperature"),
        "{e}"
    );
    assert_eq!(fs::read(&out).expect("out"), before);

    let foreign = dir.path().join("mine.jsonl");
    fs::write(&foreign, "{\"my\": \"data\"}\n").expect("write");
    let e = distill(
        &ps,
        &Scripted::new(&[]),
        &config(&foreign, Select::AllCorrect),
        &|_| {},
    )
    .expect_err("refused")
    .to_string();
    assert!(
        e.contains("not written by `laconic distill`") && e.contains("mine.jsonl"),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(&foreign).expect("read"),
        "{\"my\": \"data\"}\n"
    );

    let mut no_gold = problems(1);
    no_gold[0].gold = None;
    let e = distill(
        &no_gold,
        &Scripted::new(&[]),
        &config(&dir.path().join("x.jsonl"), Select::AllCorrect),
        &|_| {},
    )
    .expect_err("refused")
    .to_string();
    assert!(e.contains("`p0` has no gold answer"), "{e}");
}

#[test]
fn a_malformed_samples_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ps = problems(2);
    let out = dir.path().join("out.jsonl");
    run(&ps, &Scripted::new(&[]), &config(&out, Select::AllCorrect));
    let samples = samples_path(&out);
    let mut f = OpenOptions::new()
        .append(true)
        .open(&samples)
        .expect("open");
    writeln!(f, "{{\"problem\": 3}}").expect("write");
    writeln!(f, "{{}}").expect("write");
    let e = distill(
        &ps,
        &Scripted::new(&[]),
        &config(&out, Select::AllCorrect),
        &|_| {},
    )
    .expect_err("refused")
    .to_string();
    assert!(e.contains("out.jsonl.samples.jsonl:9"), "{e}");
}
