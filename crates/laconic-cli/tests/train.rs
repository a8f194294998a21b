//! `laconic train`, `eval` and `grade` end to end: a run killed with SIGKILL and resumed
//! ends with the same weights, bit for bit, as an uninterrupted run; recipe errors name the
//! key and line; graded outputs keep their order.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../laconic-infer/tests/fixtures/llama")
}

fn laconic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_laconic"))
        .args(args)
        .output()
        .expect("run laconic")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Short hand-written arithmetic traces (test data, not from a dataset).
fn write_traces(dir: &Path) -> PathBuf {
    let path = dir.join("traces.jsonl");
    let mut text = String::new();
    for i in 0..40 {
        let (a, b) = (i % 9 + 1, i % 4 + 3);
        let line = serde_json::json!({
            "schema": 1, "id": format!("hand/{i}"),
            "question": format!("Tom has {a} apples and buys {b} more. How many now?"),
            "reasoning": format!("{a} + {b} = {}.", a + b),
            "answer": format!("{}", a + b),
        });
        text.push_str(&format!("{line}\n"));
    }
    std::fs::write(&path, text).expect("write traces");
    path
}

fn write_recipe(dir: &Path, steps: usize) -> PathBuf {
    let traces = write_traces(dir);
    let text = format!(
        r#"name = "tiny"
method = "lora"
run_dir = "{run}"
[model]
path = "{model}"
[data]
train = "traces:{traces}"
valid_size = 4
max_seq_len = 128
[lora]
rank = 4
alpha = 8
dropout = 0.1
targets = ["q_proj", "v_proj", "down_proj"]
[optim]
lr = 5e-3
warmup_steps = 3
[train]
seed = 11
steps = {steps}
batch_size = 2
grad_accum = 2
checkpoint_every = 2
keep_checkpoints = 3
"#,
        run = dir.join("run").display(),
        model = fixture().display(),
        traces = traces.display(),
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).expect("write recipe");
    path
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_weights() {
    const STEPS: usize = 160;
    let whole = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(whole.path(), STEPS);
    let o = laconic(&["train", recipe.to_str().expect("utf8"), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let killed = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(killed.path(), STEPS);
    let mut child = Command::new(env!("CARGO_BIN_EXE_laconic"))
        .args(["train", recipe.to_str().expect("utf8"), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill as soon as a few checkpoints exist: mid-run, maybe mid-write.
    let latest = killed.path().join("run/checkpoints/latest");
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(name) = std::fs::read_to_string(&latest)
            && name.trim() >= "step-000010"
        {
            seen += 1;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let still_running = child.try_wait().expect("try_wait").is_none();
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(seen > 0 && still_running, "the run must be killed mid-way");
    let at_kill = std::fs::read_to_string(&latest).expect("latest");
    assert!(at_kill.trim() < "step-000160", "killed at {at_kill}");

    let o = laconic(&[
        "train",
        recipe.to_str().expect("utf8"),
        "--quiet",
        "--resume",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for file in ["trainable.safetensors", "optimizer.safetensors"] {
        let read = |d: &Path| {
            std::fs::read(d.join("run/checkpoints/step-000160").join(file)).expect("checkpoint")
        };
        assert!(
            read(whole.path()) == read(killed.path()),
            "{file}: resumed run differs from the uninterrupted one (killed at {at_kill})"
        );
    }
    // The metrics file has each step once.
    let metrics = std::fs::read_to_string(killed.path().join("run/metrics.jsonl")).expect("m");
    let steps: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(steps, (1..=STEPS as u64).collect::<Vec<_>>());
}

#[test]
fn recipe_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(dir.path(), 4);
    let text = std::fs::read_to_string(&recipe).expect("read");
    std::fs::write(&recipe, text.replace("rank = 4", "rank = 4\nrnak = 2")).expect("write");
    let o = laconic(&["train", recipe.to_str().expect("utf8")]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("rnak") && err.contains("line 12"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let o = laconic(&[
        "train",
        dir.path().join("missing.toml").to_str().expect("utf8"),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("missing.toml"));

    // --resume on a run without checkpoints is refused, and so is starting over one with.
    let recipe = write_recipe(dir.path(), 2);
    let o = laconic(&[
        "train",
        recipe.to_str().expect("utf8"),
        "--resume",
        "--quiet",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("no checkpoint"),
        "{}",
        stderr(&o)
    );
    let o = laconic(&["train", recipe.to_str().expect("utf8"), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = laconic(&["train", recipe.to_str().expect("utf8"), "--quiet"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--resume"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn grade_keeps_order_and_reports_accuracy() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Real GSM8K gold solutions, with outputs a model might write (two right, one wrong,
    // one without an answer).
    let test = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/gsm8k/test.jsonl"),
    )
    .expect("gsm8k");
    let golds: Vec<String> = test
        .lines()
        .take(4)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["answer"]
                .as_str()
                .expect("answer")
                .to_string()
        })
        .collect();
    let finals: Vec<String> = golds
        .iter()
        .map(|g| g.rsplit("#### ").next().expect("####").trim().to_string())
        .collect();
    let outputs = [
        format!("Let me think. The answer is ${}.", finals[0]),
        format!("So she pays {} dollars.\n#### {}", finals[1], finals[1]),
        format!("The answer is {}1.", finals[2]),
        "I am not sure.".to_string(),
    ];
    let input = dir.path().join("outputs.jsonl");
    let mut text = String::new();
    for (i, (o, g)) in outputs.iter().zip(&golds).enumerate() {
        text.push_str(&format!(
            "{}\n",
            serde_json::json!({"n": i, "output": o, "gold": g})
        ));
    }
    std::fs::write(&input, text).expect("write");
    let out = dir.path().join("graded.jsonl");
    let o = laconic(&[
        "grade",
        "--dataset",
        "gsm8k",
        "--in",
        input.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("summary json");
    assert_eq!(summary["correct"], 2);
    assert_eq!(summary["total"], 4);
    let graded: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("graded")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    let order: Vec<i64> = graded.iter().map(|v| v["n"].as_i64().expect("n")).collect();
    assert_eq!(order, vec![0, 1, 2, 3]);
    let correct: Vec<bool> = graded
        .iter()
        .map(|v| v["correct"].as_bool().expect("b"))
        .collect();
    assert_eq!(correct, vec![true, true, false, false]);
    assert!(graded[3]["extracted"].is_null());

    // A malformed line is an error naming the file and line; nothing is written.
    std::fs::write(&input, "{\"output\": \"1\", \"gold\": \"1\"}\n{broken\n").expect("write");
    let out2 = dir.path().join("graded2.jsonl");
    let o = laconic(&[
        "grade",
        "--dataset",
        "gsm8k",
        "--in",
        input.to_str().expect("utf8"),
        "--out",
        out2.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("outputs.jsonl:2"), "{}", stderr(&o));
    assert!(!out2.exists());
}

#[test]
fn eval_answers_and_grades_a_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("eval.jsonl");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/gsm8k/test.jsonl");
    let spec = format!("gsm8k:{}", data.display());
    let o = laconic(&[
        "eval",
        "--model",
        fixture().to_str().expect("utf8"),
        "--dataset",
        &spec,
        "--limit",
        "3",
        "--max-new-tokens",
        "8",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("summary");
    assert_eq!(s["problems"], 3);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("eval out")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for (l, want) in lines.iter().zip(["18", "3", "70000"]) {
        // Gold comes from the dataset; the tiny random model's output is whatever it is.
        assert_eq!(l["gold"], want);
        assert!(l["completion_tokens"].as_u64().expect("tokens") <= 8);
        assert!(l["output"].is_string() && l["correct"].is_boolean());
    }
    let o = laconic(&[
        "eval",
        "--model",
        fixture().to_str().expect("utf8"),
        "--dataset",
        "gsm9k:x",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("gsm9k"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_interrupted_eval_resumes_from_its_saved_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = "procedural:count=6,seed=5,difficulty=1,distractors=false";
    let eval = |out: &Path, max_new: &str| {
        laconic(&[
            "eval",
            "--model",
            fixture().to_str().expect("utf8"),
            "--dataset",
            spec,
            "--limit",
            "6",
            "--max-new-tokens",
            max_new,
            "--batch",
            "2",
            "--out",
            out.to_str().expect("utf8"),
        ])
    };
    let read = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect()
    };
    // The reference: one uninterrupted run.
    let whole = dir.path().join("whole.jsonl");
    let o = eval(&whole, "8");
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("summary");
    let expected = read(&whole);
    assert_eq!(expected.len(), 6);
    assert!(!dir.path().join("whole.jsonl.partial").exists());

    // A run whose final write fails (its output path is a directory) keeps every answer it
    // made in OUT.partial, after a header line.
    let out = dir.path().join("eval.jsonl");
    std::fs::create_dir(&out).expect("mkdir");
    let o = eval(&out, "8");
    assert!(!o.status.success(), "writing over a directory must fail");
    let partial = dir.path().join("eval.jsonl.partial");
    let saved = read(&partial);
    assert_eq!(saved.len(), 7, "a header and six answers");
    std::fs::remove_dir(&out).expect("rmdir");

    // Keep the header and three answers (one marked, to see that it is reused, not redone),
    // plus half a line, as a kill in the middle of a write leaves.
    let mut kept: Vec<serde_json::Value> = saved[..4].to_vec();
    kept[1]["result"]["output"] = "SAVED BEFORE THE INTERRUPTION".into();
    let marked = kept[1]["index"].as_u64().expect("index") as usize;
    let mut text: String = kept.iter().map(|v| format!("{v}\n")).collect();
    text.push_str(&saved[4].to_string()[..20]);
    std::fs::write(&partial, text).expect("write");

    // Other settings: a clear error that names the file and what differs; nothing touched.
    let before = std::fs::read(&partial).expect("partial");
    let o = eval(&out, "7");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("eval.jsonl.partial") && err.contains("max_new_tokens differs"),
        "{err}"
    );
    assert!(
        std::fs::read(&partial).expect("partial") == before,
        "a partial file made with other settings is left as it was"
    );
    assert!(!out.exists());

    // The same settings resume: three answers read back, three decoded, all in order.
    let o = eval(&out, "8");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !partial.exists(),
        "the partial file goes once the output is written"
    );
    let resumed = read(&out);
    assert_eq!(resumed.len(), 6);
    for (i, (r, e)) in resumed.iter().zip(&expected).enumerate() {
        if i == marked {
            assert_eq!(r["output"], "SAVED BEFORE THE INTERRUPTION");
            assert_eq!(r["id"], e["id"]);
        } else {
            // Everything but the time it took.
            let (mut r, mut e) = (r.clone(), e.clone());
            r["decode_seconds"] = 0.into();
            e["decode_seconds"] = 0.into();
            assert_eq!(r, e, "problem {i}");
        }
    }
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("summary");
    for key in [
        "problems",
        "correct",
        "mean_reasoning_tokens",
        "mean_peak_kv_bytes",
    ] {
        assert_eq!(s[key], summary[key], "{key}");
    }
}
