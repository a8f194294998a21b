//! `laconic bench`: prefill and decode throughput and peak memory.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::Args;
use laconic_infer::model::{ForwardOptions, Logits};
use laconic_infer::policy;

use crate::ModelArgs;

/// Arguments of `laconic bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens in the prompt (taken from a fixed English text, repeated as needed).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens to decode one at a time after the prompt.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Timed repetitions; the best is reported, as llama-bench does with its mean.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    kv: crate::KvArgs,
    /// Decode this many sequences after a shared prefill, as `generate --samples` does (on the
    /// CPU as two half batches side by side).
    #[arg(long, default_value_t = 1)]
    samples: usize,
}

/// Bytes read by the bandwidth probe (large enough to defeat every cache level).
const PROBE_BYTES: usize = 1 << 30;

/// Sustained read bandwidth of this machine in bytes/s: the best of three parallel sums over
/// a 1 GiB buffer, on the same rayon pool that the decoder uses.
fn read_bandwidth() -> f64 {
    use rayon::prelude::*;
    let buf = vec![1.0f32; PROBE_BYTES / 4];
    let mut best = f64::INFINITY;
    let mut check = 0.0f32;
    for _ in 0..3 {
        let t = Instant::now();
        check += buf
            .par_chunks(1 << 16)
            .map(|c| {
                let mut acc = [0.0f32; 16];
                for v in c.chunks_exact(16) {
                    for i in 0..16 {
                        acc[i] += v[i];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum::<f32>();
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(check);
    PROBE_BYTES as f64 / best
}

const TEXT: &str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. \
How many clips did Natalia sell altogether in April and May? Natalia sold 48/2 = 24 clips in May. \
Natalia sold 48+24 = 72 clips altogether in April and May. ";

/// Peak resident memory of this process in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `laconic bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.repeats == 0 || args.samples == 0 {
        bail!("--prompt-tokens, --repeats and --samples must be positive");
    }
    let t_load = Instant::now();
    let m = super::load_model(&args.model)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let c = m.config();
    if args.prompt_tokens + args.new_tokens > c.max_position_embeddings {
        bail!(
            "--prompt-tokens + --new-tokens = {} exceeds the context length {}",
            args.prompt_tokens + args.new_tokens,
            c.max_position_embeddings
        );
    }
    let base = m.tokenizer.encode(TEXT, false)?;
    let prompt: Vec<i32> = base
        .iter()
        .cycle()
        .take(args.prompt_tokens)
        .map(|&t| t as i32)
        .collect();
    let device = m.model.embed_tokens.weight.device();
    let kv = args.kv.config()?;
    let (mut best_prefill, mut best_decode) = (f64::INFINITY, f64::INFINITY);
    let mut cache_bytes = 0;
    for _ in 0..args.repeats {
        let mut policy = kv.build(c.num_layers);
        let opts = ForwardOptions {
            logits: Logits::Last,
            attention: policy.wants_attention(),
            hidden: false,
            ..Default::default()
        };
        let mut cache = m.model.new_cache();
        let input = Tensor::<2, Int>::from_data(
            TensorData::new(prompt.clone(), [1, prompt.len()]),
            &device,
        );
        let t = Instant::now();
        let out = m.model.forward(input, &mut cache, opts);
        policy::apply(policy.as_mut(), &mut cache, &out.attentions, prompt.len());
        let first = argmax(out.logits)?;
        best_prefill = best_prefill.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        // --samples N: the prompt's cache is shared and N sequences decode from it, as
        // `generate --samples` does: on the CPU with two threads or more, as two half batches
        // side by side (`laconic_infer::parallel::generate_samples_with`), else as one batch.
        let decode = |mut cache: laconic_infer::cache::KvCache,
                      mut policy: Box<dyn policy::KvPolicy>,
                      k: usize|
         -> Result<usize> {
            policy::repeat_batch(policy.as_mut(), &mut cache, k);
            let mut next = vec![first[0]; k];
            for _ in 0..args.new_tokens {
                let input = Tensor::<2, Int>::from_data(
                    TensorData::new(next.iter().map(|&t| t as i32).collect::<Vec<_>>(), [k, 1]),
                    &device,
                );
                let out = m.model.forward(input, &mut cache, opts);
                policy::apply(policy.as_mut(), &mut cache, &out.attentions, 1);
                next = argmax(out.logits)?;
            }
            Ok(cache.bytes())
        };
        let n = args.samples;
        cache_bytes = if laconic_infer::parallel::decodes_in_halves(n, &device) {
            let (cache_b, policy_b) = (cache.clone(), policy.fork());
            let (a, b) = rayon::join(
                || decode(cache, policy, n.div_ceil(2)),
                || decode(cache_b, policy_b, n / 2),
            );
            a? + b?
        } else {
            decode(cache, policy, n)?
        };
        best_decode = best_decode.min(t.elapsed().as_secs_f64());
    }
    let prefill_tps = args.prompt_tokens as f64 / best_prefill;
    let decode_tps = args.new_tokens as f64 / best_decode;
    let rss = peak_rss().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    // Decode reads every weight once per token, as the model holds it (quantized or f32).
    let weight_bytes = m.model.decode_weight_bytes();
    let bandwidth = read_bandwidth();
    let roofline = bandwidth / weight_bytes as f64;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model.model.display().to_string(),
                "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                "load_seconds": load_s, "prefill_tokens_per_second": prefill_tps,
                "decode_tokens_per_second": decode_tps, "peak_rss_mib": rss,
                "weight_bytes_per_token": weight_bytes, "read_bandwidth_gb_per_second": bandwidth / 1e9,
                "decode_limit_tokens_per_second": roofline,
                "kv_policy": args.kv.kv_policy, "kv_cache_bytes": cache_bytes, "samples": args.samples,
                "weights": args.model.weights,
            })
        );
    } else {
        println!("model:        {}", args.model.model.display());
        println!("load:         {load_s:.2} s");
        println!(
            "prefill:      {prefill_tps:.1} tok/s ({} tokens, best of {})",
            args.prompt_tokens, args.repeats
        );
        println!(
            "decode:       {decode_tps:.1} steps/s ({} steps of {} sequence(s), best of {}: {:.3} s)",
            args.new_tokens, args.samples, args.repeats, best_decode
        );
        println!("peak RSS:     {rss:.0} MiB (before the bandwidth probe)");
        println!(
            "KV cache:     {} KiB at the end ({} policy)",
            cache_bytes / 1024,
            args.kv.kv_policy
        );
        println!(
            "decode limit: {roofline:.1} tok/s = {:.2} GB/s measured read bandwidth / {:.0} MB of weights ({}) per token ({:.0}% reached)",
            bandwidth / 1e9,
            weight_bytes as f64 / 1e6,
            args.model.weights,
            100.0 * decode_tps / roofline
        );
    }
    Ok(())
}

/// The argmax token of each sequence's last logits `[n, 1, vocab]`.
fn argmax(logits: Option<Tensor<3>>) -> Result<Vec<u32>> {
    let Some(l) = logits else {
        bail!("the model returned no logits")
    };
    let v: Vec<i32> = l
        .argmax(2)
        .into_data()
        .try_into_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(v.into_iter().map(|t| t as u32).collect())
}
