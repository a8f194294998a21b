//! The `laconic` binary end to end, on the tiny fixture models of `laconic-infer`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::prelude::*;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../laconic-infer/tests/fixtures")
}

fn laconic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_laconic"))
        .args(args)
        .output()
        .expect("run laconic")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn reference(family: &str) -> Value {
    let p = fixtures().join(family).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("reference")).expect("json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// A failing run: non-zero exit, an `error:` line naming `needle`, no panic.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(
        err.starts_with("error:") && err.contains(needle),
        "stderr lacks {needle:?}: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
}

#[test]
fn help_has_examples() {
    for sub in [
        "generate",
        "score",
        "inspect",
        "bench",
        "kv-eval",
        "train",
        "eval",
        "grade",
        "serve",
        "distill",
        "label",
        "label-classifier",
    ] {
        let o = laconic(&[sub, "--help"]);
        assert!(o.status.success());
        assert!(
            stdout(&o).contains("Example"),
            "{sub} --help lacks examples"
        );
    }
}

#[test]
fn generate_streams_the_reference_greedy_continuation() {
    let r = reference("llama");
    let g = &r["greedy"];
    let model = fixtures().join("llama/model-q8_0.gguf");
    let n = g["max_new_tokens"].as_u64().expect("n").to_string();
    let o = laconic(&[
        "generate",
        "--model",
        model.to_str().expect("path"),
        "--prompt",
        g["prompt"].as_str().expect("prompt"),
        "--max-new-tokens",
        &n,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = laconic_infer::load(&model, &Device::flex()).expect("load");
    let mut expected_ids = ids(&g["gguf-q8_0"]);
    if expected_ids
        .last()
        .is_some_and(|t| m.config().eos_token_ids.contains(t))
    {
        expected_ids.pop();
    }
    let expected = m.tokenizer.decode(&expected_ids, true).expect("decode");
    assert_eq!(stdout(&o).trim_end_matches('\n'), expected);
}

#[test]
fn score_json_matches_the_reference() {
    let r = reference("qwen3");
    let model = fixtures().join("qwen3");
    let o = laconic(&[
        "score",
        "--model",
        model.to_str().expect("path"),
        "--text",
        r["text"].as_str().expect("text"),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Value> = serde_json::from_str(&stdout(&o)).expect("one JSON array");
    let expected_ids = ids(&r["token_ids"]);
    let expected_lp = r["logprobs"]["hf"].as_array().expect("logprobs");
    assert_eq!(rows.len(), expected_ids.len());
    assert!(
        rows[0]["logprob"].is_null(),
        "the first token has no log-probability"
    );
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["id"].as_u64(), Some(expected_ids[i] as u64));
        assert!(row["token"].is_string());
        if i > 0 {
            let d = (row["logprob"].as_f64().expect("logprob")
                - expected_lp[i].as_f64().expect("ref"))
            .abs();
            assert!(d < 1e-4, "token {i}: {d}");
        }
    }
    // The text form prints a perplexity line.
    let o = laconic(&[
        "score",
        "--model",
        model.to_str().expect("path"),
        "--text",
        "12 + 15 = 27",
    ]);
    assert!(
        o.status.success() && stdout(&o).contains("perplexity"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn inspect_describes_the_checkpoint() {
    let o = laconic(&[
        "inspect",
        "--model",
        fixtures()
            .join("qwen3/model-q4_0.gguf")
            .to_str()
            .expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for line in [
        "architecture:      qwen3",
        "heads:             4",
        "kv heads:          2",
        "head dim:          32",
        "vocabulary:        447",
        "context length:    256",
        "chat template:     yes",
        "Q4_0",
        "GGUF v3",
    ] {
        assert!(out.contains(line), "inspect lacks {line:?}:\n{out}");
    }
    let o = laconic(&[
        "inspect",
        "--model",
        fixtures()
            .join("llama/hf-bf16-sharded")
            .to_str()
            .expect("path"),
    ]);
    assert!(
        o.status.success() && stdout(&o).contains("BF16") && stdout(&o).contains("llama"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn chat_renders_the_template() {
    let model = fixtures().join("qwen2");
    let o = laconic(&[
        "generate",
        "--model",
        model.to_str().expect("path"),
        "--chat",
        "--prompt",
        "What is 12 + 15?",
        "--max-new-tokens",
        "4",
        "--verbose",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("prompt tokens"), "{}", stderr(&o));
}

/// `laconic generate --model MODEL --prompt hi EXTRA...`.
fn generate_hi(model: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().expect("path"),
        "--prompt",
        "hi",
    ];
    args.extend_from_slice(extra);
    laconic(&args)
}

#[test]
fn bad_input_fails_cleanly() {
    let o = laconic(&[
        "generate",
        "--model",
        "/no/such/model.gguf",
        "--prompt",
        "hi",
    ]);
    assert_clean_failure(&o, "/no/such/model.gguf");
    let tmp = std::env::temp_dir();
    let o = laconic(&["inspect", "--model", tmp.to_str().expect("path")]);
    assert_clean_failure(&o, "config.json");
    let model = fixtures().join("llama");
    let long = "one two three ".repeat(200);
    let o = laconic(&[
        "score",
        "--model",
        model.to_str().expect("path"),
        "--text",
        &long,
    ]);
    assert_clean_failure(&o, "context length");
    let o = laconic(&[
        "generate",
        "--model",
        model.to_str().expect("path"),
        "--prompt",
        &long,
    ]);
    assert_clean_failure(&o, "context length");
    let o = generate_hi(&model, &["--top-p", "0"]);
    assert_clean_failure(&o, "top-p");
    let o = generate_hi(&model, &["--device", "cuda"]);
    assert_clean_failure(&o, "--features cuda");
    let o = generate_hi(&model, &["--weights", "int3"]);
    assert_clean_failure(&o, "--weights 'int3'");
    let o = generate_hi(
        &fixtures().join("llama/model-f32.gguf"),
        &["--chat", "--system", "x"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn kv_eval_compares_policies_with_the_full_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Real text: GSM8K-style records as JSONL (question + answer concatenated).
    let data = dir.path().join("text.jsonl");
    let record = |q: &str, a: &str| serde_json::json!({"question": q, "answer": a}).to_string();
    let lines = [
        record(
            "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell?",
            "In May she sold 48/2 = 24 clips. Altogether 48+24 = 72 clips.\n#### 72",
        ),
        record(
            "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
            "Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10.\n#### 10",
        ),
    ];
    std::fs::write(&data, [&lines[..], &lines[..]].concat().join("\n")).expect("write");
    let (json, svg) = (dir.path().join("kv.json"), dir.path().join("kv.svg"));
    let model = fixtures().join("llama");
    let o = laconic(&[
        "kv-eval",
        "--model",
        model.to_str().expect("path"),
        "--data",
        data.to_str().expect("path"),
        "--tokens",
        "96",
        "--prompt-tokens",
        "48",
        "--greedy-tokens",
        "24",
        "--segments",
        "2",
        "--policies",
        "window,h2o,snapkv",
        "--budgets",
        "16,200",
        "--json",
        json.to_str().expect("path"),
        "--plot",
        svg.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let rows = v["results"].as_array().expect("results");
    assert_eq!(rows.len(), 7, "full + 3 policies x 2 budgets");
    // Two spans, each with its own greedy continuation of up to 24 tokens, pooled.
    assert_eq!(v["segments"], 2);
    let greedy = v["greedy_tokens"].as_u64().expect("greedy_tokens");
    assert!(greedy > 24 && greedy <= 48, "{greedy}");
    let get = |p: &str, b: u64| {
        rows.iter()
            .find(|r| r["policy"] == p && r["budget"] == b)
            .expect("row")
    };
    let full = get("full", 0);
    assert_eq!(
        full["greedy_agreement"], 1.0,
        "the full cache agrees with itself"
    );
    let full_ppl = full["perplexity"].as_f64().expect("ppl");
    assert!(full_ppl.is_finite() && full_ppl > 1.0);
    for p in ["window", "h2o", "snapkv"] {
        // A budget beyond the text keeps everything: exactly the full cache.
        let big = get(p, 200);
        assert!(
            (big["perplexity"].as_f64().expect("ppl") - full_ppl).abs() < 1e-3 * full_ppl,
            "{p}: {big}"
        );
        assert_eq!(big["greedy_agreement"], 1.0, "{p}: {big}");
        // A small budget evicts, and the cache it may hold is smaller.
        let small = get(p, 16);
        assert!(
            small["max_cache_bytes"].as_u64() < big["max_cache_bytes"].as_u64(),
            "{p}: {small}"
        );
    }
    let plot = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        plot.starts_with("<svg") && ["h2o", "window", "snapkv"].iter().all(|p| plot.contains(p))
    );
    // Bad input: a missing file, a text too short for the request, and a prompt that leaves
    // no tokens to measure the perplexity on.
    let kv_eval = |data: &str, extra: &[&str]| {
        let mut args = vec![
            "kv-eval",
            "--model",
            model.to_str().expect("path"),
            "--data",
            data,
        ];
        args.extend_from_slice(extra);
        laconic(&args)
    };
    assert_clean_failure(&kv_eval("/no/such.jsonl", &[]), "/no/such.jsonl");
    let data = data.to_str().expect("path");
    let o = kv_eval(
        data,
        &[
            "--tokens",
            "250",
            "--prompt-tokens",
            "48",
            "--greedy-tokens",
            "24",
        ],
    );
    assert_clean_failure(&o, "has only");
    let o = kv_eval(data, &["--kv-lambda", "1.5"]);
    assert_clean_failure(&o, "--kv-lambda must lie in [0, 1]");
    let o = kv_eval(data, &["--segments", "0"]);
    assert_clean_failure(&o, "--segments must be at least 1");
    let o = kv_eval(data, &["--tokens", "40", "--prompt-tokens", "48"]);
    assert_clean_failure(&o, "--tokens (40) larger than --prompt-tokens (48)");
}

#[test]
fn budget_appends_its_control_string_to_the_question() {
    let model = fixtures().join("llama");
    let model = model.to_str().expect("utf-8 path");
    let run = |extra: &[&str], prompt: &str| {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--chat",
            "--max-new-tokens",
            "12",
            "--prompt",
            prompt,
        ];
        args.extend_from_slice(extra);
        laconic(&args)
    };
    let with_flag = run(&["--budget", "64"], "What is 2 + 2?");
    assert!(with_flag.status.success(), "{}", stderr(&with_flag));
    let by_hand = run(&[], "What is 2 + 2?\n[budget 64]");
    assert_eq!(stdout(&with_flag), stdout(&by_hand));
    let plain = run(&[], "What is 2 + 2?");
    assert_ne!(
        stdout(&with_flag),
        stdout(&plain),
        "the control string changed nothing"
    );
    assert_clean_failure(&run(&["--budget", "0"], "What is 2 + 2?"), "--budget");
}

/// GSM8K test solutions as (question, reasoning) pairs, the `#### n` line left out.
fn gsm8k_solutions(n: usize) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/gsm8k/test.jsonl");
    std::fs::read_to_string(&path)
        .expect("GSM8K test set")
        .lines()
        .take(n)
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            let answer = v["answer"].as_str().expect("answer");
            let reasoning = answer.split("\n####").next().expect("reasoning");
            (
                v["question"].as_str().expect("question").to_string(),
                reasoning.to_string(),
            )
        })
        .collect()
}

#[test]
fn label_classifier_learns_from_user_pairs_and_the_labeler_uses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // User-supplied compressions (made here by dropping a few function words), plus one line
    // whose "compression" is unrelated text: skipped and counted.
    let drop = [
        "the", "a", "an", "of", "to", "and", "so", "is", "for", "in", "she", "he",
    ];
    let mut pairs = String::new();
    for (q, r) in gsm8k_solutions(40) {
        let compressed: Vec<&str> = r
            .split_whitespace()
            .filter(|w| {
                !drop.contains(
                    &w.to_lowercase()
                        .trim_matches(|c: char| !c.is_alphanumeric()),
                )
            })
            .collect();
        let line =
            serde_json::json!({"question": q, "reasoning": r, "compressed": compressed.join(" ")});
        pairs.push_str(&format!("{line}\n"));
    }
    pairs.push_str(r#"{"question": "q", "reasoning": "Add 3 and 4 to get 7.", "compressed": "Multiply five by six, then halve it."}"#);
    pairs.push('\n');
    let pairs_path = dir.path().join("pairs.jsonl");
    std::fs::write(&pairs_path, &pairs).expect("write");
    let encoder = fixtures().join("llama");
    let out = dir.path().join("classifier.safetensors");
    let p = |x: &Path| x.to_str().expect("utf-8 path").to_string();
    let o = laconic(&[
        "label-classifier",
        "--pairs",
        &p(&pairs_path),
        "--encoder",
        &p(&encoder),
        "--out",
        &p(&out),
        "--epochs",
        "20",
        "--lr",
        "0.01",
        "--quiet",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("36 traces (4 held out, 1 skipped)"), "{err}");
    assert!(err.contains("held out:") && err.contains("AUC"), "{err}");
    assert!(out.exists());

    let labeled = dir.path().join("labeled.jsonl");
    let input = format!(
        "gsm8k:{}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/gsm8k/test.jsonl")
            .display()
    );
    let label = |extra: &[&str]| {
        let mut args = vec![
            "label".to_string(),
            "--in".into(),
            input.clone(),
            "--scorer".into(),
            p(&encoder),
            "--ratios".into(),
            "0.6".into(),
            "--out".into(),
            p(&labeled),
            "--limit".into(),
            "4".into(),
            "--quiet".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        laconic(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = label(&["--scorer-kind", "classifier", "--classifier", &p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&labeled).expect("labeled");
    assert_eq!(text.lines().count(), 4);
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("json");
        assert!(
            v["scorer"]
                .as_str()
                .expect("scorer")
                .starts_with("classifier+rules:")
        );
        assert_eq!(
            v["classifier"].as_array().expect("classifier scores").len(),
            v["tokens"].as_array().expect("tokens").len()
        );
        assert_eq!(v["variants"][0]["correct"], true);
    }

    // Bad input: each a clear error, nothing written.
    std::fs::remove_file(&labeled).expect("rm");
    assert_clean_failure(&label(&["--scorer-kind", "classifier"]), "go together");
    let other = fixtures().join("qwen2");
    let o = laconic(&[
        "label",
        "--in",
        &input,
        "--scorer",
        &p(&other),
        "--scorer-kind",
        "classifier",
        "--classifier",
        &p(&out),
        "--out",
        &p(&labeled),
        "--quiet",
    ]);
    assert_clean_failure(&o, "tokenizer");
    assert!(!labeled.exists());
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"question\": 1}}\n",
            pairs.lines().next().expect("a line")
        ),
    )
    .expect("write");
    let o = laconic(&[
        "label-classifier",
        "--pairs",
        &p(&bad),
        "--encoder",
        &p(&encoder),
        "--out",
        &p(&dir.path().join("never.safetensors")),
        "--quiet",
    ]);
    assert_clean_failure(&o, "bad.jsonl:2");
    assert!(!dir.path().join("never.safetensors").exists());
}
