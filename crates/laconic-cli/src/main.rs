//! `laconic`: the command-line tool. Thin over the libraries: parse, validate, call.

mod commands;
mod device;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Teach small models to reason concisely, and run them on the edge.
#[derive(Parser, Debug)]
#[command(name = "laconic", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that loads a model.
#[derive(Args, Debug, Clone)]
struct ModelArgs {
    /// A GGUF file or a Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Compute device: flex (CPU, default), cuda, wgpu or tch (each GPU backend needs its cargo feature).
    #[arg(long, default_value = "flex")]
    device: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt, streamed to stdout.
    #[command(after_help = "Examples:
  laconic generate --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt 'What is 7 * 8?'
  laconic generate -m checkpoints/qwen2.5-1.5b --prompt 'Once upon a time' --temperature 0.8 --top-p 0.95 --seed 1")]
    Generate(commands::generate::GenerateArgs),
    /// Print every token of a text with its log-probability under the model.
    #[command(after_help = "Examples:
  laconic score --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --text 'Two plus two is four.'
  laconic score -m model.gguf --text \"$(cat trace.txt)\" --json > scores.json")]
    Score(commands::score::ScoreArgs),
    /// Describe a checkpoint: architecture, shapes, tensor types, tokenizer, chat template.
    #[command(after_help = "Example:
  laconic inspect --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf")]
    Inspect(commands::inspect::InspectArgs),
    /// Measure prefill and decode speed and peak memory.
    #[command(after_help = "Example:
  laconic bench --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --prompt-tokens 128 --new-tokens 64")]
    Bench(commands::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => commands::generate::run(a),
        Command::Score(a) => commands::score::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Bench(a) => commands::bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
