//! `laconic run recipes/quickstart.toml --size tiny`: the whole pipeline (distill, label, three
//! students, export, evaluation with the full and a pruned cache, results) on the 2-layer
//! fixture model, then a re-run that skips every stage, then changed settings and a removed
//! output, which are refused with the stage named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn laconic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_laconic"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("laconic runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_tiny_pipeline_runs_to_its_results_table_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let run_s = run.to_str().expect("utf-8 path");
    let args = [
        "run",
        "recipes/quickstart.toml",
        "--size",
        "tiny",
        "--run-dir",
        run_s,
    ];
    let o = laconic(&args);
    assert!(o.status.success(), "pipeline failed:\n{}", stderr(&o));

    // Every stage ran and left its output.
    for p in [
        "distill/traces.jsonl",
        "label/compressed.jsonl",
        "label/report.png",
        "students/a-full/checkpoints/latest",
        "students/c-grpo/metrics.jsonl",
        "exports/b-merged/config.json",
        "exports/c-grpo.q8_0.gguf",
        "eval/c-grpo.rkv.jsonl",
        "accuracy_vs_length.png",
        "grpo_lengths.png",
        "results.md",
    ] {
        assert!(run.join(p).exists(), "{p} missing:\n{}", stderr(&o));
    }
    // The compressed variants really are shorter than the traces they came from.
    let traces = laconic_traces::schema::read_traces(&run.join("label/compressed.jsonl"))
        .expect("variants read");
    let original = traces
        .iter()
        .find(|t| t.id.ends_with("@1"))
        .expect("ratio 1");
    let half = traces
        .iter()
        .find(|t| t.id == original.id.replace("@1", "@0.5"))
        .expect("ratio 0.5");
    assert!(half.reasoning.len() < original.reasoning.len());

    // The table: three students, each with the full cache and rkv, on the same 8 problems,
    // and student c with rkv at the sweep's two larger shares of the cache.
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("a JSON list");
    assert_eq!(rows.len(), 8, "{rows:?}");
    for r in &rows {
        for key in [
            "stage",
            "kv_policy",
            "kv_budget",
            "n",
            "accuracy",
            "accuracy_ci95",
            "mean_reasoning_tokens",
            "peak_kv_bytes",
            "decode_tok_s",
        ] {
            assert!(r.get(key).is_some(), "row without {key}: {r}");
        }
        assert_eq!(r["n"], 8);
        let acc = r["accuracy"].as_f64().expect("number");
        let ci = r["accuracy_ci95"].as_array().expect("interval");
        assert!(ci[0].as_f64().expect("lo") <= acc && acc <= ci[1].as_f64().expect("hi"));
    }
    for student in ["a-full", "b-compressed", "c-grpo"] {
        let row = |policy: &str| {
            rows.iter()
                .find(|r| r["stage"] == student && r["kv_policy"] == policy)
                .unwrap_or_else(|| panic!("no row {student}/{policy}"))
        };
        let (full, rkv) = (row("full"), row("rkv"));
        assert!(full["kv_budget"].is_null());
        let budget = rkv["kv_budget"].as_u64().expect("rkv has a budget");
        assert!(budget >= 8);
        // The pruned cache holds well under half of the full one's bytes.
        let (fb, rb) = (
            full["peak_kv_bytes"].as_f64().expect("bytes"),
            rkv["peak_kv_bytes"].as_f64().expect("bytes"),
        );
        assert!(
            rb > 0.0 && rb < 0.5 * fb,
            "{student}: rkv {rb} vs full {fb}"
        );
    }
    // The sweep: c's pruned budgets grow with the share of the cache (a quarter, half, 3/4).
    let budgets: Vec<u64> = rows
        .iter()
        .filter(|r| r["stage"] == "c-grpo" && r["kv_policy"] == "rkv")
        .map(|r| r["kv_budget"].as_u64().expect("budget"))
        .collect();
    assert_eq!(budgets.len(), 3, "{rows:?}");
    assert!(
        budgets[0] < budgets[1] && budgets[1] < budgets[2],
        "{budgets:?}"
    );
    assert!(run.join("eval/c-grpo.rkv-50.jsonl").exists());
    // Every evaluated answer says why it ended (the tiny model runs into its 16-token cap).
    let eval = std::fs::read_to_string(run.join("eval/a-full.full.jsonl")).expect("eval file");
    for line in eval.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let why = v["finish_reason"].as_str().expect("finish_reason");
        let tokens = v["completion_tokens"].as_u64().expect("tokens");
        // A cut at the cap used all 16 tokens; an answer shorter than that stopped by itself.
        assert!(
            (why == "length" && tokens == 16) || (why == "stop" && tokens <= 16),
            "{v}"
        );
    }
    let md = std::fs::read_to_string(run.join("results.md")).expect("results.md");
    assert!(
        md.contains("| a-full | full |") && md.contains("McNemar"),
        "{md}"
    );
    assert!(md.contains("a-full/full → c-grpo/full"), "{md}");
    assert!(
        md.contains("c-grpo/full → c-grpo/rkv@75%") && md.contains("Where it breaks"),
        "{md}"
    );

    // Running again skips every stage and writes the same table.
    let before = std::fs::read(run.join("results.json")).expect("read");
    let o = laconic(&args);
    assert!(o.status.success(), "re-run failed:\n{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("skipped").count(), 17, "{err}");
    assert_eq!(
        std::fs::read(run.join("results.json")).expect("read"),
        before
    );

    // Changed settings for a finished stage are refused, naming it; nothing is removed.
    let text = std::fs::read_to_string(root().join("recipes/quickstart.toml")).expect("read");
    let changed = dir.path().join("changed.toml");
    std::fs::write(
        &changed,
        text.replace(
            "train = { steps = 2, batch_size = 2, checkpoint_every = 1 } }\ngrpo",
            "train = { steps = 3, batch_size = 2, checkpoint_every = 1 } }\ngrpo",
        ),
    )
    .expect("write");
    let o = laconic(&[
        "run",
        changed.to_str().expect("utf-8"),
        "--size",
        "tiny",
        "--run-dir",
        run_s,
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("stage train-a-full finished before") && err.contains("inputs changed"),
        "{err}"
    );
    assert!(run.join("students/a-full/checkpoints/latest").exists());

    // A removed output of a finished stage is named too.
    std::fs::remove_file(run.join("label/compressed.jsonl")).expect("rm");
    let o = laconic(&args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("stage label finished before") && err.contains("compressed.jsonl"),
        "{err}"
    );
}

#[test]
fn a_bad_pipeline_file_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(root().join("recipes/quickstart.toml")).expect("read");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("budgets = [64, 128]", "budgets = [0, 128]"),
    )
    .expect("w");
    let o = laconic(&["run", bad.to_str().expect("utf-8")]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("bad.toml") && err.contains("budget bucket of 0"),
        "{err}"
    );
    // A reward (grader) that is not defined: refused before any stage runs.
    std::fs::write(
        &bad,
        text.replace("grader = \"gsm8k\"", "grader = \"bleu\""),
    )
    .expect("w");
    let run = dir.path().join("run");
    let o = laconic(&[
        "run",
        bad.to_str().expect("utf-8"),
        "--run-dir",
        run.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("c-grpo") && err.contains("grpo.grader"),
        "{err}"
    );
    assert!(!run.join("distill").exists(), "nothing ran");
    let o = laconic(&["run", "recipes/quickstart.toml", "--size", "huge"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no size 'huge'"), "{}", stderr(&o));
    let o = laconic(&["run", "no/such/pipeline.toml"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no/such/pipeline.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn every_shipped_pipeline_checks_out_in_a_dry_run() {
    for file in [
        "recipes/quickstart.toml",
        "recipes/smollm2-135m-gsm8k-concise.toml",
        "recipes/qwen2.5-1.5b-gsm8k-concise.toml",
        "recipes/qwen2.5-7b-concise.toml",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        let o = laconic(&[
            "run",
            file,
            "--dry-run",
            "--run-dir",
            run.to_str().expect("utf-8"),
        ]);
        let err = stderr(&o);
        assert!(o.status.success(), "{file}:\n{err}");
        assert_eq!(err.matches("\n  laconic ").count(), 17, "{file}:\n{err}");
        assert!(
            err.contains("--quantize q8_0") && err.contains("--kv-policy rkv"),
            "{err}"
        );
        // The students' recipes are written and read back as recipes.
        for student in ["a-full", "b-compressed", "c-grpo"] {
            let recipe = run.join("recipes").join(format!("{student}.toml"));
            laconic_train::Recipe::load(&recipe)
                .unwrap_or_else(|e| panic!("{file}: {}: {e}", recipe.display()));
        }
        // Nothing ran.
        assert!(!run.join("distill").exists() && !run.join("results.json").exists());
    }
}

#[test]
fn the_gsm8k_pipeline_holds_together_on_real_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    let o = laconic(&[
        "run",
        "recipes/smollm2-135m-gsm8k-concise.toml",
        "--size",
        "tiny",
        "--run-dir",
        run.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let traces =
        laconic_traces::schema::read_traces(&run.join("distill/traces.jsonl")).expect("traces");
    assert_eq!(traces.len(), 12);
    assert!(traces[0].id.starts_with("gsm8k/train/0"));
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("a JSON list");
    // Three students with the full cache and rkv, and student c at the sweep's two shares.
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r["n"] == 6));
}
