//! Logit distillation on tiny real checkpoints: the student (the Llama fixture with LoRA)
//! moves toward a teacher with the same tokenizer (the Llama-3 fixture: other weights),
//! from the teacher in-process and from a stored top-k file; a teacher with another
//! tokenizer (the Qwen2 fixture) is refused.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use laconic_infer::{WeightFormat, load_with};
use laconic_train::data::{CausalBatcher, Formatter, tokenize};
use laconic_train::distill::{Divergence, Teacher, distill_loss, write_topk};
use laconic_train::{Recipe, TrainOptions, train};

use burn::data::dataloader::batcher::Batcher;

mod common;

use common::fixture;

/// Short multiplication traces (hand-written test data, not from a dataset).
fn write_traces(dir: &Path) -> PathBuf {
    common::write_traces(dir, 20, |i| {
        let (a, b) = (i % 6 + 2, i % 3 + 1);
        serde_json::json!({
            "schema": 1, "id": format!("hand/{i}"),
            "question": format!("What is {a} times {b}?"),
            "reasoning": format!("{a} * {b} = {}.", a * b),
            "answer": format!("{}", a * b),
        })
    })
}

fn recipe(dir: &Path, distill: &str) -> Recipe {
    let traces = write_traces(dir);
    let text = format!(
        r#"
name = "distill"
method = "lora"
run_dir = "{run}"
[model]
path = "{model}"
[data]
train = "traces:{traces}"
valid_size = 4
max_seq_len = 128
[lora]
rank = 8
alpha = 16
targets = ["all-linear"]
[optim]
lr = 1e-2
warmup_steps = 2
[train]
seed = 3
steps = 14
batch_size = 4
checkpoint_every = 14
[distill]
{distill}
"#,
        run = dir.join("run").display(),
        model = fixture("llama").display(),
        traces = traces.display(),
    );
    Recipe::parse(&text, Path::new("distill.toml")).expect("recipe")
}

/// Mean forward KL from the teacher to the student model (optionally with an adapter) over
/// the held-out examples of the recipe.
fn held_out_kl(r: &Recipe, adapter: Option<&Path>) -> f64 {
    let device = Device::flex();
    let mut student = load_with(&fixture("llama"), &device, WeightFormat::F32).expect("student");
    if let Some(a) = adapter {
        laconic_train::lora::load_peft(&mut student.model, a).expect("adapter");
    }
    let teacher = Teacher::load(&fixture("llama3"), &device, &student.tokenizer).expect("teacher");
    let traces = laconic_traces::DatasetSpec::parse(&r.data.train)
        .expect("spec")
        .load()
        .expect("traces");
    let eos = student.config().eos_token_ids.first().copied();
    let f = Formatter::new(
        &student.tokenizer,
        student.chat_template.as_ref(),
        eos,
        None,
    );
    let valid = tokenize(&f, &traces[traces.len() - 4..], 128).expect("tokenize");
    let batch = CausalBatcher.batch(valid.examples.clone(), &device);
    let logits = laconic_train::trainer::forward_logits(&student.model, &batch, false);
    let tb = teacher.logits(&batch.inputs);
    let tokens: usize = valid.examples.iter().map(|e| e.target_tokens()).sum();
    let kl = distill_loss(logits, &tb, batch.mask.clone(), Divergence::Forward, 1.0);
    kl.into_scalar::<f32>() as f64 / tokens as f64
}

#[test]
fn distilling_from_an_in_process_teacher_moves_the_student_toward_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = recipe(
        dir.path(),
        &format!(
            "teacher = \"{}\"\ndivergence = \"forward\"\nweight = 1.0",
            fixture("llama3").display()
        ),
    );
    let before = held_out_kl(&r, None);
    train(&r, &TrainOptions::default()).expect("train");
    let after = held_out_kl(&r, Some(&dir.path().join("run/adapter")));
    assert!(
        after < 0.6 * before,
        "held-out KL to the teacher {before} -> {after}"
    );
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).expect("metrics");
    assert!(metrics.contains("\"distill\"") && metrics.contains("\"cross_entropy\""));
}

#[test]
fn a_stored_top_k_file_teaches_like_the_teacher_and_is_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = Device::flex();
    let student = load_with(&fixture("llama"), &device, WeightFormat::F32).expect("student");
    let teacher = Teacher::load(&fixture("llama3"), &device, &student.tokenizer).expect("teacher");
    let traces = laconic_traces::DatasetSpec::parse(&format!(
        "traces:{}",
        write_traces(dir.path()).display()
    ))
    .expect("spec")
    .load()
    .expect("traces");
    let eos = student.config().eos_token_ids.first().copied();
    let f = Formatter::new(
        &student.tokenizer,
        student.chat_template.as_ref(),
        eos,
        None,
    );
    let examples = tokenize(&f, &traces, 128).expect("tokenize").examples;
    let topk = dir.path().join("topk.jsonl");
    let n = write_topk(
        &teacher,
        "llama3",
        &student.tokenizer,
        &examples,
        16,
        &topk,
        || {},
    )
    .expect("write");
    assert_eq!(n, examples.len());

    let r = recipe(
        dir.path(),
        &format!(
            "topk = \"{}\"\ndivergence = \"mix\"\nmix = 0.5\nweight = 0.8",
            topk.display()
        ),
    );
    let before = held_out_kl(&r, None);
    train(&r, &TrainOptions::default()).expect("train from top-k");
    let after = held_out_kl(&r, Some(&dir.path().join("run/adapter")));
    assert!(
        after < 0.7 * before,
        "held-out KL to the teacher {before} -> {after}"
    );

    // A student formatted differently (a system message) does not match the stored ids.
    let mut r2 = recipe(
        &dir.path().join("b"),
        &format!("topk = \"{}\"", topk.display()),
    );
    r2.data.system = Some("You are terse.".into());
    r2.data.train = r.data.train.clone();
    let e = train(&r2, &TrainOptions::default())
        .expect_err("ids differ")
        .to_string();
    assert!(e.contains("topk.jsonl") && e.contains("differ"), "{e}");
}

#[test]
fn a_teacher_with_another_tokenizer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let device = Device::flex();
    let student = load_with(&fixture("llama"), &device, WeightFormat::F32).expect("student");
    let e = Teacher::load(&fixture("qwen2"), &device, &student.tokenizer)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("different tokenizer") && e.contains("qwen2"),
        "{e}"
    );

    // Through a recipe too, and from a top-k file written by that teacher.
    let r = recipe(
        dir.path(),
        &format!("teacher = \"{}\"", fixture("qwen2").display()),
    );
    let e = train(&r, &TrainOptions::default())
        .expect_err("refused")
        .to_string();
    assert!(e.contains("different tokenizer"), "{e}");
    let qwen = load_with(&fixture("qwen2"), &device, WeightFormat::F32).expect("qwen2");
    let qteacher = Teacher::load(&fixture("qwen2"), &device, &qwen.tokenizer).expect("self");
    let qf = Formatter::new(&qwen.tokenizer, qwen.chat_template.as_ref(), None, None);
    let traces = laconic_traces::DatasetSpec::parse(&r.data.train)
        .expect("spec")
        .load()
        .expect("traces");
    let ex = tokenize(&qf, &traces, 128).expect("tokenize").examples;
    let topk = dir.path().join("qwen-topk.jsonl");
    write_topk(&qteacher, "qwen2", &qwen.tokenizer, &ex, 4, &topk, || {}).expect("write");
    let r = recipe(
        &dir.path().join("c"),
        &format!("topk = \"{}\"", topk.display()),
    );
    let e = train(&r, &TrainOptions::default())
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("qwen-topk.jsonl") && e.contains("differs from the student"),
        "{e}"
    );
}
