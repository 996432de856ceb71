//! The paper's hand-crafted baseline (§4): HOG features of the face crop (and, optionally, the
//! 136 landmark values) → one linear SVR per dimension. Its predictions go through the same
//! report, CSV and plot writers as the networks' (`affect-train baseline`).

pub mod hog;
pub mod svr;

use affect_shared::contract::LANDMARK_VALUES;
use serde::{Deserialize, Serialize};

use crate::eval::EvalError;
use crate::eval::predict::VideoPrediction;
use crate::train::source::VideoSource;
use hog::HogParams;
use svr::{LinearSvr, SvrParams};

/// Baseline settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineConfig {
    /// HOG parameters.
    pub hog: HogParams,
    /// SVR parameters (shared by both dimensions).
    pub svr: SvrParams,
    /// Append the 136 landmark values to the HOG features.
    pub landmarks: bool,
    /// Use every `frame_stride`-th scored training frame (neighbouring frames are near copies).
    pub frame_stride: usize,
    /// Frames read per clip.
    pub chunk: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            hog: HogParams::default(),
            svr: SvrParams::default(),
            landmarks: true,
            frame_stride: 2,
            chunk: 256,
        }
    }
}

/// A fitted baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    config: BaselineConfig,
    valence: LinearSvr,
    arousal: LinearSvr,
}

/// One frame's feature row, label and whether it is scored.
type FrameFeatures = (Vec<f32>, [f32; 2], bool);

/// Feature rows of every frame of `video`, with labels and scored flags.
fn video_features(
    source: &dyn VideoSource,
    video: &str,
    config: &BaselineConfig,
) -> Result<Vec<FrameFeatures>, EvalError> {
    let data_err = |e| EvalError::Data {
        video: video.to_owned(),
        source: e,
    };
    let frames = source.frames(video).map_err(data_err)?;
    let mut out = Vec::with_capacity(frames);
    let mut first = 0;
    while first < frames {
        let count = config.chunk.max(1).min(frames - first);
        let clip = source.clip(video, first, count).map_err(data_err)?;
        let px = 3 * clip.size * clip.size;
        for i in 0..count {
            let mut row = hog::hog(&clip.faces[i * px..(i + 1) * px], clip.size, config.hog);
            if config.landmarks {
                row.extend_from_slice(
                    &clip.landmarks[i * LANDMARK_VALUES..(i + 1) * LANDMARK_VALUES],
                );
            }
            out.push((
                row,
                [clip.labels[2 * i], clip.labels[2 * i + 1]],
                clip.mask[i] > 0.5,
            ));
        }
        first += count;
    }
    Ok(out)
}

impl Baseline {
    /// Fits both SVRs on the scored frames of every video of `train`.
    pub fn fit(train: &dyn VideoSource, config: BaselineConfig) -> Result<Self, EvalError> {
        let (mut rows, mut valence, mut arousal) = (Vec::new(), Vec::new(), Vec::new());
        for video in train.videos() {
            let scored = video_features(train, &video, &config)?
                .into_iter()
                .filter(|(_, _, s)| *s)
                .step_by(config.frame_stride.max(1));
            for (row, label, _) in scored {
                rows.push(row);
                valence.push(label[0]);
                arousal.push(label[1]);
            }
        }
        if rows.is_empty() || rows[0].is_empty() {
            return Err(EvalError::Empty("training split".into()));
        }
        Ok(Self {
            config,
            valence: LinearSvr::fit(&rows, &valence, config.svr),
            arousal: LinearSvr::fit(&rows, &arousal, config.svr),
        })
    }

    /// Predicts every frame of every video of `source`.
    pub fn predict(&self, source: &dyn VideoSource) -> Result<Vec<VideoPrediction>, EvalError> {
        source
            .videos()
            .into_iter()
            .map(|video| {
                let frames = video_features(source, &video, &self.config)?;
                let mut p = VideoPrediction {
                    video,
                    predictions: Vec::with_capacity(frames.len()),
                    truth: Vec::with_capacity(frames.len()),
                    scored: Vec::with_capacity(frames.len()),
                };
                for (row, label, scored) in frames {
                    p.predictions
                        .push([self.valence.predict(&row), self.arousal.predict(&row)]);
                    p.truth.push(label);
                    p.scored.push(scored);
                }
                Ok(p)
            })
            .collect()
    }
}
