//! Bad input is an error that names the file and the line, never a panic.

use std::path::Path;

use laconic_label::{LabelConfig, LabelJob, Labeler, label_file, read_labeled};
use laconic_traces::DatasetSpec;

use crate::repo;

fn run(input: &str, out: &Path) -> String {
    let labeler = Labeler::rules(LabelConfig::parse_ratios("0.5").expect("ratio"), None);
    let job = LabelJob {
        input: DatasetSpec::parse(input).expect("spec"),
        out: out.to_path_buf(),
        limit: None,
        grader: None,
        progress: false,
        batch: laconic_label::run::LABEL_BATCH,
    };
    label_file(&labeler, &job).expect_err("refused").to_string()
}

#[test]
fn a_missing_input_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let e = run("gsm8k:no/such/train.jsonl", &out);
    assert!(e.contains("no/such/train.jsonl"), "{e}");
    assert!(!out.exists(), "no output for a failed input");
}

#[test]
fn a_malformed_input_line_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let traces = dir.path().join("traces.jsonl");
    let good = r#"{"schema":1,"id":"a","question":"What is 2 + 3?","reasoning":"2 + 3 = 5.","answer":"5"}"#;
    std::fs::write(&traces, format!("{good}\n{{\"schema\":1,\"id\":\"b\",\n")).expect("write");
    let e = run(
        &format!("traces:{}", traces.display()),
        &dir.path().join("o.jsonl"),
    );
    assert!(e.contains(&format!("{}:2:", traces.display())), "{e}");

    let gsm = dir.path().join("gsm.jsonl");
    std::fs::write(
        &gsm,
        "{\"question\": \"q\", \"answer\": \"no final line\"}\n",
    )
    .expect("write");
    let e = run(
        &format!("gsm8k:{}", gsm.display()),
        &dir.path().join("o2.jsonl"),
    );
    assert!(e.contains(&format!("{}:1:", gsm.display())), "{e}");
}

#[test]
fn a_malformed_line_inside_the_output_is_named_and_nothing_is_appended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let text = "{\"id\": \"x\"}\n{\"not\": \"a labeled trace\"}\n";
    std::fs::write(&out, text).expect("write");
    let e = run(
        &format!("gsm8k:{}", repo("data/gsm8k/test.jsonl").display()),
        &out,
    );
    assert!(e.contains(&format!("{}:1:", out.display())), "{e}");
    assert!(e.contains("missing field"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), text);

    let labeled = dir.path().join("labeled.jsonl");
    std::fs::write(&labeled, "\n{\"id\": 3}\n").expect("write");
    let e = read_labeled(&labeled).expect_err("bad line").to_string();
    assert!(e.contains(&format!("{}:2:", labeled.display())), "{e}");
}
