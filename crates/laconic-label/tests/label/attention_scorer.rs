//! The attention scorer on the tiny fixture model of `laconic-infer` (a 2-layer Llama, 4
//! heads over 2 KV heads, a 256-token context), checked against attention weights taken
//! straight from one forward pass of the decoder over the whole text.

use burn::prelude::*;
use laconic_infer::model::{ForwardOptions, Logits};
use laconic_label::attention::answer_line;
use laconic_label::{AttentionScorer, LabelConfig, Labeler};
use laconic_traces::{DatasetSpec, Grader, Trace};

use crate::{assert_numbers_kept, repo};

fn fixture() -> std::path::PathBuf {
    repo("crates/laconic-infer/tests/fixtures/llama")
}

fn scorer() -> AttentionScorer {
    AttentionScorer::load(&fixture(), "flex").expect("fixture loads")
}

fn gsm8k_test(n: usize) -> Vec<Trace> {
    let spec = DatasetSpec::parse(&format!(
        "gsm8k:{}",
        repo("data/gsm8k/test.jsonl").display()
    ))
    .expect("spec");
    let mut t = spec.load().expect("reads");
    t.truncate(n);
    t
}

/// The attention the answer line pays each reasoning token, from ONE forward pass over
/// `BOS question \n reasoning \n#### answer` with the weights of every query: averaged over
/// the heads of layers `from..`, and over the answer line's non-whitespace tokens; divided
/// by the largest.
fn direct(trace: &Trace, answer: &str, from: usize) -> Vec<f32> {
    let device = laconic_infer::device::parse_device("flex").expect("flex");
    let loaded = laconic_infer::load(&fixture(), &device).expect("loads");
    let tok = &loaded.tokenizer;
    let mut ids = tok
        .encode(&format!("{}\n", trace.question.trim_end()), true)
        .expect("encode");
    let reasoning = tok.encode(&trace.reasoning, false).expect("encode");
    let suffix = tok.encode(&answer_line(answer), false).expect("encode");
    let start = ids.len();
    ids.extend(&reasoning);
    let answer_at = ids.len();
    ids.extend(&suffix);
    let n = ids.len();
    assert!(n <= 256, "fits the fixture's context: {n}");
    let queries: Vec<usize> = (0..suffix.len())
        .filter(|&i| {
            !tok.decode(&suffix[i..=i], false)
                .expect("decode")
                .trim()
                .is_empty()
        })
        .map(|i| answer_at + i)
        .collect();
    assert!(!queries.is_empty());
    let data: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(data, [1, n]), &device);
    let mut cache = loaded.model.new_cache();
    let out = loaded.model.forward(
        input,
        &mut cache,
        ForwardOptions {
            logits: Logits::None,
            attention: true,
            ..Default::default()
        },
    );
    assert_eq!(out.attentions.len(), loaded.config().num_layers);
    let mut sum = vec![0f64; reasoning.len()];
    let mut count = 0;
    for w in &out.attentions[from..] {
        let [_, heads, q, len] = w.dims();
        assert_eq!((q, len), (n, n));
        let w: Vec<f32> = w.clone().into_data().try_into_vec().expect("f32");
        for h in 0..heads {
            for &qi in &queries {
                for (k, s) in sum.iter_mut().enumerate() {
                    *s += f64::from(w[(h * n + qi) * n + start + k]);
                }
                count += 1;
            }
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count as f64).collect();
    let max = mean.iter().copied().fold(0.0, f64::max);
    mean.iter().map(|m| (m / max) as f32).collect()
}

#[test]
fn scores_are_the_attention_the_answer_pays_each_reasoning_token() {
    let trace = &gsm8k_test(1)[0];
    for last in [None, Some(1)] {
        let mut s = scorer();
        if let Some(n) = last {
            s = s.with_last_layers(n);
        }
        let (tokens, scores) = s
            .attention(&trace.question, &trace.reasoning, &trace.answer)
            .expect("scores");
        let n = s
            .tokenizer()
            .encode(&trace.reasoning, false)
            .expect("encode")
            .len();
        assert_eq!((tokens.ids.len(), scores.len()), (n, n));
        assert!(
            scores
                .iter()
                .all(|x| x.is_finite() && (0.0..=1.0).contains(x))
        );
        let from = if last.is_some() { 1 } else { 0 };
        let want = direct(trace, &trace.answer, from);
        for (i, (got, want)) in scores.iter().zip(&want).enumerate() {
            assert!(
                (got - want).abs() < 1e-4,
                "layers {from}..: token {i} ({:?}): {got} vs {want}",
                tokens.pieces[i]
            );
        }
        // The token the answer attends to most, in the direct computation, gets 1.
        let top = (0..n)
            .max_by(|&a, &b| want[a].total_cmp(&want[b]))
            .expect("tokens");
        assert_eq!(scores[top], 1.0, "token {top} ({:?})", tokens.pieces[top]);
        assert!(scores.iter().filter(|&&x| x == 1.0).count() >= 1);
    }
}

#[test]
fn scores_change_when_the_answer_changes() {
    let s = scorer();
    let trace = &gsm8k_test(1)[0];
    let (_, a) = s
        .attention(&trace.question, &trace.reasoning, &trace.answer)
        .expect("scores");
    let (_, b) = s
        .attention(&trace.question, &trace.reasoning, "123456789")
        .expect("scores");
    assert_eq!(a.len(), b.len());
    let moved = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| (*x - *y).abs() > 1e-3)
        .count();
    assert!(moved > a.len() / 4, "only {moved} of {} moved", a.len());
    // And they are still what the decoder says for that answer.
    let want = direct(trace, "123456789", 0);
    assert!(b.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-4));
}

#[test]
fn attention_labels_count_tokens_and_keep_every_number_and_the_answer() {
    let mut traces = gsm8k_test(20);
    // One reasoning longer than the fixture's 256-token context: scored in chunks.
    let mut long = traces[1].clone();
    long.id = "long".into();
    long.reasoning = gsm8k_test(12)
        .iter()
        .map(|t| t.reasoning.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    traces.push(long);
    for both in [false, true] {
        let s = scorer();
        let tok = s.tokenizer().clone();
        let labeler = Labeler::attention(
            s,
            both,
            LabelConfig::parse_ratios("0.5,0.8").expect("ratios"),
        );
        let name = labeler.scorer_name();
        let prefix = if both {
            "surprisal+attention+rules:"
        } else {
            "attention+rules:"
        };
        assert!(name.starts_with(prefix), "{name}");
        for t in &traces {
            let l = labeler.label(t, Grader::Gsm8k).expect("labels");
            let n = tok.encode(&t.reasoning, false).expect("encode").len();
            assert_eq!(l.scorer, name);
            assert_eq!((l.tokens.len(), l.scores.len()), (n, n));
            let attention = l.attention.as_ref().expect("attention written");
            assert_eq!(attention.len(), n);
            assert!(
                attention
                    .iter()
                    .all(|x| x.is_finite() && (0.0..=1.0).contains(x))
            );
            assert!(attention.contains(&1.0), "{}: {attention:?}", t.id);
            assert_eq!(l.surprisal.is_some(), both);
            assert_numbers_kept(&l);
            for v in &l.variants {
                assert_eq!((v.keep.len(), v.total), (n, n));
                assert!(v.correct && v.preserved, "{} at {}", t.id, v.target);
                assert!(v.trace.completion().ends_with(&answer_line(&t.answer)));
            }
        }
    }
    assert!(
        tok_len(&traces[20].reasoning) > 256,
        "the long reasoning exceeds the context"
    );
}

fn tok_len(text: &str) -> usize {
    scorer()
        .tokenizer()
        .encode(text, false)
        .expect("encode")
        .len()
}

#[test]
fn the_attention_weight_decides_how_much_attention_moves_the_scores() {
    let traces = gsm8k_test(5);
    let label = |weight: f32| {
        let mut config = LabelConfig::parse_ratios("0.7").expect("ratios");
        config.attention_weight = weight;
        let labeler = Labeler::attention(scorer(), false, config);
        traces
            .iter()
            .map(|t| labeler.label(t, Grader::Gsm8k).expect("labels"))
            .collect::<Vec<_>>()
    };
    let rules_only = Labeler::rules(
        LabelConfig::parse_ratios("0.7").expect("ratios"),
        Some((scorer().tokenizer().clone(), "fixture".into())),
    );
    let none = label(0.0);
    let full = label(1.0);
    for (i, t) in traces.iter().enumerate() {
        // Weight 0: the rules' scores, exactly.
        let rules = rules_only.label(t, Grader::Gsm8k).expect("labels");
        assert_eq!(none[i].scores, rules.scores, "{}", t.id);
        // Weight 1: an unprotected word's score is its attention rank, in [0, 1], and the
        // scores are no longer the rules'.
        let l = &full[i];
        let prot: Vec<bool> = l.protected.chars().map(|c| c == '1').collect();
        assert!(
            l.scores.iter().zip(&prot).all(|(s, p)| if *p {
                *s == 1.0
            } else {
                (0.0..=1.0).contains(s)
            }),
            "{}",
            t.id
        );
        assert_ne!(
            l.scores, rules.scores,
            "{}: attention changed nothing",
            t.id
        );
    }
}
