//! The report of a labeled file: per target ratio, the distribution of the ratio achieved,
//! how many answers survived, how much was saved; and a histogram of the achieved ratios.
//!
//! The histogram is an SVG (drawn with plotters' SVG backend, which writes text as SVG text
//! elements): plotters' PNG backend needs system fonts to draw text, which this toolkit does
//! not assume.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{LabelError, Result};
use crate::label::{LabeledTrace, ratio_label};

/// The report of a labeled file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Labeled traces.
    pub traces: usize,
    /// The scorer (`rules`, `surprisal+rules:MODEL`).
    pub scorer: String,
    /// What ratios count: `words` or `tokens:TOKENIZER`.
    pub unit: String,
    /// Original traces whose own completion grades correct.
    pub originals_correct: usize,
    /// One entry per target ratio.
    pub ratios: Vec<RatioReport>,
    /// The histogram file, when one was drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
}

/// The figures for one target ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioReport {
    /// The target.
    pub target: f64,
    /// Variants at this target.
    pub variants: usize,
    /// Mean achieved ratio (per trace, then averaged).
    pub mean: f64,
    /// Smallest achieved ratio.
    pub min: f64,
    /// Largest achieved ratio.
    pub max: f64,
    /// Quantiles of the achieved ratio: 10%, 25%, 50% (median), 75%, 90%.
    pub p10: f64,
    /// 25%.
    pub p25: f64,
    /// The median.
    pub p50: f64,
    /// 75%.
    pub p75: f64,
    /// 90%.
    pub p90: f64,
    /// `1 - mean`: the mean compression.
    pub mean_compression: f64,
    /// Variants whose target could not be met without breaking an invariant.
    pub limited: usize,
    /// Variants whose final answer extracts and matches the gold answer.
    pub correct: usize,
    /// `correct / variants`.
    pub correct_share: f64,
    /// Variants whose final answer is the original completion's.
    pub preserved: usize,
    /// `preserved / variants`.
    pub preserved_share: f64,
    /// Tokens (or words) of all original reasonings.
    pub original_tokens: usize,
    /// Tokens (or words) of all compressed reasonings.
    pub kept_tokens: usize,
    /// `original_tokens - kept_tokens`.
    pub tokens_saved: usize,
    /// `tokens_saved / original_tokens`: the compression over the whole corpus.
    pub saved_share: f64,
}

/// The `q`-quantile of sorted values (linear interpolation); 0 when empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// `a / b`, 0 when `b` is 0.
fn share(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Builds the report of labeled traces. Targets are listed in the order the first trace
/// gives them; a variant whose target no earlier trace had adds an entry.
pub fn build_report(labeled: &[LabeledTrace]) -> Report {
    let mut targets: Vec<f64> = Vec::new();
    for l in labeled {
        for v in &l.variants {
            if !targets
                .iter()
                .any(|t| ratio_label(*t) == ratio_label(v.target))
            {
                targets.push(v.target);
            }
        }
    }
    let ratios = targets
        .iter()
        .map(|&target| {
            let vs: Vec<_> = labeled
                .iter()
                .flat_map(|l| &l.variants)
                .filter(|v| ratio_label(v.target) == ratio_label(target))
                .collect();
            let mut achieved: Vec<f64> = vs.iter().map(|v| v.achieved).collect();
            achieved.sort_by(f64::total_cmp);
            let mean = if achieved.is_empty() {
                0.0
            } else {
                achieved.iter().sum::<f64>() / achieved.len() as f64
            };
            let original_tokens: usize = vs.iter().map(|v| v.total).sum();
            let kept_tokens: usize = vs.iter().map(|v| v.kept).sum();
            let correct = vs.iter().filter(|v| v.correct).count();
            let preserved = vs.iter().filter(|v| v.preserved).count();
            let tokens_saved = original_tokens.saturating_sub(kept_tokens);
            RatioReport {
                target,
                variants: vs.len(),
                mean,
                min: achieved.first().copied().unwrap_or(0.0),
                max: achieved.last().copied().unwrap_or(0.0),
                p10: quantile(&achieved, 0.1),
                p25: quantile(&achieved, 0.25),
                p50: quantile(&achieved, 0.5),
                p75: quantile(&achieved, 0.75),
                p90: quantile(&achieved, 0.9),
                mean_compression: 1.0 - mean,
                limited: vs.iter().filter(|v| v.limited).count(),
                correct,
                correct_share: share(correct, vs.len()),
                preserved,
                preserved_share: share(preserved, vs.len()),
                original_tokens,
                kept_tokens,
                tokens_saved,
                saved_share: share(tokens_saved, original_tokens),
            }
        })
        .collect();
    Report {
        traces: labeled.len(),
        scorer: labeled.first().map_or(String::new(), |l| l.scorer.clone()),
        unit: labeled.first().map_or(String::new(), |l| l.unit.clone()),
        originals_correct: labeled.iter().filter(|l| l.correct).count(),
        ratios,
        histogram: None,
    }
}

/// The histogram's path for a report path: the same name with `.svg`.
pub fn histogram_path(report: &Path) -> PathBuf {
    report.with_extension("svg")
}

/// Writes the report as pretty JSON to `path` and draws the histogram of achieved ratios
/// beside it ([`histogram_path`]); returns the report as written.
pub fn write_report(labeled: &[LabeledTrace], path: &Path) -> Result<Report> {
    let mut report = build_report(labeled);
    let svg = histogram_path(path);
    draw_histogram(labeled, &report, &svg)?;
    report.histogram = Some(
        svg.file_name()
            .map_or_else(|| svg.display().to_string(), |n| n.to_string_lossy().into()),
    );
    let json = serde_json::to_string_pretty(&report).map_err(|e| LabelError::Label {
        id: String::new(),
        message: format!("cannot serialize the report: {e}"),
    })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| LabelError::io(parent, e))?;
    }
    std::fs::write(path, json + "\n").map_err(|e| LabelError::io(path, e))?;
    Ok(report)
}

/// Bins of the histogram over `[0, 1]`.
const BINS: usize = 40;

/// Draws one histogram of achieved ratios per target, overlaid, with the targets marked.
pub fn draw_histogram(labeled: &[LabeledTrace], report: &Report, out: &Path) -> Result<()> {
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let counts: Vec<Vec<usize>> = report
        .ratios
        .iter()
        .map(|r| {
            let mut c = vec![0usize; BINS];
            for v in labeled.iter().flat_map(|l| &l.variants) {
                if ratio_label(v.target) == ratio_label(r.target) {
                    let bin = ((v.achieved.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
                    c[bin] += 1;
                }
            }
            c
        })
        .collect();
    let top = counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("achieved compression ratio ({})", report.unit),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("kept / original")
            .y_desc("traces")
            .draw()?;
        for (k, (r, c)) in report.ratios.iter().zip(&counts).enumerate() {
            let color = colors[k % colors.len()];
            let width = 1.0 / BINS as f64;
            chart
                .draw_series(
                    c.iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(b, &n)| {
                            let x0 = b as f64 * width;
                            Rectangle::new(
                                [(x0, 0.0), (x0 + width, n as f64)],
                                color.mix(0.35).filled(),
                            )
                        }),
                )?
                .label(format!(
                    "target {} (mean {:.3})",
                    ratio_label(r.target),
                    r.mean
                ))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.mix(0.35).filled())
                });
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(r.target, 0.0), (r.target, top)],
                color.stroke_width(2),
            )))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| LabelError::Draw {
        path: out.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v = [0.1, 0.2, 0.3, 0.4, 0.5];
        assert_eq!(quantile(&v, 0.0), 0.1);
        assert_eq!(quantile(&v, 0.5), 0.3);
        assert!((quantile(&v, 0.25) - 0.2).abs() < 1e-12);
        assert!((quantile(&v, 0.1) - 0.14).abs() < 1e-12);
        assert_eq!(quantile(&v, 1.0), 0.5);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
