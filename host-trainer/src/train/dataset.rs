//! Dataset directories as the training traits: the data module's [`Loader`] behind
//! [`BatchSource`] (epochs of shuffled or quadrant-balanced clips, exact seeking for `--resume`)
//! and behind [`VideoSource`] (whole videos in consecutive chunks), plus whole splits loaded into
//! a [`MemoryDataset`] for ablations.

use affect_shared::contract::LANDMARK_VALUES;
use std::path::Path;
use std::sync::Arc;

use crate::data::sampling::BalanceConfig;
use crate::data::{
    Annotation, Batch, Clip, DataError, Dataset, Epoch, Loader, LoaderConfig, ReadOptions,
};

use super::config::TrainConfig;
use super::memory::{MemoryDataset, MemoryVideo};
use super::source::{BatchSource, SourceError, VideoSource};

/// Frames per clip when reading whole videos.
const VIDEO_CHUNK: usize = 128;

fn open(data: &Path, split: &str, annotation: &Annotation) -> Result<Arc<Dataset>, DataError> {
    let options = ReadOptions {
        annotation: annotation.clone(),
        ..ReadOptions::default()
    };
    let dataset = Dataset::open(data, split, &options)?;
    if !dataset.problems.is_empty() {
        tracing::warn!(
            "{}: {} problems while reading split {split} (see `affect-train data inspect`)",
            data.display(),
            dataset.problems.len()
        );
    }
    Ok(Arc::new(dataset))
}

/// Training batches of `config.data.train_split` labelled with `config.data.annotation`:
/// `config.batch_shape()` clips, shuffled (or quadrant-balanced) per epoch with `config.seed`,
/// endlessly.
pub fn training_batches(
    data: &Path,
    config: &TrainConfig,
) -> Result<Box<dyn BatchSource>, DataError> {
    let dataset = open(data, &config.data.train_split, &config.data.annotation)?;
    let (sequences, steps) = config.batch_shape();
    let loader = Loader::new(
        dataset,
        config.preprocess(),
        LoaderConfig {
            batch_size: sequences,
            steps,
            // Half-overlapping windows for sequences; every frame for CNN batches.
            stride: (steps / 2).max(1),
            seed: config.seed,
            drop_last: true,
            balance: config.data.balance.then(BalanceConfig::default),
            cache_dir: config.data.cache_dir.clone(),
            workers: config
                .data
                .workers
                .unwrap_or(LoaderConfig::default().workers),
            ..LoaderConfig::default()
        },
    )?;
    Ok(Box::new(LoaderBatches::new(loader)?))
}

/// A [`Loader`]'s epochs as one endless, seekable stream.
struct LoaderBatches {
    loader: Loader,
    epoch: u64,
    /// Batch index inside the epoch of the next batch.
    offset: usize,
    /// Batches in the current epoch.
    epoch_len: usize,
    /// Prefetching iterator, when reading from the start of an epoch.
    running: Option<Epoch>,
    position: u64,
}

impl LoaderBatches {
    fn new(loader: Loader) -> Result<Self, DataError> {
        let mut s = Self {
            loader,
            epoch: 0,
            offset: 0,
            epoch_len: 0,
            running: None,
            position: 0,
        };
        s.start_epoch(0, 0)?;
        Ok(s)
    }

    fn batches_in(&self, epoch: u64) -> Result<usize, DataError> {
        let plan = self.loader.plan(epoch)?;
        Ok(plan.order.len() / self.loader.config().batch_size)
    }

    /// Positions at batch `offset` of `epoch`; prefetches when starting at its beginning.
    fn start_epoch(&mut self, epoch: u64, offset: usize) -> Result<(), DataError> {
        self.epoch = epoch;
        self.offset = offset;
        self.epoch_len = self.batches_in(epoch)?;
        if self.epoch_len == 0 {
            return Err(DataError::Config(
                "the training split has fewer clips than one batch".into(),
            ));
        }
        self.running = None;
        if offset == 0 {
            let running = self.loader.epoch(epoch)?;
            if let Some(summary) = running.balance() {
                tracing::info!("epoch {epoch}: {summary}");
            }
            self.running = Some(running);
        }
        Ok(())
    }
}

impl BatchSource for LoaderBatches {
    fn next_batch(&mut self) -> Result<Batch, SourceError> {
        if self.offset >= self.epoch_len {
            self.start_epoch(self.epoch + 1, 0)?;
        }
        let batch = match self.running.as_mut().and_then(Iterator::next) {
            Some(batch) => batch,
            None => {
                // Mid-epoch after a seek: the same clips the epoch iterator would give.
                let plan = self.loader.plan(self.epoch)?;
                let size = self.loader.config().batch_size;
                let clips: Vec<Clip> = plan.order[self.offset * size..(self.offset + 1) * size]
                    .iter()
                    .map(|&i| self.loader.clips()[i])
                    .collect();
                self.loader.load(&clips)
            }
        };
        self.offset += 1;
        self.position += 1;
        Ok(batch)
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn seek(&mut self, position: u64) -> Result<(), SourceError> {
        let mut left = position;
        let mut epoch = 0;
        loop {
            let n = self.batches_in(epoch)? as u64;
            if left < n {
                break;
            }
            left -= n;
            epoch += 1;
        }
        self.start_epoch(epoch, left as usize)?;
        self.position = position;
        Ok(())
    }
}

/// Whole videos of a split, read through a [`Loader`] in chunks of [`VIDEO_CHUNK`] frames.
struct LoaderVideos {
    loader: Loader,
}

impl LoaderVideos {
    fn index(&self, video: &str) -> Result<usize, SourceError> {
        self.loader
            .dataset()
            .videos
            .iter()
            .position(|v| v.name == video)
            .ok_or_else(|| format!("no video named {video}").into())
    }
}

impl VideoSource for LoaderVideos {
    fn videos(&self) -> Vec<String> {
        self.loader
            .dataset()
            .videos
            .iter()
            .map(|v| v.name.clone())
            .collect()
    }

    fn frames(&self, video: &str) -> Result<usize, SourceError> {
        let i = self.index(video)?;
        Ok(self.loader.dataset().videos[i].frames.len())
    }

    fn clip(&self, video: &str, first: usize, count: usize) -> Result<Batch, SourceError> {
        let i = self.index(video)?;
        let clips: Vec<Clip> = (first..first + count)
            .step_by(VIDEO_CHUNK)
            .map(|f| Clip { video: i, first: f })
            .collect();
        let mut batch = self.loader.load(&clips);
        // Consecutive chunks are consecutive frames: one sequence, cut to `count`.
        let size = batch.size;
        batch.faces.truncate(count * 3 * size * size);
        batch.landmarks.truncate(count * LANDMARK_VALUES);
        batch.labels.truncate(count * 2);
        batch.mask.truncate(count);
        batch.present.truncate(count);
        batch.sequences = 1;
        batch.steps = count;
        batch.videos.truncate(1);
        batch.first_frames.truncate(1);
        Ok(batch)
    }
}

/// Whole videos of `split` labelled with `annotation`, preprocessed as `config` says.
pub fn videos(
    data: &Path,
    split: &str,
    annotation: &Annotation,
    config: &TrainConfig,
) -> Result<Box<dyn VideoSource>, DataError> {
    let dataset = open(data, split, annotation)?;
    let loader = Loader::new(
        dataset,
        config.preprocess(),
        LoaderConfig {
            batch_size: 1,
            steps: VIDEO_CHUNK,
            stride: VIDEO_CHUNK,
            shuffle: false,
            cache_dir: config.data.cache_dir.clone(),
            ..LoaderConfig::default()
        },
    )?;
    Ok(Box::new(LoaderVideos { loader }))
}

/// Every frame of `split` labelled with the mean annotation, preprocessed once and held in
/// memory (small datasets: ablations).
pub fn memory_split(
    data: &Path,
    split: &str,
    config: &TrainConfig,
) -> Result<MemoryDataset, SourceError> {
    let source = videos(data, split, &Annotation::Mean, config)?;
    let mut out = MemoryDataset {
        size: config.network.input_size as usize,
        videos: Vec::new(),
    };
    for name in source.videos() {
        let frames = source.frames(&name)?;
        let b = source.clip(&name, 0, frames)?;
        out.videos.push(MemoryVideo {
            name,
            faces: b.faces,
            landmarks: b.landmarks,
            labels: b.labels,
            mask: b.mask,
            present: b.present,
        });
    }
    Ok(out)
}
