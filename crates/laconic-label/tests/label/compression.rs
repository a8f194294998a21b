//! The target of issue 5: on GSM8K train at ratio 0.6, mean compression of at least 40% with
//! every answer still extractable and correct.

use std::time::Instant;

use laconic_label::{LabelConfig, Labeler, build_report};
use laconic_traces::{DatasetSpec, Grader};

use crate::{repo, word_count};

#[test]
fn gsm8k_train_at_ratio_0_6_is_at_least_40_percent_shorter_with_every_answer_correct() {
    let spec = DatasetSpec::parse(&format!(
        "gsm8k:{}",
        repo("data/gsm8k/train.jsonl").display()
    ))
    .expect("spec");
    let traces = spec.load().expect("GSM8K train reads");
    assert_eq!(traces.len(), 7473);
    let labeler = Labeler::rules(LabelConfig::parse_ratios("0.6").expect("ratio"), None);
    let started = Instant::now();
    let mut ratios = Vec::with_capacity(traces.len());
    let mut labeled = Vec::with_capacity(traces.len());
    for t in &traces {
        let l = labeler.label(t, Grader::Gsm8k).expect("labels");
        let v = &l.variants[0];
        // Counted here, from the texts: whitespace words kept / original.
        ratios.push(word_count(&v.trace.reasoning) as f64 / word_count(&t.reasoning) as f64);
        let g = Grader::Gsm8k.grade(&v.trace.completion(), t.gold.as_deref().expect("gold"));
        assert!(g.extracted.is_some(), "{}: no answer extracts", t.id);
        assert!(g.correct, "{}: {:?}", t.id, g);
        labeled.push(l);
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    eprintln!(
        "GSM8K train at 0.6: mean kept {mean:.4} of the words (compression {:.1}%), {} traces in {:.1}s",
        100.0 * (1.0 - mean),
        traces.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        1.0 - mean >= 0.40,
        "mean compression {:.4} < 0.40",
        1.0 - mean
    );
    // The report agrees with the texts.
    let report = build_report(&labeled);
    assert!((report.ratios[0].mean - mean).abs() < 1e-9);
    assert_eq!(report.ratios[0].correct, traces.len());
}
