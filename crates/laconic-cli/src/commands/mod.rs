//! One module per subcommand.

pub mod bench;
pub mod bench_train;
pub mod distill;
pub mod eval;
pub mod export;
pub mod generate;
pub mod grade;
pub mod inspect;
pub mod kv_eval;
pub mod label;
pub mod label_classifier;
pub mod run;
pub mod score;
pub mod serve;
pub mod teacher_logits;
pub mod train;

use anyhow::{Context, Result, anyhow};
use laconic_infer::{LoadedModel, WeightFormat};

use crate::ModelArgs;

/// Loads the model that `--model` names onto the `--device`.
pub fn load_model(args: &ModelArgs) -> Result<LoadedModel> {
    let device = crate::device::parse(&args.device)?;
    let weights = WeightFormat::parse(&args.weights).ok_or_else(|| {
        anyhow!(
            "unknown --weights '{}' (choose auto, f32, q8_0, int8 or int4)",
            args.weights
        )
    })?;
    laconic_infer::load_with(&args.model, &device, weights)
        .with_context(|| format!("loading model {}", args.model.display()))
}
