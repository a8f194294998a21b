//! The self-information scorer: how surprising each token of the reasoning is to a model.
//!
//! A token the model could have guessed (`-ing`, the second half of a repeated name, a
//! restated fact) carries little information and can go; a surprising one carries the trace
//! (as in Selective Context and LLMLingua). The reasoning is scored after the question, so a
//! restated question is unsurprising: the model sees `BOS question \n reasoning` and
//! [`laconic_infer::generate::score_ids`] gives `log p(token | prefix)` for every token.
//! Texts longer than the model's context are scored in windows that overlap by half, so that
//! every token is scored with at least half a context of left context.
//!
//! Tokens are aligned to the text by decoding: each token's decoded piece is matched against
//! the text ignoring whitespace (some tokenizers decode spaces differently), which gives every
//! token the byte span it came from.

use std::path::Path;

use laconic_infer::LoadedModel;
use laconic_infer::generate::{score_batch, score_ids};
use laconic_infer::tokenizer::Tokenizer;

use crate::error::{LabelError, Result};

/// A model that scores tokens by their surprisal.
#[derive(Debug)]
pub struct SurprisalScorer {
    model: LoadedModel,
    name: String,
}

/// A text's tokens under a tokenizer, each with the byte span of the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Byte span `[start, end)` of each token in the text; whitespace-only tokens have an
    /// empty span at the next token's start (they belong to no word).
    pub spans: Vec<(usize, usize)>,
    /// Each token's decoded text.
    pub pieces: Vec<String>,
}

impl SurprisalScorer {
    /// Loads a scorer model (a GGUF file or a Hugging Face directory) onto the device named
    /// `device` (`flex` for the CPU; see `laconic_infer::device::parse_device`).
    pub fn load(path: &Path, device: &str) -> Result<Self> {
        let device = laconic_infer::device::parse_device(device)?;
        let model = laconic_infer::load(path, &device)?;
        Ok(Self::new(model, path.display().to_string()))
    }

    /// A scorer from a model already loaded; `name` is written into the labeled file.
    pub fn new(model: LoadedModel, name: String) -> Self {
        Self { model, name }
    }

    /// The model's name (its path, as given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.model.tokenizer
    }

    /// Surprisal `-log p` (nats) of every token of `text` (tokenized without special
    /// tokens), given `context` before it.
    pub fn surprisal(&self, context: &str, text: &str) -> Result<(Tokens, Vec<f32>)> {
        model_surprisal(&self.model, context, text)
    }

    /// [`SurprisalScorer::surprisal`] for several `(context, text)` pairs, batched
    /// ([`model_surprisal_batch`]).
    pub fn surprisal_batch(&self, items: &[(&str, &str)]) -> Result<Vec<(Tokens, Vec<f32>)>> {
        model_surprisal_batch(&self.model, items)
    }

    /// The loaded model.
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }
}

/// Surprisal `-log p` (nats) of every token of `text` (tokenized without special tokens)
/// under `model`, given `context` before it (see the module docs).
pub fn model_surprisal(
    model: &LoadedModel,
    context: &str,
    text: &str,
) -> Result<(Tokens, Vec<f32>)> {
    let tokenizer = &model.tokenizer;
    let tokens = align_tokens(tokenizer, text)?;
    if tokens.ids.is_empty() {
        return Ok((tokens, Vec::new()));
    }
    let window = model.config().max_position_embeddings.max(2);
    let prefix = context_prefix(tokenizer, context, window)?;
    let mut ids = prefix.clone();
    ids.extend(&tokens.ids);
    let logprobs = score_windows(model, &ids, window)?;
    Ok((tokens, surprisal_after(&logprobs, prefix.len())))
}

/// Most tokens (padding included) that [`model_surprisal_batch`] puts in one forward pass.
pub const BATCH_TOKENS: usize = 2048;

/// [`model_surprisal`] for several `(context, text)` pairs, scoring the texts that fit the
/// context in batches of up to [`BATCH_TOKENS`] tokens (padding included), in one forward
/// pass per batch ([`laconic_infer::generate::score_batch`]); the same results, faster.
pub fn model_surprisal_batch(
    model: &LoadedModel,
    items: &[(&str, &str)],
) -> Result<Vec<(Tokens, Vec<f32>)>> {
    let tokenizer = &model.tokenizer;
    let window = model.config().max_position_embeddings.max(2);
    let mut prepared = Vec::with_capacity(items.len());
    for (context, text) in items {
        let tokens = align_tokens(tokenizer, text)?;
        let mut ids = context_prefix(tokenizer, context, window)?;
        let prefix = ids.len();
        ids.extend(&tokens.ids);
        prepared.push((tokens, ids, prefix));
    }
    let mut out: Vec<Option<(Tokens, Vec<f32>)>> = (0..items.len()).map(|_| None).collect();
    // Similar lengths share a batch, so that little of it is padding.
    let mut order: Vec<usize> = (0..items.len())
        .filter(|&i| !prepared[i].0.ids.is_empty() && prepared[i].1.len() <= window)
        .collect();
    order.sort_by_key(|&i| prepared[i].1.len());
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && (end + 1 - start) * prepared[order[end]].1.len() <= BATCH_TOKENS
        {
            end += 1;
        }
        let seqs: Vec<&[u32]> = order[start..end]
            .iter()
            .map(|&i| prepared[i].1.as_slice())
            .collect();
        let scores = score_batch(&model.model, &seqs)?;
        for (&i, lp) in order[start..end].iter().zip(scores) {
            out[i] = Some((prepared[i].0.clone(), surprisal_after(&lp, prepared[i].2)));
        }
        start = end;
    }
    items
        .iter()
        .zip(out)
        .map(|((context, text), done)| match done {
            Some(d) => Ok(d),
            // Empty texts and texts longer than the context: one at a time, in windows.
            None => model_surprisal(model, context, text),
        })
        .collect()
}

/// Surprisal of the tokens after the first `prefix` of `logprobs`; a token with no score
/// (the very first, when there is no prefix) gets the mean of the others.
fn surprisal_after(logprobs: &[Option<f32>], prefix: usize) -> Vec<f32> {
    let mut surprisal: Vec<f32> = logprobs[prefix..]
        .iter()
        .map(|lp| lp.map_or(f32::NAN, |l| -l))
        .collect();
    // A token with no score (the very first, when there is no prefix) gets the mean.
    let known: Vec<f32> = surprisal
        .iter()
        .copied()
        .filter(|s| s.is_finite())
        .collect();
    let mean = if known.is_empty() {
        0.0
    } else {
        known.iter().sum::<f32>() / known.len() as f32
    };
    surprisal
        .iter_mut()
        .filter(|s| !s.is_finite())
        .for_each(|s| *s = mean);
    surprisal
}

/// `BOS context \n` as ids, cut to at most half of `window` (the context's end, after BOS)
/// so that the text read after it gets the rest.
pub(crate) fn context_prefix(
    tokenizer: &Tokenizer,
    context: &str,
    window: usize,
) -> Result<Vec<u32>> {
    let mut prefix = tokenizer.encode(&format!("{}\n", context.trim_end()), true)?;
    let keep = prefix.len().min(window / 2);
    if prefix.len() > keep {
        // The question's end is the most relevant context; BOS stays in front when there.
        let bos = tokenizer.encode("", true)?;
        let tail = prefix.split_off(prefix.len() - keep + bos.len());
        prefix = bos;
        prefix.extend(tail);
    }
    Ok(prefix)
}

/// `log p(token | prefix)` for every id, in windows of at most `window` tokens that overlap
/// by half; `None` for the first id.
fn score_windows(model: &LoadedModel, ids: &[u32], window: usize) -> Result<Vec<Option<f32>>> {
    if ids.len() <= window {
        return Ok(score_ids(&model.model, ids)?);
    }
    let mut out: Vec<Option<f32>> = Vec::with_capacity(ids.len());
    let mut start = 0;
    loop {
        let end = (start + window).min(ids.len());
        let scores = score_ids(&model.model, &ids[start..end])?;
        // Positions before `out.len()` were scored by an earlier window.
        let skip = out.len() - start;
        out.extend(scores.into_iter().skip(skip));
        if end == ids.len() {
            return Ok(out);
        }
        start = end - window / 2;
    }
}

/// Tokenizes `text` (no special tokens) and finds each token's byte span by matching decoded
/// pieces against the text, ignoring whitespace.
pub fn align_tokens(tokenizer: &Tokenizer, text: &str) -> Result<Tokens> {
    let ids = tokenizer.encode(text, false)?;
    let mut pieces = Vec::with_capacity(ids.len());
    let mut spans = Vec::with_capacity(ids.len());
    // Non-whitespace chars of the text with their byte offsets.
    let chars: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| !c.is_whitespace())
        .collect();
    let mut at = 0usize; // index into `chars`
    let mut anchor = 0usize; // first id of the pending run (pieces split a UTF-8 char)
    let mut pending: Vec<usize> = Vec::new();
    for i in 0..ids.len() {
        let decoded = tokenizer.decode(&ids[anchor..=i], false)?;
        pieces.push(tokenizer.decode(&ids[i..=i], false)?);
        spans.push((0, 0));
        pending.push(i);
        if decoded.ends_with('\u{FFFD}') && i + 1 < ids.len() {
            continue; // a multi-byte char split across tokens: wait for the rest
        }
        let n = decoded.chars().filter(|c| !c.is_whitespace()).count();
        let from = at;
        at = (at + n).min(chars.len());
        let start = chars.get(from).map_or(text.len(), |&(b, _)| b);
        let end = if at == 0 {
            start
        } else {
            chars
                .get(at - 1)
                .map_or(text.len(), |&(b, c)| b + c.len_utf8())
        };
        let (start, end) = if n == 0 { (start, start) } else { (start, end) };
        for &p in &pending {
            spans[p] = (start, end);
        }
        pending.clear();
        anchor = i + 1;
    }
    if at != chars.len() {
        return Err(LabelError::Label {
            id: String::new(),
            message: format!(
                "tokenizer {} does not decode the text back ({} of {} characters matched)",
                tokenizer.source(),
                at,
                chars.len()
            ),
        });
    }
    Ok(Tokens { ids, spans, pieces })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_tokenizer() -> Tokenizer {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../laconic-infer/tests/fixtures/llama");
        Tokenizer::from_file(&dir.join("tokenizer.json"), None).expect("fixture tokenizer")
    }

    #[test]
    fn token_spans_cover_the_text_in_order() {
        let tok = fixture_tokenizer();
        let text = "Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18 — every day’s sales.";
        let t = align_tokens(&tok, text).expect("align");
        assert_eq!(t.ids.len(), t.spans.len());
        assert_eq!(t.ids.len(), t.pieces.len());
        // Spans never go backwards, and the distinct ones (tokens that split one character
        // share a span) hold every non-whitespace character exactly once.
        let mut last = (0, 0);
        let mut rebuilt = String::new();
        for &span in &t.spans {
            assert!(
                span.0 >= last.0,
                "spans go backwards: {span:?} after {last:?}"
            );
            if span.1 > span.0 && span != last {
                assert!(span.0 >= last.1, "spans overlap: {span:?} after {last:?}");
                rebuilt.extend(text[span.0..span.1].chars().filter(|c| !c.is_whitespace()));
                last = span;
            }
        }
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(rebuilt, squeezed);
    }
}
