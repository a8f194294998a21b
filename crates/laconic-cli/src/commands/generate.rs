//! `laconic generate`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Args;
use laconic_infer::chat::Message;
use laconic_infer::generate::{GenerateConfig, SamplingConfig, ThinkConfig, generate};
use laconic_infer::parallel::generate_samples;

use crate::ModelArgs;

/// Arguments of `laconic generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt text (raw, unless --chat).
    #[arg(long, short = 'p')]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message for --chat (default: whatever the template inserts).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// With --chat: ask a ratio-conditioned student for this compression ratio (appends its
    /// control string, e.g. `[compress 0.5]`, to the prompt, as in training).
    #[arg(long, requires = "chat")]
    ratio: Option<f64>,
    /// With --chat: ask a budget-conditioned student (trained with a length budget) to reason
    /// in about N tokens (appends its control string, e.g. `[budget 128]`, as in training).
    #[arg(long, requires = "chat")]
    budget: Option<usize>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// RNG seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this string appears (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Print prompt/generation token counts, speed and cache size to stderr.
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    kv: crate::KvArgs,
    /// End the reasoning after N tokens by appending the end-of-thinking delimiter, then let
    /// the model answer (s1 budget forcing).
    #[arg(long)]
    think_budget: Option<usize>,
    /// If the model ends its reasoning before M tokens, take that back and append --think-wait.
    #[arg(long, default_value_t = 0)]
    min_think: usize,
    /// The end-of-thinking delimiter.
    #[arg(long, default_value = "</think>")]
    think_end: String,
    /// What replaces a premature end of reasoning.
    #[arg(long, default_value = "Wait")]
    think_wait: String,
    /// Draw N samples that share the prompt's prefill, decode them as one batch, and
    /// majority-vote their answers; prints the chosen sample and the vote (all samples with
    /// --verbose, on stderr).
    #[arg(long, default_value_t = 1)]
    samples: usize,
}

/// Runs `laconic generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    let m = super::load_model(&args.model)?;
    let text = if args.chat {
        let Some(template) = &m.chat_template else {
            bail!(
                "{} has no chat template; drop --chat and pass a raw prompt",
                args.model.model.display()
            );
        };
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message::new("system", s.clone()));
        }
        let mut content = args.prompt.trim_end().to_string();
        if let Some(r) = args.ratio {
            content = format!("{content}\n{}", laconic_traces::schema::ratio_control(r));
        }
        if let Some(b) = args.budget {
            if b == 0 {
                bail!("--budget must be at least 1 token");
            }
            content = format!("{content}\n{}", laconic_traces::schema::budget_control(b));
        }
        if args.ratio.is_none() && args.budget.is_none() {
            content = args.prompt.clone();
        }
        messages.push(Message::new("user", content));
        template.render(&messages, true)?
    } else {
        args.prompt.clone()
    };
    // A rendered template already holds BOS when the model wants one.
    let prompt = m.tokenizer.encode(&text, !args.chat)?;
    let stop_tokens = if args.chat {
        m.tokenizer.chat_stop_tokens(&m.config().eos_token_ids)
    } else {
        m.config().eos_token_ids.clone()
    };
    let config = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop_strings: args.stop.clone(),
        stop_tokens,
        kv_policy: args.kv.config()?,
        think: (args.think_budget.is_some() || args.min_think > 0).then(|| ThinkConfig {
            max_tokens: args.think_budget,
            min_tokens: args.min_think,
            end: args.think_end.clone(),
            wait: args.think_wait.clone(),
        }),
    };
    if args.samples > 1 {
        return print_vote(&m, &prompt, &config, &args);
    }
    let mut cache = m.model.new_cache();
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    let out = generate(&m.model, &m.tokenizer, &prompt, &config, &mut cache, |t| {
        if write_err.is_none()
            && let Err(e) = stdout.write_all(t.as_bytes()).and_then(|_| stdout.flush())
        {
            write_err = Some(e);
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    writeln!(stdout)?;
    if args.verbose {
        let n = out.tokens.len();
        eprintln!(
            "[{} prompt tokens, {n} generated ({} reasoning), {:?}; prefill {:.1} tok/s, decode {:.1} tok/s, cache {} KiB]",
            out.prompt_tokens,
            out.think_tokens,
            out.finish_reason,
            out.prompt_tokens as f64 / out.prefill_seconds.max(1e-9),
            (n.saturating_sub(1)) as f64 / out.decode_seconds.max(1e-9),
            cache.bytes() / 1024
        );
    }
    Ok(())
}

/// `--samples N`: the batch of samples, voted.
fn print_vote(
    m: &laconic_infer::LoadedModel,
    prompt: &[u32],
    config: &GenerateConfig,
    args: &GenerateArgs,
) -> Result<()> {
    let t = std::time::Instant::now();
    let vote = generate_samples(&m.model, &m.tokenizer, prompt, config, args.samples)?;
    let wall = t.elapsed().as_secs_f64();
    if args.verbose {
        for (i, s) in vote.samples.iter().enumerate() {
            eprintln!(
                "--- sample {i}: answer {:?}, mean logprob {:.3}, {} tokens ({} reasoning), {:?}\n{}",
                s.answer,
                s.mean_logprob,
                s.generation.tokens.len(),
                s.generation.think_tokens,
                s.generation.finish_reason,
                s.generation.text
            );
        }
        eprintln!("[{} samples in {wall:.2} s]", args.samples);
    }
    let chosen = &vote.samples[vote.chosen];
    println!("{}", chosen.generation.text);
    match &vote.answer {
        Some(a) => println!("answer: {a} ({}/{} votes)", vote.votes, args.samples),
        None => println!("answer: none extracted ({} samples)", args.samples),
    }
    Ok(())
}
