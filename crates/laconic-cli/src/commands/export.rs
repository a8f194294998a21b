//! `laconic export`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use laconic_train::export::{ExportFormat, ExportOptions, Quant, export_run, run_recipe};

/// Arguments of `laconic export`. Flags left out take the run's recipe `[export]` section,
/// then the defaults (hf, unmerged, unquantized).
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run directory `laconic train` wrote (it holds recipe.toml and checkpoints/).
    #[arg(long)]
    run: PathBuf,
    /// Where to write: a directory for hf; for gguf a directory (OUT/model.gguf is written)
    /// or a path ending in .gguf. An existing file or non-empty directory is refused.
    #[arg(long)]
    out: PathBuf,
    /// hf (a Hugging Face directory, f32 safetensors) or gguf (for llama.cpp).
    #[arg(long)]
    format: Option<String>,
    /// Fold LoRA adapters into the weights (hf; a GGUF always merges them).
    #[arg(long, conflicts_with = "no_merge_lora")]
    merge_lora: bool,
    /// Keep LoRA adapters apart (hf: base weights plus OUT/adapter/ in PEFT's layout), even
    /// if the recipe says merge_lora = true.
    #[arg(long)]
    no_merge_lora: bool,
    /// Quantize the GGUF's weights: q8_0 or q4_0 (gguf only); none overrides the recipe.
    #[arg(long)]
    quantize: Option<String>,
    /// The checkpoint directory to export (RUN/checkpoints/step-N); default: the latest.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
}

/// Runs `laconic export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let recipe = run_recipe(&args.run)?;
    let mut opts = ExportOptions::from_section(recipe.export.as_ref())
        .with_context(|| format!("the [export] section of {}/recipe.toml", args.run.display()))?;
    if let Some(f) = &args.format {
        opts.format = ExportFormat::parse(f)
            .ok_or_else(|| anyhow!("unknown --format '{f}' (choose hf or gguf)"))?;
    }
    // A recipe's quantization applies to GGUF exports; only an explicit --quantize with hf is
    // an error.
    if opts.format == ExportFormat::Hf && args.quantize.is_none() {
        opts.quantize = None;
    }
    if args.merge_lora {
        opts.merge_lora = true;
    }
    if args.no_merge_lora {
        opts.merge_lora = false;
    }
    match args.quantize.as_deref() {
        None => {}
        Some("none") => opts.quantize = None,
        Some(q) => {
            opts.quantize =
                Some(Quant::parse(q).ok_or_else(|| {
                    anyhow!("unknown --quantize '{q}' (choose q8_0, q4_0 or none)")
                })?)
        }
    }
    if let Some(ck) = &args.checkpoint {
        if !ck.is_dir() {
            bail!("--checkpoint {}: no such directory", ck.display());
        }
        opts.checkpoint = Some(ck.clone());
    }
    let r = export_run(&args.run, &args.out, &opts)
        .with_context(|| format!("exporting {}", args.run.display()))?;
    let what = match (r.format, r.quantize) {
        (ExportFormat::Hf, _) => "Hugging Face directory (f32)".to_string(),
        (ExportFormat::Gguf, None) => "GGUF (F32)".to_string(),
        (ExportFormat::Gguf, Some(q)) => format!("GGUF ({})", q.name().to_uppercase()),
    };
    if let Some(ck) = &r.checkpoint {
        eprintln!("checkpoint {}", ck.display());
    }
    eprintln!(
        "wrote {what}: {} tensors, {:.1} MB, {} LoRA adapters merged",
        r.tensors,
        r.bytes as f64 / 1e6,
        r.merged_adapters
    );
    if let Some(a) = &r.adapter {
        eprintln!("adapter (PEFT layout) in {}", a.display());
    }
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    println!("{}", r.path.display());
    Ok(())
}
