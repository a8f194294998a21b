//! The pipeline file that `laconic run` reads: the stages' settings in one TOML, with named
//! sizes (`[sizes.tiny]`) that override parts of it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use laconic_train::recipe::{GrpoSection, LoraSection, OptimSection, TrainSection};
use serde::Deserialize;

/// A whole pipeline: distill → label → three students → export → evaluate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// The run's name; the default run directory is `checkpoints/runs/<name>` (with `-<size>`
    /// appended for a named size).
    pub name: String,
    /// Where the run is written.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// The student's base model (GGUF or Hugging Face directory).
    pub model: PathBuf,
    /// Compute device of training and evaluation: `flex` (CPU), `cuda`, `wgpu`, `tch` (each
    /// GPU backend needs its cargo feature).
    #[serde(default = "default_device")]
    pub device: String,
    /// The system message of every training example and evaluation prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// Distillation of teacher traces.
    pub distill: DistillStage,
    /// Compression of the kept traces.
    #[serde(default)]
    pub label: LabelStage,
    /// Supervised training of students (a) and (b).
    pub sft: SftStage,
    /// Student (c): student (b), then GRPO with a length budget.
    pub grpo: GrpoStage,
    /// The checkpoints every student is evaluated from.
    #[serde(default)]
    pub export: ExportStage,
    /// Held-out evaluation.
    pub eval: EvalStage,
    /// Named sizes: tables merged over this file by `--size NAME`.
    #[serde(default)]
    pub sizes: toml::Table,
}

/// `[distill]`: `laconic distill` on the problems.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillStage {
    /// The problems (a dataset spec: `procedural:...`, `gsm8k:PATH`, ...).
    pub problems: String,
    /// The teacher (`procedural:verbose`, `openai:URL`, `local:PATH`, `file:SPEC`).
    pub teacher: String,
    /// The model an `openai:` teacher serves.
    #[serde(default)]
    pub model: Option<String>,
    /// Samples per problem.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Which correct samples are kept.
    #[serde(default = "default_select")]
    pub select: String,
    /// Sampling temperature of the teacher.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Most tokens per sample.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Seed of the samples.
    #[serde(default)]
    pub seed: u64,
    /// Distill only the first N problems.
    #[serde(default)]
    pub limit: Option<usize>,
}

fn default_device() -> String {
    "flex".into()
}

fn default_samples() -> usize {
    4
}

fn default_select() -> String {
    "shortest-correct".into()
}

/// `[label]`: `laconic label` with its variants file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelStage {
    /// `rules`, or a scorer model path.
    pub scorer: String,
    /// Compression ratios (kept tokens over original tokens).
    pub ratios: Vec<f64>,
    /// `words` (token-level pruning, the default) or `sentences` (whole sentences kept or
    /// dropped: `laconic label --granularity`).
    pub granularity: String,
}

impl Default for LabelStage {
    fn default() -> Self {
        Self {
            scorer: "rules".into(),
            ratios: vec![0.5, 0.7],
            granularity: "words".into(),
        }
    }
}

/// `[sft]`: the training settings of students (a) and (b). LoRA when `[sft.lora]` is given,
/// else every weight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftStage {
    /// Examples held out for the loss.
    #[serde(default = "default_valid")]
    pub valid_size: usize,
    /// Longer examples are left out.
    #[serde(default = "default_seq")]
    pub max_seq_len: usize,
    /// Adapter settings.
    #[serde(default)]
    pub lora: Option<LoraSection>,
    /// Optimizer.
    #[serde(default)]
    pub optim: OptimSection,
    /// Steps and batches.
    #[serde(default)]
    pub train: TrainSection,
}

fn default_valid() -> usize {
    16
}

fn default_seq() -> usize {
    512
}

/// `[grpo]`: student (c), GRPO from student (b)'s merged weights.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoStage {
    /// The problems its rollouts answer (gold answers needed).
    pub problems: String,
    /// Held-out problems for the loss.
    #[serde(default = "default_valid")]
    pub valid_size: usize,
    /// Longer prompts are left out.
    #[serde(default = "default_seq")]
    pub max_seq_len: usize,
    /// Adapter settings (a fresh adapter on (b)'s merged weights).
    #[serde(default)]
    pub lora: Option<LoraSection>,
    /// Optimizer.
    #[serde(default)]
    pub optim: OptimSection,
    /// Steps.
    #[serde(default)]
    pub train: TrainSection,
    /// The recipe's `[grpo]` section: group, budgets, rollout lengths, clipping, KL.
    #[serde(default)]
    pub settings: GrpoSection,
}

/// `[export]`: every student is exported as a GGUF and evaluated from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportStage {
    /// `q8_0` (int8, the default), `q4_0` or `none` (f32).
    pub quantize: String,
}

impl Default for ExportStage {
    fn default() -> Self {
        Self {
            quantize: "q8_0".into(),
        }
    }
}

/// `[eval]`: every student on held-out problems, with the full cache and a pruned one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// Problems with gold answers, generated with a seed training never saw.
    pub problems: String,
    /// Evaluate the first N.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Most tokens per answer.
    #[serde(default = "default_eval_tokens")]
    pub max_new_tokens: usize,
    /// The pruned decoder's policy (`rkv`, `h2o`, `snapkv`, `window`).
    #[serde(default = "default_policy")]
    pub kv_policy: String,
    /// Its size as a share of the full cache: the budget is this share of the mean peak
    /// entries the student's full-cache answers used (buffer included).
    #[serde(default = "default_fraction")]
    pub kv_fraction: f64,
    /// More shares of the full cache at which student (c) is evaluated with the pruned
    /// policy, to show where its accuracy breaks (for example `[0.5, 0.75]`; none by default).
    #[serde(default)]
    pub sweep: Vec<f64>,
    /// The compression ratio students (b) and (c) are asked for (`[compress R]`).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// The reasoning budget student (c) is asked for (`[budget N]`).
    #[serde(default)]
    pub budget: Option<usize>,
    /// Evaluate the base model too (full cache).
    #[serde(default)]
    pub base: bool,
    /// Problems whose prompts have the same length decode together, up to this many per
    /// batch (`laconic eval --batch`; the answers are the same as one at a time).
    #[serde(default = "default_eval_batch")]
    pub batch: usize,
}

fn default_eval_batch() -> usize {
    8
}

fn default_eval_tokens() -> usize {
    384
}

fn default_policy() -> String {
    "rkv".into()
}

fn default_fraction() -> f64 {
    0.25
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Pipeline {
    /// Reads a pipeline file, with the named size merged over it.
    pub fn load(path: &Path, size: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pipeline {}", path.display()))?;
        let mut p: Pipeline = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "{}: {}",
                path.display(),
                laconic_train::recipe::describe_toml_error(&text, &e)
            )
        })?;
        if let Some(size) = size {
            let Some(toml::Value::Table(over)) = p.sizes.get(size) else {
                let known: Vec<&String> = p.sizes.keys().collect();
                bail!(
                    "{}: no size '{size}' (the file has {})",
                    path.display(),
                    if known.is_empty() {
                        "no [sizes.NAME] tables".to_string()
                    } else {
                        format!("{known:?}")
                    }
                );
            };
            let over = over.clone();
            let mut table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("reading pipeline {}", path.display()))?;
            merge(&mut table, &over);
            p = Pipeline::deserialize(toml::Value::Table(table))
                .map_err(|e| anyhow!("{} with [sizes.{size}]: {e}", path.display()))?;
            if p.run_dir.is_none() {
                p.run_dir =
                    Some(PathBuf::from("checkpoints/runs").join(format!("{}-{size}", p.name)));
            }
        }
        p.validate()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(p)
    }

    /// The run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("checkpoints/runs").join(&self.name))
    }

    fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            bail!("name must be a non-empty file name, got {:?}", self.name);
        }
        if self.distill.samples == 0 {
            bail!("distill.samples must be at least 1");
        }
        if !matches!(self.label.granularity.as_str(), "words" | "sentences") {
            bail!(
                "label.granularity: '{}' is neither words nor sentences",
                self.label.granularity
            );
        }
        if self.label.ratios.is_empty() {
            bail!("label.ratios is empty");
        }
        if let Some(r) = self.label.ratios.iter().find(|r| !(**r > 0.0 && **r < 1.0)) {
            bail!("label.ratios: {r} is not in (0, 1)");
        }
        if !(self.eval.kv_fraction > 0.0 && self.eval.kv_fraction <= 1.0) {
            bail!(
                "eval.kv_fraction must be in (0, 1], got {}",
                self.eval.kv_fraction
            );
        }
        if let Some(f) = self.eval.sweep.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            bail!("eval.sweep: {f} is not in (0, 1]");
        }
        if self.eval.kv_policy == "full" {
            bail!(
                "eval.kv_policy is the pruned policy compared with the full cache; `full` is not one"
            );
        }
        if self.eval.budget == Some(0) {
            bail!("eval.budget must be at least 1 token");
        }
        if self.eval.batch == 0 {
            bail!("eval.batch must be at least 1");
        }
        if let Some(r) = self.eval.ratio.filter(|r| !(*r > 0.0 && *r <= 1.0)) {
            bail!("eval.ratio must be in (0, 1], got {r}");
        }
        if !matches!(self.export.quantize.as_str(), "q8_0" | "q4_0" | "none") {
            bail!(
                "export.quantize must be q8_0, q4_0 or none, got {:?}",
                self.export.quantize
            );
        }
        if self.grpo.settings.budgets.contains(&0) {
            bail!("grpo.settings.budgets: a budget bucket of 0 tokens leaves no room to reason");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
model = "m.gguf"
[distill]
problems = "procedural:count=10,seed=1"
teacher = "procedural:verbose"
[sft]
train = { steps = 100, batch_size = 4 }
[grpo]
problems = "procedural:count=10,seed=2"
settings = { group = 4, budgets = [64, 128] }
[eval]
problems = "procedural:count=10,seed=3"
[sizes.tiny]
model = "tiny.gguf"
sft = { train = { steps = 2 } }
"#;

    fn load(text: &str, size: Option<&str>) -> Result<Pipeline> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text)?;
        Pipeline::load(&path, size)
    }

    #[test]
    fn a_size_overrides_only_what_it_names() {
        let p = load(BASE, None).expect("loads");
        assert_eq!(p.model, PathBuf::from("m.gguf"));
        assert_eq!(p.sft.train.steps, 100);
        assert_eq!(p.run_dir(), PathBuf::from("checkpoints/runs/t"));
        let t = load(BASE, Some("tiny")).expect("loads");
        assert_eq!(t.model, PathBuf::from("tiny.gguf"));
        assert_eq!(t.sft.train.steps, 2);
        assert_eq!(t.sft.train.batch_size, 4, "kept from the base");
        assert_eq!(t.grpo.settings.budgets, vec![64, 128]);
        assert_eq!(t.run_dir(), PathBuf::from("checkpoints/runs/t-tiny"));
        let e = load(BASE, Some("huge")).expect_err("no such size");
        assert!(e.to_string().contains("no size 'huge'"), "{e}");
    }

    #[test]
    fn bad_files_are_errors_that_say_where() {
        let e = load(&BASE.replace("[sft]", "[sft]\nstepz = 3"), None).expect_err("unknown key");
        let msg = format!("{e:#}");
        assert!(msg.contains("stepz") && msg.contains("line"), "{msg}");
        let e = load(&BASE.replace("[64, 128]", "[0, 128]"), None).expect_err("zero bucket");
        assert!(format!("{e:#}").contains("budget bucket of 0"), "{e:#}");
        let e =
            load(&BASE.replace("[eval]", "[eval]\nkv_fraction = 1.5"), None).expect_err("fraction");
        assert!(format!("{e:#}").contains("kv_fraction"), "{e:#}");
        let e =
            load(&BASE.replace("[eval]", "[eval]\nsweep = [0.5, 0.0]"), None).expect_err("sweep");
        assert!(format!("{e:#}").contains("eval.sweep: 0 "), "{e:#}");
        let e = load(&format!("{BASE}\n[label]\ngranularity = \"lines\"\n"), None)
            .expect_err("granularity");
        assert!(format!("{e:#}").contains("label.granularity"), "{e:#}");
        let e = load(
            &BASE.replace(
                "sft = { train = { steps = 2 } }",
                "sft = { train = { steps = \"x\" } }",
            ),
            Some("tiny"),
        )
        .expect_err("wrong type in a size");
        assert!(format!("{e:#}").contains("sizes.tiny"), "{e:#}");
    }
}
