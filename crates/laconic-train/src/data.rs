//! Training examples: traces rendered through the model's chat template, tokenized, with the
//! loss on completion tokens only, and length-bucketed batches in a seeded order.
//!
//! The order of every epoch is a function of the seed and the epoch number alone, so a
//! resumed run needs only its step count to continue with exactly the batches it would
//! have seen.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, InMemDataset};
use burn::prelude::*;
use laconic_infer::chat::{ChatTemplate, Message};
use laconic_infer::tokenizer::Tokenizer;
use laconic_traces::Trace;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{Result, TrainError};

/// One tokenized example: the loss covers `ids[prompt_len..]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The trace's id.
    pub id: String,
    /// Prompt and completion token ids.
    pub ids: Vec<u32>,
    /// Tokens of the prompt (no loss on them).
    pub prompt_len: usize,
}

impl Example {
    /// Tokens the loss is computed on (each predicted from the ones before it).
    pub fn target_tokens(&self) -> usize {
        self.ids.len() - self.prompt_len
    }
}

/// How traces become token sequences.
pub struct Formatter<'a> {
    tokenizer: &'a Tokenizer,
    template: Option<&'a ChatTemplate>,
    eos: Option<u32>,
    system: Option<String>,
}

impl<'a> Formatter<'a> {
    /// A formatter for a model: its chat template when it has one, else a plain
    /// `Question: ...\nAnswer: ` prompt with the completion ended by `eos`.
    pub fn new(
        tokenizer: &'a Tokenizer,
        template: Option<&'a ChatTemplate>,
        eos: Option<u32>,
        system: Option<String>,
    ) -> Self {
        Self {
            tokenizer,
            template,
            eos,
            system,
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.tokenizer
    }

    /// Tokens that end an answer: the model's EOS ids and the end-of-turn markers of the
    /// common chat templates.
    pub fn stop_tokens(&self, eos: &[u32]) -> Vec<u32> {
        self.tokenizer.chat_stop_tokens(eos)
    }

    /// The prompt text of a trace, ready for generation (template applied, generation prompt
    /// appended).
    pub fn prompt_text(&self, trace: &Trace) -> Result<String> {
        match self.template {
            Some(t) => Ok(t.render(&self.messages(trace), true)?),
            None => Ok(format!("Question: {}\nAnswer: ", trace.prompt())),
        }
    }

    fn messages(&self, trace: &Trace) -> Vec<Message> {
        let mut m = Vec::new();
        if let Some(s) = trace.system.as_ref().or(self.system.as_ref()) {
            m.push(Message::new("system", s.clone()));
        }
        m.push(Message::new("user", trace.prompt()));
        m
    }

    /// Prompt token ids of a trace (for generation).
    pub fn prompt_ids(&self, trace: &Trace) -> Result<Vec<u32>> {
        let text = self.prompt_text(trace)?;
        // A rendered template already holds BOS when the model wants one.
        Ok(self.tokenizer.encode(&text, self.template.is_none())?)
    }

    /// The tokenized example: prompt, then the completion and the end of the turn. The two
    /// parts are tokenized apart, so the loss boundary is exact.
    pub fn example(&self, trace: &Trace) -> Result<Example> {
        let prompt = self.prompt_ids(trace)?;
        let completion = trace.completion();
        let mut tail = match self.template {
            Some(t) => {
                let prompt_text = self.prompt_text(trace)?;
                let mut messages = self.messages(trace);
                messages.push(Message::new("assistant", completion.clone()));
                let full = t.render(&messages, false)?;
                let rest = full.strip_prefix(&prompt_text).ok_or_else(|| {
                    TrainError::Invalid(
                        "the chat template renders the prompt differently once the answer is \
                         added; cannot place the loss boundary"
                            .into(),
                    )
                })?;
                // The end of the turn stays in (the model learns to stop); a trailing
                // newline after it does not matter.
                self.tokenizer.encode(rest.trim_end_matches('\n'), false)?
            }
            None => {
                let mut ids = self.tokenizer.encode(&completion, false)?;
                ids.extend(self.eos);
                ids
            }
        };
        let prompt_len = prompt.len();
        let mut ids = prompt;
        ids.append(&mut tail);
        Ok(Example {
            id: trace.id.clone(),
            ids,
            prompt_len,
        })
    }
}

/// Tokenized examples, with what was left out.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    /// The examples that fit.
    pub examples: Vec<Example>,
    /// Traces left out because prompt and completion exceed the length limit.
    pub too_long: usize,
}

/// Tokenizes traces, leaving out those longer than `max_len` tokens.
pub fn tokenize(formatter: &Formatter, traces: &[Trace], max_len: usize) -> Result<Examples> {
    let mut out = Examples::default();
    for t in traces {
        let e = formatter.example(t)?;
        if e.ids.len() > max_len || e.target_tokens() == 0 {
            out.too_long += 1;
        } else {
            out.examples.push(e);
        }
    }
    Ok(out)
}

/// A padded micro-batch: inputs `[b, s]`, next-token targets `[b, s]` and a loss mask
/// `[b, s]` (1 on completion tokens).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Input token ids.
    pub inputs: Tensor<2, Int>,
    /// The token each position must predict.
    pub targets: Tensor<2, Int>,
    /// 1.0 where the loss counts.
    pub mask: Tensor<2>,
    /// The flattened positions (`row * s + column`) where the loss counts, in order: the
    /// output head runs on these alone (prompt and padding positions need no logits).
    pub loss_positions: Tensor<1, Int>,
    /// The targets at [`Batch::loss_positions`].
    pub loss_targets: Tensor<1, Int>,
    /// Positions where the loss counts.
    pub target_tokens: usize,
    /// Real (unpadded) tokens in the batch.
    pub tokens: usize,
}

/// Pads examples into a [`Batch`] (right padding; causal attention never looks at it).
#[derive(Debug, Clone, Copy, Default)]
pub struct CausalBatcher;

impl Batcher<Example, Batch> for CausalBatcher {
    fn batch(&self, items: Vec<Example>, device: &Device) -> Batch {
        let b = items.len();
        let s = items
            .iter()
            .map(|e| e.ids.len() - 1)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut inputs = vec![0i32; b * s];
        let mut targets = vec![0i32; b * s];
        let mut mask = vec![0f32; b * s];
        let (mut loss_positions, mut loss_targets) = (Vec::new(), Vec::new());
        let (mut target_tokens, mut tokens) = (0, 0);
        for (r, e) in items.iter().enumerate() {
            let n = e.ids.len() - 1;
            tokens += e.ids.len();
            for i in 0..n {
                inputs[r * s + i] = e.ids[i] as i32;
                targets[r * s + i] = e.ids[i + 1] as i32;
                // Position i predicts token i + 1: a completion token when i + 1 >= prompt_len.
                if i + 1 >= e.prompt_len {
                    mask[r * s + i] = 1.0;
                    loss_positions.push((r * s + i) as i32);
                    loss_targets.push(e.ids[i + 1] as i32);
                    target_tokens += 1;
                }
            }
        }
        Batch {
            inputs: Tensor::from_data(TensorData::new(inputs, [b, s]), device),
            targets: Tensor::from_data(TensorData::new(targets, [b, s]), device),
            mask: Tensor::from_data(TensorData::new(mask, [b, s]), device),
            loss_positions: Tensor::from_data(
                TensorData::new(loss_positions, [target_tokens]),
                device,
            ),
            loss_targets: Tensor::from_data(TensorData::new(loss_targets, [target_tokens]), device),
            target_tokens,
            tokens,
        }
    }
}

/// The micro-batches of one epoch as lists of dataset indices: shuffled by `(seed, epoch)`,
/// then sorted by length within windows of 32 batches so that padding stays small, then the
/// batches themselves shuffled.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let window = batch_size * 32;
    let mut batches = Vec::new();
    for chunk in order.chunks_mut(window) {
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// The examples as a Burn dataset, and the batch order of every epoch.
pub struct TrainData {
    dataset: InMemDataset<Example>,
    lengths: Vec<usize>,
    batch_size: usize,
    seed: u64,
    /// The batch order of the epoch asked for last (computed once per epoch).
    order: std::cell::RefCell<Option<(u64, Vec<Vec<usize>>)>>,
}

impl TrainData {
    /// Training data over `examples`.
    pub fn new(examples: Vec<Example>, batch_size: usize, seed: u64) -> Self {
        let lengths = examples.iter().map(|e| e.ids.len()).collect();
        Self {
            dataset: InMemDataset::new(examples),
            lengths,
            batch_size,
            seed,
            order: std::cell::RefCell::new(None),
        }
    }

    /// Micro-batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.lengths.len().div_ceil(self.batch_size)
    }

    /// The examples of micro-batch number `index` counted from the start of training
    /// (epochs follow one another).
    pub fn micro_batch(&self, index: usize) -> Vec<Example> {
        let per_epoch = self.batches_per_epoch().max(1);
        let epoch = (index / per_epoch) as u64;
        let mut order = self.order.borrow_mut();
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let batches = epoch_batches(&self.lengths, self.batch_size, self.seed, epoch);
            *order = Some((epoch, batches));
        }
        let batches = order
            .as_ref()
            .map(|(_, b)| b.as_slice())
            .unwrap_or_default();
        batches
            .get(index % per_epoch)
            .map(|b| b.iter().filter_map(|&i| self.dataset.get(i).ok()).collect())
            .unwrap_or_default()
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.dataset.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.dataset.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_batches_cover_every_example_once_and_bucket_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 400 + 10).collect();
        let batches = epoch_batches(&lengths, 8, 3, 0);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // Bucketing: padding (max - len within a batch) is far below a random order's.
        let pad = |bs: &[Vec<usize>]| -> usize {
            bs.iter()
                .map(|b| {
                    let m = b.iter().map(|&i| lengths[i]).max().unwrap_or(0);
                    b.iter().map(|&i| m - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let random: Vec<Vec<usize>> = (0..1000)
            .collect::<Vec<_>>()
            .chunks(8)
            .map(<[usize]>::to_vec)
            .collect();
        assert!(
            pad(&batches) * 5 < pad(&random),
            "{} vs {}",
            pad(&batches),
            pad(&random)
        );
        // Same seed and epoch: same order; another epoch: another order.
        assert_eq!(epoch_batches(&lengths, 8, 3, 0), batches);
        assert_ne!(epoch_batches(&lengths, 8, 3, 1), batches);
    }

    #[test]
    fn batch_masks_only_completion_tokens() {
        let items = vec![
            Example {
                id: "a".into(),
                ids: vec![1, 2, 3, 4, 5],
                prompt_len: 3,
            },
            Example {
                id: "b".into(),
                ids: vec![6, 7, 8],
                prompt_len: 1,
            },
        ];
        let b = CausalBatcher.batch(items, &Device::flex());
        assert_eq!(b.inputs.dims(), [2, 4]);
        let mask = b.mask.into_data().try_into_vec::<f32>().expect("mask");
        // Row 0 predicts 2,3,4,5 at positions 0..4: 4 and 5 are completion (positions 2, 3).
        assert_eq!(mask, vec![0., 0., 1., 1., 1., 1., 0., 0.]);
        let t = b
            .targets
            .into_data()
            .convert::<i32>()
            .try_into_vec::<i32>()
            .expect("targets");
        assert_eq!(t, vec![2, 3, 4, 5, 7, 8, 0, 0]);
        assert_eq!(b.target_tokens, 4);
    }
}
