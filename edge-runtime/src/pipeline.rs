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

use crate::backend::{AffectBackend, BackendError, ModelContract, TrackState};
use crate::faces::{Face, FaceError, FaceFinder, FinderStats};
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
    /// The face detector ran (a finder that counts it: [`FaceFinder::stats`]); false on a
    /// frame whose faces were followed by their landmarks.
    pub detected: bool,
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
    /// CPU threads sharing a frame's face crops (0 = one per core), as the engine's threads
    /// share its networks' batches ([`crate::backend::EngineConfig::threads`]).
    pub threads: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            tracker: TrackerConfig::default(),
            low_confidence: 0.75,
            threads: 0,
        }
    }
}

/// The per-frame processing chain.
pub struct Pipeline {
    faces: FaceMode,
    backend: Box<dyn AffectBackend>,
    preprocess: Preprocess,
    /// Threads a frame's face crops are split across.
    workers: usize,
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
    /// A swapped-in model on trial, with the model to restore.
    trial: Option<Trial>,
    /// How the last trial ended, until taken.
    swap_event: Option<SwapEvent>,
}

/// A model swapped in by [`Pipeline::replace_backend`], on trial for its first frames.
struct Trial {
    previous: Box<dyn AffectBackend>,
    previous_preprocess: Preprocess,
    /// Frames with faces left before the new model is trusted.
    frames_left: u32,
}

/// How a swapped-in model's trial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapEvent {
    /// It ran its trial frames with finite outputs: it stays.
    Passed,
    /// It failed; the previous model serves again.
    RolledBack {
        /// What went wrong, naming the frame.
        reason: String,
    },
}

/// Refuses a model the face mode cannot feed (landmarks without a landmark model).
fn check_fits(faces: &FaceMode, backend: &dyn AffectBackend) -> Result<(), PipelineError> {
    if backend.contract().metadata.preprocess.landmarks && matches!(faces, FaceMode::WholeFrame) {
        return Err(PipelineError::Config(format!(
            "{} needs 68 landmarks, but `--faces none` provides none; use the bundled face \
             models or a model trained without landmarks",
            backend.contract().path
        )));
    }
    Ok(())
}

fn all_finite(outputs: &[[f32; 2]]) -> bool {
    outputs.iter().flatten().all(|v| v.is_finite())
}

impl Pipeline {
    /// Builds the chain; refuses combinations that cannot work (a landmark model without
    /// landmarks).
    pub fn new(
        faces: FaceMode,
        backend: Box<dyn AffectBackend>,
        config: PipelineConfig,
    ) -> Result<Self, PipelineError> {
        check_fits(&faces, backend.as_ref())?;
        let preprocess = backend.contract().metadata.preprocess.clone();
        Ok(Self {
            faces,
            backend,
            preprocess,
            workers: crate::batch::worker_count(config.threads),
            tracker: Tracker::new(config.tracker),
            states: HashMap::new(),
            last_reports: HashMap::new(),
            ended: Vec::new(),
            config,
            times: StageTimes::default(),
            last: LastFrame::default(),
            truth: TruthScore::default(),
            trial: None,
            swap_event: None,
        })
    }

    /// The face finder's counts (detections against frames), when it keeps them.
    pub fn finder_stats(&self) -> Option<FinderStats> {
        match &self.faces {
            FaceMode::Detect(finder) => finder.stats(),
            FaceMode::WholeFrame => None,
        }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// Processes one frame; returns one report per tracked face, preceded by a `FACE_LOST`
    /// report for each track that ended on this frame. All carry the frame's timestamp and no
    /// latency (`latency_ms: None`): the caller measures it when it hands them over
    /// ([`crate::runner`]).
    pub fn process(&mut self, frame: &Frame) -> Result<Vec<Report>, PipelineError> {
        let detections_before = self.finder_stats().map(|s| s.detections);
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
        let detected = self.finder_stats().map(|s| s.detections) > detections_before;

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

        let first = self.infer(&frame.image, &faces, &update.assignments);
        let (outputs, preprocess_time, model_time) = match (first, self.trial.take()) {
            (Ok(done), None) => done,
            (Err(e), None) => return Err(e),
            (Ok(done), Some(trial)) if all_finite(&done.0) => {
                self.trial = Some(trial);
                done
            }
            (failed, Some(trial)) => {
                let reason = match failed {
                    Ok(_) => format!("non-finite output on frame {}", frame.index),
                    Err(e) => format!("inference failed on frame {}: {e}", frame.index),
                };
                self.roll_back(trial, reason);
                // The same frame again on the restored model: no frame is lost.
                self.infer(&frame.image, &faces, &update.assignments)?
            }
        };
        if let Some(trial) = &mut self.trial
            && !outputs.is_empty()
        {
            trial.frames_left -= 1;
            if trial.frames_left == 0 {
                self.trial = None;
                self.swap_event = Some(SwapEvent::Passed);
            }
        }

        let mut reports = std::mem::take(&mut self.ended);
        reports.reserve(outputs.len());
        for (a, [valence, arousal]) in update.assignments.iter().zip(outputs) {
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
                // Measured by whoever hands the report over (the runner), not here.
                latency_ms: None,
            };
            self.last_reports.insert(a.track, report);
            reports.push(report);
        }
        self.last = LastFrame {
            faces: faces.len(),
            detected,
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

    /// Preprocesses the assigned faces and steps the model once per track, advancing each
    /// track's recurrent state; returns (valence, arousal) per assignment and the two stages'
    /// times.
    fn infer(
        &mut self,
        image: &image::RgbImage,
        faces: &[Face],
        assignments: &[crate::tracker::Assignment],
    ) -> Result<(Vec<[f32; 2]>, Duration, Duration), PipelineError> {
        let started = Instant::now();
        // Pre-cropped frames use the whole image as the face box, as the dataset loader does
        // for `cropped_aligned` images. The crops are shared by the threads.
        let preprocess = &self.preprocess;
        let rows = crate::batch::chunk_rows(assignments.len(), self.workers);
        let parts = crate::batch::run_split(assignments.chunks(rows), |part| {
            part.iter()
                .map(|a| {
                    let face = &faces[a.detection];
                    preprocess.face_input(image, &face.bbox, face.landmarks.as_ref())
                })
                .collect::<Result<Vec<_>, _>>()
        });
        let mut inputs = Vec::with_capacity(assignments.len());
        for part in parts {
            inputs.extend(part?);
        }
        let preprocess_time = started.elapsed();
        self.times.preprocess.record(preprocess_time);

        let started = Instant::now();
        // All tracks of the frame in one model call. A new track id is never live and lost
        // tracks' states are dropped, so a missing entry is a new track (or the first step on
        // a new model): it starts from zeros. States go back into the map whatever the outcome
        // (a failed step leaves them as they were).
        let layout = self.backend.contract().state;
        let mut states: Vec<TrackState> = assignments
            .iter()
            .map(|a| {
                self.states
                    .remove(&a.track)
                    .unwrap_or_else(|| TrackState::zeros(&layout))
            })
            .collect();
        let stepped = self.backend.step_batch(&inputs, &mut states);
        for (a, state) in assignments.iter().zip(states) {
            self.states.insert(a.track, state);
        }
        let outputs = stepped?;
        let model_time = started.elapsed();
        self.times.model.record(model_time);
        Ok((outputs, preprocess_time, model_time))
    }

    /// The serving model's contract.
    pub fn contract(&self) -> &ModelContract {
        self.backend.contract()
    }

    /// Swaps in `backend` between two frames, on trial: every track's recurrent state restarts
    /// (a new model's state is not the old one's); if the model fails or produces a non-finite
    /// output in any of its first `trial_frames` frames with faces, the previous model is
    /// restored by itself (and the frame processed again on it). [`Pipeline::take_swap_event`]
    /// says how the trial ended. Refused while another model is on trial, and for a model the
    /// face finder cannot feed.
    pub fn replace_backend(
        &mut self,
        backend: Box<dyn AffectBackend>,
        trial_frames: u32,
    ) -> Result<(), PipelineError> {
        if self.trial.is_some() {
            return Err(PipelineError::Config(
                "another model is still on trial".into(),
            ));
        }
        check_fits(&self.faces, backend.as_ref())?;
        let preprocess = backend.contract().metadata.preprocess.clone();
        let previous = std::mem::replace(&mut self.backend, backend);
        let previous_preprocess = std::mem::replace(&mut self.preprocess, preprocess);
        self.states.clear();
        self.swap_event = None;
        if trial_frames == 0 {
            self.swap_event = Some(SwapEvent::Passed);
        } else {
            self.trial = Some(Trial {
                previous,
                previous_preprocess,
                frames_left: trial_frames,
            });
        }
        Ok(())
    }

    /// Whether a swapped-in model is still on trial.
    pub fn on_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// How the last swap's trial ended, once (then `None` until the next swap ends).
    pub fn take_swap_event(&mut self) -> Option<SwapEvent> {
        self.swap_event.take()
    }

    fn roll_back(&mut self, trial: Trial, reason: String) {
        tracing::warn!(
            "{}: {reason}; rolling back to {}",
            self.backend.contract().path,
            trial.previous.contract().path
        );
        self.backend = trial.previous;
        self.preprocess = trial.previous_preprocess;
        self.states.clear();
        self.swap_event = Some(SwapEvent::RolledBack { reason });
    }

    /// Ends every live track (the run is stopping): one `FACE_LOST` report each, stamped with
    /// the newest report's time and frame, and no latency (the caller measures it).
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
                latency_ms: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelFile;
    use affect_shared::preprocess::FaceInput;

    /// A model whose valence counts the steps of the track's state (so a state reset shows),
    /// whose arousal is `tag`, and which fails from its `fail_from`-th step on.
    struct Scripted {
        contract: ModelContract,
        tag: f32,
        steps: usize,
        fail_from: Option<(usize, bool)>,
    }

    impl Scripted {
        fn boxed(tag: f32, fail_from: Option<(usize, bool)>) -> Box<dyn AffectBackend> {
            let model = ModelFile::embedded("affect-synth.onnx").unwrap();
            Box::new(Self {
                contract: ModelContract::load(&model).unwrap(),
                tag,
                steps: 0,
                fail_from,
            })
        }
    }

    impl AffectBackend for Scripted {
        fn contract(&self) -> &ModelContract {
            &self.contract
        }
        fn step_batch(
            &mut self,
            faces: &[FaceInput],
            states: &mut [TrackState],
        ) -> Result<Vec<[f32; 2]>, BackendError> {
            assert_eq!(faces.len(), states.len());
            let mut out = Vec::with_capacity(states.len());
            for state in states {
                self.steps += 1;
                match self.fail_from {
                    Some((from, true)) if self.steps >= from => {
                        return Err(BackendError::Run("scripted failure".into()));
                    }
                    Some((from, false)) if self.steps >= from => out.push([f32::NAN, self.tag]),
                    _ => {
                        state.h[0] += 0.01;
                        out.push([state.h[0], self.tag]);
                    }
                }
            }
            Ok(out)
        }
        fn name(&self) -> String {
            "scripted".into()
        }
    }

    fn frame(index: u64) -> Frame {
        Frame {
            index,
            timestamp_ms: index * 33,
            image: image::RgbImage::from_pixel(64, 64, image::Rgb([90, 100, 110])),
            truth: None,
            cut: false,
        }
    }

    /// (frame, valence, arousal) of the one face.
    fn one(pipeline: &mut Pipeline, index: u64) -> (u32, f32, f32) {
        let reports = pipeline.process(&frame(index)).unwrap();
        assert_eq!(reports.len(), 1);
        (reports[0].frame, reports[0].valence, reports[0].arousal)
    }

    #[test]
    fn a_swapped_model_restarts_states_and_a_failing_one_is_rolled_back_on_the_same_frame() {
        let config = PipelineConfig::default();
        let mut p =
            Pipeline::new(FaceMode::WholeFrame, Scripted::boxed(0.1, None), config).unwrap();
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        for i in 0..3 {
            let (_, v, a) = one(&mut p, i);
            assert!(close(v, 0.01 * (i + 1) as f32) && close(a, 0.1));
        }
        // A good model: state restarts, it passes its 2 trial frames.
        p.replace_backend(Scripted::boxed(0.2, None), 2).unwrap();
        assert!(p.on_trial());
        let (_, v, a) = one(&mut p, 3);
        assert!(
            close(v, 0.01) && close(a, 0.2),
            "fresh state on the new model: {v}"
        );
        assert_eq!(p.take_swap_event(), None);
        one(&mut p, 4);
        assert_eq!(p.take_swap_event(), Some(SwapEvent::Passed));
        assert!(!p.on_trial());
        let busy = Scripted::boxed(0.5, None);
        // A model producing NaN on its 2nd step, and one failing on its 1st: each is rolled
        // back on the frame where it failed, which is then served by the restored model.
        for (tag, fail, frame_no, what) in [
            (0.3, (2, false), 6, "non-finite output on frame 6"),
            (0.4, (1, true), 7, "inference failed on frame 7"),
        ] {
            p.replace_backend(Scripted::boxed(tag, Some(fail)), 5)
                .unwrap();
            if frame_no == 6 {
                let (f, _, a) = one(&mut p, 5);
                assert!(f == 5 && close(a, 0.3));
                let refused = p.replace_backend(Scripted::boxed(0.9, None), 1);
                assert!(refused.is_err(), "one trial at a time");
            }
            let (f, v, a) = one(&mut p, frame_no);
            assert_eq!(f as u64, frame_no);
            assert!(
                close(a, 0.2) && close(v, 0.01),
                "restored model, fresh state: {v} {a}"
            );
            match p.take_swap_event() {
                Some(SwapEvent::RolledBack { reason }) => {
                    assert!(reason.contains(what), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        // Without a trial the model's errors are the frame's errors, as before any deploy.
        p.replace_backend(busy, 1).unwrap();
        one(&mut p, 8);
        assert_eq!(p.take_swap_event(), Some(SwapEvent::Passed));
        p.replace_backend(Scripted::boxed(0.6, Some((2, true))), 1)
            .unwrap();
        one(&mut p, 9);
        assert_eq!(p.take_swap_event(), Some(SwapEvent::Passed));
        assert!(matches!(
            p.process(&frame(10)),
            Err(PipelineError::Backend(_))
        ));
    }
}
