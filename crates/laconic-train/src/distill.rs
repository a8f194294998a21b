//! Logit distillation: the student matches a teacher's next-token distribution on the
//! completion tokens, by forward KL, reverse KL or a mix of both.
//!
//! The teacher is either a model loaded in-process (full vocabulary) or a file of stored
//! top-k log-probabilities (small enough to keep next to the traces). Teacher and student
//! must share a tokenizer: a mismatch is an error, never a silent misalignment.
//!
//! # Top-k file (`laconic teacher-logits` writes it)
//!
//! JSONL. The first line is a header, then one line per example:
//!
//! ```text
//! {"format":"laconic.topk","version":1,"teacher":"checkpoints/t.gguf","tokenizer":"9f0c...","vocab_size":49152,"k":20}
//! {"id":"gsm8k/train/0","ids":[1,2,...],"prompt_len":57,"topk_ids":[[...20 ids...],...],"topk_logprobs":[[...20 values...],...]}
//! ```
//!
//! `ids` is the whole tokenized example (prompt, completion, end of turn) as the student
//! sees it; row `j` of `topk_ids`/`topk_logprobs` is the teacher's top-k at position
//! `prompt_len - 1 + j`, the prediction of completion token `j` (log-probabilities at
//! temperature 1, sorted, most likely first). `tokenizer` is a fingerprint of the
//! vocabulary ([`tokenizer_fingerprint`]).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use laconic_infer::model::{ForwardOptions, Logits, Model};
use laconic_infer::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::error::{Result, TrainError};

/// Which divergence the student minimizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divergence {
    /// KL(teacher ‖ student): mean-seeking, covers every mode of the teacher.
    Forward,
    /// KL(student ‖ teacher): mode-seeking, concentrates on the teacher's main mode.
    Reverse,
    /// `w · forward + (1 - w) · reverse`.
    Mix(f64),
}

/// The teacher's signal for one batch, on the student's device (no gradient).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per micro-batch, never in bulk
pub enum TeacherBatch {
    /// Log-probabilities over the whole vocabulary `[b, s, vocab]`.
    Full(Tensor<3>),
    /// Top-k token ids and their log-probabilities `[b, s, k]`.
    TopK {
        /// Token ids.
        ids: Tensor<3, Int>,
        /// Their log-probabilities under the teacher.
        logprobs: Tensor<3>,
    },
}

/// `Σ_v p(v) (log p(v) - log q(v))` over the last dimension: `[b, s, n]` → `[b, s]`.
fn kl(log_p: Tensor<3>, log_q: Tensor<3>) -> Tensor<2> {
    log_p
        .clone()
        .exp()
        .mul(log_p.sub(log_q))
        .sum_dim(2)
        .squeeze_dim(2)
}

/// Renormalizes log-probabilities over the last dimension (a top-k subset).
fn renormalize(logp: Tensor<3>) -> Tensor<3> {
    log_softmax(logp, 2)
}

/// The distillation loss summed over masked positions: student logits `[b, s, vocab]`,
/// loss mask `[b, s]`, temperature `t` (the loss is scaled by `t²`, as Hinton et al.).
/// With a top-k teacher both distributions are renormalized over the teacher's k tokens.
pub fn distill_loss(
    student_logits: Tensor<3>,
    teacher: &TeacherBatch,
    mask: Tensor<2>,
    divergence: Divergence,
    t: f64,
) -> Tensor<1> {
    let student = log_softmax(student_logits.div_scalar(t), 2);
    let (s, te) = match teacher {
        TeacherBatch::Full(lp) => (student, log_softmax(lp.clone().div_scalar(t), 2)),
        TeacherBatch::TopK { ids, logprobs } => (
            renormalize(student.gather(2, ids.clone())),
            renormalize(logprobs.clone().div_scalar(t)),
        ),
    };
    let per_position = match divergence {
        Divergence::Forward => kl(te, s),
        Divergence::Reverse => kl(s, te),
        Divergence::Mix(w) => kl(te.clone(), s.clone())
            .mul_scalar(w)
            .add(kl(s, te).mul_scalar(1.0 - w)),
    };
    per_position.mul(mask).sum().mul_scalar(t * t)
}

/// A fingerprint of a vocabulary (FNV-1a over every id and token string): two tokenizers
/// with the same fingerprint map ids to the same tokens.
pub fn tokenizer_fingerprint(tokenizer: &Tokenizer) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in 0..tokenizer.vocab_size() as u32 {
        let token = tokenizer.id_to_token(id).unwrap_or_default();
        for b in id.to_le_bytes().iter().chain(token.as_bytes()) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Refuses a teacher whose tokenizer differs from the student's, naming the first id
/// that differs.
pub fn check_same_tokenizer(
    student: &Tokenizer,
    teacher: &Tokenizer,
    teacher_path: &Path,
) -> Result<()> {
    let (sv, tv) = (student.vocab_size(), teacher.vocab_size());
    let differ = |msg: String| {
        TrainError::Invalid(format!(
            "teacher {} has a different tokenizer from the student ({msg}); logit distillation \
             needs the same vocabulary (distill from the teacher's traces instead)",
            teacher_path.display()
        ))
    };
    if sv != tv {
        return Err(differ(format!("vocabulary {tv} vs {sv}")));
    }
    for id in 0..sv as u32 {
        let (s, t) = (student.id_to_token(id), teacher.id_to_token(id));
        if s != t {
            return Err(differ(format!(
                "token {id} is {t:?} for the teacher, {s:?} for the student"
            )));
        }
    }
    Ok(())
}

/// A teacher model run in-process, without gradients.
pub struct Teacher {
    model: Model,
}

impl Teacher {
    /// Loads the teacher (f32, on the inner device of `device`) and checks its tokenizer
    /// against the student's.
    pub fn load(path: &Path, device: &Device, student: &Tokenizer) -> Result<Self> {
        let inner = device.clone().inner();
        let loaded = laconic_infer::load_with(path, &inner, laconic_infer::WeightFormat::F32)?;
        check_same_tokenizer(student, &loaded.tokenizer, path)?;
        Ok(Self {
            model: loaded.model,
        })
    }

    /// Teacher logits for `inputs` `[b, s]`, on the student's (autodiff) device as
    /// constants.
    pub fn logits(&self, inputs: &Tensor<2, Int>) -> TeacherBatch {
        let device = self.model.embed_tokens.weight.device();
        let [b, s] = inputs.dims();
        let data = inputs.clone().into_data();
        let ids = Tensor::<2, Int>::from_data(data, &device);
        let mut cache = self.model.new_cache();
        let opts = ForwardOptions {
            logits: Logits::All,
            ..Default::default()
        };
        let logits = self
            .model
            .forward(ids, &mut cache, opts)
            .logits
            .unwrap_or_else(|| Tensor::zeros([b, s, 1], &device));
        TeacherBatch::Full(Tensor::from_inner(logits))
    }

    /// The model (for writing a top-k file).
    pub fn model(&self) -> &Model {
        &self.model
    }
}

/// The header line of a top-k file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopKHeader {
    /// Always `laconic.topk`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Where the teacher came from.
    pub teacher: String,
    /// [`tokenizer_fingerprint`] of the teacher's tokenizer.
    pub tokenizer: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Entries kept per position.
    pub k: usize,
}

/// One example's line of a top-k file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopKExample {
    /// The trace id.
    pub id: String,
    /// Token ids of the whole example.
    pub ids: Vec<u32>,
    /// Tokens of the prompt.
    pub prompt_len: usize,
    /// Per completion token: the teacher's k most likely ids.
    pub topk_ids: Vec<Vec<u32>>,
    /// Their log-probabilities.
    pub topk_logprobs: Vec<Vec<f32>>,
}

/// A top-k file in memory, keyed by example id.
pub struct TopKStore {
    path: PathBuf,
    header: TopKHeader,
    examples: HashMap<String, TopKExample>,
}

impl TopKStore {
    /// Reads a top-k file and checks it against the student's tokenizer.
    pub fn open(path: &Path, student: &Tokenizer) -> Result<Self> {
        let bad = |line: usize, reason: String| TrainError::Data {
            path: path.to_path_buf(),
            reason: format!("line {line}: {reason}"),
        };
        let f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
        let mut lines = std::io::BufReader::new(f).lines();
        let first = lines
            .next()
            .ok_or_else(|| bad(1, "empty file, expected a header line".into()))?
            .map_err(|e| TrainError::io(path, e))?;
        let header: TopKHeader =
            serde_json::from_str(&first).map_err(|e| bad(1, format!("bad header: {e}")))?;
        if header.format != "laconic.topk" || header.version != 1 {
            return Err(bad(
                1,
                format!(
                    "not a laconic.topk v1 file ({} v{})",
                    header.format, header.version
                ),
            ));
        }
        if header.tokenizer != tokenizer_fingerprint(student)
            || header.vocab_size != student.vocab_size()
        {
            return Err(TrainError::Invalid(format!(
                "{}: the teacher's tokenizer ({}, vocabulary {}) differs from the student's ({}, vocabulary {}); logit distillation needs the same vocabulary",
                path.display(),
                header.tokenizer,
                header.vocab_size,
                tokenizer_fingerprint(student),
                student.vocab_size()
            )));
        }
        let mut examples = HashMap::new();
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            let line = line.map_err(|e| TrainError::io(path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let e: TopKExample = serde_json::from_str(&line).map_err(|e| bad(n, e.to_string()))?;
            let rows = e.ids.len().saturating_sub(e.prompt_len);
            if e.topk_ids.len() != rows
                || e.topk_logprobs.len() != rows
                || e.topk_ids.iter().any(|r| r.len() != header.k)
                || e.topk_logprobs.iter().any(|r| r.len() != header.k)
            {
                return Err(bad(
                    n,
                    format!("example {}: expected {rows} rows of k = {}", e.id, header.k),
                ));
            }
            examples.insert(e.id.clone(), e);
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            examples,
        })
    }

    /// Entries per position.
    pub fn k(&self) -> usize {
        self.header.k
    }

    /// The teacher's top-k for a padded batch of `items` whose rows have `s` positions:
    /// `[b, s, k]` ids and log-probabilities (zeros where the loss does not count).
    pub fn batch(&self, items: &[Example], s: usize, device: &Device) -> Result<TeacherBatch> {
        let (b, k) = (items.len(), self.header.k);
        let mut ids = vec![0i32; b * s * k];
        let mut lps = vec![0f32; b * s * k];
        for (r, e) in items.iter().enumerate() {
            let stored = self.examples.get(&e.id).ok_or_else(|| TrainError::Data {
                path: self.path.clone(),
                reason: format!("no teacher log-probabilities for example {}", e.id),
            })?;
            if stored.ids != e.ids || stored.prompt_len != e.prompt_len {
                return Err(TrainError::Data {
                    path: self.path.clone(),
                    reason: format!(
                        "example {}: the stored token ids differ from the student's (another tokenizer, chat template or system message)",
                        e.id
                    ),
                });
            }
            for (j, (row_ids, row_lps)) in stored
                .topk_ids
                .iter()
                .zip(&stored.topk_logprobs)
                .enumerate()
            {
                let pos = e.prompt_len - 1 + j;
                if pos >= s {
                    break;
                }
                let at = (r * s + pos) * k;
                for c in 0..k {
                    ids[at + c] = row_ids[c] as i32;
                    lps[at + c] = row_lps[c];
                }
            }
        }
        Ok(TeacherBatch::TopK {
            ids: Tensor::from_data(TensorData::new(ids, [b, s, k]), device),
            logprobs: Tensor::from_data(TensorData::new(lps, [b, s, k]), device),
        })
    }
}

fn to_line<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| TrainError::Invalid(format!("top-k line: {e}")))
}

/// Runs the teacher over `examples` and writes their top-k file (atomically).
pub fn write_topk(
    teacher: &Teacher,
    teacher_name: &str,
    tokenizer: &Tokenizer,
    examples: &[Example],
    k: usize,
    out: &Path,
    mut on_example: impl FnMut(),
) -> Result<usize> {
    let model = teacher.model();
    let device = model.embed_tokens.weight.device();
    let vocab = model.config().vocab_size;
    let k = k.clamp(1, vocab);
    let header = TopKHeader {
        format: "laconic.topk".into(),
        version: 1,
        teacher: teacher_name.into(),
        tokenizer: tokenizer_fingerprint(tokenizer),
        vocab_size: tokenizer.vocab_size(),
        k,
    };
    let mut text = Vec::new();
    writeln!(text, "{}", to_line(&header)?).map_err(|e| TrainError::io(out, e))?;
    for e in examples {
        let n = e.ids.len();
        let data: Vec<i32> = e.ids[..n - 1].iter().map(|&t| t as i32).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(data, [1, n - 1]), &device);
        let mut cache = model.new_cache();
        let opts = ForwardOptions {
            logits: Logits::All,
            ..Default::default()
        };
        let Some(logits) = model.forward(input, &mut cache, opts).logits else {
            continue;
        };
        let lp = log_softmax(logits, 2)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|err| TrainError::Invalid(format!("teacher logits: {err:?}")))?;
        let (mut topk_ids, mut topk_logprobs) = (Vec::new(), Vec::new());
        for pos in e.prompt_len - 1..n - 1 {
            let row = &lp[pos * vocab..(pos + 1) * vocab];
            let mut order: Vec<u32> = (0..vocab as u32).collect();
            order.select_nth_unstable_by(k - 1, |a, b| {
                row[*b as usize].total_cmp(&row[*a as usize])
            });
            order.truncate(k);
            order.sort_by(|a, b| row[*b as usize].total_cmp(&row[*a as usize]));
            topk_logprobs.push(order.iter().map(|&i| row[i as usize]).collect());
            topk_ids.push(order);
        }
        let line = TopKExample {
            id: e.id.clone(),
            ids: e.ids.clone(),
            prompt_len: e.prompt_len,
            topk_ids,
            topk_logprobs,
        };
        writeln!(text, "{}", to_line(&line)?).map_err(|err| TrainError::io(out, err))?;
        on_example();
    }
    crate::checkpoint::write_atomic(out, &text)?;
    Ok(examples.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t3(v: Vec<f32>, shape: [usize; 3]) -> Tensor<3> {
        Tensor::from_data(TensorData::new(v, shape), &Device::flex())
    }

    fn scalar(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    /// KL by hand, in f64, from logits.
    fn kl_ref(p_logits: &[f32], q_logits: &[f32]) -> f64 {
        let lsm = |x: &[f32]| {
            let m = x.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let z = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
            x.iter().map(|&v| v as f64 - z).collect::<Vec<_>>()
        };
        let (p, q) = (lsm(p_logits), lsm(q_logits));
        p.iter().zip(&q).map(|(a, b)| a.exp() * (a - b)).sum()
    }

    #[test]
    fn divergences_match_the_definitions() {
        let student = vec![1.0, 0.5, -1.0, 2.0];
        let teacher = vec![0.2, 1.5, -0.3, 0.1];
        let mask = Tensor::<2>::ones([1, 1], &Device::flex());
        let s = || t3(student.clone(), [1, 1, 4]);
        let te = TeacherBatch::Full(t3(teacher.clone(), [1, 1, 4]));
        let fwd = scalar(distill_loss(
            s(),
            &te,
            mask.clone(),
            Divergence::Forward,
            1.0,
        ));
        let rev = scalar(distill_loss(
            s(),
            &te,
            mask.clone(),
            Divergence::Reverse,
            1.0,
        ));
        let mix = scalar(distill_loss(
            s(),
            &te,
            mask.clone(),
            Divergence::Mix(0.25),
            1.0,
        ));
        assert!((fwd - kl_ref(&teacher, &student)).abs() < 1e-5, "{fwd}");
        assert!((rev - kl_ref(&student, &teacher)).abs() < 1e-5, "{rev}");
        assert!((fwd - rev).abs() > 1e-3, "the two directions differ here");
        assert!((mix - (0.25 * fwd + 0.75 * rev)).abs() < 1e-5);
        // Temperature: logits divided by t, loss scaled by t².
        let t2 = scalar(distill_loss(
            s(),
            &te,
            mask.clone(),
            Divergence::Forward,
            2.0,
        ));
        let halve = |v: &[f32]| v.iter().map(|x| x / 2.0).collect::<Vec<_>>();
        assert!((t2 - 4.0 * kl_ref(&halve(&teacher), &halve(&student))).abs() < 1e-5);
        // Identical distributions: zero; masked positions: zero.
        let same = TeacherBatch::Full(s());
        assert!(scalar(distill_loss(s(), &same, mask, Divergence::Mix(0.5), 1.0)).abs() < 1e-6);
        let zero = Tensor::<2>::zeros([1, 1], &Device::flex());
        assert_eq!(
            scalar(distill_loss(s(), &te, zero, Divergence::Forward, 1.0)),
            0.0
        );
    }

    #[test]
    fn top_k_over_the_whole_vocabulary_equals_the_full_teacher() {
        let student = vec![1.0, 0.5, -1.0, 2.0];
        let teacher = vec![0.2, 1.5, -0.3, 0.1];
        let mask = Tensor::<2>::ones([1, 1], &Device::flex());
        // Teacher log-probabilities in a shuffled order, all 4 kept.
        let lz = kl_ref(&teacher, &teacher); // 0, keeps the helper honest
        assert!(lz.abs() < 1e-12);
        let m = teacher.iter().cloned().fold(f32::MIN, f32::max);
        let z = teacher.iter().map(|v| (v - m).exp()).sum::<f32>().ln() + m;
        let order = [1usize, 3, 0, 2];
        let ids: Vec<i32> = order.iter().map(|&i| i as i32).collect();
        let lps: Vec<f32> = order.iter().map(|&i| teacher[i] - z).collect();
        let top = TeacherBatch::TopK {
            ids: Tensor::from_data(TensorData::new(ids, [1, 1, 4]), &Device::flex()),
            logprobs: t3(lps, [1, 1, 4]),
        };
        let full = TeacherBatch::Full(t3(teacher.clone(), [1, 1, 4]));
        for d in [Divergence::Forward, Divergence::Reverse] {
            let a = scalar(distill_loss(
                t3(student.clone(), [1, 1, 4]),
                &top,
                mask.clone(),
                d,
                1.0,
            ));
            let b = scalar(distill_loss(
                t3(student.clone(), [1, 1, 4]),
                &full,
                mask.clone(),
                d,
                1.0,
            ));
            assert!((a - b).abs() < 1e-5, "{d:?}: {a} vs {b}");
        }
    }
}
