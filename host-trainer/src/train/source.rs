//! Where training and evaluation data come from, as two small traits, and their conversion to
//! tensors. The dataset loader implements them; tests implement them in memory.

use affect_shared::contract::LANDMARK_VALUES;
use tch::{Device, Kind, Tensor};

use crate::data::Batch;

/// Error of a data source (the loader's own error type, boxed).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// An endless stream of training batches, deterministic in its seed and position: after
/// [`BatchSource::seek`]`(n)` the next batch is the one the `n`-th call of
/// [`BatchSource::next_batch`] returned, so a resumed run sees exactly the same data.
pub trait BatchSource {
    /// The next batch (`sequences × steps` as the training config asks).
    fn next_batch(&mut self) -> Result<Batch, SourceError>;
    /// Batches returned so far.
    fn position(&self) -> u64;
    /// Continue as if `position` batches had been drawn.
    fn seek(&mut self, position: u64) -> Result<(), SourceError>;
}

/// Whole videos of a split, read in consecutive clips (evaluation, validation).
pub trait VideoSource {
    /// Video names, in a fixed order.
    fn videos(&self) -> Vec<String>;
    /// Number of frames (annotation lines) of `video`.
    fn frames(&self, video: &str) -> Result<usize, SourceError>;
    /// Frames `first .. first + count` of `video` as one sequence (`sequences == 1`).
    fn clip(&self, video: &str, first: usize, count: usize) -> Result<Batch, SourceError>;
}

/// A borrowed video source is one too (e.g. to hand out a shared validation set).
impl<T: VideoSource + ?Sized> VideoSource for &T {
    fn videos(&self) -> Vec<String> {
        (**self).videos()
    }
    fn frames(&self, video: &str) -> Result<usize, SourceError> {
        (**self).frames(video)
    }
    fn clip(&self, video: &str, first: usize, count: usize) -> Result<Batch, SourceError> {
        (**self).clip(video, first, count)
    }
}

/// A [`Batch`] as tensors on `device`: faces `[B, T, 3, S, S]`, landmarks `[B, T, 136]`,
/// labels `[B, T, 2]`, mask `[B, T]`, face presence `[B, T]`.
#[derive(Debug)]
pub struct BatchTensors {
    /// Face crops.
    pub faces: Tensor,
    /// Landmarks.
    pub landmarks: Tensor,
    /// Valence, arousal.
    pub labels: Tensor,
    /// 1 where the frame counts.
    pub mask: Tensor,
    /// 1 where the frame has a face: the recurrent state advances only there.
    pub present: Tensor,
}

/// Why a batch cannot become tensors.
#[derive(Debug, thiserror::Error)]
#[error(
    "batch of {sequences}×{steps} frames at {size}px: `{field}` has {got} values, expected {expected}"
)]
pub struct BatchShapeError {
    /// Offending field.
    pub field: &'static str,
    /// Values present.
    pub got: usize,
    /// Values expected.
    pub expected: usize,
    /// Batch sequences.
    pub sequences: usize,
    /// Batch steps.
    pub steps: usize,
    /// Crop size.
    pub size: usize,
}

impl BatchTensors {
    /// Checks the lengths of every field and uploads them.
    pub fn new(batch: &Batch, device: Device) -> Result<Self, BatchShapeError> {
        let (b, t, s) = (batch.sequences, batch.steps, batch.size);
        let check = |field, got: usize, expected| {
            if got == expected {
                Ok(())
            } else {
                Err(BatchShapeError {
                    field,
                    got,
                    expected,
                    sequences: b,
                    steps: t,
                    size: s,
                })
            }
        };
        check("faces", batch.faces.len(), b * t * 3 * s * s)?;
        check("landmarks", batch.landmarks.len(), b * t * LANDMARK_VALUES)?;
        check("labels", batch.labels.len(), b * t * 2)?;
        check("mask", batch.mask.len(), b * t)?;
        check("present", batch.present.len(), b * t)?;
        let (b, t, s) = (b as i64, t as i64, s as i64);
        let up = |v: &[f32], shape: &[i64]| {
            Tensor::from_slice(v)
                .reshape(shape)
                .to_kind(Kind::Float)
                .to_device(device)
        };
        Ok(Self {
            faces: up(&batch.faces, &[b, t, 3, s, s]),
            landmarks: up(&batch.landmarks, &[b, t, LANDMARK_VALUES as i64]),
            labels: up(&batch.labels, &[b, t, 2]),
            mask: up(&batch.mask, &[b, t]),
            present: up(&batch.present, &[b, t]),
        })
    }
}
