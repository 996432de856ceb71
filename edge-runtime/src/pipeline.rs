//! One frame in, one report per tracked face out: faces → tracker → preprocess (the model's own
//! recorded preprocessing) → one batched backend step for all tracks, each with its recurrent
//! state. Times every stage and, when the source knows the truth (synthetic camera), scores
//! predictions with CCC/MSE.
//!
//! A track whose face is missed on a frame is not stepped: its recurrent state stays as it was,
//! the rule the trainer trains and exports with ([`affect_shared::contract`]). A track that ends
//! (lost by the tracker, a scene cut, or [`Pipeline::finish`]) gets one final report flagged
//! `FACE_LOST`, holding the values and box of its last frame.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use affect_shared::metrics::VaMoments;
use affect_shared::preprocess::{FaceBox, Preprocess, PreprocessError};
use affect_shared::wire::{Report, StatusFlags};

use crate::backend::{AffectBackend, BackendError, TrackState};
use crate::faces::{Face, FaceError, FaceFinder};
use crate::source::Frame;
use crate::timing::Latency;
use crate::tracker::{Tracker, TrackerConfig, iou};

/// Why a frame could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Face detection or landmarks failed.
    #[error(transparent)]
    Faces(#[from] FaceError),
    /// Cropping/normalising a face failed.
    #[error("preprocess: {0}")]
    Preprocess(#[from] PreprocessError),
    /// The model failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The faces mode and the model do not fit together.
    #[error("{0}")]
    Config(String),
}

/// How faces are found in a frame.
pub enum FaceMode {
    /// Detector + landmark models.
    Detect(Box<dyn FaceFinder>),
    /// Every frame is already a face crop (kiosk with fixed framing, pre-cropped data): the
    /// network sees the whole frame, as training sees an aligned crop
    /// ([`FaceBox::whole_crop`]).
    WholeFrame,
}

/// Per-stage wall-clock distributions (fixed memory, however long the run).
#[derive(Debug, Clone, Default)]
pub struct StageTimes {
    /// Finding faces (detector + landmarks).
    pub faces: Latency,
    /// Cropping and normalising all faces of a frame.
    pub preprocess: Latency,
    /// The model call for all faces of a frame (one batch).
    pub model: Latency,
}

/// The newest frame's counts and stage times (what telemetry records per frame).
#[derive(Debug, Clone, Copy, Default)]
pub struct LastFrame {
    /// Faces found.
    pub faces: usize,
    /// Tracks alive after the frame.
    pub tracks: usize,
    /// Finding faces.
    pub faces_time: Duration,
    /// Preprocessing.
    pub preprocess_time: Duration,
    /// Model steps.
    pub model_time: Duration,
}

/// Predictions vs. ground truth, when the source knows it.
#[derive(Debug, Clone, Default)]
pub struct TruthScore {
    /// Streaming CCC/MSE accumulators.
    pub moments: VaMoments,
    /// Faces reported that matched no ground-truth face.
    pub unmatched: u64,
}

/// Settings of the per-frame processing.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Tracker thresholds.
    pub tracker: TrackerConfig,
    /// Faces scoring below this are flagged `LOW_CONFIDENCE`.
    pub low_confidence: f32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            tracker: TrackerConfig::default(),
            low_confidence: 0.75,
        }
    }
}

/// The per-frame processing chain.
pub struct Pipeline {
    faces: FaceMode,
    backend: Box<dyn AffectBackend>,
    preprocess: Preprocess,
    tracker: Tracker,
    states: HashMap<u16, TrackState>,
    /// The newest report of each live track, repeated with `FACE_LOST` when the track ends.
    last_reports: HashMap<u16, Report>,
    /// Final reports of ended tracks not yet returned (kept across a frame that fails).
    ended: Vec<Report>,
    config: PipelineConfig,
    /// Stage timings so far.
    pub times: StageTimes,
    /// The newest processed frame.
    pub last: LastFrame,
    /// Score against ground truth so far.
    pub truth: TruthScore,
}

impl Pipeline {
    /// Builds the chain; refuses combinations that cannot work (a landmark model without
    /// landmarks).
    pub fn new(
        faces: FaceMode,
        backend: Box<dyn AffectBackend>,
        config: PipelineConfig,
    ) -> Result<Self, PipelineError> {
        let preprocess = backend.contract().metadata.preprocess.clone();
        if preprocess.landmarks && matches!(faces, FaceMode::WholeFrame) {
            return Err(PipelineError::Config(format!(
                "{} needs 68 landmarks, but `--faces none` provides none; use the bundled face \
                 models or a model trained without landmarks",
                backend.contract().path
            )));
        }
        Ok(Self {
            faces,
            backend,
            preprocess,
            tracker: Tracker::new(config.tracker),
            states: HashMap::new(),
            last_reports: HashMap::new(),
            ended: Vec::new(),
            config,
            times: StageTimes::default(),
            last: LastFrame::default(),
            truth: TruthScore::default(),
        })
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// Processes one frame; returns one report per tracked face, preceded by a `FACE_LOST`
    /// report for each track that ended on this frame.
    pub fn process(&mut self, frame: &Frame) -> Result<Vec<Report>, PipelineError> {
        let started = Instant::now();
        let faces = match &mut self.faces {
            FaceMode::Detect(finder) => finder.find(&frame.image)?,
            FaceMode::WholeFrame => vec![Face {
                bbox: FaceBox::whole_crop(
                    frame.image.width(),
                    frame.image.height(),
                    self.preprocess.margin,
                ),
                score: 1.0,
                keypoints: [[0.0; 2]; 6],
                landmarks: None,
            }],
        };
        let faces_time = started.elapsed();
        self.times.faces.record(faces_time);

        if frame.cut {
            for id in self.tracker.end_all() {
                self.end_track(id, frame.timestamp_ms, frame.index);
            }
        }
        let boxes: Vec<FaceBox> = faces.iter().map(|f| f.bbox).collect();
        let update = self.tracker.update(&boxes);
        for &id in &update.lost {
            self.end_track(id, frame.timestamp_ms, frame.index);
        }

        let started = Instant::now();
        let mut inputs = Vec::with_capacity(update.assignments.len());
        for a in &update.assignments {
            let face = &faces[a.detection];
            // Pre-cropped frames use the whole image as the face box, as the dataset loader
            // does for `cropped_aligned` images.
            inputs.push(self.preprocess.face_input(
                &frame.image,
                &face.bbox,
                face.landmarks.as_ref(),
            )?);
        }
        let preprocess_time = started.elapsed();
        self.times.preprocess.record(preprocess_time);

        let started = Instant::now();
        // All tracks of the frame in one model call. A new track id is never live and lost
        // tracks' states are dropped above, so a missing entry is exactly a new track: it
        // starts from zeros. States go back into the map whatever the outcome (a failed step
        // leaves them as they were).
        let layout = self.backend.contract().state;
        let mut states: Vec<TrackState> = update
            .assignments
            .iter()
            .map(|a| {
                self.states
                    .remove(&a.track)
                    .unwrap_or_else(|| TrackState::zeros(&layout))
            })
            .collect();
        let stepped = self.backend.step_batch(&inputs, &mut states);
        for (a, state) in update.assignments.iter().zip(states) {
            self.states.insert(a.track, state);
        }
        let estimates = stepped?;
        let mut reports = std::mem::take(&mut self.ended);
        reports.reserve(estimates.len());
        for (a, [valence, arousal]) in update.assignments.iter().zip(estimates) {
            let face = &faces[a.detection];
            let mut flags = 0;
            if a.new {
                flags |= StatusFlags::NEW_TRACK;
            }
            if face.score < self.config.low_confidence {
                flags |= StatusFlags::LOW_CONFIDENCE;
            }
            let report = Report {
                timestamp_ms: frame.timestamp_ms,
                frame: frame.index as u32,
                track: a.track,
                valence: valence.clamp(-1.0, 1.0),
                arousal: arousal.clamp(-1.0, 1.0),
                bbox: [face.bbox.x, face.bbox.y, face.bbox.w, face.bbox.h],
                score: face.score,
                flags: StatusFlags(flags),
            };
            self.last_reports.insert(a.track, report);
            reports.push(report);
        }
        let model_time = started.elapsed();
        self.times.model.record(model_time);
        self.last = LastFrame {
            faces: faces.len(),
            tracks: self.states.len(),
            faces_time,
            preprocess_time,
            model_time,
        };

        if let Some(truth) = &frame.truth {
            self.score(&reports, truth);
        }
        Ok(reports)
    }

    /// Ends every live track (the run is stopping): one `FACE_LOST` report each, stamped with
    /// the newest report's time and frame.
    pub fn finish(&mut self) -> Vec<Report> {
        let newest = self
            .last_reports
            .values()
            .map(|r| (r.timestamp_ms, r.frame))
            .max();
        if let Some((timestamp_ms, frame)) = newest {
            for id in self.tracker.end_all() {
                self.end_track(id, timestamp_ms, u64::from(frame));
            }
        }
        std::mem::take(&mut self.ended)
    }

    /// Drops a track's state and, when it was ever reported, queues its final report.
    fn end_track(&mut self, id: u16, timestamp_ms: u64, frame: u64) {
        self.states.remove(&id);
        if let Some(last) = self.last_reports.remove(&id) {
            self.ended.push(Report {
                timestamp_ms,
                frame: frame as u32,
                flags: StatusFlags(
                    (last.flags.0 & StatusFlags::LOW_CONFIDENCE) | StatusFlags::FACE_LOST,
                ),
                ..last
            });
        }
    }

    /// Matches reports to ground-truth faces (best IoU, or the only face) and accumulates.
    fn score(&mut self, reports: &[Report], truth: &[crate::source::GroundTruth]) {
        // A final report repeats its track's last estimate; that frame was scored already.
        let estimates = reports
            .iter()
            .filter(|r| !r.flags.contains(StatusFlags::FACE_LOST));
        for r in estimates {
            let b = FaceBox {
                x: r.bbox[0],
                y: r.bbox[1],
                w: r.bbox[2],
                h: r.bbox[3],
            };
            let best = truth
                .iter()
                .map(|t| (iou(&t.face, &b), t))
                .max_by(|x, y| x.0.total_cmp(&y.0));
            let matched = match (best, &self.faces) {
                (Some((_, t)), FaceMode::WholeFrame) if truth.len() == 1 => Some(t),
                (Some((overlap, t)), _) if overlap >= 0.3 => Some(t),
                _ => None,
            };
            match matched {
                Some(t) => self
                    .truth
                    .moments
                    .push([r.valence, r.arousal], [t.valence, t.arousal]),
                None => self.truth.unmatched += 1,
            }
        }
    }
}
