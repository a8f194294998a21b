//! Training for laconic: teach a student to reason concisely on the shared decoder.
//!
//! The model is `laconic-infer`'s decoder (the one that generates on the edge) loaded in f32
//! on Burn's autodiff device. Methods: full SFT and LoRA ([`lora`]) on completion tokens
//! only, AdamW with global-norm clipping and warmup-then-cosine ([`optim`]), gradient
//! accumulation, checkpoints that resume bit for bit ([`checkpoint`]), recipes in TOML
//! ([`recipe`]), held-out loss and generation evaluation ([`eval`]).

pub mod checkpoint;
pub mod data;
pub mod distill;
pub mod error;
pub mod eval;
pub mod export;
pub mod grpo;
pub mod lora;
pub mod optim;
pub mod params;
pub mod plot;
pub mod recipe;
pub mod results;
pub mod reward;
pub mod trainer;

pub use error::{Result, TrainError};
pub use recipe::Recipe;
pub use trainer::{TrainOptions, TrainReport, train};
