//! [`BundledFaces`]: the bundled detector plus landmark net behind [`FaceFinder`].

use std::path::Path;

use crate::backend::EngineConfig;
use crate::models::ModelFile;

use affect_shared::preprocess::{FaceBox, Landmarks68};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::blazeface::{BlazeFace, DetectorConfig};
use super::decode::{Detection, Region};
use super::follow::{
    DEFAULT_LANDMARKS_PER_FRAME, DEFAULT_REDETECT_EVERY, DEFAULT_REGIONS_PER_FRAME, Follower,
    Schedule,
};
use super::landmarks::{DEFAULT_MARGIN, LandmarkNet};
use super::{Face, FaceError, FaceFinder, FinderStats};

/// File name of the bundled detector (embedded, or in a models directory).
pub const DETECTOR_FILE: &str = "blazeface.onnx";

/// File name of the bundled 68-landmark net (embedded, or in a models directory).
pub const LANDMARKS_FILE: &str = "face-landmarks-68.onnx";

/// Face-finding settings (maps onto a `[faces]` TOML table).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FacesConfig {
    /// Detector thresholds, face limit and tiling.
    pub detector: DetectorConfig,
    /// Whether to run the 68-landmark net on every face (`affect-edge` runs it when the model
    /// needs landmarks or for tracking, see `redetect_every`; false turns tracking off).
    pub landmarks: bool,
    /// Margin of the landmark crop around the detector box (fraction of the box side).
    pub landmark_margin: f32,
    /// Search every region of the frame (the whole frame, and its tiles when it is large) once
    /// every this many frames, a share of them per frame; in between, each face's box comes from
    /// its landmarks of an earlier frame ([`super::follow`]). While no face is followed a share
    /// is searched on every frame; the regions around a followed face that looks lost are
    /// searched at once. 1 = the whole detection on every frame; without landmarks every frame
    /// is wholly detected whatever this says (`affect-edge` runs the landmark net for tracking
    /// even when the affect model needs no landmarks, unless `landmarks` is false).
    pub redetect_every: u32,
    /// At most this many regions searched per frame (0 = no limit): a large frame's sweep then
    /// takes more than `redetect_every` frames (the Solvay photo's 71 regions at 4: 18 frames),
    /// which bounds a group's detector cost per frame; an untiled frame is one region.
    pub regions_per_frame: u32,
    /// New landmarks for at most this many faces per frame: this frame's detections, then
    /// followed faces in turn; the others keep their last box and landmarks ([`super::follow`],
    /// "Groups"). 0 = every face on every frame.
    pub landmarks_per_frame: u32,
}

impl Default for FacesConfig {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::default(),
            landmarks: true,
            landmark_margin: DEFAULT_MARGIN,
            redetect_every: DEFAULT_REDETECT_EVERY,
            regions_per_frame: DEFAULT_REGIONS_PER_FRAME,
            landmarks_per_frame: DEFAULT_LANDMARKS_PER_FRAME,
        }
    }
}

impl FacesConfig {
    /// Checks the detector settings and `redetect_every` (at least 1).
    pub fn validate(&self) -> Result<(), FaceError> {
        self.detector.validate()?;
        Follower::new(self.schedule(), self.detector.max_faces).map(drop)
    }

    /// The detector's and landmark net's schedule of these settings.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            redetect_every: self.redetect_every,
            regions_per_frame: self.regions_per_frame,
            landmarks_per_frame: self.landmarks_per_frame,
        }
    }
}

/// BlazeFace detections, each with 68 landmarks when a landmark net is loaded; with landmarks,
/// optionally followed from frame to frame by the landmarks alone between detections.
#[derive(Debug)]
pub struct BundledFaces {
    detector: BlazeFace,
    landmarks: Option<LandmarkNet>,
    /// Landmark-driven tracking; `None`: detect on every frame.
    follower: Option<Follower>,
    /// The detector's regions of the last frame size (whole frame, then tiles).
    regions: Vec<Region>,
    stats: FinderStats,
}

impl BundledFaces {
    /// A finder from already loaded models that detects on every frame.
    pub fn new(detector: BlazeFace, landmarks: Option<LandmarkNet>) -> Self {
        Self {
            detector,
            landmarks,
            follower: None,
            regions: Vec::new(),
            stats: FinderStats::default(),
        }
    }

    /// Spreads the detection over the frames and follows the faces by their landmarks in
    /// between, on `schedule` ([`FacesConfig::redetect_every`], `regions_per_frame`,
    /// `landmarks_per_frame`); without a landmark net, or with a `redetect_every` of 1, every
    /// frame is wholly detected. A `redetect_every` of 0 is refused.
    pub fn follow(mut self, schedule: Schedule) -> Result<Self, FaceError> {
        let follower = Follower::new(schedule, self.detector.config().max_faces)?;
        self.follower =
            (self.landmarks.is_some() && schedule.redetect_every > 1).then_some(follower);
        Ok(self)
    }

    /// Loads [`DETECTOR_FILE`] and (when `config.landmarks`) [`LANDMARKS_FILE`] from `dir`,
    /// or the embedded copies without one, on `engine` (the affect model's).
    pub fn load(
        dir: Option<&Path>,
        config: &FacesConfig,
        engine: &EngineConfig,
    ) -> Result<Self, FaceError> {
        config.validate()?;
        let detector = BlazeFace::load_on(
            ModelFile::resolve(dir, DETECTOR_FILE),
            config.detector,
            engine,
        )?;
        let landmarks = config
            .landmarks
            .then(|| {
                LandmarkNet::load_on(
                    ModelFile::resolve(dir, LANDMARKS_FILE),
                    config.landmark_margin,
                    engine,
                )
            })
            .transpose()?;
        Self::new(detector, landmarks).follow(config.schedule())
    }

    /// The detector.
    pub fn detector(&self) -> &BlazeFace {
        &self.detector
    }

    /// The landmark net, when loaded.
    pub fn landmark_net(&self) -> Option<&LandmarkNet> {
        self.landmarks.as_ref()
    }
}

impl BundledFaces {
    /// The full detection: the detector on the frame (and its tiles), counted, then the landmark
    /// net on every detection's crop.
    fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Face>, FaceError> {
        let (width, height) = frame.dimensions();
        let regions = self.detector.regions(width, height);
        let faces = search(&mut self.detector, &mut self.stats, frame, &regions)?;
        let boxes: Vec<FaceBox> = faces.iter().map(|f| f.bbox).collect();
        let landmarks: Vec<Option<Landmarks68>> = match &mut self.landmarks {
            Some(net) => net
                .landmarks(frame, &boxes)?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; boxes.len()],
        };
        Ok(faces
            .into_iter()
            .zip(landmarks)
            .map(|(face, landmarks)| Face { landmarks, ..face })
            .collect())
    }
}

/// Detections as faces without landmarks.
fn detected_faces(detections: Vec<Detection>) -> Vec<Face> {
    detections
        .into_iter()
        .map(|d| {
            let [x0, y0, x1, y1] = d.corners;
            Face {
                bbox: FaceBox {
                    x: x0,
                    y: y0,
                    w: x1 - x0,
                    h: y1 - y0,
                },
                score: d.score,
                keypoints: d.keypoints,
                landmarks: None,
            }
        })
        .collect()
}

/// The landmarks of `boxes` (none without a box: no run).
fn landmarks_of(
    net: &mut LandmarkNet,
    frame: &RgbImage,
    boxes: &[FaceBox],
) -> Result<Vec<Landmarks68>, FaceError> {
    if boxes.is_empty() {
        return Ok(Vec::new());
    }
    net.landmarks(frame, boxes)
}

/// The detector on `regions` of `frame`, counted in `stats`.
fn search(
    detector: &mut BlazeFace,
    stats: &mut FinderStats,
    frame: &RgbImage,
    regions: &[Region],
) -> Result<Vec<Face>, FaceError> {
    if regions.is_empty() {
        return Ok(Vec::new());
    }
    stats.detections += 1;
    stats.regions += regions.len() as u64;
    Ok(detected_faces(detector.detect_in(frame, regions)?))
}

impl FaceFinder for BundledFaces {
    fn find(&mut self, frame: &RgbImage) -> Result<Vec<Face>, FaceError> {
        self.stats.frames += 1;
        let (width, height) = frame.dimensions();
        let Self {
            detector,
            landmarks: Some(net),
            follower: Some(follower),
            regions,
            stats,
        } = self
        else {
            return self.detect(frame);
        };
        // One frame of landmark-driven tracking ([`super::follow`]): this frame's share of the
        // sweep, the landmarks of its detections and of the faces due in turn, and at once the
        // regions around a face that looks lost.
        if regions.first().map(|r| (r.width, r.height)) != Some((width, height)) {
            *regions = detector.regions(width, height);
        }
        let share = follower.begin(width, height, regions.len());
        let whole_frame = follower.whole_frame();
        let searched_here = |i: &usize| share.contains(i) || (whole_frame && *i == 0);
        let detections = match whole_frame {
            // The whole frame besides a share of tiles (a long sweep, [`Follower::whole_frame`]).
            true => {
                let mut these = vec![regions[0]];
                these.extend_from_slice(&regions[share.clone()]);
                search(detector, stats, frame, &these)?
            }
            false => search(detector, stats, frame, &regions[share.clone()])?,
        };
        let boxes = follower.landmark_boxes(detections, true);
        let lost = follower.landmarks(landmarks_of(net, frame, &boxes)?)?;
        let mut searched = share.len() + usize::from(whole_frame);
        if !lost.is_empty() {
            stats.lost += lost.len() as u64;
            let around: Vec<Region> = (0..regions.len())
                .filter(|i| !searched_here(i))
                .map(|i| regions[i])
                .filter(|r| lost.iter().any(|b| r.contains(b)))
                .collect();
            searched += around.len();
            let detections = search(detector, stats, frame, &around)?;
            let boxes = follower.landmark_boxes(detections, false);
            follower.landmarks(landmarks_of(net, frame, &boxes)?)?;
        }
        follower.end(searched == regions.len());
        Ok(follower.faces())
    }

    fn stats(&self) -> Option<FinderStats> {
        Some(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_toml() {
        let config: FacesConfig =
            toml::from_str("landmarks = false\n[detector]\nmax_faces = 4\n").unwrap();
        assert!(!config.landmarks);
        assert_eq!(config.detector.max_faces, 4);
        assert_eq!(config.landmark_margin, DEFAULT_MARGIN);
        assert!(toml::from_str::<FacesConfig>("landmark = true").is_err());
        assert_eq!(config.redetect_every, DEFAULT_REDETECT_EVERY);
        assert_eq!(config.landmarks_per_frame, DEFAULT_LANDMARKS_PER_FRAME);
        assert_eq!(config.regions_per_frame, DEFAULT_REGIONS_PER_FRAME);
        let unbounded: FacesConfig = toml::from_str("regions_per_frame = 0").unwrap();
        assert_eq!(unbounded.schedule().regions_per_frame, 0);
        let all: FacesConfig = toml::from_str("landmarks_per_frame = 0").unwrap();
        assert_eq!(all.landmarks_per_frame, 0);
        let every: FacesConfig = toml::from_str("redetect_every = 1").unwrap();
        assert_eq!(every.redetect_every, 1);
        let zero: FacesConfig = toml::from_str("redetect_every = 0").unwrap();
        let text = zero.validate().unwrap_err().to_string();
        assert!(text.contains("redetect_every"), "{text}");
        assert!(FacesConfig::default().validate().is_ok());
    }

    #[test]
    fn a_missing_model_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = BundledFaces::load(
            Some(dir.path()),
            &FacesConfig::default(),
            &EngineConfig::tract(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(DETECTOR_FILE) && text.contains("no such model file"),
            "{text}"
        );
    }
}
