//! `laconic kv-eval`: what each KV eviction policy costs in quality, per budget.
//!
//! For every policy and budget: the perplexity of a long real text whose first
//! `--prompt-tokens` are prefilled in one pass and the rest fed one token at a time with
//! eviction after each step (counted over the decoded tokens only), and the agreement of
//! greedy predictions with the full cache (teacher-forced on the full cache's own greedy
//! continuation of the same prompt, so one early disagreement does not doom the rest).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use laconic_infer::generate::{GenerateConfig, generate, step_through_from};
use laconic_infer::policy::KvPolicyConfig;
use serde_json::{Value, json};

use crate::ModelArgs;

/// Arguments of `laconic kv-eval`.
#[derive(Args, Debug)]
pub struct KvEvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to evaluate on: a plain-text file, or a JSONL file whose records' question/problem
    /// and answer/solution fields are concatenated (GSM8K, MATH-500).
    #[arg(long)]
    data: PathBuf,
    /// Tokens of text for the perplexity.
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Prompt tokens before the greedy continuation.
    #[arg(long, default_value_t = 256)]
    prompt_tokens: usize,
    /// Greedy tokens whose agreement with the full cache is measured.
    #[arg(long, default_value_t = 128)]
    greedy_tokens: usize,
    /// Consecutive, non-overlapping spans of `--tokens` tokens to measure, each with its own
    /// prompt and greedy continuation; perplexity and agreement are pooled over all of them
    /// (one span of 512 tokens gives 128 greedy tokens: one disagreement moves the figure by
    /// 0.8 points).
    #[arg(long, default_value_t = 4)]
    segments: usize,
    /// Policies to compare (comma-separated).
    #[arg(long, default_value = "window,h2o,snapkv,rkv", value_delimiter = ',')]
    policies: Vec<String>,
    /// Budgets in entries per head (comma-separated).
    #[arg(long, default_value = "64,128,256", value_delimiter = ',')]
    budgets: Vec<usize>,
    /// Attention sinks for window, h2o and rkv, as `--kv-sink` sets them (default: window 4,
    /// h2o and rkv 0).
    #[arg(long)]
    kv_sink: Option<usize>,
    /// Recent window for h2o, snapkv and rkv, as `--kv-window` sets it (default: the policy's
    /// own; the window policy's window is the budget minus its sinks, per budget).
    #[arg(long)]
    kv_window: Option<usize>,
    /// Entries rkv may hold above its budget before evicting, as `--kv-buffer` sets it
    /// (default: budget / 4).
    #[arg(long)]
    kv_buffer: Option<usize>,
    /// rkv's weight of importance against redundancy, in [0, 1] (default 0.5; R-KV's paper
    /// uses 0.1).
    #[arg(long)]
    kv_lambda: Option<f32>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw perplexity and greedy agreement against the budget, per policy, as SVG here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// One measured policy and budget.
struct Row {
    policy: String,
    budget: usize,
    ppl_delta: f64,
    agree: f64,
}

/// A plotters drawing error as an `anyhow` error.
fn draw_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Draws two panels against the budget: perplexity change from the full cache, and greedy
/// agreement with it, one line per policy.
fn plot(path: &PathBuf, rows: &[Row], title: &str) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(draw_error)?;
    let panels = root.split_evenly((1, 2));
    let budgets: Vec<usize> = rows.iter().map(|r| r.budget).filter(|&b| b > 0).collect();
    let (bmin, bmax) = (
        budgets.iter().copied().min().unwrap_or(1) as f64,
        budgets.iter().copied().max().unwrap_or(2) as f64,
    );
    let mut policies: Vec<&str> = rows
        .iter()
        .filter(|r| r.budget > 0)
        .map(|r| r.policy.as_str())
        .collect();
    policies.dedup();
    let ymax = rows.iter().map(|r| r.ppl_delta).fold(5.0, f64::max) * 1.1;
    let ymin = rows.iter().map(|r| r.ppl_delta).fold(0.0, f64::min) - 1.0;
    let amin = rows.iter().map(|r| 100.0 * r.agree).fold(90.0, f64::min) - 2.0;
    type Panel = (&'static str, f64, f64, fn(&Row) -> f64);
    let specs: [Panel; 2] = [
        ("perplexity vs full cache (%)", ymin, ymax, |r| r.ppl_delta),
        (
            "greedy tokens identical to full cache (%)",
            amin,
            100.5,
            |r| 100.0 * r.agree,
        ),
    ];
    for (panel, (label, lo, hi, value)) in panels.iter().zip(specs) {
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d((bmin * 0.9..bmax * 1.1).log_scale(), lo..hi)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("KV budget (entries per head)")
            .y_desc(label)
            .draw()
            .map_err(draw_error)?;
        for (i, p) in policies.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.policy == *p && r.budget > 0)
                .map(|r| (r.budget as f64, value(r)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(draw_error)?
                .label(*p)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))
                .map_err(draw_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error)?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads the evaluation text.
fn read_text(path: &PathBuf) -> Result<String> {
    let raw =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_none_or(|e| e != "jsonl") {
        return Ok(raw);
    }
    let mut text = String::new();
    for (i, line) in raw
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| v.get(*n).and_then(Value::as_str))
                .unwrap_or("")
        };
        text.push_str(field(&["question", "problem"]));
        text.push('\n');
        text.push_str(field(&["answer", "solution"]));
        text.push_str("\n\n");
        if text.len() > 200_000 {
            break;
        }
    }
    Ok(text)
}

fn perplexity(lp: &[(Option<f32>, u32)]) -> f64 {
    let v: Vec<f64> = lp.iter().filter_map(|(l, _)| l.map(f64::from)).collect();
    (-v.iter().sum::<f64>() / v.len().max(1) as f64).exp()
}

/// Runs `laconic kv-eval`.
pub fn run(args: KvEvalArgs) -> Result<()> {
    // Flags first, before a model is loaded or a token is decoded.
    if args.kv_lambda.is_some_and(|l| !(0.0..=1.0).contains(&l)) {
        bail!("--kv-lambda must lie in [0, 1]");
    }
    if args.segments == 0 {
        bail!("--segments must be at least 1");
    }
    if args.prompt_tokens == 0 || args.greedy_tokens == 0 || args.tokens <= args.prompt_tokens {
        bail!(
            "--prompt-tokens and --greedy-tokens must be positive, and --tokens ({}) larger than \
             --prompt-tokens ({}): the perplexity counts the tokens decoded after the prompt",
            args.tokens,
            args.prompt_tokens
        );
    }
    let mut configs = vec![("full".to_string(), 0usize, KvPolicyConfig::Full)];
    for p in &args.policies {
        for &b in &args.budgets {
            // The window policy's window is what `--budgets` varies.
            let window = args.kv_window.filter(|_| p != "window");
            let mut cfg =
                KvPolicyConfig::from_flags(p, Some(b), args.kv_sink, window, args.kv_buffer)?;
            if let (KvPolicyConfig::Rkv { lambda, .. }, Some(l)) = (&mut cfg, args.kv_lambda) {
                *lambda = l;
            }
            configs.push((p.clone(), b, cfg));
        }
    }
    let text = read_text(&args.data)?;
    let m = super::load_model(&args.model)?;
    let context = m.config().max_position_embeddings;
    if args.tokens > context || args.prompt_tokens + args.greedy_tokens > context {
        bail!(
            "--tokens and --prompt-tokens + --greedy-tokens must fit the context length {context}"
        );
    }
    let ids = m.tokenizer.encode(&text, true)?;
    let want = args.tokens.saturating_mul(args.segments);
    if ids.len() < want {
        bail!(
            "{} has only {} tokens; --tokens {} x --segments {} asks for {want}",
            args.data.display(),
            ids.len(),
            args.tokens,
            args.segments
        );
    }
    let full_cfg = GenerateConfig {
        max_new_tokens: args.greedy_tokens,
        ..Default::default()
    };
    // Each span: its tokens, and its prompt followed by the full cache's greedy continuation.
    let mut spans = Vec::with_capacity(args.segments);
    for span in ids[..want].chunks_exact(args.tokens) {
        let prompt = &span[..args.prompt_tokens];
        let mut cache = m.model.new_cache();
        let greedy = generate(
            &m.model,
            &m.tokenizer,
            prompt,
            &full_cfg,
            &mut cache,
            |_| {},
        )?
        .tokens;
        let forced: Vec<u32> = prompt.iter().chain(&greedy).copied().collect();
        spans.push((span, forced, greedy.len()));
    }
    let greedy_total: usize = spans.iter().map(|s| s.2).sum();
    let c = m.config();
    let entry_bytes = c.num_layers * 2 * c.num_kv_heads * c.head_dim * 4;
    let mut rows = Vec::new();
    let mut measured = Vec::new();
    let mut full_ppl = f64::NAN;
    println!(
        "text: {} ({} spans of {} tokens), greedy agreement over {} tokens, each span's after \
         its {}-token prompt",
        args.data.display(),
        args.segments,
        args.tokens,
        greedy_total,
        args.prompt_tokens
    );
    println!();
    println!(
        "| policy | budget | perplexity | vs full | greedy agreement | max cache KiB | seconds |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let p = args.prompt_tokens;
    for (name, budget, cfg) in configs {
        let t = Instant::now();
        let (mut decoded, mut agreed) = (Vec::new(), 0usize);
        for (span, forced, n_greedy) in &spans {
            // The prompt is prefilled in one pass (SnapKV compresses it there); the
            // perplexity counts only the tokens decoded after it, where the policy acts.
            let all = step_through_from(&m.model, span, &cfg, p)?;
            decoded.extend_from_slice(&all[p.min(all.len())..]);
            let steps = step_through_from(&m.model, forced, &cfg, p)?;
            agreed += forced[p..]
                .iter()
                .take(*n_greedy)
                .enumerate()
                .filter(|&(j, &g)| steps.get(p + j).is_some_and(|s| s.1 == g))
                .count();
        }
        let ppl = perplexity(&decoded);
        let agree = agreed as f64 / greedy_total.max(1) as f64;
        if name == "full" {
            full_ppl = ppl;
        }
        // SnapKV caps the prompt only; decoded entries are added after it.
        let max_entries = match cfg {
            KvPolicyConfig::SnapKv { budget, .. } => budget.min(p) + args.tokens - p,
            _ => cfg.max_entries().unwrap_or(args.tokens),
        }
        .min(args.tokens);
        let secs = t.elapsed().as_secs_f64();
        let delta = 100.0 * (ppl / full_ppl - 1.0);
        println!(
            "| {name} | {} | {ppl:.3} | {delta:+.1}% | {:.1}% | {} | {secs:.0} |",
            if budget == 0 {
                "-".to_string()
            } else {
                budget.to_string()
            },
            100.0 * agree,
            max_entries * entry_bytes / 1024
        );
        measured.push(Row {
            policy: name.clone(),
            budget,
            ppl_delta: delta,
            agree,
        });
        rows.push(json!({"policy": name, "budget": budget, "perplexity": ppl, "perplexity_vs_full_percent": delta,
            "greedy_agreement": agree, "max_cache_bytes": max_entries * entry_bytes, "seconds": secs}));
    }
    if let Some(path) = &args.json {
        let out = json!({"model": args.model.model.display().to_string(), "data": args.data.display().to_string(),
            "tokens": args.tokens, "segments": args.segments, "prompt_tokens": p, "greedy_tokens": greedy_total, "results": rows});
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{}: {} x {} tokens of {}",
            args.model
                .model
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            args.segments,
            args.tokens,
            args.data
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
        plot(path, &measured, &title).with_context(|| format!("drawing {}", path.display()))?;
    }
    Ok(())
}
