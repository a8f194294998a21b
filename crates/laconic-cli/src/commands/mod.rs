//! One module per subcommand.

pub mod bench;
pub mod generate;
pub mod inspect;
pub mod score;

use anyhow::{Context, Result};
use laconic_infer::LoadedModel;

use crate::ModelArgs;

/// Loads the model that `--model` names onto the `--device`.
pub fn load_model(args: &ModelArgs) -> Result<LoadedModel> {
    let device = crate::device::parse(&args.device)?;
    laconic_infer::load(&args.model, &device)
        .with_context(|| format!("loading model {}", args.model.display()))
}
