//! Running a trained model over whole videos and scoring the result.

use affect_shared::metadata::{DimensionScore, Validation};
use affect_shared::metrics::VaMoments;
use serde::Serialize;

use crate::model::Model;
use crate::train::source::{BatchTensors, VideoSource};

use super::EvalError;

/// One video's predictions and labels, frame by frame.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoPrediction {
    /// Video name.
    pub video: String,
    /// Predicted (valence, arousal) for every frame.
    pub predictions: Vec<[f32; 2]>,
    /// Labels for every frame (meaningless where `scored` is false).
    pub truth: Vec<[f32; 2]>,
    /// Whether the frame has a face and a label (it counts in the scores).
    pub scored: Vec<bool>,
}

impl VideoPrediction {
    /// CCC/MSE accumulators over this video's scored frames.
    pub fn moments(&self) -> VaMoments {
        let mut m = VaMoments::new();
        for ((p, t), s) in self.predictions.iter().zip(&self.truth).zip(&self.scored) {
            if *s {
                m.push(*p, *t);
            }
        }
        m
    }
}

/// CCC/MSE of both dimensions from accumulated moments; `None` without scored frames.
pub fn scores(m: &VaMoments) -> Option<Validation> {
    Some(Validation {
        valence: DimensionScore {
            ccc: m.valence.ccc()?,
            mse: m.valence.mse()?,
        },
        arousal: DimensionScore {
            ccc: m.arousal.ccc()?,
            mse: m.arousal.mse()?,
        },
        frames: m.count(),
    })
}

/// Scores pooled over all frames of all videos (the challenge's protocol) and per video.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitScores {
    /// Pooled over every scored frame.
    pub pooled: Option<Validation>,
    /// Per video, in source order (`None` for a video without scored frames).
    pub videos: Vec<(String, Option<Validation>)>,
}

/// Pools the videos' moments.
pub fn split_scores(predictions: &[VideoPrediction]) -> SplitScores {
    let mut pooled = VaMoments::new();
    let mut videos = Vec::new();
    for p in predictions {
        let m = p.moments();
        pooled.merge(&m);
        videos.push((p.video.clone(), scores(&m)));
    }
    SplitScores {
        pooled: scores(&pooled),
        videos,
    }
}

/// Runs `model` (evaluation mode) over every frame of `video`, `chunk` frames at a time, carrying
/// the recurrent state from chunk to chunk, so the result equals one pass over the whole video.
pub fn predict_video(
    model: &Model,
    source: &dyn VideoSource,
    video: &str,
    chunk: usize,
) -> Result<VideoPrediction, EvalError> {
    let frames = source.frames(video).map_err(|e| EvalError::Data {
        video: video.to_owned(),
        source: e,
    })?;
    let mut out = VideoPrediction {
        video: video.to_owned(),
        predictions: Vec::with_capacity(frames),
        truth: Vec::with_capacity(frames),
        scored: Vec::with_capacity(frames),
    };
    let mut state = None;
    let mut first = 0;
    while first < frames {
        let count = chunk.max(1).min(frames - first);
        let clip = source
            .clip(video, first, count)
            .map_err(|e| EvalError::Data {
                video: video.to_owned(),
                source: e,
            })?;
        let t = BatchTensors::new(&clip, model.device())?;
        let (pred, next) = tch::no_grad(|| {
            model.forward(
                &t.faces,
                Some(&t.landmarks),
                Some(&t.present),
                state.as_ref(),
                false,
            )
        })?;
        state = next;
        let pred = Vec::<f32>::try_from(pred.reshape([-1]).to_device(tch::Device::Cpu))
            .map_err(crate::model::ModelError::from)?;
        for i in 0..count {
            out.predictions.push([pred[2 * i], pred[2 * i + 1]]);
            out.truth.push([clip.labels[2 * i], clip.labels[2 * i + 1]]);
            out.scored.push(clip.mask[i] > 0.5);
        }
        first += count;
    }
    Ok(out)
}

/// Predicts every video of `source`.
pub fn predict_split(
    model: &Model,
    source: &dyn VideoSource,
    chunk: usize,
) -> Result<Vec<VideoPrediction>, EvalError> {
    source
        .videos()
        .iter()
        .map(|v| predict_video(model, source, v, chunk))
        .collect()
}
