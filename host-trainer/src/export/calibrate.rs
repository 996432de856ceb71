//! Activation ranges for int8 quantization: runs the float model in tract over calibration clips
//! (state carried frame to frame within a clip, reset between clips) and records, for every
//! tensor [`super::quantize::calibration_targets`] lists, its
//! min/max or a central percentile interval.

use affect_shared::contract::LANDMARK_VALUES;
use std::collections::HashMap;

use tract_onnx::pb;

use super::quantize::{self, ActivationRange, QuantizeError};
use super::runner::{RunError, TractStreaming};

/// How a tensor's observed values become its quantization range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// Smallest and largest value seen.
    MinMax,
    /// The central `p` % of values (e.g. 99.99): outliers beyond are clipped.
    Percentile(f64),
}

/// Consecutive frames of one video, batch 1.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationClip {
    /// `[T, 3, S, S]` preprocessed faces.
    pub faces: Vec<f32>,
    /// `[T, 136]` landmarks, when the model takes them.
    pub landmarks: Option<Vec<f32>>,
    /// T.
    pub frames: usize,
    /// `[T]`, 1 where the frame has a face: only those frames step the model.
    pub present: Vec<f32>,
}

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// The model's structure could not be analysed.
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    /// Running the float model failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// No frame with a face was given.
    #[error("calibration needs at least one frame with a face")]
    NoFrames,
    /// A percentile outside (0, 100].
    #[error("percentile {0} must be in (0, 100]")]
    BadPercentile(f64),
}

/// Values kept per tensor for percentiles: beyond this the sample is thinned by half (every
/// other value), so memory stays bounded whatever the calibration size.
const SAMPLE_CAP: usize = 1 << 20;

/// Running statistics of one tensor.
#[derive(Debug, Default)]
struct Observed {
    min: f32,
    max: f32,
    seen: bool,
    sample: Vec<f32>,
    stride: usize,
    counter: usize,
}

impl Observed {
    fn record(&mut self, values: &[f32], keep_sample: bool) {
        for &v in values {
            if !self.seen {
                (self.min, self.max, self.seen) = (v, v, true);
                self.stride = 1;
            }
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            if keep_sample {
                if self.counter.is_multiple_of(self.stride) {
                    self.sample.push(v);
                }
                self.counter += 1;
                if self.sample.len() >= SAMPLE_CAP {
                    let thinned = self.sample.iter().step_by(2).copied().collect();
                    self.sample = thinned;
                    self.stride *= 2;
                }
            }
        }
    }

    fn range(mut self, method: RangeMethod) -> ActivationRange {
        match method {
            RangeMethod::MinMax => ActivationRange {
                min: self.min,
                max: self.max,
            },
            RangeMethod::Percentile(p) => {
                self.sample.sort_by(f32::total_cmp);
                let n = self.sample.len();
                let at = |q: f64| self.sample[((q * (n - 1) as f64).round() as usize).min(n - 1)];
                let tail = (100.0 - p) / 200.0;
                ActivationRange {
                    min: at(tail),
                    max: at(1.0 - tail),
                }
            }
        }
    }
}

/// Ranges of every calibration target of `model` over `clips`.
pub fn calibrate(
    model: &pb::ModelProto,
    clips: &[CalibrationClip],
    method: RangeMethod,
) -> Result<HashMap<String, ActivationRange>, CalibrateError> {
    if let RangeMethod::Percentile(p) = method
        && !(p > 0.0 && p <= 100.0)
    {
        return Err(CalibrateError::BadPercentile(p));
    }
    if clips.iter().all(|c| !c.present.iter().any(|p| *p > 0.5)) {
        return Err(CalibrateError::NoFrames);
    }
    let targets = quantize::calibration_targets(model)?;
    let mut runner = TractStreaming::new(model, 1, &targets)?;
    let size = runner.layout().size;
    let face_len = 3 * size * size;
    let keep_sample = matches!(method, RangeMethod::Percentile(_));
    let mut observed: Vec<Observed> = targets.iter().map(|_| Observed::default()).collect();
    for clip in clips {
        runner.reset();
        // Frames without a face do not step the network (the rule of `affect_shared::contract`),
        // so they contribute no activations either.
        for t in (0..clip.frames).filter(|&t| clip.present.get(t).is_some_and(|p| *p > 0.5)) {
            let face = clip
                .faces
                .get(t * face_len..(t + 1) * face_len)
                .unwrap_or(&[]);
            let landmarks = clip.landmarks.as_ref().map(|l| {
                l.get(t * LANDMARK_VALUES..(t + 1) * LANDMARK_VALUES)
                    .unwrap_or(&[])
            });
            let step = runner.step(face, landmarks)?;
            for (obs, values) in observed.iter_mut().zip(&step.extra) {
                obs.record(values, keep_sample);
            }
        }
    }
    Ok(targets
        .into_iter()
        .zip(observed)
        .map(|(name, obs)| (name, obs.range(method)))
        .collect())
}
