//! Preprocessed videos held in memory, serving both data traits: random training clips
//! ([`BatchSource`], deterministic in seed and position) and whole videos ([`VideoSource`]).
//! Small datasets (synthetic sets, ablations, tests) are loaded once into this form.

use affect_shared::contract::LANDMARK_VALUES;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::source::{BatchSource, SourceError, VideoSource};
use crate::data::Batch;

/// One preprocessed video: per frame a `3 × size × size` crop, 136 landmark values, a
/// (valence, arousal) label, a mask (1 = face and label present) and the face presence.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryVideo {
    /// Video name.
    pub name: String,
    /// `[T, 3, S, S]`.
    pub faces: Vec<f32>,
    /// `[T, 136]`.
    pub landmarks: Vec<f32>,
    /// `[T, 2]`.
    pub labels: Vec<f32>,
    /// `[T]`.
    pub mask: Vec<f32>,
    /// `[T]`: 1 where the frame has a face.
    pub present: Vec<f32>,
}

impl MemoryVideo {
    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.mask.len()
    }
}

/// Videos of one split at one crop size.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryDataset {
    /// Crop side length.
    pub size: usize,
    /// The videos.
    pub videos: Vec<MemoryVideo>,
}

/// A video name that is not in the dataset, or a clip outside a video.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Unknown video.
    #[error("no video named {0}")]
    UnknownVideo(String),
    /// Frames outside the video.
    #[error("video {video} has {frames} frames; frames {first}..{end} requested")]
    OutOfRange {
        /// Video name.
        video: String,
        /// Its length.
        frames: usize,
        /// First frame asked.
        first: usize,
        /// One past the last frame asked.
        end: usize,
    },
    /// No video is long enough for the requested clip length.
    #[error("no video has {0} frames for a training clip")]
    TooShort(usize),
    /// Replacement labels that do not fit the dataset.
    #[error(
        "labels `{name}`: {labels} label rows for a dataset of {videos} videos, or a video's \
             rows do not match its frame count"
    )]
    LabelShape {
        /// The labels' name (an annotator).
        name: String,
        /// Videos the labels cover.
        labels: usize,
        /// Videos in the dataset.
        videos: usize,
    },
}

/// Another set of labels for a [`MemoryDataset`]'s frames — one annotator's trace instead of
/// the annotators' mean — that [`MemoryBatches::with_labels`] trains on; faces, masks and
/// presence stay the dataset's.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryLabels {
    /// Name (e.g. `annotator-1`).
    pub name: String,
    /// Per video, in the dataset's order: `[T, 2]`.
    pub videos: Vec<Vec<f32>>,
}

impl MemoryDataset {
    fn video(&self, name: &str) -> Result<&MemoryVideo, MemoryError> {
        self.videos
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| MemoryError::UnknownVideo(name.to_owned()))
    }

    /// Copies frames `first..first + count` of video `v` into `batch` (appending one sequence).
    fn append_clip(&self, v: &MemoryVideo, first: usize, count: usize, batch: &mut Batch) {
        let px = 3 * self.size * self.size;
        let end = first + count;
        batch
            .faces
            .extend_from_slice(&v.faces[first * px..end * px]);
        batch
            .landmarks
            .extend_from_slice(&v.landmarks[first * LANDMARK_VALUES..end * LANDMARK_VALUES]);
        batch
            .labels
            .extend_from_slice(&v.labels[first * 2..end * 2]);
        batch.mask.extend_from_slice(&v.mask[first..end]);
        batch.present.extend_from_slice(&v.present[first..end]);
        batch.videos.push(v.name.clone());
        batch.first_frames.push(first as u32);
        batch.sequences += 1;
    }

    fn empty_batch(&self, steps: usize) -> Batch {
        Batch {
            sequences: 0,
            steps,
            size: self.size,
            faces: Vec::new(),
            landmarks: Vec::new(),
            labels: Vec::new(),
            mask: Vec::new(),
            present: Vec::new(),
            videos: Vec::new(),
            first_frames: Vec::new(),
        }
    }
}

impl VideoSource for MemoryDataset {
    fn videos(&self) -> Vec<String> {
        self.videos.iter().map(|v| v.name.clone()).collect()
    }

    fn frames(&self, video: &str) -> Result<usize, SourceError> {
        Ok(self.video(video)?.frames())
    }

    fn clip(&self, video: &str, first: usize, count: usize) -> Result<Batch, SourceError> {
        let v = self.video(video)?;
        if first + count > v.frames() {
            return Err(MemoryError::OutOfRange {
                video: video.to_owned(),
                frames: v.frames(),
                first,
                end: first + count,
            }
            .into());
        }
        let mut batch = self.empty_batch(count);
        self.append_clip(v, first, count, &mut batch);
        Ok(batch)
    }
}

/// Random training clips from a [`MemoryDataset`]: batch `n` is drawn with a generator seeded by
/// `(seed, n)`, so seeking is free and exact.
#[derive(Debug, Clone)]
pub struct MemoryBatches {
    dataset: Arc<MemoryDataset>,
    labels: Option<Arc<MemoryLabels>>,
    seed: u64,
    sequences: usize,
    steps: usize,
    position: u64,
}

impl MemoryBatches {
    /// Batches of `sequences` clips of `steps` frames; videos shorter than `steps` are skipped.
    pub fn new(
        dataset: Arc<MemoryDataset>,
        seed: u64,
        sequences: usize,
        steps: usize,
    ) -> Result<Self, MemoryError> {
        if !dataset.videos.iter().any(|v| v.frames() >= steps) {
            return Err(MemoryError::TooShort(steps));
        }
        Ok(Self {
            dataset,
            labels: None,
            seed,
            sequences,
            steps,
            position: 0,
        })
    }

    /// The same batches (same clips) labelled with `labels` instead of the dataset's labels.
    pub fn with_labels(mut self, labels: Arc<MemoryLabels>) -> Result<Self, MemoryError> {
        let fits = labels.videos.len() == self.dataset.videos.len()
            && labels
                .videos
                .iter()
                .zip(&self.dataset.videos)
                .all(|(l, v)| l.len() == 2 * v.frames());
        if !fits {
            return Err(MemoryError::LabelShape {
                name: labels.name.clone(),
                labels: labels.videos.len(),
                videos: self.dataset.videos.len(),
            });
        }
        self.labels = Some(labels);
        Ok(self)
    }
}

impl BatchSource for MemoryBatches {
    fn next_batch(&mut self) -> Result<Batch, SourceError> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ self.position.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let long: Vec<(usize, &MemoryVideo)> = self
            .dataset
            .videos
            .iter()
            .enumerate()
            .filter(|(_, v)| v.frames() >= self.steps)
            .collect();
        let mut batch = self.dataset.empty_batch(self.steps);
        // Videos weighted by length, so every frame is equally likely to be drawn.
        let total: usize = long.iter().map(|(_, v)| v.frames() - self.steps + 1).sum();
        for _ in 0..self.sequences {
            let mut pick = rng.random_range(0..total);
            for &(index, v) in &long {
                let starts = v.frames() - self.steps + 1;
                if pick < starts {
                    self.dataset.append_clip(v, pick, self.steps, &mut batch);
                    if let Some(labels) = &self.labels {
                        let end = batch.labels.len();
                        let rows = &labels.videos[index][2 * pick..2 * (pick + self.steps)];
                        batch.labels[end - rows.len()..].copy_from_slice(rows);
                    }
                    break;
                }
                pick -= starts;
            }
        }
        self.position += 1;
        Ok(batch)
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn seek(&mut self, position: u64) -> Result<(), SourceError> {
        self.position = position;
        Ok(())
    }
}

/// Renders videos `indices` of the synthetic dataset `(synth, seed)` (the same faces
/// `affect-train synth` writes to disk) and preprocesses every frame with `preprocess`, in
/// parallel; deterministic. Frames without a face or annotation get mask 0 (and zero pixels /
/// labels), frames without a face present 0, exactly as the loader reads them from disk. The
/// labels are the frames' annotation: with `synth.annotators > 0`, the annotators' mean.
pub fn render_synthetic(
    synth: &affect_shared::synth::SynthConfig,
    seed: u64,
    indices: std::ops::Range<u64>,
    preprocess: &affect_shared::preprocess::Preprocess,
) -> Result<MemoryDataset, affect_shared::preprocess::PreprocessError> {
    render_synthetic_annotated(synth, seed, indices, preprocess).map(|(dataset, _)| dataset)
}

/// [`render_synthetic`], plus each simulated annotator's own labels (`synth.annotators` of them,
/// named `annotator-1`, …; zeros where the frame is unannotated, as in the mean's labels).
pub fn render_synthetic_annotated(
    synth: &affect_shared::synth::SynthConfig,
    seed: u64,
    indices: std::ops::Range<u64>,
    preprocess: &affect_shared::preprocess::Preprocess,
) -> Result<(MemoryDataset, Vec<MemoryLabels>), affect_shared::preprocess::PreprocessError> {
    use affect_shared::preprocess::FaceBox;
    use affect_shared::synth::SyntheticVideo;
    use rayon::prelude::*;

    preprocess.validate()?;
    let size = preprocess.size as usize;
    let px = 3 * size * size;
    let rendered = indices
        .into_par_iter()
        .map(|index| {
            let mut annotators: Vec<Vec<f32>> = vec![Vec::new(); synth.annotators];
            let mut video = MemoryVideo {
                name: format!("synthetic-{index:04}"),
                faces: Vec::new(),
                landmarks: Vec::new(),
                labels: Vec::new(),
                mask: Vec::new(),
                present: Vec::new(),
            };
            for frame in SyntheticVideo::new(synth, seed, index) {
                let label = frame.annotation.unwrap_or([0.0, 0.0]);
                for (k, labels) in annotators.iter_mut().enumerate() {
                    labels.extend(frame.annotators.get(k).copied().unwrap_or([0.0, 0.0]));
                }
                let input = match &frame.face {
                    Some((crop, landmarks)) => {
                        let (w, h) = crop.dimensions();
                        let face = FaceBox::whole_crop(w, h, preprocess.margin);
                        Some(preprocess.face_input(crop, &face, Some(landmarks))?)
                    }
                    None => None,
                };
                match input {
                    Some(input) => {
                        video.faces.extend_from_slice(&input.pixels);
                        video
                            .landmarks
                            .extend_from_slice(&input.landmarks.unwrap_or([0.0; LANDMARK_VALUES]));
                    }
                    None => {
                        video.faces.extend(std::iter::repeat_n(0.0, px));
                        video.landmarks.extend([0.0; LANDMARK_VALUES]);
                    }
                }
                let usable = frame.face.is_some() && frame.annotation.is_some();
                video.labels.extend(label);
                video.mask.push(if usable { 1.0 } else { 0.0 });
                video
                    .present
                    .push(if frame.face.is_some() { 1.0 } else { 0.0 });
            }
            Ok((video, annotators))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut labels: Vec<MemoryLabels> = (0..synth.annotators)
        .map(|k| MemoryLabels {
            name: affect_shared::synth::annotator_name(k),
            videos: Vec::with_capacity(rendered.len()),
        })
        .collect();
    let mut videos = Vec::with_capacity(rendered.len());
    for (video, annotators) in rendered {
        videos.push(video);
        for (l, a) in labels.iter_mut().zip(annotators) {
            l.videos.push(a);
        }
    }
    Ok((MemoryDataset { size, videos }, labels))
}
