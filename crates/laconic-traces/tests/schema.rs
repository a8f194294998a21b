//! Trace files: round trips, and every kind of bad line reported with its file and line.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use laconic_traces::schema::{append_trace, drop_incomplete_tail, read_traces, write_traces};
use laconic_traces::{Provenance, SCHEMA_VERSION, Trace, TraceError};
use serde_json::json;

fn trace(id: &str, ratio: Option<f64>) -> Trace {
    Trace {
        schema: SCHEMA_VERSION,
        id: id.into(),
        system: Some("Reason step by step, briefly.".into()),
        question: "A robe takes 2 bolts of blue fiber and half that much white fiber. \
                   How many bolts in total does it take?"
            .into(),
        reasoning: "It takes 2/2=1 bolt of white fiber.\nSo the total is 2+1=3 bolts.".into(),
        answer: "3".into(),
        gold: Some("3".into()),
        ratio,
        provenance: Some(Provenance {
            source: "gsm8k:data/gsm8k/test.jsonl:2".into(),
            teacher: Some("openai:http://localhost:8000/v1".into()),
            model: Some("Qwen2.5-7B-Instruct".into()),
            sampling: Some(json!({"temperature": 0.7, "top_p": 0.95, "seed": 1})),
            created: Some("2025-01-01T00:00:00Z".into()),
            reasoning_tokens: Some(31),
            prompt_tokens: Some(52),
            completion_tokens: Some(40),
            note: None,
        }),
    }
}

/// A minimal valid line as a JSON value, for building bad lines from.
fn minimal() -> serde_json::Value {
    json!({"schema": 1, "id": "t/0", "question": "What is 2+2?", "reasoning": "2+2=4.", "answer": "4"})
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(&path, text).expect("write");
    path
}

/// The error message of reading `path`, which must fail.
fn read_error(path: &Path) -> String {
    read_traces(path)
        .expect_err("reading must fail")
        .to_string()
}

#[test]
fn round_trip_keeps_every_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traces.jsonl");
    let mut bare = trace("b", Some(0.5));
    bare.system = None;
    bare.gold = None;
    bare.provenance = None;
    let traces = vec![trace("a", None), bare, trace("c", Some(1.0))];
    write_traces(&path, &traces).expect("write");
    assert!(!dir.path().join("traces.jsonl.tmp").exists());
    assert_eq!(read_traces(&path).expect("read"), traces);
    // One line per trace.
    assert_eq!(fs::read_to_string(&path).expect("read").lines().count(), 3);
}

#[test]
fn write_replaces_the_old_file_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traces.jsonl");
    write_traces(&path, &[trace("a", None), trace("b", None)]).expect("write");
    write_traces(&path, &[trace("c", None)]).expect("write");
    let ids: Vec<String> = read_traces(&path)
        .expect("read")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec!["c"]);
}

#[test]
fn write_refuses_invalid_traces_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("traces.jsonl");
    let err =
        write_traces(&path, &[trace("a", None), trace("b", Some(1.5))]).expect_err("ratio 1.5");
    assert!(
        matches!(err, TraceError::InvalidTrace { ref id, .. } if id == "b"),
        "{err}"
    );
    assert!(err.to_string().contains("ratio"), "{err}");
    let err = write_traces(&path, &[trace("a", None), trace("a", None)]).expect_err("duplicate");
    assert!(err.to_string().contains("duplicate"), "{err}");
    assert!(!path.exists());
}

#[test]
fn missing_schema_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut line = minimal();
    line.as_object_mut().expect("object").remove("schema");
    let path = write_lines(
        dir.path(),
        "t.jsonl",
        &[minimal().to_string(), line.to_string()],
    );
    let message = read_error(&path);
    assert!(
        message.ends_with("t.jsonl:2: missing field `schema`"),
        "{message}"
    );
}

#[test]
fn newer_schema_is_refused_by_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut line = minimal();
    line["schema"] = json!(99);
    // A newer version may bring fields we do not know: the version is what gets reported.
    line["thoughts_v99"] = json!("...");
    let path = write_lines(dir.path(), "t.jsonl", &[line.to_string()]);
    let message = read_error(&path);
    assert!(
        message.contains("t.jsonl:1: schema version 99 is newer"),
        "{message}"
    );

    line["schema"] = json!("1");
    let path = write_lines(dir.path(), "s.jsonl", &[line.to_string()]);
    let message = read_error(&path);
    assert!(
        message.contains("s.jsonl:1: field `schema` must be a positive integer"),
        "{message}"
    );
}

#[test]
fn unknown_field_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut line = minimal();
    line["anwser"] = json!("4");
    let path = write_lines(
        dir.path(),
        "t.jsonl",
        &[minimal().to_string(), line.to_string()],
    );
    let message = read_error(&path);
    // Line 1 and line 2 share an id, but the unknown field on line 2 is found first.
    assert!(
        message.contains("t.jsonl:2: unknown field `anwser`"),
        "{message}"
    );

    let mut line = minimal();
    line["provenance"] = json!({"source": "x", "teachr": "y"});
    let path = write_lines(dir.path(), "p.jsonl", &[line.to_string()]);
    let message = read_error(&path);
    assert!(
        message.contains("p.jsonl:1: unknown field `teachr`"),
        "{message}"
    );
}

#[test]
fn malformed_line_3_is_reported_as_line_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut second = minimal();
    second["id"] = json!("t/1");
    let path = write_lines(
        dir.path(),
        "t.jsonl",
        &[
            minimal().to_string(),
            second.to_string(),
            "{\"schema\": 1, \"id\": \"t/2\", question: oops}".into(),
        ],
    );
    let message = read_error(&path);
    assert!(message.contains("t.jsonl:3: invalid JSON"), "{message}");
}

#[test]
fn blank_lines_count_in_line_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_lines(
        dir.path(),
        "t.jsonl",
        &[minimal().to_string(), String::new(), "[1, 2]".into()],
    );
    let message = read_error(&path);
    assert!(
        message.contains("t.jsonl:3: expected a JSON object, found an array"),
        "{message}"
    );
}

#[test]
fn bad_values_and_duplicate_ids_name_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bad_ratio = minimal();
    bad_ratio["ratio"] = json!(0.0);
    let path = write_lines(dir.path(), "r.jsonl", &[bad_ratio.to_string()]);
    assert!(read_error(&path).contains("r.jsonl:1: `ratio` must be in (0, 1]"));

    let mut empty_question = minimal();
    empty_question["question"] = json!("  ");
    let path = write_lines(dir.path(), "q.jsonl", &[empty_question.to_string()]);
    assert!(read_error(&path).contains("q.jsonl:1: empty `question`"));

    let path = write_lines(
        dir.path(),
        "d.jsonl",
        &[minimal().to_string(), minimal().to_string()],
    );
    let message = read_error(&path);
    assert!(
        message.contains("d.jsonl:2: duplicate id `t/0` (first on line 1)"),
        "{message}"
    );
}

#[test]
fn truncated_last_line_is_reported_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.jsonl");
    let whole = serde_json::to_string(&trace("a", None)).expect("json");
    let second = serde_json::to_string(&trace("b", None)).expect("json");
    fs::write(&path, format!("{whole}\n{}", &second[..second.len() / 2])).expect("write");
    let message = read_error(&path);
    assert!(message.contains("t.jsonl:2: invalid JSON"), "{message}");
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn missing_file_names_the_path() {
    let message = read_error(Path::new("/no/such/dir/traces.jsonl"));
    assert!(
        message.starts_with("cannot open /no/such/dir/traces.jsonl: "),
        "{message}"
    );
}

#[test]
fn appends_are_whole_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.jsonl");
    let open = || {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .expect("open")
    };
    let mut file = open();
    append_trace(&mut file, &trace("a", None)).expect("append");
    append_trace(&mut file, &trace("b", Some(0.5))).expect("append");
    drop(file);
    let mut file = open();
    append_trace(&mut file, &trace("c", None)).expect("append");
    let ids: Vec<String> = read_traces(&path)
        .expect("read")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec!["a", "b", "c"]);

    let err = append_trace(&mut file, &trace("d", Some(2.0))).expect_err("bad ratio");
    assert!(err.to_string().contains("trace `d`"), "{err}");
    assert_eq!(read_traces(&path).expect("read").len(), 3);
}

/// A run killed in the middle of an append leaves a truncated last line. Appending after it
/// starts a new line, so the new trace stays whole; reading reports the truncated line by
/// number; `drop_incomplete_tail` (run before resuming) removes it.
#[test]
fn append_after_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.jsonl");
    let whole = serde_json::to_string(&trace("a", None)).expect("json");
    let cut = serde_json::to_string(&trace("b", None)).expect("json");
    let cut = &cut[..cut.len() / 3];
    fs::write(&path, format!("{whole}\n{cut}")).expect("write");

    // Appending right away: the truncated line is reported, the new trace is intact.
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .expect("open");
    append_trace(&mut file, &trace("c", None)).expect("append");
    let message = read_error(&path);
    assert!(message.contains("t.jsonl:2: invalid JSON"), "{message}");
    let text = fs::read_to_string(&path).expect("read");
    let last = text.lines().last().expect("lines");
    assert_eq!(
        serde_json::from_str::<Trace>(last).expect("whole line"),
        trace("c", None)
    );

    // The intended way: drop the truncated tail, then append.
    fs::write(&path, format!("{whole}\n{cut}")).expect("write");
    assert!(drop_incomplete_tail(&path).expect("repair"));
    assert!(!drop_incomplete_tail(&path).expect("nothing left to repair"));
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .expect("open");
    append_trace(&mut file, &trace("c", None)).expect("append");
    let ids: Vec<String> = read_traces(&path)
        .expect("read")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec!["a", "c"]);
}

#[test]
fn drop_incomplete_tail_keeps_a_complete_last_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.jsonl");
    let whole = serde_json::to_string(&trace("a", None)).expect("json");
    // A complete line without a newline (another tool wrote it) is not dropped.
    fs::write(&path, &whole).expect("write");
    assert!(!drop_incomplete_tail(&path).expect("check"));
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .expect("open");
    append_trace(&mut file, &trace("b", None)).expect("append");
    assert_eq!(read_traces(&path).expect("read").len(), 2);

    // A file that is one truncated line becomes empty.
    fs::write(&path, &whole[..10]).expect("write");
    assert!(drop_incomplete_tail(&path).expect("repair"));
    assert_eq!(fs::metadata(&path).expect("stat").len(), 0);

    // An empty file has nothing to drop.
    assert!(!drop_incomplete_tail(&path).expect("check"));
}

#[test]
fn write_only_handle_still_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.jsonl");
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .expect("open");
    append_trace(&mut file, &trace("a", None)).expect("append");
    append_trace(&mut file, &trace("b", None)).expect("append");
    file.flush().expect("flush");
    assert_eq!(read_traces(&path).expect("read").len(), 2);
}

#[test]
fn prompt_and_completion_of_a_compressed_variant() {
    let t = trace("a", Some(0.75));
    assert_eq!(t.prompt(), format!("{}\n[compress 0.75]", t.question));
    let completion = t.completion();
    let (reasoning, last) = completion.rsplit_once('\n').expect("lines");
    assert_eq!(reasoning, t.reasoning);
    assert_eq!(last, "#### 3");
}
