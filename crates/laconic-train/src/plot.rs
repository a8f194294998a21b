//! The loss curves of a run, drawn from its metrics file.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// Draws training loss per step and held-out loss from `metrics` (JSONL) into an SVG, and the
/// same drawing as a PNG beside it.
pub fn draw_loss(metrics: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics).map_err(|e| TrainError::io(metrics, e))?;
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(l) = v["loss"].as_f64() {
            train.push((step, l));
        }
        if let Some(l) = v["valid_loss"].as_f64().filter(|l| l.is_finite()) {
            valid.push((step, l));
        }
    }
    let max_step = train.iter().chain(&valid).map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = train
        .iter()
        .chain(&valid)
        .fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let (lo, hi) = if lo < hi {
        (lo * 0.95, hi * 1.05)
    } else {
        (0.0, 1.0)
    };
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("loss per completion token", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_step, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc("loss")
            .draw()?;
        chart
            .draw_series(LineSeries::new(train.iter().copied(), &BLUE))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(LineSeries::new(valid.iter().copied(), RED.stroke_width(2)))?
            .label("held-out")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        chart.draw_series(valid.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
        chart.configure_series_labels().border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| TrainError::Invalid(format!("drawing {}: {e}", out.display())))?;
    rasterize(out, &out.with_extension("png"))
}

/// Renders an SVG file to PNG (text with the system's fonts; without any, the curves and
/// axes are drawn and the labels left out): [`laconic_label::svg_to_png`], which the labeler
/// uses for its histogram.
pub fn rasterize(svg: &Path, png: &Path) -> Result<()> {
    laconic_label::svg_to_png(svg, png).map_err(|e| TrainError::Invalid(e.to_string()))
}
