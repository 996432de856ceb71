//! Scoring prediction files against ground truth: CCC and MSE per dimension over pooled frames.
//!
//! File format (Aff-Wild2 / ABAW style): header `valence,arousal`, then one `v,a` row per frame;
//! a truth row with `-5` in either column marks an unlabelled frame and is skipped.

use std::path::{Path, PathBuf};

use crate::metrics;
use serde::Serialize;

/// The value that marks an invalid (unlabelled) frame.
pub const INVALID: f64 = -5.0;

/// Why scoring failed. Every variant names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `valence,arousal` with two finite numbers (or the header is wrong).
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The two files have different numbers of frames.
    #[error("{} has {pred} frames but {} has {truth}", pred_path.display(), truth_path.display())]
    RowCount {
        /// Prediction file.
        pred_path: PathBuf,
        /// Its frame count.
        pred: usize,
        /// Truth file.
        truth_path: PathBuf,
        /// Its frame count.
        truth: usize,
    },
    /// A labelled frame has no prediction (`-5` in the prediction file).
    #[error("{}:{line}: no prediction (-5) for a labelled frame", path.display())]
    MissingPrediction {
        /// Prediction file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// No frame of the truth file is labelled.
    #[error("{}: no labelled frames to score", path.display())]
    NoLabelledFrames {
        /// Truth file.
        path: PathBuf,
    },
}

/// CCC and MSE of one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DimensionScore {
    /// Concordance correlation coefficient.
    pub ccc: f64,
    /// Mean squared error.
    pub mse: f64,
}

/// The result of `affect-train score`, serialised as
/// `{"valence":{"ccc":…,"mse":…},"arousal":{…},"frames":n}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    /// Valence scores.
    pub valence: DimensionScore,
    /// Arousal scores.
    pub arousal: DimensionScore,
    /// Frames scored (labelled frames).
    pub frames: usize,
}

/// Reads a `valence,arousal` file: one `[valence, arousal]` per frame, in file order.
pub fn read_va_csv(path: &Path) -> Result<Vec<[f64; 2]>, ScoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_va_csv(&text, path)
}

/// Parses the text of a `valence,arousal` file; `path` only names the file in errors.
pub fn parse_va_csv(text: &str, path: &Path) -> Result<Vec<[f64; 2]>, ScoreError> {
    let parse_error = |line: usize, message: String| ScoreError::Parse {
        path: path.to_owned(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    match lines.next() {
        Some((_, header))
            if header
                .replace(' ', "")
                .eq_ignore_ascii_case("valence,arousal") => {}
        Some((line, header)) => {
            return Err(parse_error(
                line,
                format!("expected header `valence,arousal`, found `{header}`"),
            ));
        }
        None => {
            return Err(parse_error(
                1,
                "empty file, expected header `valence,arousal`".into(),
            ));
        }
    }
    let mut rows = Vec::new();
    for (line, row) in lines {
        if row.is_empty() {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != 2 {
            return Err(parse_error(
                line,
                format!("expected 2 comma-separated values, found {}", fields.len()),
            ));
        }
        let mut va = [0.0; 2];
        for (slot, (field, name)) in va.iter_mut().zip(fields.iter().zip(["valence", "arousal"])) {
            *slot = field
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    parse_error(line, format!("{name}: `{field}` is not a finite number"))
                })?;
        }
        rows.push(va);
    }
    Ok(rows)
}

/// Scores a prediction file against a truth file (pooled over all labelled frames).
pub fn score_files(pred_path: &Path, truth_path: &Path) -> Result<Score, ScoreError> {
    let pred = read_va_csv(pred_path)?;
    let truth = read_va_csv(truth_path)?;
    if pred.len() != truth.len() {
        return Err(ScoreError::RowCount {
            pred_path: pred_path.to_owned(),
            pred: pred.len(),
            truth_path: truth_path.to_owned(),
            truth: truth.len(),
        });
    }
    let (mut p, mut t) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for (i, (pv, tv)) in pred.iter().zip(&truth).enumerate() {
        if tv.contains(&INVALID) {
            continue;
        }
        if pv.contains(&INVALID) {
            return Err(ScoreError::MissingPrediction {
                path: pred_path.to_owned(),
                line: i + 2,
            });
        }
        for d in 0..2 {
            p[d].push(pv[d]);
            t[d].push(tv[d]);
        }
    }
    let dim = |d: usize| -> Option<DimensionScore> {
        Some(DimensionScore {
            ccc: metrics::ccc(&p[d], &t[d])?,
            mse: metrics::mse(&p[d], &t[d])?,
        })
    };
    match (dim(0), dim(1)) {
        (Some(valence), Some(arousal)) => Ok(Score {
            valence,
            arousal,
            frames: p[0].len(),
        }),
        _ => Err(ScoreError::NoLabelledFrames {
            path: truth_path.to_owned(),
        }),
    }
}
