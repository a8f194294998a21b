//! `laconic serve`.

use std::path::Path;

use anyhow::{Result, bail};
use clap::Args;
use laconic_serve::{ServeConfig, run_until_signal, start};

use crate::ModelArgs;

/// Arguments of `laconic serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model's name in responses and /v1/models (default: the model file's or
    /// directory's name). Requests may name any model.
    #[arg(long)]
    model_name: Option<String>,
    /// Requests that may wait for the model; past that, 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Requests generated at once (model worker threads, each with its own KV cache).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Largest request body in bytes; past that, 413.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// max_tokens of a request that gives none (default: until the context is full).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Largest n (choices per request).
    #[arg(long, default_value_t = 16)]
    max_n: usize,
    #[command(flatten)]
    kv: crate::KvArgs,
}

/// The default served name: `SmolLM2-135M-Instruct.Q4_1` for
/// `checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf`, `qwen2.5-1.5b` for a directory of that name.
fn model_name(path: &Path) -> String {
    let path = if path.file_name().is_some_and(|n| n == "config.json") {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map_or_else(
        || "laconic".to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Runs `laconic serve` until SIGTERM or Ctrl-C, then drains.
pub fn run(args: ServeArgs) -> Result<()> {
    let kv_policy = args.kv.config()?;
    if args.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    let name = args
        .model_name
        .clone()
        .unwrap_or_else(|| model_name(&args.model.model));
    let m = super::load_model(&args.model)?;
    let config = ServeConfig {
        host: args.host,
        port: args.port,
        model_name: name.clone(),
        queue_capacity: args.queue,
        max_body_bytes: args.max_body_bytes,
        default_max_tokens: args.max_tokens,
        max_n: args.max_n,
        parallel: args.parallel,
        kv_policy,
        log_requests: true,
    };
    let server = start(m, config)?;
    eprintln!(
        "laconic serve: listening on http://{} (model {name})",
        server.local_addr()
    );
    run_until_signal(server)?;
    eprintln!("laconic serve: stopped");
    Ok(())
}
