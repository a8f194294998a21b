//! The learned token classifier: a linear head on a model's hidden states that predicts, per
//! reasoning token, whether compression keeps it (in the spirit of LLMLingua-2).
//!
//! The other scorers cost a model pass per trace and encode fixed ideas of importance
//! (surprise, the answer's attention, word lists). The classifier learns importance from
//! examples instead: from what the other scorers chose (a labeled file of `laconic label`),
//! or from compressions a user supplies (pairs of an original reasoning and a shortened one,
//! as LLMLingua-2 collected from GPT-4). Once trained it is saved and reused: scoring a trace
//! is one forward pass of the encoder and a dot product per token.
//!
//! - **Labels** are per word. A compressed reasoning is aligned to its original by the longest
//!   common subsequence of their words, compared without case and surrounding punctuation
//!   (compression may re-capitalize a sentence start or move a full stop); a word is labeled
//!   kept when the alignment matches it. Protected words (numbers, operators, equations, the
//!   answer: [`crate::words::protected`]) are always kept by compression, so they are left out
//!   of training and evaluation. A pair whose compressed words mostly fail to align (under
//!   [`MIN_ALIGNED`]) is not a compression of its original and is skipped, counted.
//! - **Features**: the encoder (any decoder laconic loads, frozen) reads
//!   `BOS question \n reasoning`, as the surprisal scorer does, and each reasoning token gets
//!   its final hidden state concatenated with the next token's (a decoder sees only the left
//!   context; the next token's state adds one token of look-ahead), standardized by the
//!   training set's mean and standard deviation. Texts longer than the context are read in
//!   chunks after (the end of) the question.
//! - **Training**: logistic regression with Burn's autodiff and AdamW, minibatches in a seeded
//!   order; a held-out share of the traces (drawn by the seed) measures accuracy, the majority
//!   baseline, log-loss and ROC AUC.
//! - **The file** is safetensors: `weight` `[2·hidden]`, `bias` `[1]`, `mean` and `std`
//!   `[2·hidden]`, and a `__metadata__` entry `laconic` holding [`ClassifierMeta`] as JSON (the
//!   encoder, its hidden size, a fingerprint of its tokenizer, where the labels came from and
//!   the held-out figures). Loading checks the encoder against it, so a classifier never
//!   scores through a model it was not trained on.
//! - **Scoring**: each token's probability of being kept; the labeler takes a word's mean
//!   over its tokens and mixes its rank with the rules like the other model scores.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use laconic_infer::LoadedModel;
use laconic_infer::model::{ForwardOptions, Logits};
use laconic_infer::safetensors::{SafetensorsFile, write_f32};
use laconic_infer::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::error::{LabelError, Result};
use crate::label::{LabeledTrace, ratio_label, token_words};
use crate::surprisal::{Tokens, align_tokens, context_prefix};
use crate::words::{Word, protected, split_words};

/// The `format` a classifier file declares.
pub const FORMAT: &str = "laconic-token-classifier";
/// The version of the file layout.
pub const VERSION: u32 = 1;
/// A pair is skipped when fewer than this share of its compressed words align to the
/// original.
pub const MIN_ALIGNED: f64 = 0.9;
/// The text whose token ids fingerprint a tokenizer.
const PROBE: &str = "Wait, let me re-check: 12,345 + 6.7 = 12,351.7 and \\frac{1}{2} of $18 \
                     is 9 — so the answer is 9. Alternatively, x² − 4 = 0 → x = ±2.";

/// One trace with per-word labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Where it came from (a trace id, or `FILE:LINE`).
    pub id: String,
    /// The question, read before the reasoning.
    pub question: String,
    /// The original reasoning.
    pub reasoning: String,
    /// Per word of the reasoning ([`split_words`]): `Some(kept)` for a word the classifier
    /// learns from, `None` for a protected word.
    pub labels: Vec<Option<bool>>,
}

/// Examples read from a source, and the pairs skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Examples {
    /// The examples.
    pub examples: Vec<Example>,
    /// Pairs skipped: (id, why).
    pub skipped: Vec<(String, String)>,
    /// Where the labels came from, for the classifier's metadata.
    pub source: String,
}

/// The words of `text` compared for alignment: lower case, without surrounding punctuation
/// (the word itself when it is all punctuation).
fn normalize(word: &str) -> String {
    let core = word.trim_matches(|c: char| !c.is_alphanumeric());
    if core.is_empty() { word } else { core }.to_lowercase()
}

/// Which words of `original` the words of `compressed` match, by the longest common
/// subsequence of their normalized forms; also the number of compressed words matched.
pub fn align_compressed(original: &str, compressed: &str) -> (Vec<bool>, usize) {
    let a: Vec<String> = split_words(original)
        .iter()
        .map(|w| normalize(w.text(original)))
        .collect();
    let b: Vec<String> = split_words(compressed)
        .iter()
        .map(|w| normalize(w.text(compressed)))
        .collect();
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: LCS length of a[i..] and b[j..], one flat table.
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let mut kept = vec![false; n];
    let (mut i, mut j, mut matched) = (0, 0, 0);
    while i < n && j < m {
        if a[i] == b[j] && lcs[at(i, j)] == lcs[at(i + 1, j + 1)] + 1 {
            kept[i] = true;
            matched += 1;
            i += 1;
            j += 1;
        } else if lcs[at(i + 1, j)] >= lcs[at(i, j + 1)] {
            i += 1;
        } else {
            j += 1;
        }
    }
    (kept, matched)
}

/// An example from a reasoning and its compression, or why the pair is skipped.
pub fn example_from_pair(
    id: &str,
    question: &str,
    reasoning: &str,
    compressed: &str,
    latex: bool,
) -> std::result::Result<Example, String> {
    let words = split_words(reasoning);
    if words.is_empty() {
        return Err("the reasoning is empty".into());
    }
    let (kept, matched) = align_compressed(reasoning, compressed);
    let total = split_words(compressed).len();
    if total > 0 && (matched as f64) < MIN_ALIGNED * total as f64 {
        return Err(format!(
            "only {matched} of the {total} compressed words align to the reasoning \
             (at least {:.0}% must): not a compression of it",
            100.0 * MIN_ALIGNED
        ));
    }
    let prot = protected(reasoning, &words, latex);
    Ok(Example {
        id: id.to_string(),
        question: question.to_string(),
        reasoning: reasoning.to_string(),
        labels: kept
            .iter()
            .zip(&prot)
            .map(|(&k, &p)| (!p).then_some(k))
            .collect(),
    })
}

/// Examples from a labeled file's traces: each trace's variant at `ratio` (the first
/// variant's target when `None`) is its compression. `path` names the file in errors.
pub fn examples_from_labeled(
    labeled: &[LabeledTrace],
    ratio: Option<f64>,
    path: &Path,
) -> Result<Examples> {
    let Some(first) = labeled.first() else {
        return Err(LabelError::Classifier {
            path: path.to_path_buf(),
            message: "the labeled file holds no traces".into(),
        });
    };
    let ratio = match ratio {
        Some(r) => r,
        None => first
            .variants
            .first()
            .map(|v| v.target)
            .ok_or_else(|| LabelError::Classifier {
                path: path.to_path_buf(),
                message: format!("trace `{}` has no compressed variant", first.id),
            })?,
    };
    let mut examples = Vec::with_capacity(labeled.len());
    let mut skipped = Vec::new();
    for l in labeled {
        let Some(v) = l
            .variants
            .iter()
            .find(|v| ratio_label(v.target) == ratio_label(ratio))
        else {
            let have: Vec<String> = l.variants.iter().map(|v| ratio_label(v.target)).collect();
            return Err(LabelError::Classifier {
                path: path.to_path_buf(),
                message: format!(
                    "trace `{}` has no variant at ratio {} (it has {})",
                    l.id,
                    ratio_label(ratio),
                    have.join(", ")
                ),
            });
        };
        match example_from_pair(
            &l.id,
            &l.trace.question,
            &l.trace.reasoning,
            &v.trace.reasoning,
            l.grader == "math",
        ) {
            Ok(e) => examples.push(e),
            Err(why) => skipped.push((l.id.clone(), why)),
        }
    }
    Ok(Examples {
        examples,
        skipped,
        source: format!(
            "{} at ratio {} (scorer {}, unit {})",
            path.display(),
            ratio_label(ratio),
            first.scorer,
            first.unit
        ),
    })
}

/// One line of a pairs file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairLine {
    #[serde(default)]
    id: Option<String>,
    question: String,
    reasoning: String,
    compressed: String,
    #[serde(default)]
    latex: bool,
}

/// Examples from a pairs file: JSONL lines `{"question", "reasoning", "compressed"}` (and
/// optionally `"id"`, and `"latex": true` to protect LaTeX math as in MATH traces), where
/// `compressed` is the reasoning shortened by dropping words.
pub fn examples_from_pairs(path: &Path) -> Result<Examples> {
    let text = std::fs::read_to_string(path).map_err(|e| LabelError::io(path, e))?;
    let mut examples = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: PairLine = serde_json::from_str(line).map_err(|e| LabelError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message: format!("not a pair {{\"question\", \"reasoning\", \"compressed\"}}: {e}"),
        })?;
        let id =
            p.id.unwrap_or_else(|| format!("{}:{}", path.display(), i + 1));
        match example_from_pair(&id, &p.question, &p.reasoning, &p.compressed, p.latex) {
            Ok(e) => examples.push(e),
            Err(why) => skipped.push((id, why)),
        }
    }
    if examples.is_empty() && skipped.is_empty() {
        return Err(LabelError::Classifier {
            path: path.to_path_buf(),
            message: "the pairs file holds no pairs".into(),
        });
    }
    Ok(Examples {
        examples,
        skipped,
        source: format!("pairs {}", path.display()),
    })
}

/// A fingerprint of a tokenizer: FNV-1a over its vocabulary size and the ids it gives a fixed
/// probe text.
pub fn tokenizer_fingerprint(tokenizer: &Tokenizer) -> Result<String> {
    let ids = tokenizer.encode(PROBE, false)?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in std::iter::once(tokenizer.vocab_size() as u32).chain(ids) {
        for b in x.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{h:016x}"))
}

/// The final hidden states `[ids.len() × hidden]` of `ids` read after `prefix` (each chunk
/// of at most `window - prefix.len()` ids after the same prefix).
fn hidden_states(model: &LoadedModel, prefix: &[u32], ids: &[u32]) -> Result<Vec<f32>> {
    let m = &model.model;
    let device = m.embed_tokens.weight.device();
    let window = model.config().max_position_embeddings.max(2);
    let chunk = window.saturating_sub(prefix.len()).max(1);
    let hidden = model.config().hidden_size;
    let mut out = Vec::with_capacity(ids.len() * hidden);
    for part in ids.chunks(chunk) {
        let mut input: Vec<i32> = prefix.iter().map(|&t| t as i32).collect();
        input.extend(part.iter().map(|&t| t as i32));
        let n = input.len();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(input, [1, n]), &device);
        let mut cache = m.new_cache();
        let opts = ForwardOptions {
            logits: Logits::None,
            hidden: true,
            ..Default::default()
        };
        let h = m
            .forward(tokens, &mut cache, opts)
            .hidden
            .ok_or_else(|| LabelError::Label {
                id: String::new(),
                message: "the encoder returned no hidden states".into(),
            })?;
        let h = h.narrow(1, prefix.len(), part.len());
        let values: Vec<f32> = h
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| LabelError::Label {
                id: String::new(),
                message: format!("reading hidden states: {e:?}"),
            })?;
        out.extend(values);
    }
    Ok(out)
}

/// A text's tokens under the encoder and their features `[tokens × 2·hidden]`: each token's
/// final hidden state, then the next token's (zeros after the last).
pub fn token_features(
    model: &LoadedModel,
    context: &str,
    text: &str,
) -> Result<(Tokens, Vec<f32>)> {
    let tokens = align_tokens(&model.tokenizer, text)?;
    let hidden = model.config().hidden_size;
    if tokens.ids.is_empty() {
        return Ok((tokens, Vec::new()));
    }
    let window = model.config().max_position_embeddings.max(2);
    let prefix = context_prefix(&model.tokenizer, context, window)?;
    let states = hidden_states(model, &prefix, &tokens.ids)?;
    let n = tokens.ids.len();
    let mut features = vec![0f32; n * 2 * hidden];
    for t in 0..n {
        let row = &mut features[t * 2 * hidden..(t + 1) * 2 * hidden];
        row[..hidden].copy_from_slice(&states[t * hidden..(t + 1) * hidden]);
        if t + 1 < n {
            row[hidden..].copy_from_slice(&states[(t + 1) * hidden..(t + 2) * hidden]);
        }
    }
    Ok((tokens, features))
}

/// A trained linear head with its feature standardization.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    /// Weight per (standardized) feature.
    pub weight: Vec<f32>,
    /// Bias.
    pub bias: f32,
    /// Feature means of the training set.
    pub mean: Vec<f32>,
    /// Feature standard deviations of the training set (at least 1e-6).
    pub std: Vec<f32>,
}

impl LinearHead {
    /// The number of features.
    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// The logit of one feature row.
    pub fn logit(&self, x: &[f32]) -> f32 {
        let mut z = self.bias;
        for (((w, x), m), s) in self.weight.iter().zip(x).zip(&self.mean).zip(&self.std) {
            z += w * (x - m) / s;
        }
        z
    }

    /// The probability that the token of one feature row is kept.
    pub fn prob(&self, x: &[f32]) -> f32 {
        1.0 / (1.0 + (-self.logit(x)).exp())
    }
}

/// How the head is trained.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Passes over the training tokens.
    pub epochs: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Tokens per minibatch.
    pub batch: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seeds the minibatch order and the held-out draw.
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            epochs: 8,
            lr: 5e-3,
            batch: 512,
            weight_decay: 1e-2,
            seed: 0,
        }
    }
}

/// The head's parameters under autodiff.
#[derive(Module, Debug)]
struct Head {
    w: Param<Tensor<2>>,
    b: Param<Tensor<1>>,
}

/// SplitMix64: the seeded order of minibatches and of the held-out draw.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded Fisher-Yates shuffle.
fn shuffle<T>(items: &mut [T], state: &mut u64) {
    for i in (1..items.len()).rev() {
        let j = (splitmix(state) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Trains a logistic-regression head on feature rows (`labels.len()` rows of `dim`) with
/// Burn's autodiff and AdamW (see the module docs).
///
/// # Errors
/// When there are no rows or `features` is not `labels.len() × dim`.
pub fn train_head(
    features: &[f32],
    labels: &[bool],
    dim: usize,
    settings: &TrainSettings,
) -> Result<LinearHead> {
    let n = labels.len();
    if n == 0 || dim == 0 || features.len() != n * dim {
        return Err(LabelError::Label {
            id: String::new(),
            message: format!(
                "nothing to train on: {n} labeled tokens, {} feature values for {dim} features",
                features.len()
            ),
        });
    }
    let mut mean = vec![0f64; dim];
    let mut sq = vec![0f64; dim];
    for row in features.chunks_exact(dim) {
        for (i, &x) in row.iter().enumerate() {
            mean[i] += x as f64;
            sq[i] += (x as f64) * (x as f64);
        }
    }
    let mean: Vec<f32> = mean.iter().map(|s| (s / n as f64) as f32).collect();
    let std: Vec<f32> = sq
        .iter()
        .zip(&mean)
        .map(|(s, &m)| ((s / n as f64 - (m as f64).powi(2)).max(0.0).sqrt() as f32).max(1e-6))
        .collect();
    let device = Device::flex().autodiff();
    // The bias starts at the log-odds of the labels, so that training starts from the base
    // rate (kept words can be rare: numbers take most of a tight budget) instead of spending
    // its steps walking the bias there.
    let kept = labels.iter().filter(|&&l| l).count() as f64;
    let share = ((kept + 0.5) / (n as f64 + 1.0)).clamp(1e-4, 1.0 - 1e-4);
    let mut head = Head {
        w: Param::from_tensor(Tensor::zeros([dim, 1], &device)),
        b: Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![(share / (1.0 - share)).ln() as f32], [1]),
            &device,
        )),
    };
    let mut optim = AdamWConfig::new()
        .with_weight_decay(settings.weight_decay as f32)
        .with_epsilon(1e-8)
        .init();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = settings.seed ^ 0x5eed_c1a5;
    let batch = settings.batch.max(1);
    let mut x = vec![0f32; batch * dim];
    let mut y = vec![0f32; batch];
    for _ in 0..settings.epochs.max(1) {
        shuffle(&mut order, &mut rng);
        for rows in order.chunks(batch) {
            let b = rows.len();
            for (k, &r) in rows.iter().enumerate() {
                let src = &features[r * dim..(r + 1) * dim];
                for i in 0..dim {
                    x[k * dim + i] = (src[i] - mean[i]) / std[i];
                }
                y[k] = if labels[r] { 1.0 } else { 0.0 };
            }
            let xt =
                Tensor::<2>::from_data(TensorData::new(x[..b * dim].to_vec(), [b, dim]), &device);
            let yt = Tensor::<1>::from_data(TensorData::new(y[..b].to_vec(), [b]), &device);
            let z = (xt.matmul(head.w.val()).reshape([b]) + head.b.val()).reshape([b]);
            // Binary cross-entropy with logits, stably: max(z, 0) − z·y + log(1 + e^−|z|).
            let loss = (z.clone().clamp_min(0.0) - z.clone() * yt
                + z.abs().neg().exp().add_scalar(1.0).log())
            .mean();
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(settings.lr, head, grads);
        }
    }
    let read = |t: Tensor<2>| -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default()
    };
    let weight = read(head.w.val().inner());
    let bias = read(head.b.val().inner().reshape([1, 1]))
        .first()
        .copied()
        .unwrap_or(0.0);
    Ok(LinearHead {
        weight,
        bias,
        mean,
        std,
    })
}

/// How well probabilities predict labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Tokens measured.
    pub tokens: usize,
    /// Share labeled kept.
    pub kept_share: f64,
    /// Share predicted right at threshold 0.5.
    pub accuracy: f64,
    /// Accuracy of always answering the majority label.
    pub baseline_accuracy: f64,
    /// Mean binary cross-entropy (nats).
    pub log_loss: f64,
    /// Area under the ROC curve (ties count half): the chance that a kept token scores
    /// above a dropped one. 0.5 is chance.
    pub auc: f64,
}

/// Accuracy, baseline, log-loss and ROC AUC of `probs` against `labels`.
pub fn metrics(probs: &[f32], labels: &[bool]) -> Metrics {
    let n = labels.len().min(probs.len());
    if n == 0 {
        return Metrics {
            tokens: 0,
            kept_share: 0.0,
            accuracy: 0.0,
            baseline_accuracy: 0.0,
            log_loss: 0.0,
            auc: 0.5,
        };
    }
    let pos = labels[..n].iter().filter(|&&l| l).count();
    let kept_share = pos as f64 / n as f64;
    let right = (0..n).filter(|&i| (probs[i] >= 0.5) == labels[i]).count();
    let log_loss = (0..n)
        .map(|i| {
            let p = (probs[i] as f64).clamp(1e-7, 1.0 - 1e-7);
            if labels[i] { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum::<f64>()
        / n as f64;
    // Mann-Whitney: sum of the positives' ranks (ties averaged).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && probs[order[j + 1]] == probs[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let neg = n - pos;
    let auc = if pos == 0 || neg == 0 {
        0.5
    } else {
        (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
    };
    Metrics {
        tokens: n,
        kept_share,
        accuracy: right as f64 / n as f64,
        baseline_accuracy: kept_share.max(1.0 - kept_share),
        log_loss,
        auc,
    }
}

/// What a classifier file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The encoder it was trained on (its path, as given).
    pub encoder: String,
    /// The encoder's hidden size.
    pub hidden_size: usize,
    /// The features: `hidden+next`.
    pub features: String,
    /// [`tokenizer_fingerprint`] of the encoder's tokenizer.
    pub tokenizer: String,
    /// Where the labels came from.
    pub labels: String,
    /// How it was trained and how well it does.
    pub report: TrainReport,
}

/// How a classifier was trained and how well it predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainReport {
    /// Traces trained on.
    pub train_traces: usize,
    /// Traces held out.
    pub valid_traces: usize,
    /// Pairs skipped (their compression did not align).
    pub skipped: usize,
    /// Epochs.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Tokens per minibatch.
    pub batch: usize,
    /// Seed.
    pub seed: u64,
    /// On the training tokens.
    pub train: Metrics,
    /// On the held-out tokens (absent without held-out traces).
    pub valid: Option<Metrics>,
    /// Seconds spent running the encoder.
    pub encode_seconds: f64,
    /// Seconds spent training the head.
    pub train_seconds: f64,
}

/// A trained classifier with its encoder: scores the tokens of a reasoning.
#[derive(Debug)]
pub struct TokenClassifier {
    model: LoadedModel,
    name: String,
    head: LinearHead,
    meta: ClassifierMeta,
}

/// Per encoder token of an example: its label, or `None` (protected or whitespace).
fn token_labels(tokens: &Tokens, words: &[Word], labels: &[Option<bool>]) -> Vec<Option<bool>> {
    token_words(tokens, words)
        .into_iter()
        .map(|w| w.and_then(|w| labels.get(w).copied().flatten()))
        .collect()
}

/// Feature rows and labels of the labeled tokens of `examples`, with a progress callback.
fn gather(
    model: &LoadedModel,
    examples: &[&Example],
    tick: &dyn Fn(),
) -> Result<(Vec<f32>, Vec<bool>)> {
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let dim = 2 * model.config().hidden_size;
    for e in examples {
        let (tokens, rows) =
            token_features(model, &e.question, &e.reasoning).map_err(|err| match err {
                LabelError::Label { message, .. } => LabelError::Label {
                    id: e.id.clone(),
                    message,
                },
                other => other,
            })?;
        let words = split_words(&e.reasoning);
        for (t, label) in token_labels(&tokens, &words, &e.labels)
            .into_iter()
            .enumerate()
        {
            if let Some(l) = label {
                features.extend_from_slice(&rows[t * dim..(t + 1) * dim]);
                labels.push(l);
            }
        }
        tick();
    }
    Ok((features, labels))
}

/// The probabilities a head gives feature rows.
fn predict(head: &LinearHead, features: &[f32]) -> Vec<f32> {
    features
        .chunks_exact(head.dim())
        .map(|r| head.prob(r))
        .collect()
}

impl TokenClassifier {
    /// Trains a classifier on `examples` with `model` as the encoder (`name`: its path, for
    /// the file). A share `valid_share` of the traces, drawn by the seed, is held out and
    /// measured; `tick` is called once per trace encoded.
    pub fn train(
        model: LoadedModel,
        name: String,
        examples: &Examples,
        valid_share: f64,
        settings: &TrainSettings,
        tick: &dyn Fn(),
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&valid_share) {
            return Err(LabelError::Setting {
                setting: "--valid-share",
                value: valid_share.to_string(),
                message: "must be in [0, 1)".into(),
            });
        }
        let n = examples.examples.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = settings.seed ^ 0x000a_11d0_u64;
        shuffle(&mut order, &mut rng);
        let valid_n = if n >= 2 {
            ((valid_share * n as f64).ceil() as usize).min(n - 1)
        } else {
            0
        };
        let (valid_idx, train_idx) = order.split_at(valid_n);
        let pick = |idx: &[usize]| -> Vec<&Example> {
            let mut idx = idx.to_vec();
            idx.sort_unstable();
            idx.iter().map(|&i| &examples.examples[i]).collect()
        };
        let (train_ex, valid_ex) = (pick(train_idx), pick(valid_idx));
        let t0 = std::time::Instant::now();
        let (train_x, train_y) = gather(&model, &train_ex, tick)?;
        let (valid_x, valid_y) = gather(&model, &valid_ex, tick)?;
        let encode_seconds = t0.elapsed().as_secs_f64();
        let dim = 2 * model.config().hidden_size;
        let t1 = std::time::Instant::now();
        let head = train_head(&train_x, &train_y, dim, settings)?;
        let train_seconds = t1.elapsed().as_secs_f64();
        let train = metrics(&predict(&head, &train_x), &train_y);
        let valid = (!valid_y.is_empty()).then(|| metrics(&predict(&head, &valid_x), &valid_y));
        let meta = ClassifierMeta {
            format: FORMAT.into(),
            version: VERSION,
            encoder: name.clone(),
            hidden_size: model.config().hidden_size,
            features: "hidden+next".into(),
            tokenizer: tokenizer_fingerprint(&model.tokenizer)?,
            labels: examples.source.clone(),
            report: TrainReport {
                train_traces: train_ex.len(),
                valid_traces: valid_ex.len(),
                skipped: examples.skipped.len(),
                epochs: settings.epochs.max(1),
                lr: settings.lr,
                batch: settings.batch.max(1),
                seed: settings.seed,
                train,
                valid,
                encode_seconds,
                train_seconds,
            },
        };
        Ok(Self {
            model,
            name,
            head,
            meta,
        })
    }

    /// Loads a classifier file and checks it against the encoder `model` (`name`: its path):
    /// the hidden size and the tokenizer must be the ones it was trained on.
    pub fn load(path: &Path, model: LoadedModel, name: String) -> Result<Self> {
        let bad = |message: String| LabelError::Classifier {
            path: path.to_path_buf(),
            message,
        };
        let file = SafetensorsFile::open(path)?;
        let meta = meta_of(&file, path)?;
        if meta.format != FORMAT || meta.version != VERSION {
            return Err(bad(format!(
                "format {} version {}; this laconic reads {FORMAT} version {VERSION}",
                meta.format, meta.version
            )));
        }
        let hidden = model.config().hidden_size;
        if meta.hidden_size != hidden {
            return Err(bad(format!(
                "trained on {} (hidden size {}), but the encoder {name} has hidden size {hidden}",
                meta.encoder, meta.hidden_size
            )));
        }
        let fingerprint = tokenizer_fingerprint(&model.tokenizer)?;
        if meta.tokenizer != fingerprint {
            return Err(bad(format!(
                "trained on {} whose tokenizer differs from {name}'s (fingerprint {} vs \
                 {fingerprint}): its features would mean nothing",
                meta.encoder, meta.tokenizer
            )));
        }
        let dim = 2 * hidden;
        let tensor = |key: &str, len: usize| -> Result<Vec<f32>> {
            let (v, shape) = file
                .tensor_f32(key)?
                .ok_or_else(|| bad(format!("tensor `{key}` is missing")))?;
            if v.len() != len {
                return Err(bad(format!(
                    "tensor `{key}` has shape {shape:?}, expected [{len}]"
                )));
            }
            Ok(v)
        };
        let head = LinearHead {
            weight: tensor("weight", dim)?,
            bias: tensor("bias", 1)?[0],
            mean: tensor("mean", dim)?,
            std: tensor("std", dim)?,
        };
        if head.std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(bad("tensor `std` holds a value that is not positive".into()));
        }
        Ok(Self {
            model,
            name,
            head,
            meta,
        })
    }

    /// Writes the classifier (atomically: a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let dim = self.head.dim();
        let meta = serde_json::to_string(&self.meta).map_err(|e| LabelError::Classifier {
            path: path.to_path_buf(),
            message: format!("writing metadata: {e}"),
        })?;
        write_f32(
            path,
            &[
                ("weight".into(), vec![dim], self.head.weight.clone()),
                ("bias".into(), vec![1], vec![self.head.bias]),
                ("mean".into(), vec![dim], self.head.mean.clone()),
                ("std".into(), vec![dim], self.head.std.clone()),
            ],
            &[("laconic".into(), meta)],
        )?;
        Ok(())
    }

    /// The probability that each token of `text` (tokenized without special tokens) is kept,
    /// read after `context`.
    pub fn scores(&self, context: &str, text: &str) -> Result<(Tokens, Vec<f32>)> {
        let (tokens, features) = token_features(&self.model, context, text)?;
        Ok((tokens, predict(&self.head, &features)))
    }

    /// Accuracy, baseline, log-loss and AUC on the labeled tokens of `examples`.
    pub fn evaluate(&self, examples: &[Example]) -> Result<Metrics> {
        let refs: Vec<&Example> = examples.iter().collect();
        let (x, y) = gather(&self.model, &refs, &|| {})?;
        Ok(metrics(&predict(&self.head, &x), &y))
    }

    /// The encoder's name (its path, as given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The encoder's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.model.tokenizer
    }

    /// What the file says about the classifier.
    pub fn meta(&self) -> &ClassifierMeta {
        &self.meta
    }

    /// The linear head.
    pub fn head(&self) -> &LinearHead {
        &self.head
    }
}

/// Per-path metadata of a classifier file, without loading an encoder (for `inspect`-like
/// uses and tests).
pub fn read_meta(path: &Path) -> Result<ClassifierMeta> {
    meta_of(&SafetensorsFile::open(path)?, path)
}

/// The `laconic` metadata of an open classifier file.
fn meta_of(file: &SafetensorsFile, path: &Path) -> Result<ClassifierMeta> {
    let meta: HashMap<String, String> = file.metadata();
    let text = meta.get("laconic").ok_or_else(|| LabelError::Classifier {
        path: PathBuf::from(path),
        message: format!("not a {FORMAT} file (no `laconic` metadata)"),
    })?;
    serde_json::from_str(text).map_err(|e| LabelError::Classifier {
        path: PathBuf::from(path),
        message: format!("its `laconic` metadata does not read: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_finds_the_kept_words_despite_recapitalization() {
        let original = "So, first I add 3 and 4. Then the total is 7 apples.";
        let compressed = "First add 3 4. Total is 7 apples.";
        let (kept, matched) = align_compressed(original, compressed);
        let words: Vec<&str> = original.split_whitespace().collect();
        let kept_words: Vec<&str> = words
            .iter()
            .zip(&kept)
            .filter(|(_, k)| **k)
            .map(|(w, _)| *w)
            .collect();
        assert_eq!(
            kept_words,
            ["first", "add", "3", "4.", "total", "is", "7", "apples."]
        );
        assert_eq!(matched, 8);
    }

    #[test]
    fn a_pair_that_is_not_a_compression_is_refused() {
        let e = example_from_pair("x", "q", "Add 3 and 4 to get 7.", "Multiply 5 by 6.", false)
            .expect_err("refused");
        assert!(e.contains("align"), "{e}");
        let ok = example_from_pair("x", "q", "Add 3 and 4 to get 7.", "Add 3 4: 7.", false)
            .expect("a compression");
        // `3`, `4` and `7.` are protected; `and`, `to`, `get` were dropped.
        assert_eq!(
            ok.labels,
            [
                Some(true),
                None,
                Some(false),
                None,
                Some(false),
                Some(false),
                None
            ]
        );
    }

    #[test]
    fn auc_and_accuracy_match_hand_counts() {
        // Positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1)
        // → 3 of 4.
        let m = metrics(&[0.9, 0.4, 0.5, 0.1], &[true, true, false, false]);
        assert!((m.auc - 0.75).abs() < 1e-12, "{m:?}");
        assert!((m.accuracy - 0.5).abs() < 1e-12);
        assert!((m.baseline_accuracy - 0.5).abs() < 1e-12);
        // Ties count half.
        let m = metrics(&[0.5, 0.5], &[true, false]);
        assert!((m.auc - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_head_learns_a_separable_rule_and_not_shuffled_labels() {
        // Feature 0 decides the label; feature 1 is noise; feature 2 is a constant (std 0).
        let mut rng = 7u64;
        let n = 2000;
        let mut x = Vec::with_capacity(n * 3);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let a = (splitmix(&mut rng) % 1000) as f32 / 100.0 - 5.0;
            let b = (splitmix(&mut rng) % 1000) as f32 / 100.0;
            x.extend([a, b, 3.0]);
            y.push(a > 0.7);
        }
        let settings = TrainSettings {
            epochs: 20,
            lr: 5e-2,
            ..Default::default()
        };
        let head = train_head(&x, &y, 3, &settings).expect("trains");
        let m = metrics(&predict(&head, &x), &y);
        assert!(m.accuracy > 0.97 && m.auc > 0.99, "{m:?}");
        let mut shuffled = y.clone();
        shuffle(&mut shuffled, &mut 99u64);
        let head = train_head(&x, &shuffled, 3, &settings).expect("trains");
        let m = metrics(&predict(&head, &x), &shuffled);
        assert!(m.auc < 0.6, "shuffled labels cannot be learned: {m:?}");
        assert!(train_head(&[], &[], 3, &settings).is_err());
    }
}
