//! `method = "grpo"` end to end on the tiny fixture model: rollouts, rewards with a length
//! budget, policy steps, metrics, checkpoints, and a stopped run that resumes bit for bit.

mod common;

use std::path::Path;

use burn::prelude::*;
use laconic_infer::generate::{GenerateConfig, generate};
use laconic_infer::{WeightFormat, load_with};
use laconic_traces::{Grader, Trace};
use laconic_train::data::Formatter;
use laconic_train::{Recipe, TrainOptions, train};

/// Addition problems whose gold answer is what the fixture model answers greedily (a random
/// model knows no arithmetic; this gives the rollouts both right and wrong samples).
fn write_problems(dir: &Path) -> std::path::PathBuf {
    let m = load_with(
        &common::fixture("llama"),
        &Device::flex(),
        WeightFormat::F32,
    )
    .expect("model");
    let eos = m.config().eos_token_ids.first().copied();
    let f = Formatter::new(&m.tokenizer, m.chat_template.as_ref(), eos, None);
    let config = GenerateConfig {
        max_new_tokens: 12,
        stop_tokens: f.stop_tokens(&m.config().eos_token_ids),
        ..GenerateConfig::default()
    };
    let mut lines = Vec::new();
    for i in 0..40 {
        let mut v = common::addition(i);
        let t: Trace = serde_json::from_value(v.clone()).expect("trace");
        let ids = f.prompt_ids(&t).expect("prompt");
        let mut cache = m.model.new_cache();
        let g = generate(&m.model, &m.tokenizer, &ids, &config, &mut cache, |_| {}).expect("gen");
        if let Some(answer) = Grader::Gsm8k.extract(&g.text) {
            v["gold"] = serde_json::json!(answer);
            lines.push(v);
        }
    }
    assert!(
        lines.len() >= 12,
        "only {} problems with a greedy number",
        lines.len()
    );
    common::write_traces(dir, lines.len(), |i| lines[i].clone())
}

fn recipe(dir: &Path, problems: &Path) -> Recipe {
    let text = format!(
        r#"
name = "tiny-grpo"
method = "grpo"
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
targets = ["all-linear"]
[optim]
lr = 2e-2
warmup_steps = 0
[train]
seed = 5
steps = 4
batch_size = 2
checkpoint_every = 2
[grpo]
group = 4
prompts_per_step = 2
budgets = [6, 12]
max_new_tokens = 12
temperature = 0.7
kv_policy = "window"
kv_budget = 64
"#,
        run = dir.join("run").display(),
        model = common::fixture("llama").display(),
        traces = problems.display(),
    );
    Recipe::parse(&text, Path::new("grpo.toml")).expect("recipe")
}

#[test]
fn grpo_trains_logs_its_rewards_and_resumes_bit_for_bit() {
    let data = tempfile::tempdir().expect("tempdir");
    let problems = write_problems(data.path());

    let whole = tempfile::tempdir().expect("tempdir");
    let r = recipe(whole.path(), &problems);
    let report = train(&r, &TrainOptions::default()).expect("grpo run");
    assert_eq!(report.steps, 4);
    let metrics = std::fs::read_to_string(whole.path().join("run/metrics.jsonl")).expect("metrics");
    let steps: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|v: &serde_json::Value| v.get("grpo").is_some())
        .collect();
    assert_eq!(steps.len(), 4);
    for v in &steps {
        let g = &v["grpo"];
        let reward = g["reward"].as_f64().expect("reward");
        assert!((0.0..=1.0).contains(&reward));
        let by_budget = g["tokens_by_budget"].as_object().expect("buckets");
        assert!(
            by_budget.keys().all(|k| k == "6" || k == "12"),
            "{by_budget:?}"
        );
        assert!(g["tokens"].as_u64().expect("tokens") > 0);
    }
    assert!(
        steps
            .iter()
            .any(|v| v["grpo"]["reward"].as_f64() > Some(0.0)),
        "no step had a rewarded sample: {metrics}"
    );
    let ck = |d: &Path, step: usize, file: &str| {
        std::fs::read(d.join(format!("run/checkpoints/step-{step:06}/{file}"))).expect("read")
    };
    assert_ne!(
        ck(whole.path(), 2, "trainable.safetensors"),
        ck(whole.path(), 4, "trainable.safetensors"),
        "the policy did not move"
    );
    assert!(
        whole
            .path()
            .join("run/adapter/adapter_model.safetensors")
            .exists()
    );

    let parts = tempfile::tempdir().expect("tempdir");
    let r2 = recipe(parts.path(), &problems);
    let stop = TrainOptions {
        stop_after: Some(2),
        ..Default::default()
    };
    assert_eq!(train(&r2, &stop).expect("first part").steps, 2);
    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    assert_eq!(train(&r2, &resume).expect("resumed").steps, 4);
    for file in ["trainable.safetensors", "optimizer.safetensors"] {
        assert!(
            ck(whole.path(), 4, file) == ck(parts.path(), 4, file),
            "{file} differs after resuming"
        );
    }
}

#[test]
fn grpo_recipes_with_bad_settings_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = |grpo: &str| {
        format!(
            "name = \"x\"\nmethod = \"grpo\"\n[model]\npath = \"m\"\n[data]\ntrain = \"t\"\n{grpo}"
        )
    };
    for (grpo, needle) in [
        ("", "needs a [grpo] section"),
        ("[grpo]\ngroup = 1\n", "grpo.group"),
        ("[grpo]\nbudgets = [64, 0]\n", "budget of 0"),
        ("[grpo]\ntemperature = 0.0\n", "grpo.temperature"),
        ("[grpo]\ngrader = \"chess\"\n", "grpo.grader"),
        (
            "[grpo]\nrollout_weights = \"int3\"\n",
            "grpo.rollout_weights",
        ),
        ("[grpo]\nkv_policy = \"rkv\"\n", "grpo.kv_policy"),
        ("[grpo]\nrewards = \"mine\"\n", "rewards"),
    ] {
        let e = Recipe::parse(&base(grpo), &dir.path().join("r.toml"))
            .expect_err(grpo)
            .to_string();
        assert!(e.contains(needle), "{grpo:?}: {e}");
    }
    let lora_with_grpo = "name = \"x\"\nmethod = \"lora\"\n[model]\npath = \"m\"\n[data]\ntrain = \"t\"\n[lora]\nrank = 2\nalpha = 4\n[grpo]\n";
    let e = Recipe::parse(lora_with_grpo, &dir.path().join("r.toml"))
        .expect_err("grpo on lora")
        .to_string();
    assert!(e.contains("only applies to method = \"grpo\""), "{e}");
}
