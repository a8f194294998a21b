//! The results table of a pipeline run (`laconic run`): one row per student and KV policy,
//! read from the per-problem files that `laconic eval --out` writes, with 95% intervals, paired
//! tests between rows on the same problems, a markdown rendering and two plots.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// One evaluated problem, as a line of `laconic eval --out`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvalLine {
    /// The problem's id.
    pub id: String,
    /// Whether the answer was graded correct.
    pub correct: bool,
    /// Tokens the length budget counts (every generated token but a final stop token).
    pub reasoning_tokens: usize,
    /// Most bytes the KV cache held while answering.
    pub peak_kv_bytes: usize,
    /// Most entries (per layer and KV head) the cache held while answering.
    pub peak_kv_entries: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Seconds spent decoding after the first token.
    pub decode_seconds: f64,
}

/// Reads an evaluation file; every line must carry the fields of [`EvalLine`], and an error
/// names the file and line.
pub fn read_eval(path: &Path) -> Result<Vec<EvalLine>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                TrainError::Invalid(format!(
                    "{}:{}: not an evaluation line ({e})",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// One row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The student (or `base`).
    pub stage: String,
    /// The KV policy it decoded with.
    pub kv_policy: String,
    /// Entries per layer and KV head the policy keeps (none for the full cache).
    pub kv_budget: Option<usize>,
    /// Problems evaluated.
    pub n: usize,
    /// Share answered correctly.
    pub accuracy: f64,
    /// Wilson 95% interval of the accuracy.
    pub accuracy_ci95: [f64; 2],
    /// Mean reasoning tokens per problem.
    pub mean_reasoning_tokens: f64,
    /// Mean over problems of the most bytes the KV cache held.
    pub peak_kv_bytes: f64,
    /// Decode tokens/s of one core (generated tokens over decode seconds, summed; in a batched
    /// evaluation a step's time is split among the sequences it advanced).
    pub decode_tok_s: f64,
}

impl Row {
    /// The row of one evaluation.
    pub fn new(stage: &str, kv_policy: &str, kv_budget: Option<usize>, lines: &[EvalLine]) -> Self {
        let n = lines.len();
        let correct = lines.iter().filter(|l| l.correct).count();
        let mean =
            |f: &dyn Fn(&EvalLine) -> f64| lines.iter().map(f).sum::<f64>() / n.max(1) as f64;
        let decode_tokens: usize = lines
            .iter()
            .map(|l| l.completion_tokens.saturating_sub(1))
            .sum();
        let decode_seconds: f64 = lines.iter().map(|l| l.decode_seconds).sum();
        let (lo, hi) = wilson(correct, n);
        Self {
            stage: stage.to_string(),
            kv_policy: kv_policy.to_string(),
            kv_budget,
            n,
            accuracy: correct as f64 / n.max(1) as f64,
            accuracy_ci95: [lo, hi],
            mean_reasoning_tokens: mean(&|l| l.reasoning_tokens as f64),
            peak_kv_bytes: mean(&|l| l.peak_kv_bytes as f64),
            decode_tok_s: if decode_seconds > 0.0 {
                decode_tokens as f64 / decode_seconds
            } else {
                0.0
            },
        }
    }

    /// `stage/kv_policy`, how the paired tests name a row.
    pub fn label(&self) -> String {
        format!("{}/{}", self.stage, self.kv_policy)
    }
}

/// The Wilson score interval (95%) of `k` successes in `n` trials; `(0, 1)` for no trials.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// A paired comparison of two rows on the same problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// The first row (`stage/kv_policy`).
    pub a: String,
    /// The second row.
    pub b: String,
    /// Problems both answered.
    pub n: usize,
    /// Problems only `a` got right.
    pub only_a: usize,
    /// Problems only `b` got right.
    pub only_b: usize,
    /// Accuracy of `b` minus accuracy of `a`.
    pub difference: f64,
    /// 95% interval of the difference (normal approximation for paired proportions).
    pub difference_ci95: [f64; 2],
    /// Two-sided exact McNemar p-value (binomial test on the discordant pairs).
    pub p_value: f64,
    /// Mean reasoning tokens of `b` over those of `a`, minus one (negative: `b` is shorter).
    pub length_change: f64,
}

/// Compares two evaluations of the same problems: McNemar's exact test and the paired
/// difference. The problems must be the same (matched by id), or this is an error.
pub fn paired(a_name: &str, a: &[EvalLine], b_name: &str, b: &[EvalLine]) -> Result<Paired> {
    let by_id: BTreeMap<&str, &EvalLine> = b.iter().map(|l| (l.id.as_str(), l)).collect();
    if a.len() != b.len() || by_id.len() != b.len() {
        return Err(TrainError::Invalid(format!(
            "{a_name} and {b_name} did not answer the same problems ({} and {} lines)",
            a.len(),
            b.len()
        )));
    }
    let (mut only_a, mut only_b) = (0usize, 0usize);
    for l in a {
        let other = by_id.get(l.id.as_str()).ok_or_else(|| {
            TrainError::Invalid(format!("problem {} is in {a_name} but not {b_name}", l.id))
        })?;
        match (l.correct, other.correct) {
            (true, false) => only_a += 1,
            (false, true) => only_b += 1,
            _ => {}
        }
    }
    let n = a.len();
    let nf = n.max(1) as f64;
    let d = (only_b as f64 - only_a as f64) / nf;
    let var = ((only_a + only_b) as f64 - (only_b as f64 - only_a as f64).powi(2) / nf) / (nf * nf);
    let half = 1.959_963_984_540_054 * var.max(0.0).sqrt();
    let mean_len = |x: &[EvalLine]| {
        x.iter().map(|l| l.reasoning_tokens as f64).sum::<f64>() / x.len().max(1) as f64
    };
    let (la, lb) = (mean_len(a), mean_len(b));
    Ok(Paired {
        a: a_name.to_string(),
        b: b_name.to_string(),
        n,
        only_a,
        only_b,
        difference: d,
        difference_ci95: [d - half, d + half],
        p_value: mcnemar_exact(only_a, only_b),
        length_change: if la > 0.0 { lb / la - 1.0 } else { 0.0 },
    })
}

/// Two-sided exact McNemar p-value for `b` and `c` discordant pairs: twice the smaller tail of
/// Binomial(b + c, 1/2), at most 1.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // ln C(n, i) by the running product, in log space so n in the thousands stays finite.
    let ln2n = n as f64 * std::f64::consts::LN_2;
    let mut ln_c = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c - ln2n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// The table as markdown: the rows, then the paired tests.
pub fn markdown(rows: &[Row], tests: &[Paired]) -> String {
    let mut s = String::from(
        "| stage | KV policy | KV budget | n | accuracy | 95% CI | mean reasoning tokens | peak KV (KiB) | decode tok/s |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1}% | {:.1}–{:.1}% | {:.1} | {:.0} | {:.1} |\n",
            r.stage,
            r.kv_policy,
            r.kv_budget.map_or("-".to_string(), |b| b.to_string()),
            r.n,
            100.0 * r.accuracy,
            100.0 * r.accuracy_ci95[0],
            100.0 * r.accuracy_ci95[1],
            r.mean_reasoning_tokens,
            r.peak_kv_bytes / 1024.0,
            r.decode_tok_s
        ));
    }
    if !tests.is_empty() {
        s.push_str(
            "\n| paired (same problems) | n | only first right | only second right | accuracy change | 95% CI | McNemar p | length change |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for t in tests {
            s.push_str(&format!(
                "| {} → {} | {} | {} | {} | {:+.1} pt | {:+.1} to {:+.1} | {:.3} | {:+.1}% |\n",
                t.a,
                t.b,
                t.n,
                t.only_a,
                t.only_b,
                100.0 * t.difference,
                100.0 * t.difference_ci95[0],
                100.0 * t.difference_ci95[1],
                t.p_value,
                100.0 * t.length_change
            ));
        }
    }
    s
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

fn draw_error(out: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Invalid(format!("drawing {}: {e}", out.display()))
}

/// The corner of the accuracy plot that no point or interval reaches (upper right when every
/// corner is taken). `max_len` is the x axis's end; accuracy runs from 0 to 100%.
fn free_corner(rows: &[Row], max_len: f64) -> SeriesLabelPosition {
    let taken = |right: bool, upper: bool| {
        rows.iter().any(|r| {
            let x = r.mean_reasoning_tokens / max_len;
            let in_x = if right { x >= 0.55 } else { x <= 0.45 };
            let (lo, hi) = (
                r.accuracy_ci95[0].min(r.accuracy),
                r.accuracy_ci95[1].max(r.accuracy),
            );
            let in_y = if upper { hi >= 0.65 } else { lo <= 0.35 };
            in_x && in_y
        })
    };
    [
        (true, true, SeriesLabelPosition::UpperRight),
        (false, true, SeriesLabelPosition::UpperLeft),
        (true, false, SeriesLabelPosition::LowerRight),
        (false, false, SeriesLabelPosition::LowerLeft),
    ]
    .into_iter()
    .find(|(right, upper, _)| !taken(*right, *upper))
    .map_or(SeriesLabelPosition::UpperRight, |(_, _, p)| p)
}

/// Accuracy (with its interval) against mean reasoning tokens, one point per row: filled for
/// the full cache, hollow for a pruned one. Writes `out` (SVG) and a PNG beside it.
///
/// The legend goes in the first corner (upper right, upper left, lower right, lower left) whose
/// area (the outer 45% of the width, 35% of the height) no point or interval reaches.
pub fn plot_accuracy_vs_length(rows: &[Row], out: &Path) -> Result<()> {
    let max_len = rows
        .iter()
        .map(|r| r.mean_reasoning_tokens)
        .fold(1.0, f64::max)
        * 1.15;
    let stages: Vec<&str> = rows.iter().fold(Vec::new(), |mut v, r| {
        if !v.contains(&r.stage.as_str()) {
            v.push(r.stage.as_str());
        }
        v
    });
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("accuracy against reasoning length", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_len, 0.0..100.0)?;
        chart
            .configure_mesh()
            .x_desc("mean reasoning tokens")
            .y_desc("accuracy (%)")
            .draw()?;
        for (i, stage) in stages.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mine: Vec<&Row> = rows.iter().filter(|r| r.stage == *stage).collect();
            chart.draw_series(mine.iter().map(|r| {
                PathElement::new(
                    vec![
                        (r.mean_reasoning_tokens, 100.0 * r.accuracy_ci95[0]),
                        (r.mean_reasoning_tokens, 100.0 * r.accuracy_ci95[1]),
                    ],
                    color,
                )
            }))?;
            chart
                .draw_series(mine.iter().map(|r| {
                    let style = if r.kv_policy == "full" {
                        color.filled()
                    } else {
                        color.stroke_width(2)
                    };
                    Circle::new((r.mean_reasoning_tokens, 100.0 * r.accuracy), 6, style)
                }))?
                .label(format!("{stage} (filled: full cache, ring: pruned)"))
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(free_corner(rows, max_len))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| draw_error(out, e))?;
    crate::plot::rasterize(out, &out.with_extension("png"))
}

/// Mean reasoning tokens of the GRPO rollouts against the optimizer step, one line per budget
/// bucket, from a GRPO run's `metrics.jsonl`. Writes `out` (SVG) and a PNG beside it; returns
/// the number of steps drawn.
pub fn plot_grpo_lengths(metrics: &Path, out: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(metrics).map_err(|e| TrainError::io(metrics, e))?;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut steps = 0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(step), Some(buckets)) = (
            v["step"].as_f64(),
            v["grpo"]["tokens_by_budget"].as_object(),
        ) else {
            continue;
        };
        steps += 1;
        for (bucket, len) in buckets {
            if let Some(len) = len.as_f64() {
                series.entry(bucket.clone()).or_default().push((step, len));
            }
        }
    }
    // Buckets by their number, `none` last.
    let mut keys: Vec<String> = series.keys().cloned().collect();
    keys.sort_by_key(|k| k.parse::<usize>().unwrap_or(usize::MAX));
    let max_step = series.values().flatten().map(|p| p.0).fold(1.0, f64::max);
    let max_len = series
        .values()
        .flatten()
        .map(|p| p.1)
        .chain(keys.iter().filter_map(|k| k.parse::<f64>().ok()))
        .fold(1.0, f64::max)
        * 1.1;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("GRPO: reasoning length per budget", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_step, 0.0..max_len)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc("mean reasoning tokens")
            .draw()?;
        for (i, key) in keys.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points = series[key].clone();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(format!("budget {key}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            if let Ok(b) = key.parse::<f64>() {
                chart.draw_series(DashedLineSeries::new(
                    vec![(0.0, b), (max_step, b)],
                    4,
                    4,
                    color.into(),
                ))?;
            }
        }
        chart.configure_series_labels().border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| draw_error(out, e))?;
    crate::plot::rasterize(out, &out.with_extension("png"))?;
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: usize, correct: bool, tokens: usize) -> EvalLine {
        EvalLine {
            id: format!("p{id}"),
            correct,
            reasoning_tokens: tokens,
            peak_kv_bytes: 1000 + tokens,
            peak_kv_entries: 10 + tokens,
            completion_tokens: tokens + 1,
            decode_seconds: tokens as f64 / 50.0,
        }
    }

    #[test]
    fn the_legend_goes_where_no_point_is() {
        let at = |tokens: usize, right: usize| {
            let lines: Vec<EvalLine> = (0..10).map(|i| line(i, i < right, tokens)).collect();
            Row::new("s", "full", None, &lines)
        };
        let max_len = 200.0;
        // The quickstart's layout: points in the middle band on the right and high on the
        // left half: the upper right is free of points but not of intervals, so not it.
        let rows = [at(175, 5), at(120, 6), at(100, 6), at(160, 0)];
        let corner = free_corner(&rows, max_len);
        assert!(
            matches!(corner, SeriesLabelPosition::UpperLeft),
            "{corner:?}"
        );
        // Nothing high: the upper right.
        let low = [at(175, 1), at(30, 0)];
        let corner = free_corner(&low, max_len);
        assert!(
            matches!(corner, SeriesLabelPosition::UpperRight),
            "{corner:?}"
        );
    }

    #[test]
    fn wilson_matches_known_values() {
        // 50 of 100: 0.5 ± 0.0962 (textbook value 0.4038–0.5962).
        let (lo, hi) = wilson(50, 100);
        assert!(
            (lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3,
            "{lo} {hi}"
        );
        // All right still leaves room below 1; none right leaves room above 0.
        let (lo, hi) = wilson(20, 20);
        assert!(lo < 0.9 && (hi - 1.0).abs() < 1e-12);
        let (lo, hi) = wilson(0, 20);
        assert!(lo.abs() < 1e-12 && hi > 0.1);
    }

    #[test]
    fn mcnemar_exact_matches_the_binomial() {
        // 0 vs 6 discordant pairs: 2 · (1/2)^6.
        assert!((mcnemar_exact(0, 6) - 2.0 / 64.0).abs() < 1e-12);
        // 2 vs 8: 2 · (1 + 10 + 45) / 1024.
        assert!((mcnemar_exact(2, 8) - 112.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large counts stay finite and symmetric.
        let p = mcnemar_exact(480, 520);
        assert!(p > 0.2 && p < 0.25, "{p}");
        assert_eq!(p, mcnemar_exact(520, 480));
    }

    #[test]
    fn rows_and_paired_tests_count_what_the_files_say() {
        let a: Vec<EvalLine> = (0..10).map(|i| line(i, i < 6, 200)).collect();
        // b: shorter, gets problems 0..5 and 8, 9 right.
        let b: Vec<EvalLine> = (0..10)
            .map(|i| line(i, !(5..8).contains(&i), 100))
            .rev()
            .collect();
        let ra = Row::new("a", "full", None, &a);
        assert_eq!(ra.n, 10);
        assert!((ra.accuracy - 0.6).abs() < 1e-12);
        assert!((ra.mean_reasoning_tokens - 200.0).abs() < 1e-12);
        assert!((ra.peak_kv_bytes - 1200.0).abs() < 1e-12);
        assert!((ra.decode_tok_s - 10.0 * 200.0 / 40.0).abs() < 1e-9);
        let t = paired("a/full", &a, "b/full", &b).expect("same problems");
        assert_eq!((t.only_a, t.only_b), (1, 2));
        assert!((t.difference - 0.1).abs() < 1e-12);
        assert!((t.length_change + 0.5).abs() < 1e-12);
        assert!((t.p_value - 1.0).abs() < 1e-12);
        let md = markdown(&[ra], &[t]);
        assert!(md.contains("| a | full | - | 10 | 60.0% |"), "{md}");
        assert!(
            md.contains("a/full → b/full | 10 | 1 | 2 | +10.0 pt"),
            "{md}"
        );
        // Different problems are refused.
        let mut c = b.clone();
        c[0].id = "other".into();
        assert!(paired("a", &a, "c", &c).is_err());
        assert!(paired("a", &a, "c", &b[..5]).is_err());
    }

    #[test]
    fn plots_are_drawn_from_rows_and_metrics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a: Vec<EvalLine> = (0..10).map(|i| line(i, i < 6, 200)).collect();
        let rows = vec![
            Row::new("a", "full", None, &a),
            Row::new("a", "rkv", Some(40), &a),
        ];
        let svg = dir.path().join("acc.svg");
        plot_accuracy_vs_length(&rows, &svg).expect("draws");
        assert!(
            std::fs::read_to_string(&svg)
                .expect("svg")
                .starts_with("<svg")
        );
        assert!(dir.path().join("acc.png").exists());
        let metrics = dir.path().join("metrics.jsonl");
        std::fs::write(
            &metrics,
            "{\"step\":0,\"valid_loss\":1.0}\n\
             {\"step\":1,\"loss\":0.1,\"grpo\":{\"tokens_by_budget\":{\"64\":90.0,\"128\":150.0}}}\n\
             {\"step\":2,\"loss\":0.1,\"grpo\":{\"tokens_by_budget\":{\"64\":70.0}}}\n",
        )
        .expect("write");
        let svg = dir.path().join("grpo.svg");
        assert_eq!(plot_grpo_lengths(&metrics, &svg).expect("draws"), 2);
        let text = std::fs::read_to_string(&svg).expect("svg");
        assert!(text.contains("budget 64") && text.contains("budget 128"));
    }
}
