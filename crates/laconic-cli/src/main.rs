//! `laconic`: the command-line tool. Thin over the libraries: parse, validate, call.

mod commands;
mod device;
mod pipeline;

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
    /// How projection weights are held on the CPU: auto (GGUF Q8_0/Q4_0/Q4_1 stay quantized,
    /// the rest f32), f32, q8_0 (int8, a scale per 32), int8 (a scale per output channel) or
    /// int4 (4-bit blocks of 32). Quantized weights decode through laconic's own SIMD kernel.
    #[arg(long, default_value = "auto")]
    weights: String,
}

/// KV-cache eviction, shared by every command that decodes.
#[derive(Args, Debug, Clone)]
struct KvArgs {
    /// What the KV cache keeps: full, window (sinks + recent), h2o (heavy hitters), snapkv
    /// (prompt compression), rkv (importance and redundancy).
    #[arg(long, default_value = "full")]
    kv_policy: String,
    /// Entries each layer keeps (per KV head) under h2o, snapkv and rkv; sink + window for window.
    #[arg(long)]
    kv_budget: Option<usize>,
    /// Attention-sink entries (the first positions) always kept: window (default 4), h2o and
    /// rkv (default 0; part of the budget).
    #[arg(long)]
    kv_sink: Option<usize>,
    /// Recent entries always kept (h2o default budget/2; snapkv observation window, default 16;
    /// rkv observation window and recent entries kept, default 16).
    #[arg(long)]
    kv_window: Option<usize>,
    /// rkv: entries allowed above the budget before an eviction (default budget/4).
    #[arg(long)]
    kv_buffer: Option<usize>,
}

impl KvArgs {
    /// The validated policy settings.
    fn config(&self) -> anyhow::Result<laconic_infer::policy::KvPolicyConfig> {
        Ok(laconic_infer::policy::KvPolicyConfig::from_flags(
            &self.kv_policy,
            self.kv_budget,
            self.kv_sink,
            self.kv_window,
            self.kv_buffer,
        )?)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a prompt, streamed to stdout.
    #[command(after_help = "Examples:
  laconic generate --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt 'What is 7 * 8?'
  laconic generate -m checkpoints/qwen2.5-1.5b --prompt 'Once upon a time' --temperature 0.8 --top-p 0.95 --seed 1
  laconic generate -m model.gguf --chat --prompt 'Prove it.' --kv-policy rkv --kv-budget 128")]
    Generate(commands::generate::GenerateArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (chat and text completions, streamed or not).
    #[command(after_help = "Examples:
  laconic serve --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf
  laconic serve -m checkpoints/qwen2.5-1.5b --host 0.0.0.0 --port 8000 --model-name qwen --parallel 2 --queue 128
  laconic serve -m model.gguf --max-tokens 1024 --kv-policy rkv --kv-budget 256
  (then: curl http://127.0.0.1:8080/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'; docs/SERVE.md)")]
    Serve(commands::serve::ServeArgs),
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
    /// Measure training throughput (forward, backward, AdamW) on batches of fixed shape.
    #[command(after_help = "Example:
  laconic bench-train --model checkpoints/SmolLM2-135M-Instruct.F32.gguf --method lora --batch 4 --seq-len 256
  (side by side with PyTorch: scripts/bench_train_torch.py, see docs/BENCHMARKS.md)")]
    BenchTrain(commands::bench_train::BenchTrainArgs),
    /// Compare KV eviction policies and budgets: perplexity and greedy agreement with the full cache.
    #[command(after_help = "Example:
  laconic kv-eval --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --data ../shared/data/gsm8k/test.jsonl --budgets 64,128,256")]
    KvEval(commands::kv_eval::KvEvalArgs),
    /// Train a student from a recipe: SFT or LoRA, checkpoints, held-out loss, eval before and after.
    #[command(after_help = "Examples:
  laconic train recipes/smollm2-135m-gsm8k-lora.toml
  laconic train recipes/smollm2-135m-gsm8k-lora.toml --resume      # continue after a stop or a kill")]
    Train(commands::train::TrainArgs),
    /// Answer a dataset's problems greedily and grade them: accuracy, mean completion tokens.
    #[command(after_help = "Examples:
  laconic eval --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --dataset gsm8k --limit 50 --out eval.jsonl
  laconic eval -m checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --adapter checkpoints/runs/smollm2-135m-gsm8k-lora/adapter --dataset gsm8k")]
    Eval(commands::eval::EvalArgs),
    /// Export a run's checkpoint: a Hugging Face directory (merged, or base + PEFT adapter) or a GGUF for llama.cpp.
    #[command(after_help = "Examples:
  laconic export --run checkpoints/runs/smollm2-135m-gsm8k-lora --out exports/smollm2-gsm8k --merge-lora
  laconic export --run checkpoints/runs/smollm2-135m-gsm8k-lora --out exports/smollm2-gsm8k.Q8_0.gguf --format gguf --quantize q8_0")]
    Export(commands::export::ExportArgs),
    /// Label traces for compression: steps, token scores, and compressed variants per ratio that keep the math.
    #[command(after_help = "Examples:
  laconic label --in gsm8k:data/gsm8k/train.jsonl --scorer rules --ratios 0.5,0.7,0.9 --out checkpoints/gsm8k-train-labeled.jsonl --report checkpoints/gsm8k-train-label-report.json --variants-out checkpoints/gsm8k-train-compressed.jsonl
  laconic label --in traces.jsonl --scorer checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --ratios 0.6 --out labeled.jsonl --limit 100")]
    Label(commands::label::LabelArgs),
    /// Train the labeler's learned token classifier (a linear head on a model's hidden states) on a labeled file or on user-supplied compressions.
    #[command(after_help = "Examples:
  laconic label-classifier --labels checkpoints/gsm8k-train-labeled.jsonl --ratio 0.5 --encoder checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --out checkpoints/gsm8k-classifier.safetensors --limit 500
  laconic label-classifier --pairs my-compressions.jsonl --encoder checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --out mine.safetensors
  (then: laconic label --scorer checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --scorer-kind classifier --classifier checkpoints/gsm8k-classifier.safetensors ...)")]
    LabelClassifier(commands::label_classifier::LabelClassifierArgs),
    /// Grade outputs that already exist (JSONL lines with `output` and `gold`).
    #[command(after_help = "Example:
  laconic grade --dataset gsm8k --in outputs.jsonl --out graded.jsonl")]
    Grade(commands::grade::GradeArgs),
    /// Store a teacher's top-k next-token log-probabilities on training data, for logit distillation.
    #[command(after_help = "Example:
  laconic teacher-logits --teacher checkpoints/teacher.gguf --data gsm8k:data/gsm8k/train.jsonl --top-k 20 --out topk.jsonl
  (then in the recipe: [distill] topk = \"topk.jsonl\")")]
    TeacherLogits(commands::teacher_logits::TeacherLogitsArgs),
    /// Distill reasoning traces from a teacher: K samples per problem, graded, the best kept, resumable.
    #[command(after_help = "Examples:
  laconic distill --problems gsm8k:data/gsm8k/train.jsonl --teacher openai:http://127.0.0.1:8000/v1 --model Qwen/QwQ-32B --samples 4 --select shortest-correct --out traces.jsonl
  laconic distill --problems math500:data/math500/test.jsonl --teacher openai:https://api.deepseek.com --model deepseek-reasoner --api-key-env DEEPSEEK_API_KEY --samples 1 --out r1.jsonl
  laconic distill --problems gsm8k:data/gsm8k/test.jsonl --teacher local:checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf --samples 2 --limit 10 --out smol.jsonl
  laconic distill --problems gsm8k:data/gsm8k/train.jsonl --teacher file:jsonl:r1-dump.jsonl --select all-correct --out kept.jsonl")]
    Distill(commands::distill::DistillArgs),
    /// Run the whole concise-reasoning pipeline: distill, label, three students, export, evaluate, results table.
    #[command(after_help = "Examples:
  laconic run recipes/quickstart.toml               # the quickstart (SmolLM2-135M, procedural teacher)
  laconic run recipes/quickstart.toml --size tiny   # the same pipeline on a fixture model, in minutes
  (re-running skips finished stages and continues an interrupted one; results in RUN/results.md)")]
    Run(commands::run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => commands::generate::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Score(a) => commands::score::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::BenchTrain(a) => commands::bench_train::run(a),
        Command::KvEval(a) => commands::kv_eval::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Label(a) => commands::label::run(a),
        Command::LabelClassifier(a) => commands::label_classifier::run(a),
        Command::Grade(a) => commands::grade::run(a),
        Command::TeacherLogits(a) => commands::teacher_logits::run(a),
        Command::Distill(a) => commands::distill::run(a),
        Command::Run(a) => commands::run::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
