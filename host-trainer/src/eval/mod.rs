//! Evaluation of a trained run on a split: CCC/MSE pooled over all frames (the challenge
//! protocol) and per video, a Markdown table, `report.json`, per-video prediction CSVs
//! (`valence,arousal`, one row per annotation line, usable with `affect-train score`) and PNG
//! plots.
//!
//! Output layout, `OUT` defaulting to `RUN/eval/<split>`:
//! ```text
//! OUT/report.json                 {"run","split","weights","pooled":{valence,arousal,frames},"videos":[…]}
//! OUT/predictions/<video>.csv     header `valence,arousal`, one row per frame
//! OUT/plots/timeline_<video>.png  prediction vs truth over time (first `plot_videos` videos)
//! OUT/plots/histograms.png        label and prediction histograms
//! OUT/plots/va_plane.png          truth and predictions on the valence–arousal plane
//! ```

pub mod plots;
pub mod predict;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use affect_shared::metadata::Validation;
use serde::Serialize;

use crate::model::ModelError;
use crate::train::source::{BatchShapeError, SourceError, VideoSource};
use predict::VideoPrediction;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The data source failed on a video.
    #[error("video {video}: {source}")]
    Data {
        /// Video name.
        video: String,
        /// Cause.
        source: SourceError,
    },
    /// A clip has inconsistent field lengths.
    #[error(transparent)]
    Batch(#[from] BatchShapeError),
    /// The network failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Writing an output failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    /// No video had a scored frame.
    #[error("split {0}: no frame with a face and a label to score")]
    Empty(String),
}

/// One row of the per-video table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoScore {
    /// Video name.
    pub video: String,
    /// Frames in the video.
    pub frames: usize,
    /// Scores over its scored frames (`None`: none scored).
    pub score: Option<Validation>,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Run directory.
    pub run: PathBuf,
    /// Split evaluated.
    pub split: String,
    /// Weights file used.
    pub weights: PathBuf,
    /// Pooled over all scored frames.
    pub pooled: Validation,
    /// Mean of pooled valence and arousal CCC.
    pub mean_ccc: f64,
    /// Per video.
    pub videos: Vec<VideoScore>,
}

impl EvalReport {
    /// The report as a Markdown table: pooled first, then one row per video.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| video | frames | CCC V | CCC A | MSE V | MSE A |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        let row = |s: &mut String, name: &str, frames: u64, v: Option<&Validation>| {
            let _ = match v {
                Some(v) => writeln!(
                    s,
                    "| {name} | {frames} | {:.3} | {:.3} | {:.4} | {:.4} |",
                    v.valence.ccc, v.arousal.ccc, v.valence.mse, v.arousal.mse
                ),
                None => writeln!(s, "| {name} | {frames} | – | – | – | – |"),
            };
        };
        row(&mut s, "**pooled**", self.pooled.frames, Some(&self.pooled));
        for v in &self.videos {
            row(&mut s, &v.video, v.frames as u64, v.score.as_ref());
        }
        s
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `predictions` as `valence,arousal` rows.
pub fn write_prediction_csv(p: &VideoPrediction, path: &Path) -> Result<(), EvalError> {
    let mut text = String::from("valence,arousal\n");
    for v in &p.predictions {
        let _ = writeln!(text, "{},{}", v[0], v[1]);
    }
    std::fs::write(path, text).map_err(io(path))
}

/// File-name-safe version of a video name.
fn file_stem(video: &str) -> String {
    video
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes the report, CSVs and plots for already computed predictions into `out`.
pub fn write_outputs(
    report: &EvalReport,
    predictions: &[VideoPrediction],
    out: &Path,
    plot_videos: usize,
) -> Result<(), EvalError> {
    let csv_dir = out.join("predictions");
    let plot_dir = out.join("plots");
    for dir in [&csv_dir, &plot_dir] {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let report_path = out.join("report.json");
    let json = serde_json::to_string_pretty(report).expect("plain data serialises");
    std::fs::write(&report_path, json).map_err(io(&report_path))?;
    for p in predictions {
        write_prediction_csv(p, &csv_dir.join(format!("{}.csv", file_stem(&p.video))))?;
    }
    for p in predictions.iter().take(plot_videos) {
        plots::timeline(
            p,
            &plot_dir.join(format!("timeline_{}.png", file_stem(&p.video))),
        )?;
    }
    plots::histograms(predictions, &plot_dir.join("histograms.png"))?;
    plots::va_plane(predictions, &plot_dir.join("va_plane.png"))?;
    Ok(())
}

/// Scores predictions into a report.
pub fn build_report(
    run: &Path,
    split: &str,
    weights: &Path,
    predictions: &[VideoPrediction],
) -> Result<EvalReport, EvalError> {
    let scores = predict::split_scores(predictions);
    let pooled = scores
        .pooled
        .ok_or_else(|| EvalError::Empty(split.to_owned()))?;
    Ok(EvalReport {
        run: run.to_owned(),
        split: split.to_owned(),
        weights: weights.to_owned(),
        mean_ccc: (pooled.valence.ccc + pooled.arousal.ccc) / 2.0,
        pooled,
        videos: predictions
            .iter()
            .zip(scores.videos)
            .map(|(p, (video, score))| VideoScore {
                video,
                frames: p.predictions.len(),
                score,
            })
            .collect(),
    })
}

/// Predicts every video of `source` with `model`, scores, and writes everything into `out`.
pub fn evaluate(
    model: &crate::model::Model,
    source: &dyn VideoSource,
    run: &Path,
    weights: &Path,
    split: &str,
    out: &Path,
    plot_videos: usize,
) -> Result<EvalReport, EvalError> {
    let predictions = predict::predict_split(model, source, 256)?;
    let report = build_report(run, split, weights, &predictions)?;
    write_outputs(&report, &predictions, out, plot_videos)?;
    Ok(report)
}
