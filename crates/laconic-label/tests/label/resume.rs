//! Resuming: a run killed mid-line (simulated by truncating the output in the middle of a
//! line) and re-run yields exactly one line per input id, with nothing lost or repeated.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use laconic_label::{LabelConfig, LabelError, LabelJob, Labeler, label_file, read_labeled};
use laconic_traces::DatasetSpec;

use crate::repo;

fn job(out: &Path, limit: usize) -> LabelJob {
    LabelJob {
        input: DatasetSpec::parse(&format!(
            "gsm8k:{}",
            repo("data/gsm8k/test.jsonl").display()
        ))
        .expect("spec"),
        out: out.to_path_buf(),
        limit: Some(limit),
        grader: None,
        progress: false,
        batch: laconic_label::run::LABEL_BATCH,
    }
}

fn labeler(ratios: &str) -> Labeler {
    Labeler::rules(LabelConfig::parse_ratios(ratios).expect("ratios"), None)
}

#[test]
fn a_run_killed_mid_line_resumes_to_one_line_per_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = labeler("0.5,0.7,0.9");

    // The reference: one uninterrupted run over 40 problems.
    let whole = dir.path().join("whole.jsonl");
    let s = label_file(&l, &job(&whole, 40)).expect("whole run");
    assert_eq!((s.inputs, s.already_done, s.labeled), (40, 0, 40));
    let reference = std::fs::read_to_string(&whole).expect("read");
    let lines: Vec<&str> = reference.lines().collect();
    assert_eq!(lines.len(), 40);

    // The "killed" run: 17 whole lines, then half of the 18th.
    let killed = dir.path().join("killed.jsonl");
    let mut text = lines[..17].join("\n");
    text.push('\n');
    text.push_str(&lines[17][..lines[17].len() / 2]);
    std::fs::write(&killed, &text).expect("write");
    assert!(
        read_labeled(&killed).is_err(),
        "the truncated line must not read"
    );

    let s = label_file(&l, &job(&killed, 40)).expect("resumed run");
    assert!(s.dropped_partial_line);
    assert_eq!((s.already_done, s.labeled), (17, 23));
    let resumed = read_labeled(&killed).expect("reads whole");
    let ids: Vec<&str> = resumed.iter().map(|r| r.id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 40);
    assert_eq!(unique.len(), 40);
    // Labeling is deterministic, so the file is the uninterrupted run's, byte for byte.
    assert_eq!(std::fs::read_to_string(&killed).expect("read"), reference);

    // Once complete, a re-run does nothing.
    let s = label_file(&l, &job(&killed, 40)).expect("third run");
    assert_eq!((s.already_done, s.labeled), (40, 0));
    assert_eq!(std::fs::read_to_string(&killed).expect("read"), reference);
}

#[test]
fn a_complete_last_line_without_newline_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = labeler("0.6");
    let out = dir.path().join("out.jsonl");
    label_file(&l, &job(&out, 5)).expect("first run");
    let text = std::fs::read_to_string(&out).expect("read");
    std::fs::write(&out, text.trim_end()).expect("write without the last newline");
    let s = label_file(&l, &job(&out, 8)).expect("second run");
    assert!(!s.dropped_partial_line);
    assert_eq!((s.already_done, s.labeled), (5, 3));
    assert_eq!(read_labeled(&out).expect("reads").len(), 8);
}

#[test]
fn an_output_written_with_other_settings_is_refused_by_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    label_file(&labeler("0.5,0.7"), &job(&out, 3)).expect("first run");
    let before = std::fs::read_to_string(&out).expect("read");
    let e = label_file(&labeler("0.5,0.8"), &job(&out, 6)).expect_err("other ratios");
    assert!(
        matches!(
            e,
            LabelError::Mismatch {
                field: "variants[].target",
                ..
            }
        ),
        "{e}"
    );
    let message = e.to_string();
    assert!(message.contains("out.jsonl:1:"), "{message}");
    assert!(
        message.contains("0.5,0.8") && message.contains("0.5,0.7"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        before,
        "nothing written"
    );

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&out)
        .expect("open");
    f.write_all(before.lines().next().expect("a line").as_bytes())
        .expect("write");
    f.write_all(b"\n").expect("write");
    let e = label_file(&labeler("0.5,0.7"), &job(&out, 6)).expect_err("duplicate id");
    assert!(
        e.to_string()
            .contains("out.jsonl:4: duplicate id `gsm8k/test/0` (first on line 1)"),
        "{e}"
    );
}
