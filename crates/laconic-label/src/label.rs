//! Labeling one trace: steps, scores, keep masks and one compressed variant per ratio.
//!
//! [`Labeler::label`] runs the whole pipeline on a [`Trace`]:
//!
//! 1. split the reasoning into steps ([`crate::steps`]) and words ([`crate::words`]), and mark
//!    the protected words (numbers, operators, equations, math, the boxed answer);
//! 2. score every word with the rules ([`crate::rules`]: word lists, scaled down in redundant
//!    steps), and, with a model scorer, mix in the rank of its surprisal
//!    ([`crate::surprisal`]; a word's surprisal is the sum over its tokens), of the attention
//!    the final answer pays it ([`crate::attention`]; summed over its tokens likewise), or of
//!    both: `(1 - ws - wa) × rules + ws × surprisal rank + wa × attention rank`;
//! 3. for each target ratio, keep the best words within the budget ([`crate::compress`]),
//!    write them as text, measure the ratio achieved, and re-grade the compressed trace. In a
//!    redundant step (redundancy at least [`WHOLE_STEP_REDUNDANCY`]) each sentence that holds
//!    no protected word is kept or dropped whole, at the mean score of its words, so that
//!    compression leaves no fragment of it ("By the.", "That."); unless that leaves the text
//!    more than a tenth of the original below the target, when words are chosen one by one.
//!    With [`Granularity::Sentences`] every sentence goes or stays whole, and the invariants
//!    are the sentence-level ones of [`crate::sentences`].
//!
//! The ratio is measured in the tokens of a tokenizer when the labeler has one (the scorer
//! model's, or one given for the rules scorer), else in whitespace words; the labeled trace
//! says which in its `unit` field. The per-token keep mask uses the same tokens.

use laconic_infer::tokenizer::Tokenizer;
use laconic_traces::schema::Provenance;
use laconic_traces::{Grader, Trace};
use serde::{Deserialize, Serialize};

use crate::attention::{AttentionScorer, answer_attention};
use crate::classifier::TokenClassifier;
use crate::compress::{Unit, budget, render, select_within};
use crate::error::{LabelError, Result};
use crate::rules::{Reason, Redundancy, apply_redundancy, step_redundancy, word_scores};
use crate::sentences;
use crate::steps::{Step, StepKind, sentence_spans, split_steps};
use crate::surprisal::{SurprisalScorer, Tokens, align_tokens};
use crate::words::{Word, protected, split_words};

/// In a step at least this redundant, each sentence without a protected word is kept or
/// dropped whole.
pub const WHOLE_STEP_REDUNDANCY: f32 = 0.5;

/// What the labeler does, apart from the scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelConfig {
    /// Target ratios (kept ÷ original reasoning tokens), each in `(0, 1]`, distinct when
    /// written with two decimals.
    pub ratios: Vec<f64>,
    /// With a model scorer: the weight of the surprisal rank against the rule score, in
    /// `[0, 1]` (0.5 by default).
    pub surprisal_weight: f32,
    /// With the attention scorer: the weight of the attention rank against the rule score,
    /// in `[0, 1]` (0.5 by default). With both model scores, when the two weights add up to
    /// more than 1 they are scaled down to add up to 1.
    pub attention_weight: f32,
    /// With the classifier scorer: the weight of its rank against the rule score, in
    /// `[0, 1]` (1 by default: the classifier learned from the scores it replaces).
    pub classifier_weight: f32,
    /// What compression keeps or drops as one piece (words by default).
    pub granularity: Granularity,
}

/// What compression keeps or drops as one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// Single words (TokenSkip's token-level pruning; sentences of redundant steps whole):
    /// any ratio, every number kept, text that can read telegraphic.
    #[default]
    Words,
    /// Whole sentences ([`crate::sentences`]): every kept line is the teacher's own text;
    /// equations of non-redundant steps, every number they found and the final answer kept;
    /// a ratio below what those need is limited, not met.
    Sentences,
}

impl Granularity {
    /// Parses `words` or `sentences`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "words" => Ok(Self::Words),
            "sentences" => Ok(Self::Sentences),
            other => Err(LabelError::Setting {
                setting: "--granularity",
                value: other.to_string(),
                message: "choose words or sentences".into(),
            }),
        }
    }

    /// Its name, as [`Granularity::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Words => "words",
            Self::Sentences => "sentences",
        }
    }
}

impl LabelConfig {
    /// A configuration for these target ratios, checked: each in `(0, 1]`, at least one, no
    /// two the same when written with two decimals (they name the variants).
    pub fn new(ratios: Vec<f64>) -> Result<Self> {
        let bad = |message: String| LabelError::Setting {
            setting: "--ratios",
            value: ratios
                .iter()
                .map(f64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            message,
        };
        if ratios.is_empty() {
            return Err(bad("give at least one ratio".into()));
        }
        for &r in &ratios {
            if !(r > 0.0 && r <= 1.0) {
                return Err(bad(format!("{r} is not in (0, 1]")));
            }
        }
        for (i, &r) in ratios.iter().enumerate() {
            if ratios[..i]
                .iter()
                .any(|&q| ratio_label(q) == ratio_label(r))
            {
                return Err(bad(format!(
                    "{} appears twice (ratios are compared with two decimals)",
                    ratio_label(r)
                )));
            }
        }
        Ok(Self {
            ratios,
            surprisal_weight: 0.5,
            attention_weight: 0.5,
            classifier_weight: 1.0,
            granularity: Granularity::Words,
        })
    }

    /// Parses a comma-separated list of ratios (`0.5,0.7,0.9`), checked as [`LabelConfig::new`].
    pub fn parse_ratios(list: &str) -> Result<Self> {
        let ratios = list
            .split(',')
            .map(|s| {
                s.trim().parse::<f64>().map_err(|e| LabelError::Setting {
                    setting: "--ratios",
                    value: list.to_string(),
                    message: format!("`{}` is not a number ({e})", s.trim()),
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        Self::new(ratios)
    }
}

/// A ratio as it appears in variant ids: at most two decimals, no trailing zeros (`0.5`,
/// `0.75`, `1`), as in the prompt's control string.
pub fn ratio_label(ratio: f64) -> String {
    let fixed = format!("{ratio:.2}");
    fixed
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

/// How words are scored.
#[derive(Debug)]
pub enum Scorer {
    /// Word lists and step rules only ([`crate::rules`]).
    Rules,
    /// A model's surprisal, mixed with the rules ([`crate::surprisal`]).
    Surprisal(Box<SurprisalScorer>),
    /// The attention the final answer pays each token, mixed with the rules
    /// ([`crate::attention`]).
    Attention(Box<AttentionScorer>),
    /// One model's surprisal and attention, both mixed with the rules.
    SurprisalAttention(Box<AttentionScorer>),
    /// A learned token classifier's probability of keeping each token, mixed with the rules
    /// ([`crate::classifier`]).
    Classifier(Box<TokenClassifier>),
}

/// The labeler: a scorer, the unit the ratio is measured in, and the target ratios.
#[derive(Debug)]
pub struct Labeler {
    scorer: Scorer,
    /// The tokenizer the ratio and the mask are measured in, and its name; `None`: words.
    tokenizer: Option<(Tokenizer, String)>,
    config: LabelConfig,
}

/// One step of a labeled trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepLabel {
    /// The step's text.
    pub text: String,
    /// Its first byte in the reasoning.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
    /// What opened it.
    pub kind: StepKind,
    /// Its paragraph (0-based).
    pub paragraph: usize,
    /// How redundant the rules found it, in `[0, 1]`.
    pub redundancy: f32,
    /// Which rules fired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
    /// The mean score of its words.
    pub score: f32,
}

/// One compressed variant of a labeled trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The target ratio.
    pub target: f64,
    /// The ratio achieved: tokens (or words) of the compressed reasoning ÷ the original's,
    /// counted again on the written text. 1 for an empty reasoning.
    pub achieved: f64,
    /// Tokens (or words) of the compressed reasoning.
    pub kept: usize,
    /// Tokens (or words) of the original reasoning.
    pub total: usize,
    /// The target was not met (`kept > floor(target × total)`): the protected words alone
    /// exceed it, and the ratio is as close as the invariants allow.
    pub limited: bool,
    /// Per original token, `1` kept or `0` dropped.
    pub keep: String,
    /// The final answer read from the compressed trace's completion.
    pub extracted: Option<String>,
    /// Whether it matches the gold answer (the trace's `answer` when it has no `gold`).
    pub correct: bool,
    /// Whether it is the answer the original trace's completion gives.
    pub preserved: bool,
    /// The compressed trace (schema v1): id `ORIGINAL@RATIO`, `ratio` the target.
    pub trace: Trace,
}

/// One line of a labeled file: a trace, its steps and scores, and its compressed variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabeledTrace {
    /// The trace's id.
    pub id: String,
    /// The scorer: `rules`, `surprisal+rules:MODEL`, `attention+rules:MODEL` or
    /// `surprisal+attention+rules:MODEL`.
    pub scorer: String,
    /// What the ratio, `tokens` and masks count: `words`, or `tokens:TOKENIZER`.
    pub unit: String,
    /// What compression kept or dropped as one piece: `words` or `sentences` (files written
    /// before it existed: `words`).
    #[serde(default = "words_granularity")]
    pub granularity: String,
    /// The grader that re-graded the variants (`gsm8k` or `math`).
    pub grader: String,
    /// The original trace.
    pub trace: Trace,
    /// The answer the original completion gives.
    pub extracted: Option<String>,
    /// Whether the original completion is correct.
    pub correct: bool,
    /// The reasoning's steps.
    pub steps: Vec<StepLabel>,
    /// The reasoning's tokens (or words), as text.
    pub tokens: Vec<String>,
    /// Per token: the score of the word it belongs to (0 for whitespace-only tokens).
    pub scores: Vec<f32>,
    /// Per token: the surprisal in nats, with the surprisal scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surprisal: Option<Vec<f32>>,
    /// Per token: the attention the final answer line pays it, the trace's largest 1, with
    /// the attention scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<f32>>,
    /// Per token: the probability the learned classifier gives its being kept, with the
    /// classifier scorer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<Vec<f32>>,
    /// Per token, `1` when it belongs to a protected word.
    pub protected: String,
    /// One compressed variant per target ratio, in the order given.
    pub variants: Vec<Variant>,
}

/// What the rules find in a reasoning text, before any model score.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleAnalysis {
    /// Its steps ([`crate::steps`]).
    pub steps: Vec<Step>,
    /// Its words ([`crate::words`]).
    pub words: Vec<Word>,
    /// Per word: its step.
    pub step_of: Vec<usize>,
    /// Per word: protected (a number, an operator, math...).
    pub prot: Vec<bool>,
    /// Per step: how redundant it is, and why.
    pub redundancy: Vec<Redundancy>,
    /// Per word: its rule score, scaled by its step's redundancy.
    pub scores: Vec<f32>,
}

impl RuleAnalysis {
    /// Analyses `text` (the reasoning) against its `question`; `latex` protects LaTeX math.
    pub fn new(text: &str, question: &str, latex: bool) -> Self {
        let steps = split_steps(text);
        let words = split_words(text);
        let step_of: Vec<usize> = words
            .iter()
            .map(|w| {
                steps
                    .partition_point(|s| s.end <= w.start)
                    .min(steps.len().saturating_sub(1))
            })
            .collect();
        let prot = protected(text, &words, latex);
        let mut scores = word_scores(text, &words, &prot, question);
        let redundancy = step_redundancy(text, &steps, question);
        apply_redundancy(&mut scores, &step_of, &redundancy);
        Self {
            steps,
            words,
            step_of,
            prot,
            redundancy,
            scores,
        }
    }
}

/// The granularity of labeled files that do not name one.
pub(crate) fn words_granularity() -> String {
    Granularity::Words.name().to_string()
}

/// Rounds a score for the file (three decimals).
fn round3(x: f32) -> f32 {
    (x * 1000.0).round() / 1000.0
}

/// `1`/`0` per flag.
fn mask(flags: impl Iterator<Item = bool>) -> String {
    flags.map(|k| if k { '1' } else { '0' }).collect()
}

/// The grader for a trace whose dataset is not known: `gsm8k` when its answer is a plain
/// number (digits, `,`, `.`, `-`, `$`, `%`), else `math`.
pub fn guess_grader(trace: &Trace) -> Grader {
    let answer = trace.gold.as_deref().unwrap_or(&trace.answer).trim();
    let numeric = !answer.is_empty()
        && answer.chars().any(|c| c.is_ascii_digit())
        && answer
            .chars()
            .all(|c| c.is_ascii_digit() || ",.-$% ".contains(c));
    if numeric { Grader::Gsm8k } else { Grader::Math }
}

impl Labeler {
    /// A labeler with the rule scorer. With a `tokenizer` (and a name for it, written into
    /// the file), ratios and masks count its tokens; without one, whitespace words.
    pub fn rules(config: LabelConfig, tokenizer: Option<(Tokenizer, String)>) -> Self {
        Self {
            scorer: Scorer::Rules,
            tokenizer,
            config,
        }
    }

    /// A labeler with a model's surprisal mixed into the rules; ratios and masks count the
    /// model's tokens.
    pub fn surprisal(scorer: SurprisalScorer, config: LabelConfig) -> Self {
        let tokenizer = (scorer.tokenizer().clone(), scorer.name().to_string());
        Self {
            scorer: Scorer::Surprisal(Box::new(scorer)),
            tokenizer: Some(tokenizer),
            config,
        }
    }

    /// A labeler with the attention the final answer pays each token mixed into the rules
    /// (with `surprisal`, the model's surprisal too, from the same model); ratios and masks
    /// count the model's tokens.
    pub fn attention(scorer: AttentionScorer, surprisal: bool, config: LabelConfig) -> Self {
        let tokenizer = (scorer.tokenizer().clone(), scorer.name().to_string());
        let scorer = Box::new(scorer);
        Self {
            scorer: if surprisal {
                Scorer::SurprisalAttention(scorer)
            } else {
                Scorer::Attention(scorer)
            },
            tokenizer: Some(tokenizer),
            config,
        }
    }

    /// A labeler with a learned token classifier's probabilities mixed into the rules; ratios
    /// and masks count its encoder's tokens.
    pub fn classifier(classifier: TokenClassifier, config: LabelConfig) -> Self {
        let tokenizer = (
            classifier.tokenizer().clone(),
            classifier.name().to_string(),
        );
        Self {
            scorer: Scorer::Classifier(Box::new(classifier)),
            tokenizer: Some(tokenizer),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LabelConfig {
        &self.config
    }

    /// The scorer's name as written into labeled files.
    pub fn scorer_name(&self) -> String {
        match &self.scorer {
            Scorer::Rules => "rules".into(),
            Scorer::Surprisal(s) => format!("surprisal+rules:{}", s.name()),
            Scorer::Attention(s) => format!("attention{}+rules:{}", layers(s), s.name()),
            Scorer::SurprisalAttention(s) => {
                format!("surprisal+attention{}+rules:{}", layers(s), s.name())
            }
            Scorer::Classifier(c) => format!("classifier+rules:{}", c.name()),
        }
    }

    /// The unit's name as written into labeled files: `words` or `tokens:NAME`.
    pub fn unit_name(&self) -> String {
        match &self.tokenizer {
            None => "words".into(),
            Some((_, name)) => format!("tokens:{name}"),
        }
    }

    /// Labels one trace (see the module docs); `grader` re-grades the variants, and says
    /// whether the reasoning is LaTeX (`math`), whose math spans are then protected.
    pub fn label(&self, trace: &Trace, grader: Grader) -> Result<LabeledTrace> {
        self.label_with(trace, grader, None)
    }

    /// [`Labeler::label`] for several traces: with the surprisal scorer, their surprisal comes
    /// from batched forward passes (the same scores, fewer passes); otherwise one at a time.
    pub fn label_batch(&self, items: &[(&Trace, Grader)]) -> Result<Vec<LabeledTrace>> {
        let Scorer::Surprisal(s) = &self.scorer else {
            return items.iter().map(|(t, g)| self.label(t, *g)).collect();
        };
        let pairs: Vec<(&str, &str)> = items
            .iter()
            .map(|(t, _)| (t.question.as_str(), t.reasoning.as_str()))
            .collect();
        let scores = s.surprisal_batch(&pairs)?;
        items
            .iter()
            .zip(scores)
            .map(|((t, g), pre)| self.label_with(t, *g, Some(pre)))
            .collect()
    }

    /// Labels one trace; `surprisal`, when given, is the surprisal scorer's result for it.
    fn label_with(
        &self,
        trace: &Trace,
        grader: Grader,
        surprisal: Option<(Tokens, Vec<f32>)>,
    ) -> Result<LabeledTrace> {
        let precomputed = surprisal;
        let with_id = |e: LabelError| match e {
            LabelError::Label { message, .. } => LabelError::Label {
                id: trace.id.clone(),
                message,
            },
            other => other,
        };
        let text = trace.reasoning.as_str();
        let rules = RuleAnalysis::new(text, &trace.question, grader == Grader::Math);
        let RuleAnalysis {
            steps,
            words,
            step_of,
            prot,
            redundancy,
            ..
        } = &rules;
        let mut scores = rules.scores.clone();

        // Tokens: the tokenizer's (aligned to words) or the words themselves.
        let mut classifier = None;
        let (tokens, surprisal, attention) = match (&self.scorer, &self.tokenizer) {
            (Scorer::Surprisal(s), _) => {
                let (t, sur) = match precomputed {
                    Some(p) => p,
                    None => s.surprisal(&trace.question, text).map_err(with_id)?,
                };
                (Some(t), Some(sur), None)
            }
            (Scorer::Attention(s), _) => {
                let (t, att) = s
                    .attention(&trace.question, text, &trace.answer)
                    .map_err(with_id)?;
                (Some(t), None, Some(att))
            }
            (Scorer::Classifier(c), _) => {
                let (t, probs) = c.scores(&trace.question, text).map_err(with_id)?;
                classifier = Some(probs);
                (Some(t), None, None)
            }
            (Scorer::SurprisalAttention(s), _) => {
                let (t, sur) = s.surprisal(&trace.question, text).map_err(with_id)?;
                let att = answer_attention(
                    s.model(),
                    &trace.question,
                    &t.ids,
                    &trace.answer,
                    s.last_layers(),
                )
                .map_err(with_id)?;
                (Some(t), Some(sur), Some(att))
            }
            (Scorer::Rules, Some((tok, _))) => {
                (Some(align_tokens(tok, text).map_err(with_id)?), None, None)
            }
            (Scorer::Rules, None) => (None, None, None),
        };
        let word_of_token: Vec<Option<usize>> = match &tokens {
            Some(t) => token_words(t, words),
            None => (0..words.len()).map(Some).collect(),
        };
        let mut cost = vec![0usize; words.len()];
        for w in word_of_token.iter().flatten() {
            cost[*w] += 1;
        }
        // Model scores: per word, the sum over its tokens (the mean for the classifier's
        // probabilities), ranked within the trace, mixed with the rules by weight (weights
        // adding up to more than 1 are scaled to 1).
        let model_scores: Vec<(&Vec<f32>, f32, bool)> = [
            (surprisal.as_ref(), self.config.surprisal_weight, false),
            (attention.as_ref(), self.config.attention_weight, false),
            (classifier.as_ref(), self.config.classifier_weight, true),
        ]
        .into_iter()
        .filter_map(|(s, w, mean)| s.map(|s| (s, w.clamp(0.0, 1.0), mean)))
        .collect();
        let weights: f32 = model_scores.iter().map(|(_, w, _)| w).sum();
        let scale = if weights > 1.0 { 1.0 / weights } else { 1.0 };
        if !model_scores.is_empty() {
            let mut mixed: Vec<f32> = scores.iter().map(|s| (1.0 - weights * scale) * s).collect();
            for (per_token, w, mean) in &model_scores {
                let mut per_word = vec![0f32; words.len()];
                for (t, w) in word_of_token.iter().enumerate() {
                    if let Some(w) = w {
                        per_word[*w] += per_token[t];
                    }
                }
                if *mean {
                    per_word
                        .iter_mut()
                        .zip(&cost)
                        .for_each(|(s, &c)| *s /= c.max(1) as f32);
                }
                let rank = percentile_ranks(&per_word);
                mixed
                    .iter_mut()
                    .zip(&rank)
                    .for_each(|(m, r)| *m += w * scale * r);
            }
            for i in 0..words.len() {
                if !prot[i] {
                    scores[i] = mixed[i];
                }
            }
        }
        // Selection units: single words, except that in a redundant step (redundancy at
        // least WHOLE_STEP_REDUNDANCY) each sentence without a protected word goes or stays
        // whole, so that no fragment of a re-check or a restated question is left behind.
        let mut sentence_of: Vec<Option<usize>> = vec![None; words.len()];
        let mut sentences = 0usize;
        for (k, step) in steps.iter().enumerate() {
            if redundancy[k].redundancy < WHOLE_STEP_REDUNDANCY {
                continue;
            }
            for (s, e) in sentence_spans(text, step.start, step.end) {
                let inside: Vec<usize> = (0..words.len())
                    .filter(|&w| words[w].start >= s && words[w].end <= e)
                    .collect();
                if !inside.iter().any(|&w| prot[w]) {
                    inside
                        .iter()
                        .for_each(|&w| sentence_of[w] = Some(sentences));
                }
                sentences += 1;
            }
        }
        let grouped = match self.config.granularity {
            Granularity::Words => group_units(&cost, &scores, prot, &sentence_of),
            Granularity::Sentences => {
                let s = sentences::sentences(text, &rules, &scores, &trace.question, &trace.answer);
                let score: Vec<f32> = s.sentence_of.iter().map(|&k| s.score[k]).collect();
                let whole: Vec<bool> = s.sentence_of.iter().map(|&k| s.protected[k]).collect();
                let of: Vec<Option<usize>> = s.sentence_of.iter().map(|&k| Some(k)).collect();
                let (mut units, group_of) = group_units(&cost, &score, &whole, &of);
                for (&g, &k) in group_of.iter().zip(&s.sentence_of) {
                    units[g].excluded = s.excluded[k];
                }
                (units, group_of)
            }
        };
        let plain = group_units(&cost, &scores, prot, &vec![None; words.len()]);

        let count = |s: &str| -> Result<usize> {
            Ok(match &self.tokenizer {
                Some((tok, _)) => tok.encode(s, false)?.len(),
                None => s.split_whitespace().count(),
            })
        };
        let total = count(text)?;
        let gold = trace.gold.as_deref().unwrap_or(&trace.answer);
        let original = grader.grade(&trace.completion(), gold);
        let mut variants = Vec::with_capacity(self.config.ratios.len());
        // Words are chosen by their token costs, but the text written is counted again:
        // tokens between words (newlines) and new neighbours can tokenize differently. While
        // the count is over the goal, the budget shrinks by the excess.
        let compress_to = |(units, group_of): &(Vec<Unit>, Vec<usize>), target: f64| {
            let goal = budget(target, total);
            let mut unit_budget = budget(target, units.iter().map(|u| u.cost).sum());
            loop {
                let selection = select_within(units, unit_budget);
                let keep: Vec<bool> = group_of.iter().map(|&g| selection.keep[g]).collect();
                let reasoning = render(text, words, &keep);
                let kept = count(&reasoning)?;
                if kept <= goal || selection.limited || unit_budget == 0 {
                    return Ok::<_, LabelError>((keep, reasoning, kept, goal));
                }
                unit_budget = unit_budget.saturating_sub(kept - goal);
            }
        };
        for &target in &self.config.ratios {
            let (mut keep, mut reasoning, mut kept, goal) = compress_to(&grouped, target)?;
            // A whole sentence that does not fit can leave the text far below the target;
            // then words are chosen one by one after all.
            if self.config.granularity == Granularity::Words && kept + total.div_ceil(10) < goal {
                (keep, reasoning, kept, _) = compress_to(&plain, target)?;
            }
            let achieved = if total == 0 {
                1.0
            } else {
                kept as f64 / total as f64
            };
            let keep_tokens = token_mask(&word_of_token, &keep);
            let compressed = variant_trace(trace, reasoning, target, achieved, &self.unit_name());
            let graded = grader.grade(&compressed.completion(), gold);
            let preserved = match (&graded.extracted, &original.extracted) {
                (Some(a), Some(b)) => grader.equivalent(a, b),
                (None, None) => true,
                _ => false,
            };
            variants.push(Variant {
                target,
                achieved,
                kept,
                total,
                limited: kept > goal,
                keep: mask(keep_tokens.into_iter()),
                extracted: graded.extracted,
                correct: graded.correct,
                preserved,
                trace: compressed,
            });
        }

        let step_labels = steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let in_step: Vec<f32> = (0..words.len())
                    .filter(|&w| step_of[w] == i)
                    .map(|w| scores[w])
                    .collect();
                let mean = if in_step.is_empty() {
                    0.0
                } else {
                    in_step.iter().sum::<f32>() / in_step.len() as f32
                };
                StepLabel {
                    text: s.text(text).to_string(),
                    start: s.start,
                    end: s.end,
                    kind: s.kind,
                    paragraph: s.paragraph,
                    redundancy: round3(redundancy[i].redundancy),
                    reasons: redundancy[i].reasons.clone(),
                    score: round3(mean),
                }
            })
            .collect();
        let token_texts: Vec<String> = match &tokens {
            Some(t) => t.pieces.clone(),
            None => words.iter().map(|w| w.text(text).to_string()).collect(),
        };
        let token_scores = word_of_token
            .iter()
            .map(|w| w.map_or(0.0, |w| round3(scores[w])))
            .collect();
        let token_protected = mask(word_of_token.iter().map(|w| w.is_some_and(|w| prot[w])));
        Ok(LabeledTrace {
            id: trace.id.clone(),
            scorer: self.scorer_name(),
            unit: self.unit_name(),
            granularity: self.config.granularity.name().to_string(),
            grader: grader.name().to_string(),
            trace: trace.clone(),
            extracted: original.extracted,
            correct: original.correct,
            steps: step_labels,
            tokens: token_texts,
            scores: token_scores,
            surprisal: surprisal.map(|s| s.into_iter().map(round3).collect()),
            attention: attention.map(|s| s.into_iter().map(round3).collect()),
            classifier: classifier.map(|s| s.into_iter().map(round3).collect()),
            protected: token_protected,
            variants,
        })
    }
}

/// `[last N]` when an attention scorer averages over its last N layers only; empty for all.
fn layers(s: &AttentionScorer) -> String {
    s.last_layers()
        .map_or(String::new(), |n| format!("[last {n}]"))
}

/// Selection units from words: consecutive words of the same `sentence_of` group form one
/// unit (cost summed, score the mean), every other word is a unit of its own. Returns the
/// units and each word's unit.
fn group_units(
    cost: &[usize],
    scores: &[f32],
    prot: &[bool],
    sentence_of: &[Option<usize>],
) -> (Vec<Unit>, Vec<usize>) {
    let mut group_of = vec![0usize; cost.len()];
    let mut units: Vec<Unit> = Vec::new();
    let mut members: Vec<usize> = Vec::new();
    for i in 0..cost.len() {
        let joins = i > 0 && sentence_of[i].is_some() && sentence_of[i] == sentence_of[i - 1];
        match (joins, units.last_mut(), members.last_mut()) {
            (true, Some(last), Some(n)) => {
                last.cost += cost[i];
                last.score += scores[i];
                *n += 1;
            }
            _ => {
                units.push(Unit {
                    cost: cost[i],
                    score: scores[i],
                    protected: prot[i],
                    excluded: false,
                });
                members.push(1);
            }
        }
        group_of[i] = units.len() - 1;
    }
    for (u, n) in units.iter_mut().zip(&members) {
        u.score /= *n as f32;
    }
    (units, group_of)
}

/// The word each token belongs to: the one holding the token's first byte; `None` for a
/// whitespace-only token.
pub(crate) fn token_words(tokens: &Tokens, words: &[Word]) -> Vec<Option<usize>> {
    tokens
        .spans
        .iter()
        .map(|&(start, end)| {
            if end <= start {
                return None;
            }
            let i = words.partition_point(|w| w.end <= start);
            (i < words.len() && words[i].start <= start).then_some(i)
        })
        .collect()
}

/// Per token: kept when its word is; a whitespace-only token when the next token that has a
/// word is kept.
fn token_mask(word_of_token: &[Option<usize>], keep: &[bool]) -> Vec<bool> {
    let mut out = vec![false; word_of_token.len()];
    let mut next_kept = false;
    for (t, w) in word_of_token.iter().enumerate().rev() {
        out[t] = match w {
            Some(w) => {
                next_kept = keep[*w];
                next_kept
            }
            None => next_kept,
        };
    }
    out
}

/// Each value's rank among `values`, scaled to `[0, 1]` (ties share the mean rank; a single
/// value gets 0.5).
fn percentile_ranks(values: &[f32]) -> Vec<f32> {
    let n = values.len();
    if n <= 1 {
        return vec![0.5; n];
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut rank = vec![0f32; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let r = (i + j) as f32 / 2.0 / (n - 1) as f32;
        for &k in &order[i..=j] {
            rank[k] = r;
        }
        i = j + 1;
    }
    rank
}

/// The compressed variant of `trace`: same question and answer, the compressed reasoning,
/// `ratio` the target, id `ID@RATIO`, and a provenance note that names the labeler.
fn variant_trace(
    trace: &Trace,
    reasoning: String,
    target: f64,
    achieved: f64,
    unit: &str,
) -> Trace {
    let note = format!(
        "compressed by laconic-label to {achieved:.3} of the reasoning {} (target {})",
        unit.split(':').next().unwrap_or(unit),
        ratio_label(target)
    );
    let mut provenance = trace.provenance.clone().unwrap_or_else(|| Provenance {
        source: trace.id.clone(),
        ..Provenance::default()
    });
    provenance.note = Some(match provenance.note.take() {
        Some(old) => format!("{old}; {note}"),
        None => note,
    });
    provenance.reasoning_tokens = None;
    Trace {
        id: format!("{}@{}", trace.id, ratio_label(target)),
        reasoning,
        ratio: Some(target),
        provenance: Some(provenance),
        ..trace.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use laconic_traces::SCHEMA_VERSION;

    fn trace(reasoning: &str, answer: &str) -> Trace {
        Trace {
            schema: SCHEMA_VERSION,
            id: "t/0".into(),
            system: None,
            question: "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. \
                       She sells the rest for $2 each. How much does she make?"
                .into(),
            reasoning: reasoning.into(),
            answer: answer.into(),
            gold: Some(answer.into()),
            ratio: None,
            provenance: None,
        }
    }

    #[test]
    fn ratios_are_checked_and_named_with_two_decimals() {
        assert!(LabelConfig::parse_ratios("0.5,0.7,0.9").is_ok());
        for bad in ["", "0", "1.5", "0.5,x", "0.5,0.501"] {
            let e = LabelConfig::parse_ratios(bad).expect_err(bad).to_string();
            assert!(e.contains("--ratios"), "{e}");
        }
        assert_eq!(ratio_label(0.6), "0.6");
        assert_eq!(ratio_label(1.0), "1");
        assert_eq!(ratio_label(0.75), "0.75");
    }

    #[test]
    fn variants_keep_the_numbers_and_the_answer_and_meet_the_ratio() {
        let t = trace(
            "Okay, so first we need to find how many eggs Janet sells every day.\n\
             Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n\
             Wait, let me double-check that: 16 - 3 - 4 = 9. Yes, that is right.\n\
             She makes 9 * 2 = $18 every day at the farmer's market.",
            "18",
        );
        let config = LabelConfig::parse_ratios("0.3,0.5,0.7,1").expect("ratios");
        let labeled = Labeler::rules(config, None)
            .label(&t, Grader::Gsm8k)
            .expect("label");
        assert_eq!(labeled.unit, "words");
        assert_eq!(labeled.tokens.len(), t.reasoning.split_whitespace().count());
        assert_eq!(labeled.steps.len(), 4);
        assert_eq!(labeled.protected.matches('1').count(), 19);
        assert!(labeled.correct);
        let numbers = |s: &str| -> Vec<String> {
            s.split(|c: char| !c.is_ascii_digit())
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect()
        };
        for v in &labeled.variants {
            assert_eq!(numbers(&v.trace.reasoning), numbers(&t.reasoning), "{v:?}");
            assert!(v.correct && v.preserved, "{v:?}");
            assert_eq!(v.trace.ratio, Some(v.target));
            assert_eq!(v.trace.id, format!("t/0@{}", ratio_label(v.target)));
            let words = v.trace.reasoning.split_whitespace().count();
            assert_eq!(v.kept, words);
            assert!((v.achieved - words as f64 / v.total as f64).abs() < 1e-12);
            assert_eq!(v.keep.len(), labeled.tokens.len());
            if !v.limited {
                assert!(v.achieved <= v.target + 1e-9, "{v:?}");
            }
        }
        // 19 of the 53 words are protected: 0.3 (15 words) cannot be met, the others can.
        let limited: Vec<bool> = labeled.variants.iter().map(|v| v.limited).collect();
        assert_eq!(limited, [true, false, false, false]);
        assert_eq!(labeled.variants[3].trace.reasoning, t.reasoning);
        // The re-check is the step the rules find redundant.
        let recheck = &labeled.steps[2];
        assert_eq!(recheck.kind, StepKind::Restart);
        assert!(recheck.reasons.contains(&Reason::Reverification));
    }

    #[test]
    fn percentile_ranks_share_ties() {
        assert_eq!(percentile_ranks(&[3.0, 1.0, 2.0]), [1.0, 0.0, 0.5]);
        assert_eq!(percentile_ranks(&[1.0, 1.0, 5.0]), [0.25, 0.25, 1.0]);
        assert_eq!(percentile_ranks(&[7.0]), [0.5]);
    }

    #[test]
    fn token_masks_follow_words_and_whitespace_follows_the_next_word() {
        let word_of_token = [Some(0), Some(0), None, Some(1), None, Some(2)];
        assert_eq!(
            token_mask(&word_of_token, &[true, false, true]),
            [true, true, false, false, true, true]
        );
    }

    #[test]
    fn the_grader_is_guessed_from_the_answer() {
        assert_eq!(guess_grader(&trace("", "1,600")), Grader::Gsm8k);
        assert_eq!(guess_grader(&trace("", "\\frac{1}{2}")), Grader::Math);
        assert_eq!(guess_grader(&trace("", "east")), Grader::Math);
    }
}
