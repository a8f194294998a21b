//! LoRA on the shared decoder: attach adapters to chosen projections, save them on their
//! own in PEFT's layout (`adapter_model.safetensors` + `adapter_config.json`), load them
//! back.
//!
//! The adapter lives in `laconic-infer` ([`laconic_infer::model::LoraAdapter`]) so that the
//! edge decoder can switch it on and off per call; this module adds what training needs.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use laconic_infer::model::{LoraAdapter, Model};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::checkpoint::write_json;
use crate::error::{Result, TrainError};
use crate::recipe::LoraSection;

/// Whether the projection named `name` (`model.layers.3.mlp.up_proj`) is a target.
fn is_target(name: &str, targets: &[String]) -> bool {
    if name == "lm_head" {
        return false;
    }
    targets
        .iter()
        .any(|t| t == "all-linear" || name.rsplit('.').next() == Some(t.as_str()))
}

/// Attaches fresh adapters to the target projections, as PEFT initializes them: `A`
/// uniform in ±1/√d_in (Kaiming-uniform with a = √5), `B` zero, so the model's output is
/// unchanged until training moves `B`. Every other parameter is frozen. Returns how many
/// adapters were attached.
pub fn attach(model: Model, lora: &LoraSection, seed: u64) -> Result<(Model, usize)> {
    let mut model = model.no_grad();
    let device = model.embed_tokens.weight.device();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x10_4A_0A_D4);
    let mut count = 0;
    for (name, proj) in model.projections_mut() {
        if !is_target(&name, &lora.targets) {
            continue;
        }
        let (d_in, d_out) = proj.shape();
        let bound = 1.0 / (d_in as f32).sqrt();
        let a: Vec<f32> = (0..d_in * lora.rank)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        proj.lora = Some(LoraAdapter {
            a: Param::from_tensor(Tensor::from_data(
                TensorData::new(a, [d_in, lora.rank]),
                &device,
            )),
            b: Param::from_tensor(Tensor::zeros([lora.rank, d_out], &device)),
            scale: lora.alpha / lora.rank as f64,
            dropout: lora.dropout,
        });
        count += 1;
    }
    if count == 0 {
        return Err(TrainError::Invalid(format!(
            "lora.targets {:?} match no projection of the model",
            lora.targets
        )));
    }
    Ok((model, count))
}

/// Saves the adapters in PEFT's layout: `adapter_model.safetensors`
/// (`base_model.model.<name>.lora_A.weight` `[r, d_in]`, `lora_B.weight` `[d_out, r]`) and
/// `adapter_config.json`. `base` is recorded as `base_model_name_or_path`.
pub fn save_peft(model: &mut Model, lora: &LoraSection, base: &str, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut tensors = Vec::new();
    let mut modules = Vec::new();
    for (name, proj) in model.projections_mut() {
        let Some(l) = &proj.lora else { continue };
        let a = l.a.val().transpose();
        let b = l.b.val().transpose();
        for (suffix, t) in [("lora_A", a), ("lora_B", b)] {
            let dims = t.dims().to_vec();
            let v = t
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| TrainError::Invalid(format!("{name}: {e:?}")))?;
            tensors.push((format!("base_model.model.{name}.{suffix}.weight"), dims, v));
        }
        if let Some(short) = name.rsplit('.').next()
            && !modules.contains(&short.to_string())
        {
            modules.push(short.to_string());
        }
    }
    let n = tensors.len() / 2;
    laconic_infer::safetensors::write_f32(
        &dir.join("adapter_model.safetensors"),
        &tensors,
        &[("format".into(), "pt".into())],
    )?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
    });
    write_json(&dir.join("adapter_config.json"), &config)?;
    Ok(n)
}

/// Loads a PEFT LoRA adapter directory onto `model` (attaching adapters where the file has
/// them). Returns how many were attached.
pub fn load_peft(model: &mut Model, dir: &Path) -> Result<usize> {
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| TrainError::io(&cfg_path, e))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::checkpoint(&cfg_path, format!("not JSON: {e}")))?;
    let r = cfg["r"]
        .as_u64()
        .ok_or_else(|| TrainError::checkpoint(&cfg_path, "missing integer field \"r\""))?
        as usize;
    let alpha = cfg["lora_alpha"]
        .as_f64()
        .ok_or_else(|| TrainError::checkpoint(&cfg_path, "missing number \"lora_alpha\""))?;
    let path = dir.join("adapter_model.safetensors");
    let file = laconic_infer::safetensors::SafetensorsFile::open(&path)?;
    let device = model.embed_tokens.weight.device();
    let mut count = 0;
    let mut seen = HashMap::new();
    for (name, proj) in model.projections_mut() {
        let read = |suffix: &str| -> Result<Option<(Vec<f32>, Vec<usize>)>> {
            Ok(file.tensor_f32(&format!("base_model.model.{name}.{suffix}.weight"))?)
        };
        let (Some((a, a_shape)), Some((b, b_shape))) = (read("lora_A")?, read("lora_B")?) else {
            continue;
        };
        let (d_in, d_out) = proj.shape();
        if a_shape != [r, d_in] || b_shape != [d_out, r] {
            return Err(TrainError::checkpoint(
                &path,
                format!(
                    "{name}: lora_A {a_shape:?} / lora_B {b_shape:?}, expected [{r}, {d_in}] / [{d_out}, {r}]"
                ),
            ));
        }
        let a = Tensor::<2>::from_data(TensorData::new(a, [r, d_in]), &device).transpose();
        let b = Tensor::<2>::from_data(TensorData::new(b, [d_out, r]), &device).transpose();
        proj.lora = Some(LoraAdapter {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scale: alpha / r as f64,
            dropout: 0.0,
        });
        seen.insert(name, ());
        count += 1;
    }
    let expected = file
        .names()
        .filter(|n| n.ends_with(".lora_A.weight"))
        .count();
    if count != expected {
        return Err(TrainError::checkpoint(
            &path,
            format!("{expected} adapters in the file, {count} match projections of the model"),
        ));
    }
    Ok(count)
}
