//! `grade_file`: a JSONL file of responses graded line by line.

use std::fs;
use std::path::{Path, PathBuf};

use laconic_traces::Grader;
use laconic_traces::grade::grade_file;
use serde_json::{Value, json};

fn write_lines(dir: &Path, name: &str, lines: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(&path, text).expect("write");
    path
}

fn read_rows(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON row"))
        .collect()
}

#[test]
fn rows_keep_order_and_fields_and_gain_the_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = [
        json!({"id": "q0", "output": "3 + 4 = 7, so she has 7 left.\n#### 7", "gold": "7", "tokens": 14}),
        json!({"id": "q1", "output": "The answer is 180.", "gold": "#### 18"}),
        json!({"id": "q2", "output": "I am not sure.", "gold": 5}),
        json!({"id": "q3", "output": "So it costs $1,600.00 in all.\n#### $1,600.00", "gold": "Total 1600\n#### 1,600"}),
    ];
    let path = write_lines(dir.path(), "in.jsonl", &input);
    let out = dir.path().join("graded.jsonl");
    let summary = grade_file(Grader::Gsm8k, &path, Some(&out)).expect("grade");
    assert_eq!(summary.total, 4);
    assert_eq!(summary.correct, 2);
    assert_eq!(summary.unextracted, 1);
    assert!((summary.accuracy - 0.5).abs() < 1e-12);

    let rows = read_rows(&out);
    assert_eq!(rows.len(), input.len());
    for (row, line) in rows.iter().zip(&input) {
        for (key, value) in line.as_object().expect("object") {
            assert_eq!(&row[key], value, "field {key} kept");
        }
    }
    let verdicts: Vec<(Value, Value)> = rows
        .iter()
        .map(|r| (r["extracted"].clone(), r["correct"].clone()))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (json!("7"), json!(true)),
            (json!("180"), json!(false)),
            (Value::Null, json!(false)),
            (json!("1600"), json!(true)),
        ]
    );
    assert!(!dir.path().join("graded.jsonl.tmp").exists());
}

#[test]
fn math_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = [
        json!({"output": "so $\\boxed{\\dfrac{1}{2}}$", "gold": "0.5"}),
        json!({"output": "so $\\boxed{(3,\\pi)}$", "gold": "\\left( 3, \\frac{\\pi}{2} \\right)"}),
    ];
    let path = write_lines(dir.path(), "in.jsonl", &input);
    let summary = grade_file(Grader::Math, &path, None).expect("grade");
    assert_eq!((summary.total, summary.correct), (2, 1));
}

#[test]
fn bad_line_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("in.jsonl");
    fs::write(
        &path,
        "{\"output\": \"#### 1\", \"gold\": \"1\"}\n\n{\"output\": \"#### 2\", \"gold\": \n",
    )
    .expect("write");
    let out = dir.path().join("out.jsonl");
    let message = grade_file(Grader::Gsm8k, &path, Some(&out))
        .expect_err("bad line")
        .to_string();
    assert!(message.contains("in.jsonl:3: invalid JSON"), "{message}");
    assert!(!out.exists(), "nothing is written on error");
}

#[test]
fn missing_or_mistyped_fields_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (json!({"gold": "1"}), "missing field `output`"),
        (json!({"output": "#### 1"}), "missing field `gold`"),
        (
            json!({"output": 1, "gold": "1"}),
            "field `output` must be a string, found a number",
        ),
        (
            json!({"output": "#### 1", "gold": null}),
            "field `gold` must be a string or a number, found null",
        ),
        (
            json!({"output": "#### 1", "gold": "unknown"}),
            "field `gold` holds no gsm8k answer",
        ),
    ];
    for (i, (bad, expected)) in cases.into_iter().enumerate() {
        let good = json!({"output": "#### 1", "gold": "1"});
        let path = write_lines(dir.path(), &format!("in{i}.jsonl"), &[good, bad]);
        let message = grade_file(Grader::Gsm8k, &path, None)
            .expect_err("bad field")
            .to_string();
        assert!(
            message.contains(&format!("in{i}.jsonl:2: {expected}")),
            "{message}"
        );
    }
}

#[test]
fn missing_input_names_the_path() {
    let message = grade_file(Grader::Math, Path::new("/no/such/in.jsonl"), None)
        .expect_err("missing")
        .to_string();
    assert!(
        message.starts_with("cannot open /no/such/in.jsonl"),
        "{message}"
    );
}

#[test]
fn empty_input_has_zero_accuracy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("in.jsonl");
    fs::write(&path, "\n").expect("write");
    let summary = grade_file(Grader::Gsm8k, &path, None).expect("grade");
    assert_eq!((summary.total, summary.correct), (0, 0));
    assert_eq!(summary.accuracy, 0.0);
}
