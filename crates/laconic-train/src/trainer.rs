//! The training loop: a recipe in, a run directory out.
//!
//! ```text
//! RUN/recipe.toml        the recipe with every default filled in
//! RUN/metrics.jsonl      one line per step (loss, lr, grad norm, tokens/s) and per evaluation
//! RUN/loss.svg, loss.png the training and held-out loss curves
//! RUN/checkpoints/       resumable checkpoints (see `checkpoint`)
//! RUN/adapter/           LoRA runs: the adapter in PEFT's layout
//! RUN/eval-before.jsonl  generation eval of the base model (when the recipe has [eval])
//! RUN/eval-after.jsonl   the same after training
//! RUN/summary.json       losses and accuracies before and after
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use laconic_infer::model::{ForwardOptions, Logits, Model};
use laconic_infer::{LoadedModel, WeightFormat};
use laconic_traces::{DatasetSpec, Trace};
use serde_json::json;

use crate::checkpoint::{self, TrainState};
use crate::data::{CausalBatcher, Example, Formatter, TrainData, tokenize};
use crate::distill::{Teacher, TeacherBatch, TopKStore, distill_loss};
use crate::error::{Result, TrainError};
use crate::eval::{EvalConfig, EvalSummary, evaluate};
use crate::optim::{AdamW, learning_rate};
use crate::params;
use crate::plot::draw_loss;
use crate::recipe::{DistillSection, Recipe};

/// How to run a recipe.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the run's latest checkpoint (error if it has none).
    pub resume: bool,
    /// Write into this directory instead of the recipe's.
    pub run_dir: Option<PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Skip the generation eval before and after (the held-out loss is still computed).
    pub skip_eval: bool,
    /// Stop (with a checkpoint) once this many steps are done, before the recipe's end; a
    /// later `resume` continues from there.
    pub stop_after: Option<usize>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Optimizer steps done in total.
    pub steps: usize,
    /// Training examples used, and those left out as too long.
    pub examples: (usize, usize),
    /// Held-out loss before training (None when resumed past the start).
    pub valid_loss_before: Option<f64>,
    /// Held-out loss after training.
    pub valid_loss_after: f64,
    /// Generation eval before and after, if the recipe asks for it.
    pub eval: Option<(EvalSummary, EvalSummary)>,
}

/// A model loaded for training: f32 weights on the autodiff device.
pub fn load_for_training(recipe: &Recipe) -> Result<LoadedModel> {
    let mut device = laconic_infer::device::parse_device(&recipe.model.device)?;
    let dtype = match recipe.train.precision.as_str() {
        "bf16" => Some(burn::tensor::FloatDType::BF16),
        "f16" => Some(burn::tensor::FloatDType::F16),
        _ => None,
    };
    if let Some(dtype) = dtype {
        if device == Device::flex() {
            return Err(TrainError::Invalid(format!(
                "train.precision = {:?} on the CPU: flex converts half-precision matmuls to f32 \
                 on every call, so it would only be slower; use \"f32\"",
                recipe.train.precision
            )));
        }
        // Half precision is the device's default float type, set before any tensor exists.
        device.configure(dtype).map_err(|e| {
            TrainError::Invalid(format!(
                "train.precision = {:?} on {}: {e:?}",
                recipe.train.precision, recipe.model.device
            ))
        })?;
    }
    let device = device.autodiff();
    Ok(laconic_infer::load_with(
        &recipe.model.path,
        &device,
        WeightFormat::F32,
    )?)
}

/// Logits `[b, s, vocab]` of a batch's inputs.
pub fn forward_logits(model: &Model, batch: &crate::data::Batch, training: bool) -> Tensor<3> {
    forward_logits_with(model, batch, training, false)
}

/// [`forward_logits`], optionally with every LoRA adapter switched off (`base_only`: the
/// frozen reference of RL and distillation).
pub fn forward_logits_with(
    model: &Model,
    batch: &crate::data::Batch,
    training: bool,
    base_only: bool,
) -> Tensor<3> {
    let (h, opts) = final_hidden(model, batch, training, base_only);
    model.head_with(h, opts)
}

/// The final hidden states `[b, s, hidden]` of a batch's inputs (no logits), and the options
/// the output head must be applied with.
fn final_hidden(
    model: &Model,
    batch: &crate::data::Batch,
    training: bool,
    base_only: bool,
) -> (Tensor<3>, ForwardOptions) {
    let opts = ForwardOptions {
        logits: Logits::None,
        hidden: true,
        training,
        base_only,
        ..Default::default()
    };
    let h = model
        .forward(batch.inputs.clone(), &mut model.new_cache(), opts)
        .hidden
        .expect("Model::forward returns the hidden states when asked");
    (h, opts)
}

/// The log-probability of each batch target, `[b, s]` (padding included; mask it).
pub fn target_logprobs(logits: Tensor<3>, batch: &crate::data::Batch) -> Tensor<2> {
    log_softmax(logits, 2)
        .gather(2, batch.targets.clone().unsqueeze_dim::<3>(2))
        .squeeze_dim(2)
}

/// Cross-entropy summed over a batch's completion tokens.
pub fn cross_entropy_sum(logits: Tensor<3>, batch: &crate::data::Batch) -> Tensor<1> {
    target_logprobs(logits, batch)
        .mul(batch.mask.clone())
        .sum()
        .neg()
}

/// The log-probability of each completion target of a batch, `[target_tokens]` in
/// [`crate::data::Batch::loss_positions`] order, with the output head applied to those
/// positions alone (`base_only`: every LoRA adapter switched off). Prompt and padding
/// positions get no `vocab`-wide logits, softmax or gradient: the head is a fifth of SmolLM2's
/// multiply-adds per token, and its softmax the largest tensors of a step.
pub fn completion_logprobs(
    model: &Model,
    batch: &crate::data::Batch,
    training: bool,
    base_only: bool,
) -> Tensor<1> {
    let (h, opts) = final_hidden(model, batch, training, base_only);
    let [b, s, d] = h.dims();
    let n = batch.target_tokens;
    let picked = h
        .reshape([b * s, d])
        .select(0, batch.loss_positions.clone())
        .unsqueeze_dim::<3>(0);
    log_softmax(model.head_with(picked, opts), 2)
        .gather(2, batch.loss_targets.clone().reshape([1, n, 1]))
        .reshape([n])
}

/// Cross-entropy summed over a batch's completion tokens: the same value as
/// [`cross_entropy_sum`] of [`forward_logits`], computed through [`completion_logprobs`].
pub fn completion_cross_entropy_sum(
    model: &Model,
    batch: &crate::data::Batch,
    training: bool,
) -> Tensor<1> {
    if batch.target_tokens == 0 {
        return Tensor::zeros([1], &model.embed_tokens.weight.device());
    }
    completion_logprobs(model, batch, training, false)
        .sum()
        .neg()
}

/// Cross-entropy of a batch on its completion tokens, summed and divided by `denom`.
pub fn batch_loss(
    model: &Model,
    batch: &crate::data::Batch,
    denom: f64,
    training: bool,
) -> Tensor<1> {
    completion_cross_entropy_sum(model, batch, training).div_scalar(denom)
}

/// Where the distillation signal comes from.
enum TeacherSource {
    Model(Box<Teacher>),
    TopK(TopKStore),
}

impl TeacherSource {
    fn open(
        d: &DistillSection,
        device: &Device,
        student: &laconic_infer::tokenizer::Tokenizer,
    ) -> Result<Self> {
        match (&d.teacher, &d.topk) {
            (Some(t), _) => Ok(Self::Model(Box::new(Teacher::load(t, device, student)?))),
            (None, Some(f)) => Ok(Self::TopK(TopKStore::open(f, student)?)),
            (None, None) => Err(TrainError::Invalid("[distill] names no teacher".into())),
        }
    }

    fn batch(
        &self,
        items: &[Example],
        batch: &crate::data::Batch,
        device: &Device,
    ) -> Result<TeacherBatch> {
        match self {
            Self::Model(t) => Ok(t.logits(&batch.inputs)),
            Self::TopK(store) => store.batch(items, batch.inputs.dims()[1], device),
        }
    }
}

/// Mean loss per completion token over `examples` (no gradients), in batches of `batch`.
pub fn held_out_loss(model: &Model, examples: &[Example], batch: usize) -> f64 {
    if examples.is_empty() {
        return f64::NAN;
    }
    let device = model.embed_tokens.weight.device();
    let mut sorted: Vec<&Example> = examples.iter().collect();
    sorted.sort_by_key(|e| e.ids.len());
    let total: usize = examples.iter().map(Example::target_tokens).sum();
    let mut sum = 0.0;
    for chunk in sorted.chunks(batch.max(1)) {
        let b = CausalBatcher.batch(chunk.iter().map(|e| (*e).clone()).collect(), &device);
        sum += batch_loss(model, &b, 1.0, false).into_scalar::<f32>() as f64;
    }
    sum / total as f64
}

/// What must not change between a run and its resumption.
fn fingerprint(r: &Recipe) -> String {
    json!({
        "method": r.method, "model": r.model, "data": r.data, "lora": r.lora, "optim": r.optim,
        "distill": r.distill, "grpo": r.grpo,
        "seed": r.train.seed, "batch_size": r.train.batch_size, "grad_accum": r.train.grad_accum,
        "steps": r.train.steps,
    })
    .to_string()
}

/// Serializes use of the backend's global RNG between training runs in one process.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Mixes the seed with a step and micro-batch into the seed of that micro-batch's dropout.
fn micro_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let x = seed ^ ((step as u64) << 20) ^ micro as u64;
    crate::reward::mix64(x.wrapping_add(0x9E37_79B9_7F4A_7C15))
}

fn load_traces(spec: &str) -> Result<Vec<Trace>> {
    Ok(DatasetSpec::parse(spec)?.load()?)
}

/// Runs a recipe to its last step (or continues it with `options.resume`).
pub fn train(recipe: &Recipe, options: &TrainOptions) -> Result<TrainReport> {
    let run = options.run_dir.clone().unwrap_or_else(|| recipe.run_dir());
    let resume_from = if options.resume {
        Some(checkpoint::latest(&run)?.ok_or_else(|| {
            TrainError::checkpoint(&run, "--resume: the run has no checkpoint yet")
        })?)
    } else {
        if checkpoint::latest(&run)?.is_some() {
            return Err(TrainError::checkpoint(
                &run,
                "the run directory already holds checkpoints; pass --resume to continue it, or \
                 choose another run directory",
            ));
        }
        None
    };
    std::fs::create_dir_all(&run).map_err(|e| TrainError::io(&run, e))?;
    checkpoint::write_atomic(&run.join("recipe.toml"), recipe.to_toml().as_bytes())?;

    let loaded = load_for_training(recipe)?;
    let LoadedModel {
        model,
        tokenizer,
        chat_template,
        ..
    } = loaded;
    let eos = model.config().eos_token_ids.first().copied();
    let formatter = Formatter::new(
        &tokenizer,
        chat_template.as_ref(),
        eos,
        recipe.data.system.clone(),
    );

    // Data: the held-out split first, then the limit.
    let mut train_traces = load_traces(&recipe.data.train)?;
    let valid_traces = match &recipe.data.valid {
        Some(spec) => load_traces(spec)?,
        None => {
            let n = recipe.data.valid_size.min(train_traces.len() / 2);
            train_traces.split_off(train_traces.len() - n)
        }
    };
    if let Some(limit) = recipe.data.limit {
        train_traces.truncate(limit);
    }
    let (mut train_traces, mut valid_traces) = (train_traces, valid_traces);
    if let Some(r) = recipe.data.ratio {
        for t in train_traces.iter_mut().chain(valid_traces.iter_mut()) {
            t.ratio = t.ratio.or(Some(r));
        }
    }
    let train_ex = tokenize(&formatter, &train_traces, recipe.data.max_seq_len)?;
    let valid_ex = tokenize(&formatter, &valid_traces, recipe.data.max_seq_len)?;
    if train_ex.examples.is_empty() {
        return Err(TrainError::Data {
            path: PathBuf::from(&recipe.data.train),
            reason: format!(
                "no usable examples ({} longer than data.max_seq_len = {})",
                train_ex.too_long, recipe.data.max_seq_len
            ),
        });
    }
    let examples = (train_ex.examples.len(), train_ex.too_long);
    let data = TrainData::new(
        train_ex.examples,
        recipe.train.batch_size,
        recipe.train.seed,
    );

    // The model to train.
    let mut model = match recipe.adapter() {
        Some(l) => lora_model(model, l, recipe.train.seed)?,
        None => model,
    };
    let device = model.embed_tokens.weight.device();
    let mut optim = AdamW::new(recipe.optim.clone());
    let trainable_paths: Vec<String> = trainable_paths(&model);
    let keep = |p: &str| trainable_paths.iter().any(|t| t == p);
    let mut state = TrainState {
        step: 0,
        micro_batches: 0,
        tokens: 0,
        elapsed_s: 0.0,
        seed: recipe.train.seed,
        fingerprint: fingerprint(recipe),
    };
    if let Some(dir) = &resume_from {
        let ck = checkpoint::load(dir)?;
        if ck.state.fingerprint != state.fingerprint {
            return Err(TrainError::checkpoint(
                dir,
                "the recipe changed since this checkpoint (model, data, method, LoRA, optimizer, \
                 seed, batch or steps); start a new run directory instead",
            ));
        }
        model = params::assign(model, ck.trainable, &dir.join("trainable.safetensors"))?;
        optim
            .restore(ck.state.step, ck.optimizer, &device.clone().inner())
            .map_err(|e| TrainError::checkpoint(dir.join("optimizer.safetensors"), e))?;
        state = ck.state;
    }

    let teacher = match &recipe.distill {
        Some(d) => Some(TeacherSource::open(d, &device, &tokenizer)?),
        None => None,
    };
    let metrics_path = run.join("metrics.jsonl");
    let mut metrics = open_metrics(&metrics_path, state.step)?;
    let valid_batch = recipe.train.batch_size;
    let valid_loss_before = if state.step == 0 {
        let l = held_out_loss(&model.valid(), &valid_ex.examples, valid_batch);
        write_metric(
            &mut metrics,
            &metrics_path,
            &json!({"step": 0, "valid_loss": l}),
        )?;
        Some(l)
    } else {
        None
    };
    // The eval of the base model runs once; a resumed run reads what the first part wrote.
    let before_path = run.join("eval-before.json");
    let eval_before = match &recipe.eval {
        Some(_) if options.skip_eval => None,
        Some(_) if state.step > 0 => read_eval_summary(&before_path),
        Some(e) => {
            let s = evaluate(
                &model.valid(),
                &formatter,
                &DatasetSpec::parse(&e.dataset)?,
                &eval_config(
                    e,
                    format!("{} before training", recipe.model.path.display()),
                ),
                Some(&run.join("eval-before.jsonl")),
                options.progress,
            )?;
            let v = serde_json::to_value(&s).map_err(|e| TrainError::Invalid(e.to_string()))?;
            checkpoint::write_json(&before_path, &v)?;
            Some(s)
        }
        None => None,
    };

    let total = recipe.train.steps;
    let bar = progress_bar(options.progress, total, state.step);
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let o = &recipe.optim;
    let stop_at = options.stop_after.unwrap_or(total).min(total);
    while state.step < stop_at {
        let step = state.step;
        let lr = learning_rate(step, total, o.lr, o.warmup_steps, o.min_lr_ratio);
        // GRPO draws its own problems; the supervised batches are for the other methods.
        let micro: Vec<Vec<Example>> = match recipe.grpo {
            Some(_) => Vec::new(),
            None => (0..recipe.train.grad_accum)
                .map(|k| data.micro_batch(state.micro_batches + k))
                .collect(),
        };
        let denom: usize = micro.iter().flatten().map(Example::target_tokens).sum();
        let mut acc = GradientsAccumulator::<Model>::new();
        let mut loss = 0.0;
        let mut tokens = 0;
        let (mut ce_total, mut kd_total) = (0.0, 0.0);
        let mut grpo_stats = None;
        if let Some(g) = &recipe.grpo {
            // Rollouts from the current weights without the autodiff tape (on the CPU a
            // packed int8 copy by default), the loss with the tape.
            let mut sampler = model.valid();
            sampler.pack_weights(g.rollout_format().map_err(TrainError::Invalid)?);
            let kv_policy = g.kv_policy().map_err(TrainError::Invalid)?;
            let (l, grads, st) = crate::grpo::step_loss(
                &crate::grpo::StepContext {
                    model: &model,
                    sampler: &sampler,
                    formatter: &formatter,
                    problems: &train_traces,
                    seed: recipe.train.seed,
                    grpo: g,
                    kv_policy: &kv_policy,
                },
                step,
            )?;
            loss = l;
            tokens = st.tokens;
            acc.accumulate(&model, grads);
            grpo_stats = Some(st);
        }
        for (k, items) in micro.into_iter().enumerate() {
            let batch = CausalBatcher.batch(items.clone(), &device);
            tokens += batch.tokens;
            // The backend's RNG is global: hold it from the seed through the forward pass
            // (where dropout draws), so that concurrent runs in one process stay exact.
            let rng = RNG
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            device.seed(micro_seed(recipe.train.seed, step, k));
            let l = match (&teacher, &recipe.distill) {
                (Some(t), Some(d)) => {
                    // Distillation compares whole distributions: every position's logits.
                    let logits = forward_logits(&model, &batch, true);
                    drop(rng);
                    let ce = cross_entropy_sum(logits.clone(), &batch);
                    let tb = t.batch(&items, &batch, &device)?;
                    let kd = distill_loss(
                        logits,
                        &tb,
                        batch.mask.clone(),
                        d.divergence(),
                        d.temperature,
                    );
                    ce_total += ce.clone().into_scalar::<f32>() as f64 / denom.max(1) as f64;
                    kd_total += kd.clone().into_scalar::<f32>() as f64 / denom.max(1) as f64;
                    ce.mul_scalar(1.0 - d.weight).add(kd.mul_scalar(d.weight))
                }
                _ => {
                    let ce = completion_cross_entropy_sum(&model, &batch, true);
                    drop(rng);
                    ce
                }
            }
            .div_scalar(denom.max(1) as f64);
            loss += l.clone().into_scalar::<f32>() as f64;
            let grads = GradientsParams::from_grads(l.backward(), &model);
            acc.accumulate(&model, grads);
        }
        let (updated, grad_norm) = optim.step(lr, model, acc.grads());
        model = updated;
        state.step += 1;
        state.micro_batches += recipe.train.grad_accum;
        state.tokens += tokens as u64;
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        let tokens_per_s = state.tokens as f64 / state.elapsed_s.max(1e-9);
        write_metric(&mut metrics, &metrics_path, &{
            let mut v = step_metrics(
                &state,
                loss,
                lr,
                grad_norm,
                tokens_per_s,
                teacher.is_some().then_some((ce_total, kd_total)),
            );
            if let Some(st) = &grpo_stats {
                v["grpo"] = json!(st);
            }
            v
        })?;
        if let Some(b) = &bar {
            b.set_position(state.step as u64);
            match &grpo_stats {
                Some(st) => b.set_message(format!(
                    "reward {:.3}  acc {:.2}  len {:.0}  kl {:.4}",
                    st.reward, st.accuracy, st.mean_tokens, st.kl
                )),
                None => b.set_message(format!("loss {loss:.4}  {tokens_per_s:.0} tok/s")),
            }
        }
        let last = state.step == stop_at;
        if recipe.train.eval_every > 0
            && state.step.is_multiple_of(recipe.train.eval_every)
            && !last
        {
            let l = held_out_loss(&model.valid(), &valid_ex.examples, valid_batch);
            write_metric(
                &mut metrics,
                &metrics_path,
                &json!({"step": state.step, "valid_loss": l}),
            )?;
        }
        if state.step.is_multiple_of(recipe.train.checkpoint_every) || last {
            let trainable = params::collect(&model, keep)?;
            checkpoint::save(
                &run,
                &state,
                &trainable,
                &optim.state_tensors(),
                recipe.train.keep_checkpoints,
            )?;
        }
    }
    if let Some(b) = &bar {
        b.finish();
    }
    let finished = state.step == total;
    let valid_loss_after = held_out_loss(&model.valid(), &valid_ex.examples, valid_batch);
    write_metric(
        &mut metrics,
        &metrics_path,
        &json!({"step": state.step, "valid_loss": valid_loss_after}),
    )?;
    drop(metrics);
    draw_loss(&metrics_path, &run.join("loss.svg"))?;

    if let (Some(l), true) = (recipe.adapter(), finished) {
        let mut m = model.valid();
        crate::lora::save_peft(
            &mut m,
            l,
            &recipe.model.path.to_string_lossy(),
            &run.join("adapter"),
        )?;
    }
    let eval = match (&recipe.eval, eval_before) {
        (Some(e), Some(before)) if finished => {
            let after = evaluate(
                &model.valid(),
                &formatter,
                &DatasetSpec::parse(&e.dataset)?,
                &eval_config(
                    e,
                    format!("{} after {} steps", recipe.model.path.display(), state.step),
                ),
                Some(&run.join("eval-after.jsonl")),
                options.progress,
            )?;
            Some((before, after))
        }
        _ => None,
    };
    let report = TrainReport {
        run_dir: run.clone(),
        steps: state.step,
        examples,
        valid_loss_before,
        valid_loss_after,
        eval,
    };
    write_summary(&run, recipe, &report, &state)?;
    Ok(report)
}

fn read_eval_summary(path: &Path) -> Option<EvalSummary> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn eval_config(e: &crate::recipe::EvalSection, model_id: String) -> EvalConfig {
    EvalConfig {
        limit: e.limit,
        max_new_tokens: e.max_new_tokens,
        kv_policy: laconic_infer::policy::KvPolicyConfig::Full,
        ratio: None,
        budget: None,
        batch: 1,
        model_id,
    }
}

fn lora_model(model: Model, lora: &crate::recipe::LoraSection, seed: u64) -> Result<Model> {
    Ok(crate::lora::attach(model, lora, seed)?.0)
}

/// Paths of the parameters that train (those that require gradients).
fn trainable_paths(model: &Model) -> Vec<String> {
    struct V {
        path: Vec<String>,
        out: Vec<String>,
    }
    impl burn::module::ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if param.val().is_require_grad() {
                self.out.push(self.path.join("."));
            }
        }
    }
    let mut v = V {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Values in the parameters that train.
fn trainable_numel(model: &Model) -> usize {
    struct V(usize);
    impl burn::module::ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let t = param.val();
            if t.is_require_grad() {
                self.0 += t.dims().iter().product::<usize>();
            }
        }
    }
    let mut v = V(0);
    model.visit(&mut v);
    v.0
}

fn progress_bar(show: bool, total: usize, at: usize) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(
        "step {pos}/{len} [{bar:30}] {msg}  elapsed {elapsed} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(at as u64);
    Some(bar)
}

/// Opens the metrics file for appending, first dropping lines past `step` (a killed run may
/// have logged steps its last checkpoint does not hold).
fn open_metrics(path: &Path, step: usize) -> Result<std::fs::File> {
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s as usize <= step && step > 0)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        checkpoint::write_atomic(path, kept.as_bytes())?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))
}

fn step_metrics(
    state: &TrainState,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    tokens_per_s: f64,
    distill: Option<(f64, f64)>,
) -> serde_json::Value {
    let mut v = json!({"step": state.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
        "tokens": state.tokens, "tokens_per_s": tokens_per_s, "elapsed_s": state.elapsed_s});
    if let Some((ce, kd)) = distill {
        v["cross_entropy"] = json!(ce);
        v["distill"] = json!(kd);
    }
    v
}

fn write_metric(f: &mut std::fs::File, path: &Path, v: &serde_json::Value) -> Result<()> {
    writeln!(f, "{v}").map_err(|e| TrainError::io(path, e))
}

fn write_summary(run: &Path, recipe: &Recipe, r: &TrainReport, state: &TrainState) -> Result<()> {
    let eval = r
        .eval
        .as_ref()
        .map(|(b, a)| json!({"before": b, "after": a}));
    let v = json!({
        "name": recipe.name,
        "method": recipe.method,
        "steps": r.steps,
        "train_examples": r.examples.0,
        "left_out_too_long": r.examples.1,
        "tokens": state.tokens,
        "elapsed_s": state.elapsed_s,
        "tokens_per_s": state.tokens as f64 / state.elapsed_s.max(1e-9),
        "valid_loss_before": r.valid_loss_before,
        "valid_loss_after": r.valid_loss_after,
        "eval": eval,
    });
    checkpoint::write_json(&run.join("summary.json"), &v)
}

/// Training throughput on synthetic batches of fixed shape (what `laconic bench-train`
/// reports): `steps` timed optimizer steps after `warmup` untimed ones.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainBench {
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Timed steps.
    pub steps: usize,
    /// Mean seconds per step.
    pub step_s: f64,
    /// Tokens per second (batch · seq_len / step_s).
    pub tokens_per_s: f64,
    /// Parameters that train.
    pub trainable_params: usize,
}

/// The gradients of a micro-batch's completion cross-entropy, summed and divided by `denom`,
/// in one forward and backward pass. Returns the loss, the real tokens and the gradients.
///
/// One batch on one thread: two halves on two threads would use the second core, but with
/// Burn 0.22 two threads building autodiff graphs over the same parameters can deadlock on the
/// graph locks (seen in CI, 2026-12-01), so training keeps one batch (docs/BENCHMARKS.md).
pub fn micro_batch_grads(
    model: &Model,
    items: Vec<Example>,
    denom: usize,
) -> (f64, usize, GradientsParams) {
    let device = model.embed_tokens.weight.device();
    let batch = CausalBatcher.batch(items, &device);
    let l = batch_loss(model, &batch, denom.max(1) as f64, true);
    (
        l.clone().into_scalar::<f32>() as f64,
        batch.tokens,
        GradientsParams::from_grads(l.backward(), model),
    )
}

/// Times forward, backward and AdamW steps of `model` (already prepared: LoRA attached or
/// not) on random token ids with the loss on every position.
pub fn bench_steps(
    model: Model,
    batch: usize,
    seq_len: usize,
    warmup: usize,
    steps: usize,
) -> TrainBench {
    use rand::{Rng, SeedableRng};
    let vocab = model.config().vocab_size as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let trainable_params = trainable_numel(&model);
    let mut optim = AdamW::new(crate::recipe::OptimSection::default());
    let mut model = model;
    let mut total = 0.0;
    for i in 0..warmup + steps {
        let items: Vec<Example> = (0..batch)
            .map(|b| Example {
                id: format!("bench/{b}"),
                ids: (0..=seq_len).map(|_| rng.random_range(0..vocab)).collect(),
                prompt_len: 1,
            })
            .collect();
        let started = Instant::now();
        let denom: usize = items.iter().map(Example::target_tokens).sum();
        let (_, _, grads) = micro_batch_grads(&model, items, denom);
        let (m, _) = optim.step(1e-5, model, grads);
        model = m;
        // Make sure the step finished (backends may be lazy).
        let _ = model.norm.gamma.val().into_data();
        if i >= warmup {
            total += started.elapsed().as_secs_f64();
        }
    }
    let step_s = total / steps.max(1) as f64;
    TrainBench {
        batch,
        seq_len,
        steps,
        step_s,
        tokens_per_s: (batch * seq_len) as f64 / step_s,
        trainable_params,
    }
}
