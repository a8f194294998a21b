//! The attention scorer: how much attention each reasoning token receives from the final
//! answer.
//!
//! A token the answer line reads when the model writes it (the numbers of the last
//! computation, the quantity asked for) matters to the answer; one it ignores (a hedge, a
//! restated fact, a re-check) can go. This is the attention-based importance of H2O and
//! SnapKV (which keep the KV entries that later queries attend to), and of attention-based
//! chain-of-thought pruning, asked of the one query that matters here: the answer.
//!
//! The model sees `BOS question \n reasoning \n#### answer` (the completion that
//! [`laconic_traces::Trace::completion`] writes, after the question). The question and the
//! reasoning go through the decoder in one pass with the fused attention kernel, filling the
//! KV cache; the answer line then goes through in a second pass with
//! [`ForwardOptions::attention`] on, which returns each layer's weights of the answer's
//! queries over the whole cache, `[1, heads, answer, len]`, and nothing bigger (a single pass
//! with weights would materialize `[heads, len, len]` per layer). The two passes give the same
//! weights as one pass over the whole text (tested).
//!
//! A reasoning token's score is the attention weight it receives, averaged over the heads,
//! over the layers ([`AttentionScorer::with_last_layers`]: all of them by default), and over
//! the answer line's non-whitespace tokens (`####` and the answer's own tokens; the newline
//! before `####` is left out), then divided by the trace's largest score, so that the most
//! attended token gets 1. Scores are in `[0, 1]`.
//!
//! A text longer than the context keeps at most half of what the answer line leaves for the
//! question (its end), and the reasoning is cut into consecutive chunks, each scored as
//! `BOS question \n chunk \n#### answer` (the answer then sees only that chunk); the scores
//! of all chunks are normalized together.

use std::path::Path;

use burn::prelude::*;
use laconic_infer::LoadedModel;
use laconic_infer::model::{ForwardOptions, Logits};
use laconic_infer::tokenizer::Tokenizer;

use crate::error::{LabelError, Result};
use crate::surprisal::{Tokens, align_tokens, model_surprisal};

/// A model that scores reasoning tokens by the attention the final answer pays them.
#[derive(Debug)]
pub struct AttentionScorer {
    model: LoadedModel,
    name: String,
    last_layers: Option<usize>,
}

/// The answer line that follows the reasoning, as [`laconic_traces::Trace::completion`]
/// writes it.
pub fn answer_line(answer: &str) -> String {
    format!("\n#### {}", answer.trim())
}

impl AttentionScorer {
    /// Loads a scorer model (a GGUF file or a Hugging Face directory) onto the device named
    /// `device` (`flex` for the CPU; see `laconic_infer::device::parse_device`).
    pub fn load(path: &Path, device: &str) -> Result<Self> {
        let device = laconic_infer::device::parse_device(device)?;
        let model = laconic_infer::load(path, &device)?;
        Ok(Self::new(model, path.display().to_string()))
    }

    /// A scorer from a model already loaded; `name` is written into the labeled file.
    pub fn new(model: LoadedModel, name: String) -> Self {
        Self {
            model,
            name,
            last_layers: None,
        }
    }

    /// Averages over the last `n` layers only (at least 1, at most all) instead of all.
    pub fn with_last_layers(mut self, n: usize) -> Self {
        self.last_layers = Some(n.clamp(1, self.model.config().num_layers.max(1)));
        self
    }

    /// The number of last layers averaged over; `None`: all.
    pub fn last_layers(&self) -> Option<usize> {
        self.last_layers
    }

    /// The model's name (its path, as given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.model.tokenizer
    }

    /// The loaded model.
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// The attention every token of `reasoning` (tokenized without special tokens) receives
    /// from the tokens of `\n#### answer` after it, with `question` before it; normalized so
    /// that the largest is 1 (see the module docs).
    pub fn attention(
        &self,
        question: &str,
        reasoning: &str,
        answer: &str,
    ) -> Result<(Tokens, Vec<f32>)> {
        let tokens = align_tokens(&self.model.tokenizer, reasoning)?;
        let scores =
            answer_attention(&self.model, question, &tokens.ids, answer, self.last_layers)?;
        Ok((tokens, scores))
    }

    /// Surprisal `-log p` (nats) of every token of `text`, given `context` before it, as
    /// [`crate::SurprisalScorer::surprisal`] computes it, from this scorer's model.
    pub fn surprisal(&self, context: &str, text: &str) -> Result<(Tokens, Vec<f32>)> {
        model_surprisal(&self.model, context, text)
    }
}

/// The normalized attention that the answer line pays each of `reasoning` (token ids, after
/// `BOS question \n`), averaged over heads, the last `last_layers` layers (all: `None`) and
/// the answer line's non-whitespace tokens (see the module docs).
pub fn answer_attention(
    model: &LoadedModel,
    question: &str,
    reasoning: &[u32],
    answer: &str,
    last_layers: Option<usize>,
) -> Result<Vec<f32>> {
    if reasoning.is_empty() {
        return Ok(Vec::new());
    }
    let tokenizer = &model.tokenizer;
    let config = model.config();
    let window = config.max_position_embeddings.max(2);
    let suffix = tokenizer.encode(&answer_line(answer), false)?;
    // Queries: the answer line's tokens that are not whitespace (the newline only predicts
    // `####`).
    let queries: Vec<usize> = suffix
        .iter()
        .enumerate()
        .filter(|(_, id)| {
            tokenizer
                .decode(&[**id], false)
                .is_ok_and(|p| !p.trim().is_empty())
        })
        .map(|(i, _)| i)
        .collect();
    if queries.is_empty() || suffix.len() + 2 > window {
        return Err(LabelError::Label {
            id: String::new(),
            message: format!(
                "the answer line {:?} has no token to attend from or does not fit the \
                 scorer's {window}-token context",
                answer_line(answer)
            ),
        });
    }
    let mut prefix = tokenizer.encode(&format!("{}\n", question.trim_end()), true)?;
    // When the whole text does not fit, at most half of what the answer leaves goes to the
    // question (its end, after BOS), and the reasoning is scored in chunks.
    let keep = prefix.len().min((window - suffix.len()) / 2);
    if prefix.len() + reasoning.len() + suffix.len() > window && prefix.len() > keep {
        let bos = tokenizer.encode("", true)?;
        let tail = prefix.split_off(prefix.len() - keep + bos.len());
        prefix = bos;
        prefix.extend(tail);
    }
    let chunk = window - suffix.len() - prefix.len();
    let layers = config.num_layers;
    let from = layers - last_layers.unwrap_or(layers).clamp(1, layers.max(1));
    let mut scores = Vec::with_capacity(reasoning.len());
    for part in reasoning.chunks(chunk.max(1)) {
        let mut ids = prefix.clone();
        ids.extend(part);
        let received = received_attention(model, &ids, &suffix, &queries, from)?;
        scores.extend_from_slice(&received[prefix.len()..]);
    }
    let max = scores.iter().copied().fold(0.0f32, f32::max);
    if max > 0.0 {
        scores.iter_mut().for_each(|s| *s /= max);
    }
    Ok(scores)
}

/// Runs `context` through the model (filling a fresh cache), then `suffix` with attention
/// weights on; returns, per position of `context`, the weight it receives from the suffix
/// positions `queries`, averaged over those queries, the heads, and layers `from..`.
fn received_attention(
    model: &LoadedModel,
    context: &[u32],
    suffix: &[u32],
    queries: &[usize],
    from: usize,
) -> Result<Vec<f32>> {
    let m = &model.model;
    let device = m.embed_tokens.weight.device();
    let ids = |ids: &[u32]| {
        let data: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        Tensor::<2, Int>::from_data(TensorData::new(data, [1, ids.len()]), &device)
    };
    let mut cache = m.new_cache();
    m.forward(
        ids(context),
        &mut cache,
        ForwardOptions {
            logits: Logits::None,
            ..Default::default()
        },
    );
    let out = m.forward(
        ids(suffix),
        &mut cache,
        ForwardOptions {
            logits: Logits::None,
            attention: true,
            ..Default::default()
        },
    );
    let mut sum = vec![0f64; context.len()];
    let mut count = 0usize;
    for w in out.attentions.iter().skip(from) {
        let [b, heads, q, len] = w.dims();
        let data: Vec<f32> = w
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .map_err(|e| LabelError::Label {
                id: String::new(),
                message: format!("attention weights: {e:?}"),
            })?;
        debug_assert_eq!((b, q, len), (1, suffix.len(), context.len() + suffix.len()));
        for h in 0..heads {
            for &qi in queries {
                let row = &data[(h * q + qi) * len..][..context.len()];
                sum.iter_mut()
                    .zip(row)
                    .for_each(|(s, &x)| *s += f64::from(x));
                count += 1;
            }
        }
    }
    if count == 0 {
        return Err(LabelError::Label {
            id: String::new(),
            message: "the scorer model returned no attention weights".into(),
        });
    }
    Ok(sum.into_iter().map(|s| (s / count as f64) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_line_is_the_completions_last_line() {
        assert_eq!(answer_line(" 72 "), "\n#### 72");
        let t = laconic_traces::Trace {
            schema: laconic_traces::SCHEMA_VERSION,
            id: "t".into(),
            system: None,
            question: "q".into(),
            reasoning: "48+24 = 72".into(),
            answer: "72".into(),
            gold: None,
            ratio: None,
            provenance: None,
        };
        assert_eq!(
            t.completion(),
            format!("{}{}", t.reasoning, answer_line(&t.answer))
        );
    }
}
