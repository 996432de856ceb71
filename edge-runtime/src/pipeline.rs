//! One frame in, one report per tracked face out: faces → tracker → preprocess (the model's own
//! recorded preprocessing) → backend step with the track's recurrent state. Times every stage
//! and, when the source knows the truth (synthetic camera), scores predictions with CCC/MSE.
//!
//! A track whose face is missed on a frame is not stepped: its recurrent state stays as it was,
//! the rule the trainer trains and exports with ([`affect_shared::contract`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use affect_shared::metrics::VaMoments;
use affect_shared::preprocess::{FaceBox, Preprocess, PreprocessError};
use affect_shared::wire::{Report, StatusFlags};

use crate::backend::{AffectBackend, BackendError, TrackState};
use crate::faces::{Face, FaceError, FaceFinder};
use crate::source::Frame;
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

/// Per-stage wall-clock samples.
#[derive(Debug, Clone, Default)]
pub struct StageTimes {
    /// Finding faces (detector + landmarks).
    pub faces: Vec<Duration>,
    /// Cropping and normalising all faces of a frame.
    pub preprocess: Vec<Duration>,
    /// Model steps for all faces of a frame.
    pub model: Vec<Duration>,
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
    config: PipelineConfig,
    /// Stage timings so far.
    pub times: StageTimes,
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
            config,
            times: StageTimes::default(),
            truth: TruthScore::default(),
        })
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// Processes one frame; returns one report per tracked face.
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
        self.times.faces.push(started.elapsed());

        if frame.cut {
            for id in self.tracker.end_all() {
                self.states.remove(&id);
            }
        }
        let boxes: Vec<FaceBox> = faces.iter().map(|f| f.bbox).collect();
        let update = self.tracker.update(&boxes);
        for id in &update.lost {
            self.states.remove(id);
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
        self.times.preprocess.push(started.elapsed());

        let started = Instant::now();
        let mut reports = Vec::with_capacity(inputs.len());
        for (a, input) in update.assignments.iter().zip(&inputs) {
            // A new track id is never live and lost tracks' states are dropped above, so a
            // missing entry is exactly a new track: it starts from zeros.
            let layout = self.backend.contract().state;
            let state = self
                .states
                .entry(a.track)
                .or_insert_with(|| TrackState::zeros(&layout));
            let [valence, arousal] = self.backend.step(input, state)?;
            let face = &faces[a.detection];
            let mut flags = 0;
            if a.new {
                flags |= StatusFlags::NEW_TRACK;
            }
            if face.score < self.config.low_confidence {
                flags |= StatusFlags::LOW_CONFIDENCE;
            }
            reports.push(Report {
                timestamp_ms: frame.timestamp_ms,
                frame: frame.index as u32,
                track: a.track,
                valence: valence.clamp(-1.0, 1.0),
                arousal: arousal.clamp(-1.0, 1.0),
                bbox: [face.bbox.x, face.bbox.y, face.bbox.w, face.bbox.h],
                score: face.score,
                flags: StatusFlags(flags),
            });
        }
        self.times.model.push(started.elapsed());

        if let Some(truth) = &frame.truth {
            self.score(&reports, truth);
        }
        Ok(reports)
    }

    /// Matches reports to ground-truth faces (best IoU, or the only face) and accumulates.
    fn score(&mut self, reports: &[Report], truth: &[crate::source::GroundTruth]) {
        for r in reports {
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
