//! Lean inference for small reasoning models.
//!
//! One decoder for Llama, Qwen2/Qwen2.5 and Qwen3 ([`model::Model`]), loaded from Hugging
//! Face directories (safetensors, f32/f16/bf16, sharded or not) or GGUF files (F32, F16, BF16,
//! Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K; on the CPU Q8_0/Q4_0/Q4_1 stay packed and decode
//! through [`qmatrix`]'s SIMD kernel, the others are dequantized), with a caller-owned KV cache
//! ([`cache::KvCache`]) that eviction policies prune ([`policy`]), the model's own tokenizer
//! and chat template, and sampling.
//!
//! ```no_run
//! use burn::prelude::*;
//! use laconic_infer::{generate::{generate, GenerateConfig, SamplingConfig}, load};
//!
//! let device = Device::flex();
//! let m = load(std::path::Path::new("checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf"), &device)?;
//! let prompt = m.tokenizer.encode("The capital of France is", true)?;
//! let config = GenerateConfig {
//!     max_new_tokens: 8,
//!     sampling: SamplingConfig::default(),
//!     stop_tokens: m.config().eos_token_ids.clone(),
//!     ..Default::default()
//! };
//! let mut cache = m.model.new_cache();
//! let out = generate(&m.model, &m.tokenizer, &prompt, &config, &mut cache, |t| print!("{t}"))?;
//! # Ok::<(), laconic_infer::InferError>(())
//! ```
//!
//! This crate depends on no training code: an edge application can embed it alone.

pub mod cache;
pub mod chat;
pub mod config;
pub mod device;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod loader;
pub mod model;
pub mod parallel;
pub mod policy;
pub mod qmatrix;
pub mod rope;
pub mod safetensors;
pub mod spin;
pub mod tokenizer;
pub mod weights;

pub use error::{InferError, Result};
pub use loader::{LoadedModel, ModelInfo, load, load_config, load_with};
pub use model::WeightFormat;
