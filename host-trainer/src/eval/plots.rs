//! PNG figures of an evaluation: prediction vs truth over time (the paper's Figs. 4–5), label and
//! prediction histograms (Fig. 3), and predictions on the valence–arousal plane.

use std::path::Path;

use plotters::prelude::*;

use super::predict::VideoPrediction;

/// Plotting failure (file or font), as text: plotters' error types are generic over backends.
#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    /// The PNG being drawn.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn plot_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> PlotError + '_ {
    move |e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Valence and arousal of one video over time, prediction against truth; unscored frames are
/// left out of the truth curve.
pub fn timeline(p: &VideoPrediction, path: &Path) -> Result<(), PlotError> {
    let err = plot_err(path);
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((2, 1));
    let n = p.predictions.len().max(2);
    for (d, (area, name)) in panels.iter().zip(["valence", "arousal"]).enumerate() {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{}: {name}", p.video), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(40)
            .build_cartesian_2d(0..n, -1.0f32..1.0f32)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("frame")
            .draw()
            .map_err(|e| err(&e))?;
        let truth: Vec<(usize, f32)> = p
            .truth
            .iter()
            .enumerate()
            .filter(|(i, _)| p.scored[*i])
            .map(|(i, t)| (i, t[d]))
            .collect();
        chart
            .draw_series(LineSeries::new(truth, BLACK.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("truth")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
        chart
            .draw_series(LineSeries::new(
                p.predictions.iter().enumerate().map(|(i, v)| (i, v[d])),
                RED.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("prediction")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// Counts of `values` in `bins` equal bins over [-1, 1] (values outside are clamped).
pub fn histogram_counts(values: impl Iterator<Item = f32>, bins: usize) -> Vec<u32> {
    let mut counts = vec![0; bins];
    for v in values {
        let b = (((v.clamp(-1.0, 1.0) + 1.0) / 2.0) * bins as f32) as usize;
        counts[b.min(bins - 1)] += 1;
    }
    counts
}

/// Histograms of the scored labels and of the predictions, per dimension.
pub fn histograms(predictions: &[VideoPrediction], path: &Path) -> Result<(), PlotError> {
    const BINS: usize = 40;
    let err = plot_err(path);
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 2));
    for (d, (area, name)) in panels.iter().zip(["valence", "arousal"]).enumerate() {
        let scored = || {
            predictions.iter().flat_map(|p| {
                p.truth
                    .iter()
                    .zip(&p.predictions)
                    .zip(&p.scored)
                    .filter(|(_, s)| **s)
                    .map(|((t, q), _)| (t[d], q[d]))
            })
        };
        let truth = histogram_counts(scored().map(|(t, _)| t), BINS);
        let pred = histogram_counts(scored().map(|(_, q)| q), BINS);
        let top = truth.iter().chain(&pred).copied().max().unwrap_or(1).max(1);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{name} distribution"), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(50)
            .build_cartesian_2d(-1.0f32..1.0f32, 0u32..top + top / 10 + 1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .y_desc("frames")
            .draw()
            .map_err(|e| err(&e))?;
        let width = 2.0 / BINS as f32;
        for (counts, colour, label, shrink) in [
            (&truth, BLUE.mix(0.5), "truth", 0.0),
            (&pred, RED.mix(0.5), "prediction", width * 0.25),
        ] {
            chart
                .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                    let x0 = -1.0 + i as f32 * width + shrink;
                    Rectangle::new([(x0, 0), (x0 + width - 2.0 * shrink, c)], colour.filled())
                }))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// Scored frames on the valence (x) – arousal (y) plane: truth in blue, predictions in red.
pub fn va_plane(predictions: &[VideoPrediction], path: &Path) -> Result<(), PlotError> {
    let err = plot_err(path);
    let root = BitMapBackend::new(path, (640, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("valence–arousal plane", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(-1.0f32..1.0f32, -1.0f32..1.0f32)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("valence")
        .y_desc("arousal")
        .draw()
        .map_err(|e| err(&e))?;
    // At most ~4000 points per series keeps the figure readable and small.
    let total: usize = predictions.iter().map(|p| p.predictions.len()).sum();
    let stride = (total / 4000).max(1);
    let points = |truth: bool| {
        predictions
            .iter()
            .flat_map(move |p| {
                (0..p.predictions.len())
                    .filter(move |&i| p.scored[i])
                    .map(move |i| if truth { p.truth[i] } else { p.predictions[i] })
            })
            .step_by(stride)
            .map(|v| (v[0], v[1]))
            .collect::<Vec<_>>()
    };
    for (truth, colour, label) in [
        (true, BLUE.mix(0.4), "truth"),
        (false, RED.mix(0.4), "prediction"),
    ] {
        chart
            .draw_series(
                points(truth)
                    .into_iter()
                    .map(|p| Circle::new(p, 2, colour.filled())),
            )
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 6, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
