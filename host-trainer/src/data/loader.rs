//! The parallel loader: clips of T frames → decoded, preprocessed [`Batch`]es, prefetched by
//! worker threads.
//!
//! * **Clips.** `steps == 1`: every usable frame (face and label) is a clip. `steps > 1`: windows
//!   of `steps` frames every `stride` frames (plus one window ending at the video's last frame, so
//!   every frame is covered; a video shorter than a window gives one padded window); windows
//!   without any usable frame are left out.
//! * **Order.** Per epoch, from `ChaCha8Rng(seed)` on stream `epoch`: shuffled, or quadrant-
//!   balanced ([`super::sampling`]), or in dataset order. Batch `k` holds the same clips whatever
//!   the number of workers, and batches arrive in order: results are deterministic.
//! * **Prefetch.** Workers take batch numbers from a channel that the consumer refills as it goes,
//!   so at most `prefetch` batches are in flight; a reorder buffer restores the order.
//! * **Bad frames.** An image that cannot be decoded or preprocessed is masked out (mask 0),
//!   counted in [`LoadStats`] and logged; loading goes on.
//! * **Cache.** Optionally, each frame's crop (`size`×`size` RGB, before normalisation) is stored
//!   under a key hashing the preprocess description, the file's path, length and modification
//!   time, so later epochs and runs skip JPEG decoding and resampling.

use affect_shared::contract::LANDMARK_VALUES;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use affect_shared::preprocess::{FaceBox, Landmarks68, Preprocess};
use crossbeam_channel::{Receiver, Sender};
use image::RgbImage;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Batch;
use super::dataset::{Dataset, FaceSource, Frame};
use super::problems::DataError;
use super::sampling::{self, BalanceConfig, BalanceSummary};

/// How the loader cuts, orders and prepares the data.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Clips per batch (B).
    pub batch_size: usize,
    /// Frames per clip (T): 1 for CNN training, e.g. 100 for CNN-RNN training.
    pub steps: usize,
    /// Distance between the starts of consecutive windows (`steps > 1`).
    pub stride: usize,
    /// Shuffle the clips every epoch (ignored when balancing, which always shuffles).
    pub shuffle: bool,
    /// Seed of the per-epoch order.
    pub seed: u64,
    /// Worker threads decoding and preprocessing.
    pub workers: usize,
    /// Batches in flight ahead of the consumer.
    pub prefetch: usize,
    /// Leave out the last batch of an epoch when it is not full.
    pub drop_last: bool,
    /// Quadrant oversampling, if wanted.
    pub balance: Option<BalanceConfig>,
    /// Directory of the crop cache, if wanted.
    pub cache_dir: Option<PathBuf>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 80,
            steps: 1,
            stride: 1,
            shuffle: true,
            seed: 0,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            prefetch: 4,
            drop_last: false,
            balance: None,
            cache_dir: None,
        }
    }
}

impl LoaderConfig {
    /// Checks sizes are positive.
    pub fn validate(&self) -> Result<(), DataError> {
        let positive = [
            ("batch_size", self.batch_size),
            ("steps", self.steps),
            ("stride", self.stride),
            ("workers", self.workers),
            ("prefetch", self.prefetch),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(DataError::Config(format!("{name} must be at least 1")));
        }
        if let Some(balance) = &self.balance {
            balance.validate()?;
        }
        Ok(())
    }
}

/// A clip: `steps` consecutive frames of one video starting at `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Clip {
    /// Index of the video in [`Dataset::videos`].
    pub video: usize,
    /// 0-based index of the clip's first frame.
    pub first: usize,
}

/// The order of one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPlan {
    /// Clip indices (into [`Loader::clips`]) in batch order; repeated when oversampled.
    pub order: Vec<usize>,
    /// Quadrant counts before and after balancing, when balancing.
    pub balance: Option<BalanceSummary>,
}

/// Counters of the work done so far (all epochs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadStats {
    /// Face images decoded from disk.
    pub decoded: u64,
    /// Crops read from the cache.
    pub cache_hits: u64,
    /// Frames masked out because their image could not be decoded or preprocessed.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    decoded: AtomicU64,
    cache_hits: AtomicU64,
    failed: AtomicU64,
}

/// What every worker needs, shared.
#[derive(Debug)]
struct Shared {
    dataset: Arc<Dataset>,
    preprocess: Preprocess,
    preprocess_key: Vec<u8>,
    config: LoaderConfig,
    clips: Vec<Clip>,
    counters: Counters,
}

/// Turns a [`Dataset`] into epochs of [`Batch`]es.
#[derive(Debug, Clone)]
pub struct Loader {
    shared: Arc<Shared>,
    clip_labels: Vec<[f32; 2]>,
}

impl Loader {
    /// A loader over `dataset` preprocessing faces with `preprocess`.
    pub fn new(
        dataset: Arc<Dataset>,
        preprocess: Preprocess,
        config: LoaderConfig,
    ) -> Result<Self, DataError> {
        config.validate()?;
        preprocess
            .validate()
            .map_err(|source| DataError::Preprocess {
                path: dataset.root.clone(),
                source,
            })?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(DataError::io(dir))?;
        }
        let (clips, clip_labels) = make_clips(&dataset, config.steps, config.stride);
        let preprocess_key =
            serde_json::to_vec(&preprocess).expect("the preprocess description serialises");
        Ok(Self {
            shared: Arc::new(Shared {
                dataset,
                preprocess,
                preprocess_key,
                config,
                clips,
                counters: Counters::default(),
            }),
            clip_labels,
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.shared.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.shared.config
    }

    /// All clips, in dataset order.
    pub fn clips(&self) -> &[Clip] {
        &self.shared.clips
    }

    /// Mean label of each clip's usable frames (what balancing sorts by).
    pub fn clip_labels(&self) -> &[[f32; 2]] {
        &self.clip_labels
    }

    /// Work counters so far.
    pub fn stats(&self) -> LoadStats {
        let c = &self.shared.counters;
        LoadStats {
            decoded: c.decoded.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// The clip order of epoch `epoch` (deterministic for the seed).
    pub fn plan(&self, epoch: u64) -> Result<EpochPlan, DataError> {
        let config = &self.shared.config;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(epoch);
        if let Some(balance) = &config.balance {
            let (order, summary) = sampling::balance(&self.clip_labels, balance, &mut rng)?;
            return Ok(EpochPlan {
                order,
                balance: Some(summary),
            });
        }
        let mut order: Vec<usize> = (0..self.shared.clips.len()).collect();
        if config.shuffle {
            order.shuffle(&mut rng);
        }
        Ok(EpochPlan {
            order,
            balance: None,
        })
    }

    /// Batches of epoch `epoch`, prefetched by the worker threads.
    pub fn epoch(&self, epoch: u64) -> Result<Epoch, DataError> {
        let plan = self.plan(epoch)?;
        Ok(Epoch::start(Arc::clone(&self.shared), plan))
    }

    /// Loads the given clips as one batch on the calling thread (evaluation, tests).
    pub fn load(&self, clips: &[Clip]) -> Batch {
        build_batch(&self.shared, clips)
    }

    /// Runs up to `max_batches` batches of epoch 0 and measures the rate.
    pub fn throughput(&self, max_batches: usize) -> Result<Throughput, DataError> {
        let start = Instant::now();
        let (mut batches, mut frames) = (0, 0);
        for batch in self.epoch(0)?.take(max_batches) {
            batches += 1;
            frames += batch.sequences * batch.steps;
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(Throughput {
            batches,
            frames,
            seconds,
            frames_per_second: frames as f64 / seconds.max(1e-9),
        })
    }
}

/// A loader throughput measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    /// Batches produced.
    pub batches: usize,
    /// Frames produced (B·T per batch).
    pub frames: usize,
    /// Wall time.
    pub seconds: f64,
    /// Frames per second.
    pub frames_per_second: f64,
}

/// Window starts for a video of `len` frames.
fn window_starts(len: usize, steps: usize, stride: usize) -> Vec<usize> {
    if len <= steps {
        return vec![0];
    }
    let mut starts: Vec<usize> = (0..=len - steps).step_by(stride).collect();
    if starts.last().is_some_and(|&s| s + steps < len) {
        starts.push(len - steps);
    }
    starts
}

fn make_clips(dataset: &Dataset, steps: usize, stride: usize) -> (Vec<Clip>, Vec<[f32; 2]>) {
    let (mut clips, mut labels) = (Vec::new(), Vec::new());
    for (v, video) in dataset.videos.iter().enumerate() {
        if video.frames.is_empty() {
            continue;
        }
        for first in window_starts(video.frames.len(), steps, stride) {
            let usable = video.frames[first..(first + steps).min(video.frames.len())]
                .iter()
                .filter(|f| f.usable())
                .filter_map(|f| f.label);
            let (mut sum, mut n) = ([0.0f32; 2], 0usize);
            for [va, ar] in usable {
                sum[0] += va;
                sum[1] += ar;
                n += 1;
            }
            if n > 0 {
                clips.push(Clip { video: v, first });
                labels.push(sum.map(|s| s / n as f32));
            }
        }
    }
    (clips, labels)
}

/// The batches of one epoch, in order. Dropping it stops the workers.
pub struct Epoch {
    plan: Arc<EpochPlan>,
    jobs: Option<Sender<usize>>,
    results: Receiver<(usize, Batch)>,
    workers: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Batch>,
    next: usize,
    issued: usize,
    batches: usize,
}

impl Epoch {
    fn start(shared: Arc<Shared>, plan: EpochPlan) -> Self {
        let config = &shared.config;
        let full = plan.order.len() / config.batch_size;
        let batches = if config.drop_last || plan.order.len().is_multiple_of(config.batch_size) {
            full
        } else {
            full + 1
        };
        let plan = Arc::new(plan);
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<usize>();
        let (results_tx, results_rx) = crossbeam_channel::unbounded();
        let workers = (0..config.workers)
            .map(|_| {
                let (shared, plan) = (Arc::clone(&shared), Arc::clone(&plan));
                let (jobs, results) = (jobs_rx.clone(), results_tx.clone());
                std::thread::spawn(move || {
                    let size = shared.config.batch_size;
                    for k in jobs {
                        let ids = &plan.order[k * size..((k + 1) * size).min(plan.order.len())];
                        let clips: Vec<Clip> = ids.iter().map(|&i| shared.clips[i]).collect();
                        if results.send((k, build_batch(&shared, &clips))).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        let mut epoch = Self {
            plan,
            jobs: Some(jobs_tx),
            results: results_rx,
            workers,
            pending: BTreeMap::new(),
            next: 0,
            issued: 0,
            batches,
        };
        let prefetch = shared.config.prefetch;
        for _ in 0..prefetch {
            epoch.issue();
        }
        epoch
    }

    fn issue(&mut self) {
        if self.issued < self.batches
            && let Some(jobs) = &self.jobs
            && jobs.send(self.issued).is_ok()
        {
            self.issued += 1;
        }
    }

    /// Number of batches in this epoch.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Quadrant counts before and after balancing, when balancing.
    pub fn balance(&self) -> Option<&BalanceSummary> {
        self.plan.balance.as_ref()
    }
}

impl Iterator for Epoch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.batches {
            return None;
        }
        let batch = loop {
            if let Some(batch) = self.pending.remove(&self.next) {
                break batch;
            }
            // Workers only stop when the job channel closes, which happens on drop: a closed
            // result channel here means a worker panicked.
            let (k, batch) = self
                .results
                .recv()
                .expect("a loader worker thread panicked");
            self.pending.insert(k, batch);
        };
        self.next += 1;
        self.issue();
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batches - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Loads `clips` into one batch: every usable face is loaded (present 1) whether or not its label
/// is valid; mask 1 needs a face and a valid label; zeros where a frame is missing or unusable.
fn build_batch(shared: &Shared, clips: &[Clip]) -> Batch {
    let steps = shared.config.steps;
    let size = shared.preprocess.size as usize;
    let plane = 3 * size * size;
    let cells = clips.len() * steps;
    let mut batch = Batch {
        sequences: clips.len(),
        steps,
        size,
        faces: vec![0.0; cells * plane],
        landmarks: vec![0.0; cells * LANDMARK_VALUES],
        labels: vec![0.0; cells * 2],
        mask: vec![0.0; cells],
        present: vec![0.0; cells],
        videos: Vec::with_capacity(clips.len()),
        first_frames: Vec::with_capacity(clips.len()),
    };
    for (b, clip) in clips.iter().enumerate() {
        let video = &shared.dataset.videos[clip.video];
        batch.videos.push(video.name.clone());
        batch.first_frames.push(clip.first as u32);
        for t in 0..steps {
            let cell = b * steps + t;
            let Some(frame) = video.frames.get(clip.first + t) else {
                continue;
            };
            if let Some(label) = frame.label {
                batch.labels[2 * cell..2 * cell + 2].copy_from_slice(&label);
            }
            let Some(face) = &frame.face else {
                continue;
            };
            match load_face(shared, face, frame) {
                Ok((pixels, landmarks)) => {
                    batch.faces[cell * plane..(cell + 1) * plane].copy_from_slice(&pixels);
                    if let Some(lm) = landmarks {
                        batch.landmarks[cell * LANDMARK_VALUES..(cell + 1) * LANDMARK_VALUES]
                            .copy_from_slice(&lm);
                    }
                    batch.present[cell] = 1.0;
                    if frame.label.is_some() {
                        batch.mask[cell] = 1.0;
                    }
                }
                Err(err) => {
                    let failed = shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if failed < 20 {
                        tracing::warn!(
                            "frame {} of {} skipped: {err}",
                            clip.first + t + 1,
                            video.name
                        );
                    }
                }
            }
        }
    }
    batch
}

/// The face box to crop: the given box, or for an aligned crop the centred square that the
/// preprocess margin enlarges back to the whole crop.
fn face_box(face: &FaceSource, width: u32, height: u32, margin: f32) -> FaceBox {
    match face {
        FaceSource::InFrame { face_box, .. } => *face_box,
        FaceSource::Crop(_) => FaceBox::whole_crop(width, height, margin),
    }
}

/// Normalised pixels and crop-relative landmarks of one frame's face.
fn load_face(
    shared: &Shared,
    face: &FaceSource,
    frame: &Frame,
) -> Result<(Vec<f32>, Option<[f32; LANDMARK_VALUES]>), DataError> {
    let path = face.path();
    let preprocess = &shared.preprocess;
    let landmarks: Option<&Landmarks68> = frame.landmarks.as_deref();
    let preprocess_error = |source| DataError::Preprocess {
        path: path.to_owned(),
        source,
    };
    let cache_file = match &shared.config.cache_dir {
        Some(dir) => Some(cache_path(dir, &shared.preprocess_key, face, landmarks)?),
        None => None,
    };
    let cached = cache_file
        .as_deref()
        .and_then(|file| read_cache(file, preprocess.size));
    let (crop, width, height) = match cached {
        Some(hit) => {
            shared.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            hit
        }
        None => {
            let image = image::open(path)
                .map_err(|source| DataError::Image {
                    path: path.to_owned(),
                    source,
                })?
                .to_rgb8();
            shared.counters.decoded.fetch_add(1, Ordering::Relaxed);
            let (width, height) = image.dimensions();
            let face_box = face_box(face, width, height, preprocess.margin);
            let crop = preprocess
                .crop(&image, &face_box, landmarks)
                .map_err(preprocess_error)?;
            if let Some(file) = &cache_file
                && let Err(err) = write_cache(file, &crop, width, height)
            {
                tracing::warn!("crop cache not written: {err}");
            }
            (crop, width, height)
        }
    };
    let face_box = face_box(face, width, height, preprocess.margin);
    let crop_landmarks = match landmarks {
        Some(lm) => Some(
            preprocess
                .landmarks_in_crop(&face_box, lm)
                .map_err(preprocess_error)?,
        ),
        None if preprocess.landmarks => {
            return Err(DataError::Preprocess {
                path: path.to_owned(),
                source: affect_shared::preprocess::PreprocessError::Landmarks(
                    "this model needs 68 landmarks and the frame has none",
                ),
            });
        }
        None => None,
    };
    Ok((preprocess.normalise(&crop), crop_landmarks))
}

const CACHE_MAGIC: &[u8; 4] = b"AFC1";

/// The cache file of `face`'s crop: a hash of everything the crop depends on (preprocessing,
/// image file, face box, landmarks).
fn cache_path(
    dir: &Path,
    preprocess_key: &[u8],
    face: &FaceSource,
    landmarks: Option<&Landmarks68>,
) -> Result<PathBuf, DataError> {
    let image = face.path();
    let meta = std::fs::metadata(image).map_err(DataError::io(image))?;
    let mut hash = Sha256::new();
    hash.update(preprocess_key);
    hash.update(image.to_string_lossy().as_bytes());
    hash.update(meta.len().to_le_bytes());
    if let Ok(modified) = meta.modified()
        && let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH)
    {
        hash.update(since.as_nanos().to_le_bytes());
    }
    // A face in a full frame is cropped at its box (an aligned crop's box follows from its size).
    if let FaceSource::InFrame { face_box, .. } = face {
        for v in [face_box.x, face_box.y, face_box.w, face_box.h] {
            hash.update(v.to_le_bytes());
        }
    }
    // Eye alignment makes the crop depend on the landmarks too.
    if let Some(lm) = landmarks {
        for v in lm.0.iter().flatten() {
            hash.update(v.to_le_bytes());
        }
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(dir.join(&hex[..2]).join(format!("{}.crop", &hex[2..])))
}

/// A cached crop and the source image's size, or `None` if absent or unusable.
fn read_cache(file: &Path, size: u32) -> Option<(RgbImage, u32, u32)> {
    let bytes = std::fs::read(file).ok()?;
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
    };
    if bytes.get(..4)? != CACHE_MAGIC || word(12)? != size {
        return None;
    }
    let (width, height) = (word(4)?, word(8)?);
    let pixels = bytes.get(16..)?.to_vec();
    let crop = RgbImage::from_raw(size, size, pixels)?;
    Some((crop, width, height))
}

fn write_cache(file: &Path, crop: &RgbImage, width: u32, height: u32) -> Result<(), DataError> {
    let dir = file.parent().expect("cache files live in a sub-directory");
    std::fs::create_dir_all(dir).map_err(DataError::io(dir))?;
    let mut bytes = Vec::with_capacity(16 + crop.as_raw().len());
    bytes.extend_from_slice(CACHE_MAGIC);
    for word in [width, height, crop.width()] {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes.extend_from_slice(crop.as_raw());
    // Write then rename, so a concurrent reader never sees half a file.
    static NEXT_TMP: AtomicU64 = AtomicU64::new(0);
    let unique = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
    let tmp = file.with_extension(format!("tmp-{}-{unique}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(DataError::io(&tmp))?;
    std::fs::rename(&tmp, file).map_err(DataError::io(file))
}
