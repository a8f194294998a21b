//! Recipes: one TOML file that names the model, the data, the method, the hyper-parameters,
//! the evaluation and the export of a training run.
//!
//! Every section rejects keys it does not know, and the error names the key and its line:
//!
//! ```toml
//! name = "smollm2-135m-gsm8k-lora"
//! method = "lora"                  # "sft" (every weight) or "lora"
//!
//! [model]
//! path = "checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf"
//!
//! [data]
//! train = "gsm8k:data/gsm8k/train.jsonl"
//! ```
//!
//! Paths are relative to the directory the command runs in (the repository root for the
//! shipped recipes).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// A whole recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The run's name; the default run directory is `checkpoints/runs/<name>`.
    pub name: String,
    /// The training method.
    pub method: Method,
    /// Where runs are written (default `checkpoints/runs/<name>`).
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// The base model.
    pub model: ModelSection,
    /// Training and held-out data.
    pub data: DataSection,
    /// LoRA settings (required when `method = "lora"`).
    #[serde(default)]
    pub lora: Option<LoraSection>,
    /// Optimizer and schedule.
    #[serde(default)]
    pub optim: OptimSection,
    /// Steps, batches, checkpoints.
    #[serde(default)]
    pub train: TrainSection,
    /// Logit distillation from a teacher (added to the cross-entropy).
    #[serde(default)]
    pub distill: Option<DistillSection>,
    /// Generation-based evaluation before and after training.
    #[serde(default)]
    pub eval: Option<EvalSection>,
    /// What `laconic export --run DIR` writes by default.
    #[serde(default)]
    pub export: Option<ExportSection>,
    /// GRPO settings (required when `method = "grpo"`).
    #[serde(default)]
    pub grpo: Option<GrpoSection>,
}

/// `[grpo]`: reinforcement learning with a length budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoSection {
    /// Samples per prompt (G, at least 2).
    pub group: usize,
    /// Prompts per optimizer step.
    pub prompts_per_step: usize,
    /// Reasoning budgets (tokens) drawn per prompt and stated in it (`[budget N]`); empty
    /// for no budget.
    pub budgets: Vec<usize>,
    /// Most tokens per sample.
    pub max_new_tokens: usize,
    /// Sampling temperature of the rollouts.
    pub temperature: f64,
    /// Nucleus mass of the rollouts.
    pub top_p: f64,
    /// PPO clipping range.
    pub clip: f64,
    /// Weight of the KL term to the reference (0: none).
    pub kl: f64,
    /// Decay scale of the reward beyond the budget, as a fraction of it.
    pub softness: f64,
    /// `gsm8k` or `math`: how rollouts are graded.
    pub grader: String,
    /// What the KV cache keeps while sampling rollouts (`full`, `window`, `h2o`, `snapkv`,
    /// `rkv`), so training sees the cache the edge will use.
    pub kv_policy: String,
    /// Entries per layer the policy keeps (needed by every policy but `full`).
    pub kv_budget: Option<usize>,
    /// How the sampling copy of the weights is held while drawing rollouts: `q8_0` (the
    /// default: adapters merged and every projection quantized to int8 per block of 32
    /// before each step's rollouts, decoded by laconic-infer's packed kernel, as the int8
    /// export will run on the edge; CPU only, other devices sample in f32) or `f32` (the
    /// training weights as they are).
    pub rollout_weights: String,
}

impl GrpoSection {
    /// The sampling copy's weight format (`rollout_weights`).
    pub fn rollout_format(
        &self,
    ) -> std::result::Result<laconic_infer::model::WeightFormat, String> {
        use laconic_infer::model::WeightFormat;
        match self.rollout_weights.as_str() {
            "q8_0" => Ok(WeightFormat::Q8_0),
            "f32" => Ok(WeightFormat::F32),
            other => Err(format!(
                "grpo.rollout_weights = {other:?}: expected \"q8_0\" or \"f32\""
            )),
        }
    }

    /// The rollouts' KV policy.
    pub fn kv_policy(&self) -> std::result::Result<laconic_infer::policy::KvPolicyConfig, String> {
        laconic_infer::policy::KvPolicyConfig::from_flags(
            &self.kv_policy,
            self.kv_budget,
            None,
            None,
            None,
        )
        .map_err(|e| format!("grpo.kv_policy = {:?}: {e}", self.kv_policy))
    }
}

impl Default for GrpoSection {
    fn default() -> Self {
        Self {
            group: 4,
            prompts_per_step: 2,
            budgets: Vec::new(),
            max_new_tokens: 256,
            temperature: 1.0,
            top_p: 1.0,
            clip: 0.2,
            kl: 0.04,
            softness: 0.25,
            grader: "gsm8k".into(),
            kv_policy: "full".into(),
            kv_budget: None,
            rollout_weights: "q8_0".into(),
        }
    }
}

/// The training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Full supervised fine-tuning: every weight trains.
    Sft,
    /// Low-rank adapters on the chosen projections; the base stays frozen.
    Lora,
    /// GRPO with a length budget (`[grpo]`): LoRA when a `[lora]` section is given, else
    /// every weight.
    Grpo,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A GGUF file or a Hugging Face directory. Quantized weights are dequantized to f32 for
    /// training.
    pub path: PathBuf,
    /// Compute device: `flex` (CPU), `cuda`, `wgpu`, `tch`.
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    "flex".into()
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Training data: `gsm8k:PATH`, `math500:PATH`, `traces:PATH` or a trace JSONL path.
    pub train: String,
    /// Held-out data for the evaluation loss; default: the last `valid_size` training
    /// examples, set apart before training.
    #[serde(default)]
    pub valid: Option<String>,
    /// Held-out examples taken from the training data when `valid` is not set.
    #[serde(default = "default_valid_size")]
    pub valid_size: usize,
    /// Use at most this many training examples (after the held-out split).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Examples longer than this many tokens (prompt and completion) are left out, counted
    /// and reported; truncating them would cut off the answer.
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
    /// A system message for every example that has none.
    #[serde(default)]
    pub system: Option<String>,
    /// A compression ratio for every example that has none: its control string
    /// (`[compress R]`) goes into the prompt, e.g. to keep a ratio-conditioned student in its
    /// concise mode while GRPO trains it.
    #[serde(default)]
    pub ratio: Option<f64>,
}

fn default_valid_size() -> usize {
    64
}

fn default_max_seq_len() -> usize {
    512
}

/// `[lora]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Rank of every adapter.
    pub rank: usize,
    /// Scale numerator: the delta is multiplied by `alpha / rank`.
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    #[serde(default)]
    pub dropout: f64,
    /// Projections that get an adapter: names like `q_proj`, `v_proj`, `gate_proj`, or
    /// `all-linear` for every projection of every layer.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
}

fn default_targets() -> Vec<String> {
    vec!["q_proj".into(), "v_proj".into()]
}

/// `[optim]`: AdamW with PyTorch's conventions, warmup then cosine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the cosine, as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// Optimizer steps of linear warmup from 0.
    pub warmup_steps: usize,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Adam's β1.
    pub beta1: f64,
    /// Adam's β2.
    pub beta2: f64,
    /// Adam's ε.
    pub eps: f64,
    /// Clip the global gradient norm to this (0 for no clipping).
    pub max_grad_norm: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: 1.0,
        }
    }
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Seed of the data order, adapter initialization and dropout.
    pub seed: u64,
    /// Optimizer steps to run.
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Write a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: usize,
    /// Keep this many most recent checkpoints (older ones are deleted).
    pub keep_checkpoints: usize,
    /// Compute the held-out loss every this many steps (0: only before and after).
    pub eval_every: usize,
    /// Floating-point precision of the compute: `f32`, `bf16` or `f16` (half precision
    /// only where the backend supports it; the CPU trains in f32).
    pub precision: String,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 100,
            batch_size: 4,
            grad_accum: 1,
            checkpoint_every: 50,
            keep_checkpoints: 2,
            eval_every: 0,
            precision: "f32".into(),
        }
    }
}

/// `[distill]`: logit distillation. The loss becomes
/// `(1 - weight) · cross-entropy + weight · divergence(teacher, student)` per completion
/// token. Exactly one of `teacher` and `topk` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// A teacher model (GGUF or HF directory) run in-process; it must share the student's
    /// tokenizer.
    #[serde(default)]
    pub teacher: Option<PathBuf>,
    /// A file of stored top-k teacher log-probabilities (`laconic teacher-logits`).
    #[serde(default)]
    pub topk: Option<PathBuf>,
    /// `forward` (KL(teacher‖student)), `reverse` (KL(student‖teacher)) or `mix`.
    #[serde(default = "default_divergence")]
    pub divergence: String,
    /// For `mix`: the weight of the forward KL.
    #[serde(default = "default_half")]
    pub mix: f64,
    /// Weight of the distillation term against the cross-entropy, in [0, 1].
    #[serde(default = "default_half")]
    pub weight: f64,
    /// Softmax temperature of both distributions (the term is scaled by its square).
    #[serde(default = "default_one")]
    pub temperature: f64,
}

fn default_divergence() -> String {
    "forward".into()
}

fn default_half() -> f64 {
    0.5
}

fn default_one() -> f64 {
    1.0
}

impl DistillSection {
    /// The divergence this section names.
    pub fn divergence(&self) -> crate::distill::Divergence {
        use crate::distill::Divergence;
        match self.divergence.as_str() {
            "reverse" => Divergence::Reverse,
            "mix" => Divergence::Mix(self.mix),
            _ => Divergence::Forward,
        }
    }
}

/// `[eval]`: greedy generation on a dataset, graded, before and after training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// `gsm8k:PATH` or `math500:PATH`.
    pub dataset: String,
    /// Problems evaluated (the first N).
    #[serde(default = "default_eval_limit")]
    pub limit: usize,
    /// Most tokens generated per problem.
    #[serde(default = "default_eval_tokens")]
    pub max_new_tokens: usize,
}

fn default_eval_limit() -> usize {
    50
}

fn default_eval_tokens() -> usize {
    256
}

/// `[export]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// `hf` or `gguf`.
    #[serde(default = "default_export_format")]
    pub format: String,
    /// Fold the adapters into the weights.
    #[serde(default)]
    pub merge_lora: bool,
    /// `q8_0` or `q4_0` (GGUF only).
    #[serde(default)]
    pub quantize: Option<String>,
}

fn default_export_format() -> String {
    "hf".into()
}

impl Recipe {
    /// Reads and validates a recipe file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates recipe text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| TrainError::Recipe {
            path: path.to_path_buf(),
            reason: describe_toml_error(text, &e),
        })?;
        recipe.validate().map_err(|reason| TrainError::Recipe {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(recipe)
    }

    /// The run directory: `run_dir`, or `checkpoints/runs/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("checkpoints/runs").join(&self.name))
    }

    /// The recipe as TOML, with every default filled in (what the run directory keeps).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
    }

    /// The LoRA settings when the method trains adapters (`lora`, or `grpo` with `[lora]`).
    pub fn adapter(&self) -> Option<&LoraSection> {
        match self.method {
            Method::Lora | Method::Grpo => self.lora.as_ref(),
            Method::Sft => None,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let positive = |v: usize, key: &str| {
            if v == 0 {
                Err(format!("{key} must be at least 1"))
            } else {
                Ok(())
            }
        };
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return Err(format!(
                "name = {:?}: must be non-empty, without path separators",
                self.name
            ));
        }
        positive(self.train.steps, "train.steps")?;
        positive(self.train.batch_size, "train.batch_size")?;
        positive(self.train.grad_accum, "train.grad_accum")?;
        positive(self.train.checkpoint_every, "train.checkpoint_every")?;
        positive(self.train.keep_checkpoints, "train.keep_checkpoints")?;
        positive(self.data.max_seq_len, "data.max_seq_len")?;
        if !["f32", "bf16", "f16"].contains(&self.train.precision.as_str()) {
            return Err(format!(
                "train.precision = {:?}: expected \"f32\", \"bf16\" or \"f16\"",
                self.train.precision
            ));
        }
        let o = &self.optim;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(format!("optim.lr = {}: must be positive", o.lr));
        }
        if !(0.0..=1.0).contains(&o.min_lr_ratio) {
            return Err(format!(
                "optim.min_lr_ratio = {}: must be in [0, 1]",
                o.min_lr_ratio
            ));
        }
        for (key, b) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(format!("{key} = {b}: must be in [0, 1)"));
            }
        }
        if o.eps <= 0.0 || o.weight_decay < 0.0 || o.max_grad_norm < 0.0 {
            return Err(
                "optim.eps must be positive, optim.weight_decay and optim.max_grad_norm not negative"
                    .into(),
            );
        }
        if let Some(r) = self.data.ratio.filter(|r| !(*r > 0.0 && *r <= 1.0)) {
            return Err(format!("data.ratio = {r}: must be in (0, 1]"));
        }
        match (self.method, &self.grpo) {
            (Method::Grpo, None) => {
                return Err("method = \"grpo\" needs a [grpo] section".into());
            }
            (Method::Grpo, Some(g)) => {
                if g.group < 2 {
                    return Err(format!(
                        "grpo.group = {}: GRPO compares samples within a group; use at least 2",
                        g.group
                    ));
                }
                positive(g.prompts_per_step, "grpo.prompts_per_step")?;
                positive(g.max_new_tokens, "grpo.max_new_tokens")?;
                if g.budgets.contains(&0) {
                    return Err(format!(
                        "grpo.budgets = {:?}: a budget of 0 tokens leaves no room to reason",
                        g.budgets
                    ));
                }
                if !(g.temperature > 0.0 && g.temperature.is_finite()) {
                    return Err(format!(
                        "grpo.temperature = {}: rollouts need a positive temperature",
                        g.temperature
                    ));
                }
                if !(g.top_p > 0.0 && g.top_p <= 1.0) {
                    return Err(format!("grpo.top_p = {}: must be in (0, 1]", g.top_p));
                }
                if !(g.clip > 0.0 && g.clip < 1.0)
                    || g.kl < 0.0
                    || g.softness <= 0.0
                    || g.softness.is_nan()
                {
                    return Err(
                        "grpo.clip must be in (0, 1), grpo.kl not negative, grpo.softness positive"
                            .into(),
                    );
                }
                g.kv_policy()?;
                g.rollout_format()?;
                if laconic_traces::Grader::parse(&g.grader).is_none() {
                    return Err(format!(
                        "grpo.grader = {:?}: expected \"gsm8k\" or \"math\"",
                        g.grader
                    ));
                }
            }
            (_, Some(_)) => {
                return Err("a [grpo] section only applies to method = \"grpo\"".into());
            }
            (_, None) => {}
        }
        match (self.method, &self.lora) {
            (Method::Grpo, None) => {}
            (Method::Lora, None) => {
                return Err("method = \"lora\" needs a [lora] section (rank, alpha)".into());
            }
            (Method::Sft, Some(_)) => {
                return Err("a [lora] section only applies to method = \"lora\"".into());
            }
            (Method::Lora | Method::Grpo, Some(l)) => {
                positive(l.rank, "lora.rank")?;
                if !(0.0..1.0).contains(&l.dropout) {
                    return Err(format!("lora.dropout = {}: must be in [0, 1)", l.dropout));
                }
                if l.targets.is_empty() {
                    return Err("lora.targets is empty".into());
                }
                for t in &l.targets {
                    if !LORA_TARGETS.contains(&t.as_str()) {
                        return Err(format!(
                            "lora.targets: unknown projection {t:?}; expected one of {}",
                            LORA_TARGETS.join(", ")
                        ));
                    }
                }
            }
            (Method::Sft, None) => {}
        }
        if let Some(d) = &self.distill {
            if d.teacher.is_some() == d.topk.is_some() {
                return Err(
                    "[distill] needs exactly one of `teacher` (a model) and `topk` (a file)".into(),
                );
            }
            if !["forward", "reverse", "mix"].contains(&d.divergence.as_str()) {
                return Err(format!(
                    "distill.divergence = {:?}: expected \"forward\", \"reverse\" or \"mix\"",
                    d.divergence
                ));
            }
            for (key, v) in [("distill.mix", d.mix), ("distill.weight", d.weight)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("{key} = {v}: must be in [0, 1]"));
                }
            }
            if !(d.temperature > 0.0 && d.temperature.is_finite()) {
                return Err(format!(
                    "distill.temperature = {}: must be positive",
                    d.temperature
                ));
            }
        }
        if let Some(e) = &self.export {
            if !["hf", "gguf"].contains(&e.format.as_str()) {
                return Err(format!(
                    "export.format = {:?}: expected \"hf\" or \"gguf\"",
                    e.format
                ));
            }
            if let Some(q) = &e.quantize
                && !["q8_0", "q4_0"].contains(&q.as_str())
            {
                return Err(format!(
                    "export.quantize = {q:?}: expected \"q8_0\" or \"q4_0\""
                ));
            }
        }
        Ok(())
    }
}

/// Names accepted in `lora.targets`.
pub const LORA_TARGETS: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "all-linear",
];

/// The TOML error as one readable message: line, the key, what was wrong.
/// A TOML parse error as `line N: message`, for errors that name the key and line.
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let src = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {msg} (at `{src}`)")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
method = "lora"
[model]
path = "m.gguf"
[data]
train = "gsm8k:data/gsm8k/train.jsonl"
[lora]
rank = 8
alpha = 16
"#;

    fn parse(text: &str) -> std::result::Result<Recipe, String> {
        Recipe::parse(text, Path::new("r.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fill_in() {
        let r = parse(MINIMAL).expect("minimal recipe");
        assert_eq!(r.method, Method::Lora);
        assert_eq!(r.train.batch_size, 4);
        assert_eq!(r.optim.eps, 1e-8);
        assert_eq!(r.run_dir(), PathBuf::from("checkpoints/runs/t"));
        // The resolved recipe parses back to the same thing.
        assert_eq!(parse(&r.to_toml()).expect("round trip"), r);
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let text = MINIMAL.replace("rank = 8", "rank = 8\nranks = 3");
        let e = parse(&text).expect_err("unknown key");
        assert!(e.contains("ranks") && e.contains("line 10"), "{e}");
        let e = parse(&format!("{MINIMAL}[train]\nbatch = 2\n")).expect_err("unknown key");
        assert!(e.contains("batch") && e.contains("line 12"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_line() {
        let e = parse(&MINIMAL.replace("rank = 8", "rank = \"eight\"")).expect_err("type");
        assert!(e.contains("line 9") && e.contains("string"), "{e}");
        let e = parse(&MINIMAL.replace("\"lora\"", "\"qlora\"")).expect_err("variant");
        assert!(e.contains("line 3") && e.contains("qlora"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        let e = parse(&format!("{MINIMAL}[train]\nsteps = 0\n")).expect_err("zero steps");
        assert!(e.contains("train.steps"), "{e}");
        let e = parse(&MINIMAL.replace("alpha = 16", "alpha = 16\ntargets = [\"qkv\"]"))
            .expect_err("target");
        assert!(e.contains("qkv"), "{e}");
        let e = parse(&MINIMAL.replace("[lora]\nrank = 8\nalpha = 16\n", "")).expect_err("lora");
        assert!(e.contains("[lora]"), "{e}");
    }
}
