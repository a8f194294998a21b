//! The report of a labeled file: per target ratio, the distribution of the ratio achieved,
//! how many answers survived, how much was saved; and a histogram of the achieved ratios.
//!
//! The histogram is drawn as an SVG (plotters' SVG backend, which writes text as SVG text
//! elements) and rendered to a PNG beside it with resvg ([`svg_to_png`], which
//! `laconic-train` uses for its loss curve too). The PNG's text uses the system's fonts;
//! without any, the bars and axes are drawn and the labels left out.

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
    /// The histogram file (SVG), when one was drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
    /// The same histogram as a PNG, when one was drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram_png: Option<String>,
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
        histogram_png: None,
    }
}

/// The histogram's path for a report path: the same name with `.svg`.
pub fn histogram_path(report: &Path) -> PathBuf {
    report.with_extension("svg")
}

/// The file name of a path, for the report (the whole path when it has none).
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

/// Writes the report as pretty JSON to `path` and draws the histogram of achieved ratios
/// beside it ([`histogram_path`], and the same with `.png`); returns the report as written.
pub fn write_report(labeled: &[LabeledTrace], path: &Path) -> Result<Report> {
    let mut report = build_report(labeled);
    let svg = histogram_path(path);
    if let Some(parent) = svg.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| LabelError::io(parent, e))?;
    }
    draw_histogram(labeled, &report, &svg)?;
    let png = svg.with_extension("png");
    svg_to_png(&svg, &png)?;
    report.histogram = Some(file_name(&svg));
    report.histogram_png = Some(file_name(&png));
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

/// Renders an SVG file to a PNG of the same size in pixels, on white, written atomically.
/// Text is drawn with the system's fonts; without any, it is left out.
pub fn svg_to_png(svg: &Path, png: &Path) -> Result<()> {
    use resvg::{tiny_skia, usvg};
    let bad = |message: String| LabelError::Draw {
        path: png.to_path_buf(),
        message,
    };
    let data = std::fs::read(svg).map_err(|e| LabelError::io(svg, e))?;
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // fontdb maps the generic `sans-serif` (what plotters writes) to Arial, which many Linux
    // systems lack: then no text is drawn. Point it at a sans font that is installed.
    let families: Vec<String> = fonts
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
        .collect();
    if !families.iter().any(|f| f == "Arial") {
        let preferred = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans"];
        let sans = preferred
            .iter()
            .find(|p| families.iter().any(|f| f == *p))
            .map(|p| p.to_string())
            .or_else(|| families.first().cloned());
        if let Some(family) = sans {
            fonts.set_sans_serif_family(family);
        }
    }
    let tree = usvg::Tree::from_data(&data, &options)
        .map_err(|e| bad(format!("{} is not a drawable SVG: {e}", svg.display())))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| bad(format!("{} is an empty drawing", svg.display())))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    let bytes = pixmap
        .encode_png()
        .map_err(|e| bad(format!("encoding: {e}")))?;
    laconic_traces::write_atomic(png, |w| std::io::Write::write_all(w, &bytes))?;
    Ok(())
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

    #[test]
    fn svg_renders_to_a_png_of_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svg = dir.path().join("a.svg");
        std::fs::write(
            &svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40">
               <rect x="10" y="10" width="50" height="20" fill="blue"/>
               <text x="70" y="30">hi</text></svg>"#,
        )
        .expect("write");
        let png = dir.path().join("a.png");
        svg_to_png(&svg, &png).expect("renders");
        let bytes = std::fs::read(&png).expect("png written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        assert_eq!((be(16), be(20)), (120, 40));
        // With any font installed, the text is drawn (plotters writes `sans-serif`).
        let text_only = dir.path().join("t.svg");
        std::fs::write(
            &text_only,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="80" height="30">
               <text x="5" y="22" font-family="sans-serif" font-size="20">Hi</text></svg>"#,
        )
        .expect("write");
        svg_to_png(&text_only, &png).expect("renders");
        let pixmap = resvg::tiny_skia::Pixmap::load_png(&png).expect("decodes");
        let inked = pixmap.pixels().iter().filter(|p| p.red() < 128).count();
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_system_fonts();
        assert_eq!(
            inked > 0,
            !db.is_empty(),
            "{inked} dark pixels, {} fonts",
            db.len()
        );
        let e = svg_to_png(&dir.path().join("none.svg"), &png).expect_err("no file");
        assert!(e.to_string().contains("none.svg"), "{e}");
    }
}
