//! Export: a training run (or any loaded model) to a Hugging Face directory or a GGUF file
//! that other tools load as they are.
//!
//! ```text
//! laconic export --run RUN --out OUT --format hf     OUT/config.json, model.safetensors (f32,
//!                                                    HF names, [out, in]), generation_config.json,
//!                                                    tokenizer.json, tokenizer_config.json
//!                                                    (+ OUT/adapter/ in PEFT's layout for an
//!                                                    unmerged LoRA run)
//! laconic export --run RUN --out OUT --format gguf   OUT/model.gguf (or OUT itself when it ends
//!                                                    in .gguf): GGUF v3, llama.cpp's names and
//!                                                    metadata, F32 or Q8_0/Q4_0 weights
//! ```
//!
//! The run's base model is loaded in f32 on the CPU, LoRA adapters are re-attached for a LoRA
//! run, and the checkpoint's `trainable.safetensors` overwrites the trained parameters, so the
//! exported model is exactly the one the checkpoint holds.
//!
//! GGUF follows llama.cpp's `convert_hf_to_gguf.py` conventions (read, not copied): tensor
//! names from [`gguf_name`], the `{arch}.*` hyper-parameters with the types llama.cpp checks,
//! the byte-level BPE vocabulary as `tokenizer.ggml.*` (`gpt2` model, the pre-tokenizer named
//! from the `tokenizer.json` regex), the Llama 3 rope scaling as `rope_freqs.weight`, and, for
//! the `llama` architecture only, the query and key rows permuted from Hugging Face's
//! rotate-half order to llama.cpp's interleaved pairs (the inverse of what laconic's loader
//! undoes). Quantized files store every 2-D weight (embedding and output head included) as
//! `Q8_0` or `Q4_0`, byte for byte as gguf-py quantizes; norms and biases stay F32. A GGUF has
//! no separate adapter, so LoRA is always merged into it.
//!
//! Outputs are never overwritten: an existing file or non-empty directory at `OUT` is an
//! error. A Hugging Face directory is assembled in `OUT.laconic-partial/` and renamed into
//! place, a GGUF is written to `FILE.tmp` and renamed, so an interrupted export leaves nothing
//! that looks finished.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use laconic_infer::chat::ChatTemplate;
use laconic_infer::config::{Family, ModelConfig, RopeScaling};
use laconic_infer::gguf::vocab;
use laconic_infer::gguf::write::{GgufWriter, MetaValue};
use laconic_infer::gguf::{GgmlType, GgufFile};
use laconic_infer::loader::Format;
use laconic_infer::model::Model;
use laconic_infer::weights::gguf_name;
use laconic_infer::{LoadedModel, WeightFormat};
use serde_json::{Value, json};

use crate::checkpoint::{self, write_atomic, write_json};
use crate::error::{Result, TrainError};
use crate::params::NamedTensor;
use crate::recipe::{ExportSection, LoraSection, Recipe};

/// The container an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A Hugging Face model directory (safetensors, f32).
    Hf,
    /// A GGUF v3 file for llama.cpp.
    Gguf,
}

impl ExportFormat {
    /// Parses `hf` or `gguf`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hf" => Some(Self::Hf),
            "gguf" => Some(Self::Gguf),
            _ => None,
        }
    }

    /// `hf` or `gguf`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hf => "hf",
            Self::Gguf => "gguf",
        }
    }
}

/// A GGML quantization the GGUF export can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// int8, blocks of 32 with an f16 scale (llama.cpp file type 7, `MOSTLY_Q8_0`).
    Q8_0,
    /// 4-bit, blocks of 32 with an f16 scale (llama.cpp file type 2, `MOSTLY_Q4_0`).
    Q4_0,
}

impl Quant {
    /// Parses `q8_0` or `q4_0`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "q8_0" => Some(Self::Q8_0),
            "q4_0" => Some(Self::Q4_0),
            _ => None,
        }
    }

    /// `q8_0` or `q4_0`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
        }
    }

    fn ggml_type(self) -> GgmlType {
        match self {
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// llama.cpp's `general.file_type` for a file mostly of this type.
    fn file_type(self) -> u32 {
        match self {
            Self::Q8_0 => 7,
            Self::Q4_0 => 2,
        }
    }
}

/// What to export and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Hugging Face directory or GGUF file.
    pub format: ExportFormat,
    /// Fold LoRA adapters into the weights (a GGUF always merges them).
    pub merge_lora: bool,
    /// Quantize the GGUF's 2-D weights (GGUF only).
    pub quantize: Option<Quant>,
    /// The checkpoint directory to export (`RUN/checkpoints/step-N`); default: the run's
    /// latest.
    pub checkpoint: Option<PathBuf>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            format: ExportFormat::Hf,
            merge_lora: false,
            quantize: None,
            checkpoint: None,
        }
    }
}

impl ExportOptions {
    /// The options a recipe's `[export]` section asks for (Hugging Face, unmerged,
    /// unquantized when there is none).
    pub fn from_section(section: Option<&ExportSection>) -> Result<Self> {
        let Some(s) = section else {
            return Ok(Self::default());
        };
        let format = ExportFormat::parse(&s.format).ok_or_else(|| {
            TrainError::Invalid(format!(
                "export.format = {:?}: expected \"hf\" or \"gguf\"",
                s.format
            ))
        })?;
        let quantize = match &s.quantize {
            None => None,
            Some(q) => Some(Quant::parse(q).ok_or_else(|| {
                TrainError::Invalid(format!(
                    "export.quantize = {q:?}: expected \"q8_0\" or \"q4_0\""
                ))
            })?),
        };
        Ok(Self {
            format,
            merge_lora: s.merge_lora,
            quantize,
            checkpoint: None,
        })
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The directory (Hugging Face) or file (GGUF) written.
    pub path: PathBuf,
    /// Its format.
    pub format: ExportFormat,
    /// The quantization of the GGUF's 2-D weights, if any.
    pub quantize: Option<Quant>,
    /// Tensors written (model and adapter).
    pub tensors: usize,
    /// Bytes written (every file).
    pub bytes: u64,
    /// LoRA adapters folded into the weights.
    pub merged_adapters: usize,
    /// The PEFT adapter directory, for an unmerged LoRA export.
    pub adapter: Option<PathBuf>,
    /// The checkpoint exported (`None` when a loaded model was exported directly).
    pub checkpoint: Option<PathBuf>,
    /// Things the user should know (LoRA merged although not asked, a tensor left in F32).
    pub notes: Vec<String>,
}

/// Reads a run directory's resolved recipe, with errors that name the run.
pub fn run_recipe(run: &Path) -> Result<Recipe> {
    if !run.is_dir() {
        return Err(TrainError::Invalid(format!(
            "run directory {} does not exist (expected a directory `laconic train` wrote)",
            run.display()
        )));
    }
    let path = run.join("recipe.toml");
    if !path.is_file() {
        return Err(TrainError::Invalid(format!(
            "{} is missing: {} is not a run directory written by `laconic train`",
            path.display(),
            run.display()
        )));
    }
    Recipe::load(&path)
}

/// Exports a run's checkpoint (the latest unless `opts.checkpoint` names one) to `out`.
pub fn export_run(run: &Path, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    check_options(opts)?;
    let recipe = run_recipe(run)?;
    let ck = match &opts.checkpoint {
        Some(dir) => dir.clone(),
        None => checkpoint::latest(run)?.ok_or_else(|| {
            TrainError::checkpoint(
                run,
                "the run has no checkpoint yet (no checkpoints/latest); train it first",
            )
        })?,
    };
    let trainable_path = ck.join("trainable.safetensors");
    if !trainable_path.is_file() {
        return Err(TrainError::checkpoint(
            &trainable_path,
            "missing: not a laconic checkpoint directory",
        ));
    }
    let target = target_path(out, opts.format)?;
    refuse_existing(&target.check)?;

    let trainable = checkpoint::read_all(&trainable_path)?;
    let loaded = laconic_infer::load_with(&recipe.model.path, &Device::flex(), WeightFormat::F32)?;
    let LoadedModel {
        model,
        tokenizer,
        chat_template,
        info,
    } = loaded;
    let lora = recipe.adapter();
    let model = match lora {
        // Fresh adapters of the right shapes, whose values the checkpoint then replaces.
        Some(l) => crate::lora::attach(model, l, recipe.train.seed)?.0,
        None => model,
    };
    let model = crate::params::assign(model, trainable, &trainable_path)?;
    let loaded = LoadedModel {
        model,
        tokenizer,
        chat_template,
        info,
    };
    let mut report = export_loaded(loaded, &recipe.name, lora, out, opts)?;
    report.checkpoint = Some(ck);
    Ok(report)
}

/// Exports a loaded model (with any LoRA adapters it holds) to `out`; `name` becomes the
/// GGUF's `general.name`, `lora` the settings recorded in an unmerged adapter's
/// `adapter_config.json`. The tokenizer files come from the model's base (`loaded.info.path`).
/// `opts.checkpoint` is ignored.
pub fn export_loaded(
    loaded: LoadedModel,
    name: &str,
    lora: Option<&LoraSection>,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportReport> {
    check_options(opts)?;
    let target = target_path(out, opts.format)?;
    refuse_existing(&target.check)?;
    match opts.format {
        ExportFormat::Hf => write_hf(loaded, lora, &target.path, opts),
        ExportFormat::Gguf => write_gguf(loaded, name, &target.path, opts),
    }
}

fn check_options(opts: &ExportOptions) -> Result<()> {
    if let (ExportFormat::Hf, Some(q)) = (opts.format, opts.quantize) {
        return Err(TrainError::Invalid(format!(
            "--quantize {} needs --format gguf: a Hugging Face export is f32 safetensors \
             (use --format gguf --quantize {}, or drop --quantize)",
            q.name(),
            q.name()
        )));
    }
    Ok(())
}

/// Where an export goes, and what must not exist yet.
struct Target {
    /// The directory (HF) or file (GGUF) to write.
    path: PathBuf,
    /// What is refused if it exists (the file, or a non-empty directory).
    check: PathBuf,
}

fn target_path(out: &Path, format: ExportFormat) -> Result<Target> {
    if out.as_os_str().is_empty() {
        return Err(TrainError::Invalid("--out is empty".into()));
    }
    let is_gguf_file = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    Ok(match format {
        ExportFormat::Gguf if is_gguf_file => Target {
            path: out.to_path_buf(),
            check: out.to_path_buf(),
        },
        ExportFormat::Gguf => Target {
            path: out.join("model.gguf"),
            check: out.to_path_buf(),
        },
        ExportFormat::Hf if is_gguf_file => {
            return Err(TrainError::Invalid(format!(
                "{}: --format hf writes a directory; give a directory path, or use --format gguf",
                out.display()
            )));
        }
        ExportFormat::Hf => Target {
            path: out.to_path_buf(),
            check: out.to_path_buf(),
        },
    })
}

/// Refuses an existing file or non-empty directory: an export never overwrites.
fn refuse_existing(path: &Path) -> Result<()> {
    let occupied = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| TrainError::io(path, e))?
            .next()
            .is_some()
    } else {
        path.exists()
    };
    if occupied {
        return Err(TrainError::Invalid(format!(
            "{} already exists and is not empty; laconic export never overwrites (choose \
             another --out, or remove it)",
            path.display()
        )));
    }
    Ok(())
}

fn values<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Invalid(format!("{what}: cannot read tensor data: {e:?}")))
}

fn named<const D: usize>(name: String, t: Tensor<D>) -> Result<NamedTensor> {
    let shape = t.dims().to_vec();
    let v = values(t, &name)?;
    Ok((name, shape, v))
}

/// Every weight under its Hugging Face name, in Hugging Face layout (`[out, in]` for linear
/// weights) and in `state_dict` order. Adapters are left out: a projection contributes its
/// base weight (which holds the adapter after [`Model::merge_lora`]). A tied head has no
/// `lm_head.weight`.
pub fn hf_state(model: &Model) -> Result<Vec<NamedTensor>> {
    let device = model.embed_tokens.weight.device();
    let mut out = vec![named(
        "model.embed_tokens.weight".into(),
        model.embed_tokens.weight.val(),
    )?];
    for (i, l) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = &l.self_attn;
        for (n, proj) in [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
        ] {
            out.push(named(
                format!("{p}.self_attn.{n}.weight"),
                proj.dense_weight(&device).transpose(),
            )?);
            if let Some(b) = &proj.bias {
                out.push(named(format!("{p}.self_attn.{n}.bias"), b.val())?);
            }
        }
        for (n, norm) in [("q_norm", &a.q_norm), ("k_norm", &a.k_norm)] {
            if let Some(norm) = norm {
                out.push(named(
                    format!("{p}.self_attn.{n}.weight"),
                    norm.gamma.val(),
                )?);
            }
        }
        let m = &l.mlp;
        for (n, proj) in [
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
        ] {
            out.push(named(
                format!("{p}.mlp.{n}.weight"),
                proj.dense_weight(&device).transpose(),
            )?);
        }
        out.push(named(
            format!("{p}.input_layernorm.weight"),
            l.input_layernorm.gamma.val(),
        )?);
        out.push(named(
            format!("{p}.post_attention_layernorm.weight"),
            l.post_attention_layernorm.gamma.val(),
        )?);
    }
    out.push(named("model.norm.weight".into(), model.norm.gamma.val())?);
    if let Some(head) = &model.lm_head {
        out.push(named(
            "lm_head.weight".into(),
            head.dense_weight(&device).transpose(),
        )?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Hugging Face directory
// ---------------------------------------------------------------------------------------

/// A number stored as f32 (GGUF metadata) written as the shortest decimal that reads back as
/// the same f32 (`1e-5`, not `9.999999747378752e-06`).
fn f32_decimal(x: f64) -> f64 {
    let s = (x as f32).to_string();
    s.parse().unwrap_or(x)
}

/// `config.json` for the family, with every field `transformers` needs to rebuild the model.
pub fn hf_config(c: &ModelConfig) -> Result<Value> {
    let (arch, model_type) = match c.family {
        Family::Llama => ("LlamaForCausalLM", "llama"),
        Family::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Family::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
    };
    let rope_scaling = match &c.rope.scaling {
        RopeScaling::None => Value::Null,
        RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
        RopeScaling::Factors(_) => {
            return Err(TrainError::Invalid(
                "the base model's rope frequency factors (GGUF rope_freqs.weight) have no \
                 config.json form; export this model with --format gguf"
                    .into(),
            ));
        }
    };
    let eos = match c.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let mut v = json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": f32_decimal(c.rms_norm_eps),
        "rope_theta": f32_decimal(c.rope.theta),
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": c.attention_bias,
        "attention_dropout": 0.0,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos,
        "torch_dtype": "float32",
        "use_cache": true,
    });
    if let Some(o) = v.as_object_mut() {
        match c.family {
            Family::Llama => {
                o.insert("mlp_bias".into(), json!(false));
            }
            Family::Qwen2 | Family::Qwen3 => {
                o.insert("use_sliding_window".into(), json!(false));
                o.insert("sliding_window".into(), Value::Null);
                o.insert("max_window_layers".into(), json!(c.num_layers));
            }
        }
    }
    Ok(v)
}

/// Tokenizer and generation files copied from a Hugging Face base.
const HF_TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
];

fn write_hf(
    loaded: LoadedModel,
    lora: Option<&LoraSection>,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportReport> {
    let LoadedModel {
        mut model,
        tokenizer,
        chat_template,
        info,
    } = loaded;
    let config = model.config().clone();
    let config_json = hf_config(&config)?;
    let adapters = model
        .projections_mut()
        .iter()
        .filter(|(_, p)| p.lora.is_some())
        .count();
    let lora = match lora {
        _ if adapters == 0 || opts.merge_lora => None,
        Some(l) => Some(l),
        None => {
            return Err(TrainError::Invalid(
                "the model holds LoRA adapters but no LoRA settings were given; merge them \
                 (--merge-lora) or pass the recipe's [lora] section"
                    .into(),
            ));
        }
    };
    let merged = if opts.merge_lora {
        model.merge_lora()
    } else {
        0
    };

    let file_name = out.file_name().ok_or_else(|| {
        TrainError::Invalid(format!("{}: --out needs a directory name", out.display()))
    })?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    let mut staging_name = file_name.to_owned();
    staging_name.push(".laconic-partial");
    let staging = parent.join(staging_name);
    if staging.exists() {
        // Left by an interrupted export of the same path: laconic's own scratch space.
        std::fs::remove_dir_all(&staging).map_err(|e| TrainError::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| TrainError::io(&staging, e))?;

    let fill = || -> Result<usize> {
        write_json(&staging.join("config.json"), &config_json)?;
        let state = hf_state(&model)?;
        let mut tensors = state.len();
        laconic_infer::safetensors::write_f32(
            &staging.join("model.safetensors"),
            &state,
            &[("format".into(), "pt".into())],
        )?;
        drop(state);
        match info.format {
            Format::Safetensors => {
                for f in HF_TOKENIZER_FILES {
                    let src = info.path.join(f);
                    if src.is_file() {
                        std::fs::copy(&src, staging.join(f))
                            .map_err(|e| TrainError::io(&src, e))?;
                    }
                }
            }
            Format::Gguf(_) => write_tokenizer_from_gguf(
                &info.path,
                &config,
                &tokenizer,
                chat_template.as_ref(),
                &staging,
            )?,
        }
        if !staging.join("generation_config.json").is_file() {
            let eos = config_json
                .get("eos_token_id")
                .cloned()
                .unwrap_or(Value::Null);
            write_json(
                &staging.join("generation_config.json"),
                &json!({"bos_token_id": config.bos_token_id, "eos_token_id": eos}),
            )?;
        }
        if let Some(l) = lora {
            // PEFT records the base it was trained on; here that is the exported directory.
            let base = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
            let mut model = model.clone();
            let n = crate::lora::save_peft(
                &mut model,
                l,
                &base.to_string_lossy(),
                &staging.join("adapter"),
            )?;
            tensors += 2 * n;
        }
        Ok(tensors)
    };
    let tensors = match fill() {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    drop(model);
    if out.is_dir() {
        // An empty directory (checked by the caller) is replaced.
        std::fs::remove_dir(out).map_err(|e| TrainError::io(out, e))?;
    }
    std::fs::rename(&staging, out).map_err(|e| TrainError::io(out, e))?;
    Ok(ExportReport {
        path: out.to_path_buf(),
        format: ExportFormat::Hf,
        quantize: None,
        tensors,
        bytes: dir_bytes(out)?,
        merged_adapters: merged,
        adapter: lora.map(|_| out.join("adapter")),
        checkpoint: None,
        notes: Vec::new(),
    })
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let entry = entry.map_err(|e| TrainError::io(dir, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| TrainError::io(&path, e))?;
        total += if meta.is_dir() {
            dir_bytes(&path)?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `tokenizer.json` and `tokenizer_config.json` for a model whose base is a GGUF file: the
/// tokenizer laconic rebuilt from the GGUF metadata, with a BOS template when the GGUF asks
/// for BOS (`tokenizer.ggml.add_bos_token`).
fn write_tokenizer_from_gguf(
    gguf: &Path,
    config: &ModelConfig,
    tokenizer: &laconic_infer::tokenizer::Tokenizer,
    chat: Option<&ChatTemplate>,
    dir: &Path,
) -> Result<()> {
    let file = GgufFile::open(gguf)?;
    let add_bos = file
        .get("tokenizer.ggml.add_bos_token")
        .and_then(laconic_infer::gguf::GgufValue::as_bool)
        .unwrap_or(false);
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let bos = token(config.bos_token_id);
    let eos = token(config.eos_token_ids.first().copied());
    let mut spec: Value = serde_json::from_str(&tokenizer.to_json()?)
        .map_err(|e| TrainError::Invalid(format!("tokenizer JSON: {e}")))?;
    if let (true, Some(bos), Some(id)) = (add_bos, &bos, config.bos_token_id) {
        let bos_piece = json!({"SpecialToken": {"id": bos, "type_id": 0}});
        spec["post_processor"] = json!({
            "type": "TemplateProcessing",
            "single": [bos_piece, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos_piece, {"Sequence": {"id": "A", "type_id": 0}},
                     bos_piece, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos.as_str(): {"id": bos, "ids": [id], "tokens": [bos]}},
        });
    }
    let text = serde_json::to_string_pretty(&spec)
        .map_err(|e| TrainError::Invalid(format!("tokenizer JSON: {e}")))?;
    write_atomic(&dir.join("tokenizer.json"), text.as_bytes())?;
    let mut tc = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": null,
        "unk_token": null,
        "add_bos_token": add_bos,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": config.max_position_embeddings,
    });
    if let Some(t) = chat {
        tc["chat_template"] = json!(t.source());
    }
    write_json(&dir.join("tokenizer_config.json"), &tc)
}

// ---------------------------------------------------------------------------------------
// GGUF
// ---------------------------------------------------------------------------------------

/// Reorders the rows of a query or key weight (or bias) from Hugging Face's rotate-half
/// order to llama.cpp's interleaved pairs, per head: GGUF row `h·d + 2i + j` is Hugging Face
/// row `h·d + j·d/2 + i` (`d` the head width, `i < d/2`, `j ∈ {0, 1}`). `cols` values per row
/// (1 for a bias).
pub fn permute_qk(data: &[f32], n_head: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let d = rows / n_head;
    let half = d / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * d + j * half + i;
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Llama 3 rope scaling as llama.cpp's per-frequency divisors (`rope_freqs.weight`):
/// llama.cpp divides frequency `i` by entry `i`.
fn llama3_rope_factors(c: &ModelConfig) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    } = c.rope.scaling
    else {
        return None;
    };
    let old = original_max_position_embeddings as f64;
    let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
    Some(
        (0..c.head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / c.head_dim as f32;
                let freq = (1.0 / c.rope.theta.powf(exponent as f64)) as f32 as f64;
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let divisor = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                divisor as f32
            })
            .collect(),
    )
}

/// The `{arch}.*` and `general.*` metadata llama.cpp reads for the family.
fn model_metadata(w: &mut GgufWriter, c: &ModelConfig, name: &str, quantize: Option<Quant>) {
    let arch = c.family.name();
    let k = |key: &str| format!("{arch}.{key}");
    let u = |v: usize| MetaValue::U32(v as u32);
    w.set("general.name", MetaValue::Str(name.into()));
    w.set(k("block_count"), u(c.num_layers));
    w.set(k("context_length"), u(c.max_position_embeddings));
    w.set(k("embedding_length"), u(c.hidden_size));
    w.set(k("feed_forward_length"), u(c.intermediate_size));
    w.set(k("attention.head_count"), u(c.num_heads));
    w.set(k("attention.head_count_kv"), u(c.num_kv_heads));
    w.set(k("rope.freq_base"), MetaValue::F32(c.rope.theta as f32));
    w.set(
        k("attention.layer_norm_rms_epsilon"),
        MetaValue::F32(c.rms_norm_eps as f32),
    );
    if c.head_dim * c.num_heads != c.hidden_size {
        w.set(k("attention.key_length"), u(c.head_dim));
        w.set(k("attention.value_length"), u(c.head_dim));
    }
    if c.family == Family::Llama {
        w.set(k("vocab_size"), u(c.vocab_size));
        w.set(k("rope.dimension_count"), u(c.head_dim));
    }
    if let RopeScaling::Linear { factor } = c.rope.scaling {
        w.set(k("rope.scaling.type"), MetaValue::Str("linear".into()));
        w.set(k("rope.scaling.factor"), MetaValue::F32(factor as f32));
    }
    w.set(
        "general.file_type",
        MetaValue::U32(quantize.map_or(0, Quant::file_type)),
    );
    w.set("general.quantization_version", MetaValue::U32(2));
}

fn write_gguf(
    loaded: LoadedModel,
    name: &str,
    path: &Path,
    opts: &ExportOptions,
) -> Result<ExportReport> {
    let LoadedModel {
        mut model,
        chat_template,
        info,
        ..
    } = loaded;
    let mut notes = Vec::new();
    let merged = model.merge_lora();
    if merged > 0 && !opts.merge_lora {
        notes.push(format!(
            "merged {merged} LoRA adapters into the weights: a GGUF has no separate adapter"
        ));
    }
    let c = model.config().clone();
    let arch = c.family.name();
    let mut w = GgufWriter::new(arch);
    model_metadata(&mut w, &c, name, opts.quantize);
    let tok_meta = match info.format {
        Format::Gguf(_) => vocab::copy_tokenizer_metadata(&GgufFile::open(&info.path)?)?,
        Format::Safetensors => vocab::tokenizer_metadata(
            &info.path,
            &c,
            chat_template.as_ref().map(ChatTemplate::source),
        )?,
    };
    for (k, v) in tok_meta {
        w.set(k, v);
    }

    let rope_freqs = match &c.rope.scaling {
        RopeScaling::Factors(f) => Some(f.clone()),
        RopeScaling::Llama3 { .. } => llama3_rope_factors(&c),
        _ => None,
    };
    if rope_freqs.is_some() && c.family != Family::Llama {
        return Err(TrainError::Invalid(format!(
            "per-frequency rope scaling (rope_freqs) is only written for the llama \
             architecture, not {arch}"
        )));
    }
    let mut data: Vec<Vec<f32>> = Vec::new();
    if let Some(f) = rope_freqs {
        w.add_tensor("rope_freqs.weight", &[f.len()], GgmlType::F32)?;
        data.push(f);
    }
    let state = hf_state(&model)?;
    drop(model);
    let mut f32_fallback = Vec::new();
    for (hf, shape, values) in state {
        let gname = gguf_name(&hf)
            .ok_or_else(|| TrainError::Invalid(format!("tensor '{hf}' has no llama.cpp name")))?;
        let values = match (c.family, hf.rsplit('.').nth(1)) {
            (Family::Llama, Some("q_proj")) => {
                permute_qk(&values, c.num_heads, values.len() / shape[0])
            }
            (Family::Llama, Some("k_proj")) => {
                permute_qk(&values, c.num_kv_heads, values.len() / shape[0])
            }
            _ => values,
        };
        let ty = match opts.quantize {
            Some(q) if shape.len() == 2 => {
                if shape[1].is_multiple_of(32) {
                    q.ggml_type()
                } else {
                    f32_fallback.push(gname.clone());
                    GgmlType::F32
                }
            }
            _ => GgmlType::F32,
        };
        w.add_tensor(&gname, &shape, ty)?;
        data.push(values);
    }
    if let (Some(q), false) = (opts.quantize, f32_fallback.is_empty()) {
        notes.push(format!(
            "{} tensors kept in F32 ({} needs rows of a multiple of 32 values): {}",
            f32_fallback.len(),
            q.name(),
            f32_fallback.join(", ")
        ));
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    }
    let tensors = w.tensors().len();
    let bytes = w.write(path, |i, _| Ok(std::mem::take(&mut data[i])))?;
    Ok(ExportReport {
        path: path.to_path_buf(),
        format: ExportFormat::Gguf,
        quantize: opts.quantize,
        tensors,
        bytes,
        merged_adapters: merged,
        adapter: None,
        checkpoint: None,
        notes,
    })
}
