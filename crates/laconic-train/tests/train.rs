//! Training on a tiny real checkpoint (the Llama fixture of `laconic-infer`: 2 layers,
//! hidden 64, vocabulary 512, random weights saved by `transformers`): LoRA leaves the base
//! untouched until trained, merges exactly, trains the loss down, saves and reloads in
//! PEFT's layout, and a stopped run resumes to the same weights bit for bit.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use laconic_infer::model::{ForwardOptions, Logits, Model};
use laconic_infer::{WeightFormat, load_with};
use laconic_train::recipe::LoraSection;
use laconic_train::{Recipe, TrainOptions, train};

mod common;

fn fixture() -> PathBuf {
    common::fixture("llama")
}

fn recipe(dir: &Path, steps: usize, extra: &str) -> Recipe {
    let traces = common::write_traces(dir, 24, common::addition);
    let text = format!(
        r#"
name = "tiny"
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
targets = ["all-linear"]
[optim]
lr = 1e-2
warmup_steps = 2
[train]
seed = 7
steps = {steps}
batch_size = 4
grad_accum = 2
checkpoint_every = 3
{extra}
"#,
        run = dir.join("run").display(),
        model = fixture().display(),
        traces = traces.display(),
    );
    Recipe::parse(&text, Path::new("tiny.toml")).expect("recipe")
}

fn logits(model: &Model, ids: &[i32], base_only: bool) -> Vec<f32> {
    let device = model.embed_tokens.weight.device();
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device);
    let mut cache = model.new_cache();
    let opts = ForwardOptions {
        logits: Logits::All,
        base_only,
        ..Default::default()
    };
    model
        .forward(input, &mut cache, opts)
        .logits
        .expect("logits")
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn lora_starts_as_identity_switches_off_and_merges_exactly() {
    let device = Device::flex();
    let base = load_with(&fixture(), &device, WeightFormat::F32)
        .expect("load")
        .model;
    let ids = [3, 17, 99, 250, 4, 8];
    let reference = logits(&base, &ids, false);
    let lora = LoraSection {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec!["all-linear".into()],
    };
    let (mut model, n) = laconic_train::lora::attach(base, &lora, 1).expect("attach");
    assert_eq!(n, 2 * 7);
    // B = 0: the adapted model equals the base.
    assert_eq!(max_diff(&logits(&model, &ids, false), &reference), 0.0);
    // Give every B a value, as training would.
    for (_, p) in model.projections_mut() {
        if let Some(l) = &mut p.lora {
            // Deterministic values (not the backend's global RNG, which the training tests
            // running beside this one seed).
            let [r, d] = l.b.val().dims();
            let v: Vec<f32> = (0..r * d)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
                .collect();
            l.b = burn::module::Param::from_tensor(Tensor::from_data(
                TensorData::new(v, [r, d]),
                &device,
            ));
        }
    }
    let adapted = logits(&model, &ids, false);
    assert!(
        max_diff(&adapted, &reference) > 1e-3,
        "the adapter changes the output"
    );
    // Switched off per call, the model is the base again.
    assert_eq!(max_diff(&logits(&model, &ids, true), &reference), 0.0);
    // Merged into the weights, the output is the adapted one.
    assert_eq!(model.merge_lora(), 14);
    assert!(max_diff(&logits(&model, &ids, false), &adapted) < 1e-4);
}

#[test]
fn lora_training_lowers_the_held_out_loss_and_the_adapter_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = recipe(dir.path(), 12, "");
    let report = train(&r, &TrainOptions::default()).expect("train");
    let before = report.valid_loss_before.expect("before");
    assert!(
        report.valid_loss_after < 0.7 * before,
        "held-out loss {before} -> {}",
        report.valid_loss_after
    );
    let run = dir.path().join("run");
    for f in [
        "recipe.toml",
        "metrics.jsonl",
        "loss.svg",
        "loss.png",
        "summary.json",
        "adapter/adapter_config.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // The PNG is a real image of the drawing's size.
    let png = std::fs::read(run.join("loss.png")).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().expect("width")),
        u32::from_be_bytes(png[20..24].try_into().expect("height")),
    );
    assert_eq!((w, h), (800, 480));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
    assert_eq!(
        metrics.lines().filter(|l| l.contains("\"loss\"")).count(),
        12
    );

    // The PEFT adapter loaded onto a fresh base reproduces the trained model's held-out loss.
    let device = Device::flex();
    let mut fresh = load_with(&fixture(), &device, WeightFormat::F32).expect("load");
    let n = laconic_train::lora::load_peft(&mut fresh.model, &run.join("adapter")).expect("peft");
    assert_eq!(n, 14);
    let traces = laconic_traces::DatasetSpec::parse(&r.data.train)
        .expect("spec")
        .load()
        .expect("traces");
    let eos = fresh.config().eos_token_ids.first().copied();
    let f = laconic_train::data::Formatter::new(
        &fresh.tokenizer,
        fresh.chat_template.as_ref(),
        eos,
        None,
    );
    let valid = laconic_train::data::tokenize(&f, &traces[traces.len() - 4..], 128).expect("tok");
    let l = laconic_train::trainer::held_out_loss(&fresh.model, &valid.examples, 4);
    assert!(
        (l - report.valid_loss_after).abs() < 1e-4,
        "reloaded adapter: {l} vs {}",
        report.valid_loss_after
    );
}

#[test]
fn a_stopped_run_resumes_to_the_same_weights_bit_for_bit() {
    // With dropout (the global RNG seeded per micro-batch) and without.
    for dropout in [0.1, 0.0] {
        stopped_run_resumes_exactly(dropout);
    }
}

fn stopped_run_resumes_exactly(dropout: f64) {
    let with_dropout = |mut r: Recipe| {
        r.lora.as_mut().expect("lora").dropout = dropout;
        r
    };
    let whole = tempfile::tempdir().expect("tempdir");
    let r = with_dropout(recipe(whole.path(), 7, ""));
    train(&r, &TrainOptions::default()).expect("uninterrupted");

    let parts = tempfile::tempdir().expect("tempdir");
    let r2 = with_dropout(recipe(parts.path(), 7, ""));
    let stop = TrainOptions {
        stop_after: Some(3),
        ..Default::default()
    };
    let first = train(&r2, &stop).expect("first part");
    assert_eq!(first.steps, 3);
    // Resuming without --resume is refused; with it, the run continues from step 3.
    assert!(train(&r2, &TrainOptions::default()).is_err());
    let resumed = TrainOptions {
        resume: true,
        ..Default::default()
    };
    assert_eq!(train(&r2, &resumed).expect("resumed").steps, 7);

    let last = |d: &Path| {
        std::fs::read(d.join("run/checkpoints/step-000007/trainable.safetensors")).expect("read")
    };
    let (a, b) = (last(whole.path()), last(parts.path()));
    assert!(a.len() > 1000);
    assert!(
        a == b,
        "dropout {dropout}: resumed weights differ from the uninterrupted run"
    );
    let opt = |d: &Path| {
        std::fs::read(d.join("run/checkpoints/step-000007/optimizer.safetensors")).expect("read")
    };
    assert!(
        opt(whole.path()) == opt(parts.path()),
        "dropout {dropout}: optimizer state differs"
    );
}

/// Mean loss of `completion` given the prompt of `trace` with `ratio`.
fn completion_loss(
    model: &Model,
    f: &laconic_train::data::Formatter,
    trace: &laconic_traces::Trace,
    ratio: f64,
    reasoning: &str,
) -> f64 {
    let mut t = trace.clone();
    t.ratio = Some(ratio);
    t.reasoning = reasoning.to_string();
    let e = f.example(&t).expect("example");
    laconic_train::trainer::held_out_loss(model, &[e], 1)
}

#[test]
fn ratio_control_strings_condition_the_student() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Hand-written test data: each question twice, verbose at ratio 1 and terse at 0.5.
    let mut text = String::new();
    let mut verbose = Vec::new();
    for i in 0..6 {
        let (a, b) = (i + 2, i + 5);
        let long = format!(
            "First I take {a}. Then I add {b} to it. So {a} + {b} = {}.",
            a + b
        );
        let short = format!("{a} + {b} = {}.", a + b);
        verbose.push((long.clone(), short.clone()));
        for (k, (ratio, reasoning)) in [(1.0, long), (0.5, short)].into_iter().enumerate() {
            let line = serde_json::json!({
                "schema": 1, "id": format!("hand/{i}/{k}"),
                "question": format!("What is {a} + {b}?"),
                "reasoning": reasoning, "answer": format!("{}", a + b), "ratio": ratio,
            });
            text.push_str(&format!("{line}\n"));
        }
    }
    let traces = dir.path().join("ratio.jsonl");
    std::fs::write(&traces, text).expect("write");
    let mut r = recipe(dir.path(), 40, "");
    r.data.train = format!("traces:{}", traces.display());
    r.data.valid_size = 0;
    r.train.checkpoint_every = 40;
    r.lora.as_mut().expect("lora").dropout = 0.0;
    train(&r, &TrainOptions::default()).expect("train");

    let device = Device::flex();
    let mut m = load_with(&fixture(), &device, WeightFormat::F32).expect("load");
    laconic_train::lora::load_peft(&mut m.model, &dir.path().join("run/adapter")).expect("adapter");
    let all = laconic_traces::schema::read_traces(&traces).expect("traces");
    let eos = m.config().eos_token_ids.first().copied();
    let f = laconic_train::data::Formatter::new(&m.tokenizer, m.chat_template.as_ref(), eos, None);
    // The control string is in the prompt the student sees.
    let prompt = m
        .tokenizer
        .decode(&f.prompt_ids(&all[1]).expect("ids"), false)
        .expect("decode");
    assert!(prompt.contains("[compress 0.5]"), "{prompt}");
    for (i, (long, short)) in verbose.iter().enumerate() {
        let t = &all[2 * i];
        // Under "[compress 0.5]" the terse reasoning is the likelier one, under "1" the
        // verbose one: the student learned what the control string asks for.
        let short_at_half = completion_loss(&m.model, &f, t, 0.5, short);
        let short_at_one = completion_loss(&m.model, &f, t, 1.0, short);
        let long_at_half = completion_loss(&m.model, &f, t, 0.5, long);
        let long_at_one = completion_loss(&m.model, &f, t, 1.0, long);
        assert!(
            short_at_half < short_at_one,
            "{i}: {short_at_half} vs {short_at_one}"
        );
        assert!(
            long_at_one < long_at_half,
            "{i}: {long_at_one} vs {long_at_half}"
        );
    }
}

#[test]
fn full_sft_trains_every_weight_and_lowers_the_held_out_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = recipe(dir.path(), 10, "");
    r.method = laconic_train::recipe::Method::Sft;
    r.lora = None;
    r.optim.lr = 3e-3;
    let report = train(&r, &TrainOptions::default()).expect("sft");
    let before = report.valid_loss_before.expect("before");
    assert!(
        report.valid_loss_after < 0.8 * before,
        "held-out loss {before} -> {}",
        report.valid_loss_after
    );
    // The checkpoint holds every weight of the model (2 layers x (7 projections + 2 norms),
    // embedding, final norm, head), and no adapter was written.
    let ck = laconic_train::checkpoint::load(&dir.path().join("run/checkpoints/step-000010"))
        .expect("checkpoint");
    assert_eq!(ck.trainable.len(), 2 * 9 + 3);
    let base = load_with(&fixture(), &Device::flex(), WeightFormat::F32).expect("base");
    let all = laconic_train::params::collect(&base.model, |_| true).expect("params");
    assert_eq!(all.len(), ck.trainable.len());
    let changed = all
        .iter()
        .filter(|(p, _, v)| ck.trainable[p].1 != *v)
        .count();
    assert_eq!(changed, all.len(), "every weight moved");
    assert!(!dir.path().join("run/adapter").exists());
}

/// The Llama fixture on the autodiff device with a rank-4 LoRA adapter (no dropout) on every
/// linear layer, initialized with `seed`.
fn lora_fixture(seed: u64) -> Model {
    let device = Device::flex().autodiff();
    let m = load_with(&fixture(), &device, WeightFormat::F32).expect("model");
    let lora = LoraSection {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec!["all-linear".into()],
    };
    laconic_train::lora::attach(m.model, &lora, seed)
        .expect("attach")
        .0
}

/// The head on completion positions only gives the loss and the gradients of the head on every
/// position followed by the mask (on a padded batch of two prompts and completions).
#[test]
fn the_completion_only_head_gives_the_masked_loss_and_gradients() {
    use burn::data::dataloader::batcher::Batcher;
    use burn::optim::GradientsParams;
    use laconic_train::data::{CausalBatcher, Example};
    use laconic_train::trainer::{completion_cross_entropy_sum, cross_entropy_sum, forward_logits};

    let model = lora_fixture(3);
    let device = model.embed_tokens.weight.device();
    let examples = vec![
        Example {
            id: "a".into(),
            ids: (1..=19).map(|i| i * 7 % 250 + 3).collect(),
            prompt_len: 6,
        },
        Example {
            id: "b".into(),
            ids: (1..=11).map(|i| i * 13 % 250 + 3).collect(),
            prompt_len: 4,
        },
    ];
    let batch = CausalBatcher.batch(examples, &device);
    assert_eq!(batch.target_tokens, 13 + 7);
    let masked = cross_entropy_sum(forward_logits(&model, &batch, false), &batch);
    let picked = completion_cross_entropy_sum(&model, &batch, false);
    let (a, b) = (
        masked.clone().into_scalar::<f32>(),
        picked.clone().into_scalar::<f32>(),
    );
    assert!(a > 1.0, "a real loss: {a}");
    assert!((a - b).abs() <= 1e-4 * a.abs(), "masked {a} vs picked {b}");
    // Gradients of every LoRA weight agree.
    let ga = GradientsParams::from_grads(masked.backward(), &model);
    let gb = GradientsParams::from_grads(picked.backward(), &model);
    let (compared, worst) = common::grad_difference(&model, &ga, &gb);
    assert!(compared > 10, "LoRA gradients compared: {compared}");
    assert!(worst < 1e-3, "gradients differ by {worst} of their scale");
}
