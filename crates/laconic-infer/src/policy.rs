//! KV-cache eviction policies: what a layer keeps once its cache outgrows a budget.
//!
//! A policy sees each layer's cache after every forward pass, together with that pass's
//! attention weights when it asks for them ([`KvPolicy::wants_attention`]), and evicts through
//! [`LayerCache::retain`] / [`LayerCache::retain_lanes`]. The model never knows a policy is
//! there, and kept entries keep the rotary phase of their original positions.
//!
//! Prior art, and what each policy keeps:
//! - `full`: everything.
//! - `window` (StreamingLLM, Xiao et al. 2023): the first `sink` entries plus the `window`
//!   most recent; layer-wide, needs no attention weights.
//! - `h2o` (Zhang et al. 2023): per KV head, the `window` most recent entries plus the
//!   "heavy hitters", the entries with the largest attention accumulated over every query so
//!   far, up to `budget`.
//! - `snapkv` (Li et al. 2024): once, after the prompt, per KV head: the last `window` prompt
//!   entries (the observation window) plus the prompt entries that the observation window
//!   attends to most (scores max-pooled over neighbouring positions); generated entries are
//!   all kept. It compresses the prompt, not the reasoning.
//! - `rkv` (R-KV, Cai et al. 2025): per KV head, when the cache reaches `budget + buffer`,
//!   score every entry by `lambda * importance - (1 - lambda) * redundancy`, where importance
//!   is the attention the last `window` queries paid it and redundancy is its mean cosine
//!   similarity to the other keys of the head (both normalised to sum to one), keep the
//!   `window` most recent and the best of the rest, down to `budget`. The defaults (`window`
//!   16, `lambda` [`RKV_LAMBDA`]) are not the paper's 8 and 0.1: they were chosen with
//!   `laconic kv-eval` on GSM8K train text, where they keep perplexity closer to the full
//!   cache at a quarter of it.
//!
//! Attention weights arrive as `[batch, query_heads, queries, entries]`; a KV head's score is
//! the sum over the query heads of its group and the queries. Every sequence of a batch
//! decides for itself (per lane, `row * kv_heads + head`), so a sequence keeps what it would
//! keep decoded alone.

use burn::prelude::*;

use crate::cache::{KvCache, LayerCache};
use crate::error::{InferError, Result};

/// rkv's default weight of importance against redundancy (`lambda`).
pub const RKV_LAMBDA: f32 = 0.5;

/// A policy's settings, as the CLI and recipes name them.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum KvPolicyConfig {
    /// Keep everything.
    #[default]
    Full,
    /// Attention sinks plus a recent window.
    Window {
        /// Leading entries always kept.
        sink: usize,
        /// Most recent entries kept.
        window: usize,
    },
    /// Heavy hitters plus a recent window.
    H2o {
        /// Entries kept per head.
        budget: usize,
        /// Most recent entries always kept (part of the budget).
        window: usize,
        /// Entries at the first positions always kept, as attention sinks (part of the
        /// budget; 0 unless `--kv-sink` asks).
        sink: usize,
    },
    /// One-shot prompt compression by an observation window.
    SnapKv {
        /// Prompt entries kept per head.
        budget: usize,
        /// Observation window: the last prompt entries, always kept (part of the budget).
        window: usize,
        /// Max-pooling kernel over positions (odd).
        kernel: usize,
    },
    /// Importance and redundancy, evicting in bursts.
    Rkv {
        /// Entries kept per head after an eviction.
        budget: usize,
        /// Entries allowed above the budget before evicting.
        buffer: usize,
        /// Recent queries whose attention measures importance; the most recent entries kept.
        window: usize,
        /// Weight of importance against redundancy.
        lambda: f32,
        /// Entries at the first positions always kept, as attention sinks (part of the
        /// budget; 0 unless `--kv-sink` asks).
        sink: usize,
    },
}

impl KvPolicyConfig {
    /// Builds a policy from the CLI's flags: `name`, `--kv-budget`, `--kv-sink`,
    /// `--kv-window`, `--kv-buffer`.
    pub fn from_flags(
        name: &str,
        budget: Option<usize>,
        sink: Option<usize>,
        window: Option<usize>,
        buffer: Option<usize>,
    ) -> Result<Self> {
        let need_budget = || {
            budget.ok_or_else(|| {
                InferError::InvalidArgument(format!("--kv-policy {name} needs --kv-budget"))
            })
        };
        let cfg = match name {
            "full" => Self::Full,
            "window" => {
                let sink = sink.unwrap_or(4);
                let window = match (window, budget) {
                    (Some(w), _) => w,
                    (None, Some(b)) if b > sink => b - sink,
                    _ => {
                        return Err(InferError::InvalidArgument(
                            "--kv-policy window needs --kv-window, or --kv-budget larger than --kv-sink".into(),
                        ));
                    }
                };
                Self::Window { sink, window }
            }
            "h2o" => {
                let budget = need_budget()?;
                Self::H2o {
                    budget,
                    window: window.unwrap_or(budget / 2),
                    sink: sink.unwrap_or(0),
                }
            }
            "snapkv" => Self::SnapKv {
                budget: need_budget()?,
                window: window.unwrap_or(16),
                kernel: 7,
            },
            "rkv" => {
                let budget = need_budget()?;
                Self::Rkv {
                    budget,
                    buffer: buffer.unwrap_or(budget / 4).max(1),
                    // Chosen on GSM8K train text with `laconic kv-eval` (docs/BENCHMARKS.md):
                    // at a quarter of the cache, R-KV's own 8 and 0.1 lost 20% perplexity
                    // there, 16 and 0.5 lost 14%.
                    window: window.unwrap_or(16),
                    lambda: RKV_LAMBDA,
                    sink: sink.unwrap_or(0),
                }
            }
            other => {
                return Err(InferError::InvalidArgument(format!(
                    "unknown --kv-policy '{other}' (choose full, window, h2o, snapkv, rkv)"
                )));
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the settings are consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(InferError::InvalidArgument(m));
        match *self {
            Self::Full => Ok(()),
            Self::Window { sink, window } if sink + window == 0 => {
                bad("window policy keeps nothing".into())
            }
            Self::H2o {
                budget,
                window,
                sink,
            }
            | Self::Rkv {
                budget,
                window,
                sink,
                ..
            } if sink + window > budget => bad(format!(
                "--kv-sink ({sink}) plus --kv-window ({window}) must not exceed --kv-budget ({budget})"
            )),
            Self::H2o { budget, window, .. }
            | Self::SnapKv { budget, window, .. }
            | Self::Rkv { budget, window, .. }
                if window > budget || budget == 0 =>
            {
                bad(format!(
                    "--kv-window ({window}) must not exceed --kv-budget ({budget}), which must be positive"
                ))
            }
            Self::SnapKv { kernel, .. } if kernel % 2 == 0 => {
                bad("snapkv pooling kernel must be odd".into())
            }
            _ => Ok(()),
        }
    }

    /// A fresh policy for a model with `num_layers` layers.
    pub fn build(&self, num_layers: usize) -> Box<dyn KvPolicy> {
        match *self {
            Self::Full => Box::new(Full),
            Self::Window { sink, window } => Box::new(Window { sink, window }),
            Self::H2o {
                budget,
                window,
                sink,
            } => Box::new(H2o {
                budget,
                window,
                sink,
                scores: vec![Vec::new(); num_layers],
            }),
            Self::SnapKv {
                budget,
                window,
                kernel,
            } => Box::new(SnapKv {
                budget,
                window,
                kernel,
            }),
            Self::Rkv {
                budget,
                buffer,
                window,
                lambda,
                sink,
            } => Box::new(Rkv {
                budget,
                buffer,
                window,
                lambda,
                sink,
                recent: vec![Vec::new(); num_layers],
            }),
        }
    }

    /// Most entries a layer may hold while this policy runs, if bounded (snapkv bounds only
    /// the prompt).
    pub fn max_entries(&self) -> Option<usize> {
        match *self {
            Self::Full | Self::SnapKv { .. } => None,
            Self::Window { sink, window } => Some(sink + window),
            Self::H2o { budget, .. } => Some(budget),
            Self::Rkv { budget, buffer, .. } => Some(budget + buffer),
        }
    }
}

/// An eviction policy. See the module documentation.
pub trait KvPolicy: Send {
    /// Whether [`KvPolicy::observe`] needs the forward pass's attention weights.
    fn wants_attention(&self) -> bool;

    /// Called for every layer after a forward pass of `queries` new tokens; may evict.
    /// `attention` is that layer's `[b, heads, queries, entries]` weights when asked for.
    fn observe(
        &mut self,
        layer: usize,
        cache: &mut LayerCache,
        attention: Option<&Tensor<4>>,
        queries: usize,
    );

    /// A copy of this policy in its current state, for a part of the batch that decodes on
    /// its own from here.
    fn fork(&self) -> Box<dyn KvPolicy>;

    /// Forgets the state of every sequence but those at batch rows `rows` (strictly
    /// ascending) of a batch of `batch`, as [`KvCache::retain_rows`] does for the cache.
    fn retain_rows(&mut self, _rows: &[usize], _batch: usize) {}

    /// Repeats the state of the whole batch `n` times, as [`KvCache::repeat_batch`] does for
    /// the cache (the sequences that continue from one shared prompt).
    fn repeat_batch(&mut self, _n: usize) {}
}

/// Runs `policy` over every layer of `cache` after a forward pass.
pub fn apply(
    policy: &mut dyn KvPolicy,
    cache: &mut KvCache,
    attentions: &[Tensor<4>],
    queries: usize,
) {
    for (i, layer) in cache.layers_mut().iter_mut().enumerate() {
        policy.observe(i, layer, attentions.get(i), queries);
    }
}

/// Repeats `cache` and `policy`'s per-sequence state `n` times along the batch, together (the
/// sequences that continue from one shared prompt).
pub fn repeat_batch(policy: &mut dyn KvPolicy, cache: &mut KvCache, n: usize) {
    cache.repeat_batch(n);
    policy.repeat_batch(n);
}

/// Keeps only the sequences at batch rows `rows` (strictly ascending) in `cache` and in
/// `policy`'s state, together (a batch dropping its finished sequences).
pub fn retain_rows(policy: &mut dyn KvPolicy, cache: &mut KvCache, rows: &[usize]) {
    let batch = cache.batch();
    cache.retain_rows(rows);
    policy.retain_rows(rows, batch);
}

/// Per-lane sums of attention weights `[b, heads, q, len]` over each KV head's group of
/// query heads and the queries in `q_range`: `[b * kv_heads][len]` (lane `row * kv_heads +
/// head`, as [`LayerCache`] counts them).
fn lane_scores(
    attention: &Tensor<4>,
    kv_heads: usize,
    q_range: std::ops::Range<usize>,
) -> Vec<Vec<f32>> {
    let [b, heads, q, len] = attention.dims();
    let w: Vec<f32> = attention
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap_or_default();
    let kv_heads = kv_heads.max(1);
    let group = heads / kv_heads;
    let mut out = vec![vec![0.0f32; len]; b * kv_heads];
    if w.len() != b * heads * q * len {
        return out;
    }
    for bi in 0..b {
        for h in 0..heads {
            let acc = &mut out[bi * kv_heads + h / group];
            for qi in q_range.clone() {
                let row = &w[((bi * heads + h) * q + qi) * len..][..len];
                acc.iter_mut().zip(row).for_each(|(a, x)| *a += x);
            }
        }
    }
    out
}

/// Repeats per-lane state `n` times (see [`KvPolicy::repeat_batch`]).
fn repeat_lanes<T: Clone>(lanes: &mut Vec<T>, n: usize) {
    let one = std::mem::take(lanes);
    *lanes = (0..n).flat_map(|_| one.iter().cloned()).collect();
}

/// Keeps the per-lane state of the sequences at batch rows `rows` (of `batch`): what a policy
/// does when a batch drops its finished sequences.
fn keep_rows<T: Clone>(lanes: &mut Vec<T>, rows: &[usize], batch: usize) {
    if lanes.is_empty() || batch == 0 {
        return;
    }
    let per_row = lanes.len() / batch;
    *lanes = rows
        .iter()
        .flat_map(|&r| lanes[r * per_row..(r + 1) * per_row].iter().cloned())
        .collect();
}

/// Indices (ascending) of the `keep` best of `candidates` by `score`, plus `always`.
/// `score` with the entries at original positions below `sink` raised above every other, so
/// that [`top_plus`] keeps them (attention sinks, as StreamingLLM keeps them).
fn with_sinks<'a>(
    score: &'a [f32],
    positions: &[usize],
    sink: usize,
) -> std::borrow::Cow<'a, [f32]> {
    if sink == 0 || positions.first().is_none_or(|&p| p >= sink) {
        return std::borrow::Cow::Borrowed(score);
    }
    let mut s = score.to_vec();
    for (v, &p) in s.iter_mut().zip(positions) {
        if p < sink {
            *v = f32::INFINITY;
        }
    }
    std::borrow::Cow::Owned(s)
}

fn top_plus(
    score: &[f32],
    candidates: std::ops::Range<usize>,
    keep: usize,
    always: std::ops::Range<usize>,
) -> Vec<usize> {
    let mut c: Vec<usize> = candidates.collect();
    // Highest score first; ties go to the earlier entry, so choices are deterministic.
    c.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    c.truncate(keep);
    c.extend(always);
    c.sort_unstable();
    c
}

/// Keeps everything.
#[derive(Debug, Clone)]
struct Full;

impl KvPolicy for Full {
    fn fork(&self) -> Box<dyn KvPolicy> {
        Box::new(self.clone())
    }

    fn wants_attention(&self) -> bool {
        false
    }
    fn observe(&mut self, _: usize, _: &mut LayerCache, _: Option<&Tensor<4>>, _: usize) {}
}

/// StreamingLLM: sinks plus a recent window.
#[derive(Debug, Clone)]
struct Window {
    sink: usize,
    window: usize,
}

impl KvPolicy for Window {
    fn fork(&self) -> Box<dyn KvPolicy> {
        Box::new(self.clone())
    }

    fn wants_attention(&self) -> bool {
        false
    }
    fn observe(&mut self, _: usize, cache: &mut LayerCache, _: Option<&Tensor<4>>, _: usize) {
        let len = cache.len();
        if len <= self.sink + self.window {
            return;
        }
        let keep: Vec<usize> = (0..self.sink).chain(len - self.window..len).collect();
        cache.retain(&keep);
    }
}

/// H2O: accumulated attention plus a recent window.
#[derive(Debug, Clone)]
struct H2o {
    budget: usize,
    window: usize,
    sink: usize,
    /// `scores[layer][lane][entry]`, aligned with the cache.
    scores: Vec<Vec<Vec<f32>>>,
}

impl KvPolicy for H2o {
    fn fork(&self) -> Box<dyn KvPolicy> {
        Box::new(self.clone())
    }

    fn retain_rows(&mut self, rows: &[usize], batch: usize) {
        self.scores
            .iter_mut()
            .for_each(|lanes| keep_rows(lanes, rows, batch));
    }

    fn repeat_batch(&mut self, n: usize) {
        self.scores
            .iter_mut()
            .for_each(|lanes| repeat_lanes(lanes, n));
    }

    fn wants_attention(&self) -> bool {
        true
    }
    fn observe(
        &mut self,
        layer: usize,
        cache: &mut LayerCache,
        attention: Option<&Tensor<4>>,
        queries: usize,
    ) {
        let (len, heads, lanes) = (cache.len(), cache.num_heads(), cache.lanes());
        let acc = &mut self.scores[layer];
        acc.resize(lanes, Vec::new());
        let add = attention.map(|a| lane_scores(a, heads, 0..queries));
        for (h, s) in acc.iter_mut().enumerate() {
            s.resize(len, 0.0);
            if let Some(add) = &add {
                s.iter_mut().zip(&add[h]).for_each(|(a, x)| *a += x);
            }
        }
        if len <= self.budget {
            return;
        }
        let recent = len - self.window..len;
        let keep: Vec<Vec<usize>> = acc
            .iter()
            .enumerate()
            .map(|(h, s)| {
                top_plus(
                    &with_sinks(s, cache.lane_positions(h), self.sink),
                    0..len - self.window,
                    self.budget - self.window,
                    recent.clone(),
                )
            })
            .collect();
        for (s, k) in acc.iter_mut().zip(&keep) {
            *s = k.iter().map(|&i| s[i]).collect();
        }
        cache.retain_lanes(&keep);
    }
}

/// SnapKV: compress the prompt once, by what its last queries attend to.
#[derive(Debug, Clone)]
struct SnapKv {
    budget: usize,
    window: usize,
    kernel: usize,
}

impl KvPolicy for SnapKv {
    fn fork(&self) -> Box<dyn KvPolicy> {
        Box::new(self.clone())
    }

    fn wants_attention(&self) -> bool {
        true
    }
    fn observe(
        &mut self,
        _: usize,
        cache: &mut LayerCache,
        attention: Option<&Tensor<4>>,
        queries: usize,
    ) {
        let len = cache.len();
        // Only the prefill (a pass that brought the whole cache) is compressed.
        let Some(attention) = attention else { return };
        if queries != len || len <= self.budget || queries < self.window {
            return;
        }
        let obs = queries - self.window..queries;
        let scores = lane_scores(attention, cache.num_heads(), obs);
        let prefix = len - self.window;
        let half = self.kernel / 2;
        let keep: Vec<Vec<usize>> = scores
            .iter()
            .map(|s| {
                let pooled: Vec<f32> = (0..prefix)
                    .map(|i| {
                        s[i.saturating_sub(half)..(i + half + 1).min(prefix)]
                            .iter()
                            .copied()
                            .fold(f32::MIN, f32::max)
                    })
                    .collect();
                top_plus(&pooled, 0..prefix, self.budget - self.window, prefix..len)
            })
            .collect();
        cache.retain_lanes(&keep);
    }
}

/// R-KV: importance minus redundancy, in bursts.
#[derive(Debug, Clone)]
struct Rkv {
    budget: usize,
    buffer: usize,
    window: usize,
    lambda: f32,
    sink: usize,
    /// `recent[layer][lane]`: attention rows of the last `window` queries, newest last,
    /// each as long as the cache is now.
    recent: Vec<Vec<Vec<Vec<f32>>>>,
}

/// `v / sum(v)`, or uniform when the sum is zero.
fn normalise(v: &mut [f32]) {
    let sum: f32 = v.iter().sum();
    let n = v.len() as f32;
    v.iter_mut()
        .for_each(|x| *x = if sum > 0.0 { *x / sum } else { 1.0 / n });
}

impl Rkv {
    /// Mean cosine similarity of each key of each lane to the other keys of the lane:
    /// `[lanes][len]`.
    fn redundancy(cache: &LayerCache) -> Vec<Vec<f32>> {
        let Some(keys) = cache.keys() else {
            return Vec::new();
        };
        let [b, heads, len, d] = keys.dims();
        let k: Vec<f32> = keys
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap_or_default();
        if k.len() != b * heads * len * d || len < 2 {
            return vec![vec![0.0; len]; b * heads];
        }
        (0..b * heads)
            .map(|h| {
                let rows: Vec<Vec<f32>> = (0..len)
                    .map(|i| {
                        let r = &k[(h * len + i) * d..][..d];
                        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                        r.iter().map(|x| x / n).collect()
                    })
                    .collect();
                (0..len)
                    .map(|i| {
                        let s: f32 = (0..len)
                            .filter(|&j| j != i)
                            .map(|j| {
                                rows[i]
                                    .iter()
                                    .zip(&rows[j])
                                    .map(|(a, b)| a * b)
                                    .sum::<f32>()
                            })
                            .sum();
                        s / (len - 1) as f32
                    })
                    .collect()
            })
            .collect()
    }
}

impl KvPolicy for Rkv {
    fn fork(&self) -> Box<dyn KvPolicy> {
        Box::new(self.clone())
    }

    fn retain_rows(&mut self, rows: &[usize], batch: usize) {
        self.recent
            .iter_mut()
            .for_each(|lanes| keep_rows(lanes, rows, batch));
    }

    fn repeat_batch(&mut self, n: usize) {
        self.recent
            .iter_mut()
            .for_each(|lanes| repeat_lanes(lanes, n));
    }

    fn wants_attention(&self) -> bool {
        true
    }
    fn observe(
        &mut self,
        layer: usize,
        cache: &mut LayerCache,
        attention: Option<&Tensor<4>>,
        queries: usize,
    ) {
        let (len, heads, lanes) = (cache.len(), cache.num_heads(), cache.lanes());
        let recent = &mut self.recent[layer];
        recent.resize(lanes, Vec::new());
        if let Some(a) = attention {
            let q0 = queries.saturating_sub(self.window);
            for qi in q0..queries {
                let rows = lane_scores(a, heads, qi..qi + 1);
                for (h, row) in rows.into_iter().enumerate() {
                    recent[h].push(row);
                }
            }
        }
        for r in recent.iter_mut() {
            let excess = r.len().saturating_sub(self.window);
            r.drain(..excess);
            r.iter_mut().for_each(|row| row.resize(len, 0.0));
        }
        if len < self.budget + self.buffer {
            return;
        }
        let redundancy = Self::redundancy(cache);
        let keep: Vec<Vec<usize>> = (0..lanes)
            .map(|h| {
                let mut importance = vec![0.0f32; len];
                for row in &recent[h] {
                    importance.iter_mut().zip(row).for_each(|(a, x)| *a += x);
                }
                normalise(&mut importance);
                let mut red = redundancy.get(h).cloned().unwrap_or_else(|| vec![0.0; len]);
                // Similarities lie in [-1, 1]; shift to be non-negative before normalising.
                red.iter_mut().for_each(|x| *x += 1.0);
                normalise(&mut red);
                let score: Vec<f32> = importance
                    .iter()
                    .zip(&red)
                    .map(|(i, r)| self.lambda * i - (1.0 - self.lambda) * r)
                    .collect();
                top_plus(
                    &with_sinks(&score, cache.lane_positions(h), self.sink),
                    0..len - self.window,
                    self.budget - self.window,
                    len - self.window..len,
                )
            })
            .collect();
        for (h, r) in recent.iter_mut().enumerate() {
            for row in r.iter_mut() {
                *row = keep[h].iter().map(|&i| row[i]).collect();
            }
        }
        cache.retain_lanes(&keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer cache of `len` entries over `heads` KV heads with head_dim `d`; keys from `key`.
    fn layer(
        len: usize,
        heads: usize,
        d: usize,
        key: impl Fn(usize, usize) -> Vec<f32>,
    ) -> LayerCache {
        let device = Device::flex();
        let mut k = Vec::new();
        for h in 0..heads {
            for i in 0..len {
                k.extend(key(h, i));
            }
        }
        let v: Vec<f32> = (0..heads * len * d).map(|x| x as f32).collect();
        let mut c = LayerCache::default();
        let positions: Vec<usize> = (0..len).collect();
        c.append(
            Tensor::from_data(TensorData::new(k, [1, heads, len, d]), &device),
            Tensor::from_data(TensorData::new(v, [1, heads, len, d]), &device),
            &positions,
        );
        c
    }

    /// Attention `[1, q_heads, queries, len]` with weight 1 split evenly over `favourites(head)`.
    fn attention(
        q_heads: usize,
        queries: usize,
        len: usize,
        favourites: impl Fn(usize) -> Vec<usize>,
    ) -> Tensor<4> {
        let mut w = vec![0.0f32; q_heads * queries * len];
        for h in 0..q_heads {
            let fav = favourites(h);
            for q in 0..queries {
                for &f in &fav {
                    w[(h * queries + q) * len + f] = 1.0 / fav.len() as f32;
                }
            }
        }
        Tensor::from_data(
            TensorData::new(w, [1, q_heads, queries, len]),
            &Device::flex(),
        )
    }

    fn one_hot(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[i % 4] = 1.0;
        v
    }

    #[test]
    fn window_keeps_sinks_and_recent() {
        let mut c = layer(10, 2, 4, |_, i| one_hot(i));
        let mut p = KvPolicyConfig::Window { sink: 2, window: 3 }.build(1);
        assert!(!p.wants_attention());
        p.observe(0, &mut c, None, 10);
        assert_eq!(c.head_positions(0), [0, 1, 7, 8, 9]);
        assert_eq!(c.head_positions(1), [0, 1, 7, 8, 9]);
    }

    #[test]
    fn h2o_keeps_heavy_hitters_per_head() {
        // 2 KV heads, 4 query heads (groups of 2); head 0 favours entries 1 and 3, head 1
        // favours 0 and 2. Budget 4 with a recent window of 2 (entries 4 and 5).
        let mut c = layer(6, 2, 4, |_, i| one_hot(i));
        let mut p = KvPolicyConfig::H2o {
            budget: 4,
            window: 2,
            sink: 0,
        }
        .build(1);
        let a = attention(4, 6, 6, |h| if h < 2 { vec![1, 3] } else { vec![0, 2] });
        p.observe(0, &mut c, Some(&a), 6);
        assert_eq!(c.head_positions(0), [1, 3, 4, 5]);
        assert_eq!(c.head_positions(1), [0, 2, 4, 5]);
        // Scores accumulate: entries 1 and 3 hold 6 each (2 query heads x 6 queries x 0.5).
        // A new token (position 6) attends only to position 4 (cache index 2), which earns 2:
        // not enough, so position 4 is evicted as it leaves the recent window.
        let device = Device::flex();
        let k = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 8], [1, 2, 1, 4]), &device);
        c.append(k.clone(), k, &[6]);
        let a = attention(4, 1, 5, |_| vec![2]);
        p.observe(0, &mut c, Some(&a), 1);
        assert_eq!(c.head_positions(0), [1, 3, 5, 6]);
        assert_eq!(c.head_positions(1), [0, 2, 5, 6]);
    }

    #[test]
    fn snapkv_compresses_the_prompt_by_the_observation_window() {
        // Prompt of 8; the last 2 queries (the window) attend to entries 2 and 4.
        let mut c = layer(8, 1, 4, |_, i| one_hot(i));
        let mut p = KvPolicyConfig::SnapKv {
            budget: 4,
            window: 2,
            kernel: 1,
        }
        .build(1);
        let a = attention(2, 8, 8, |_| vec![2, 4]);
        p.observe(0, &mut c, Some(&a), 8);
        assert_eq!(c.positions(), [2, 4, 6, 7]);
        // Decode steps are never compressed.
        let device = Device::flex();
        let k = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 4], [1, 1, 1, 4]), &device);
        c.append(k.clone(), k, &[8]);
        p.observe(0, &mut c, Some(&attention(2, 1, 5, |_| vec![0])), 1);
        assert_eq!(c.positions(), [2, 4, 6, 7, 8]);
    }

    #[test]
    fn snapkv_pools_neighbouring_scores() {
        let mut c = layer(8, 1, 4, |_, i| one_hot(i));
        let mut p = KvPolicyConfig::SnapKv {
            budget: 4,
            window: 2,
            kernel: 3,
        }
        .build(1);
        let mut w = vec![0.0f32; 8 * 8];
        for q in 6..8 {
            w[q * 8 + 2] = 0.6;
            w[q * 8 + 5] = 0.4;
        }
        let a = Tensor::<4>::from_data(TensorData::new(w, [1, 1, 8, 8]), &Device::flex());
        p.observe(0, &mut c, Some(&a), 8);
        // Raw scores over the prefix 0..6: entry 2 -> 1.2, entry 5 -> 0.8. Pooled with a
        // kernel of 3: entries 1, 2, 3 -> 1.2; 4, 5 -> 0.8. The top 2 are 1 and 2 (ties go to
        // the earlier entry), not the isolated 5.
        assert_eq!(c.positions(), [1, 2, 6, 7]);
    }

    #[test]
    fn rkv_weighs_importance_against_redundancy() {
        // Pure importance (lambda 1): the last 2 queries favour entries 1 and 2.
        let mut c = layer(6, 1, 4, |_, i| one_hot(i));
        let mut p = KvPolicyConfig::Rkv {
            budget: 4,
            buffer: 2,
            window: 2,
            lambda: 1.0,
            sink: 0,
        }
        .build(1);
        p.observe(0, &mut c, Some(&attention(2, 6, 6, |_| vec![1, 2])), 6);
        assert_eq!(c.positions(), [1, 2, 4, 5]);
        // Pure redundancy (lambda 0): entries 0 and 1 are the same key; 2 is opposite to 5.
        let keys = [
            [1., 0., 0., 0.],
            [1., 0., 0., 0.],
            [0., 1., 0., 0.],
            [0., 0., 1., 0.],
            [0., 0., 0., 1.],
            [0., -1., 0., 0.],
        ];
        let mut c = layer(6, 1, 4, |_, i| keys[i].to_vec());
        let mut p = KvPolicyConfig::Rkv {
            budget: 4,
            buffer: 2,
            window: 2,
            lambda: 0.0,
            sink: 0,
        }
        .build(1);
        p.observe(0, &mut c, Some(&attention(2, 6, 6, |_| vec![0])), 6);
        assert_eq!(c.positions(), [2, 3, 4, 5], "the duplicated keys go first");
        // Below budget + buffer nothing happens.
        let mut c = layer(5, 1, 4, |_, i| one_hot(i));
        p.observe(0, &mut c, Some(&attention(2, 5, 5, |_| vec![0])), 5);
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn sinks_keep_the_first_positions_under_h2o_and_rkv() {
        // The queries favour entries 2 and 3; one sink keeps position 0 in their place
        // (budget 4 = 1 sink + 1 heavy hitter + 2 recent); without a sink both stay.
        let a = attention(2, 6, 6, |_| vec![2, 3]);
        let h2o = |sink| KvPolicyConfig::H2o {
            budget: 4,
            window: 2,
            sink,
        };
        let rkv = KvPolicyConfig::Rkv {
            budget: 4,
            buffer: 2,
            window: 2,
            lambda: 1.0,
            sink: 1,
        };
        for (cfg, kept) in [
            (h2o(1), [0, 2, 4, 5]),
            (rkv, [0, 2, 4, 5]),
            (h2o(0), [2, 3, 4, 5]),
        ] {
            let mut c = layer(6, 1, 4, |_, i| one_hot(i));
            cfg.build(1).observe(0, &mut c, Some(&a), 6);
            assert_eq!(c.positions(), kept, "{cfg:?}");
        }
        // Sinks and the recent window must fit the budget.
        let e = KvPolicyConfig::from_flags("rkv", Some(8), Some(4), Some(6), None).unwrap_err();
        assert!(e.to_string().contains("--kv-sink"), "{e}");
        assert!(KvPolicyConfig::from_flags("h2o", Some(8), Some(4), Some(4), None).is_ok());
    }

    #[test]
    fn flags_build_configs_and_reject_nonsense() {
        assert_eq!(
            KvPolicyConfig::from_flags("full", None, None, None, None).unwrap(),
            KvPolicyConfig::Full
        );
        assert_eq!(
            KvPolicyConfig::from_flags("window", Some(64), None, None, None).unwrap(),
            KvPolicyConfig::Window {
                sink: 4,
                window: 60
            }
        );
        assert!(matches!(
            KvPolicyConfig::from_flags("rkv", Some(128), None, None, None).unwrap(),
            KvPolicyConfig::Rkv {
                budget: 128,
                buffer: 32,
                window: 16,
                lambda: RKV_LAMBDA,
                sink: 0,
            }
        ));
        assert!(KvPolicyConfig::from_flags("h2o", None, None, None, None).is_err());
        assert!(KvPolicyConfig::from_flags("h2o", Some(8), None, Some(9), None).is_err());
        let e = KvPolicyConfig::from_flags("lru", Some(8), None, None, None).unwrap_err();
        assert!(e.to_string().contains("lru"));
    }
}
