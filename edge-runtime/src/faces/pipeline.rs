//! [`BundledFaces`]: the bundled detector plus landmark net behind [`FaceFinder`].

use std::path::Path;

use crate::backend::EngineConfig;
use crate::models::ModelFile;

use affect_shared::preprocess::{FaceBox, Landmarks68};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::blazeface::{BlazeFace, DetectorConfig};
use super::landmarks::{DEFAULT_MARGIN, LandmarkNet};
use super::{Face, FaceError, FaceFinder};

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
    /// Whether to run the 68-landmark net on every face.
    pub landmarks: bool,
    /// Margin of the landmark crop around the detector box (fraction of the box side).
    pub landmark_margin: f32,
}

impl Default for FacesConfig {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::default(),
            landmarks: true,
            landmark_margin: DEFAULT_MARGIN,
        }
    }
}

/// BlazeFace detections, each with 68 landmarks when a landmark net is loaded.
#[derive(Debug)]
pub struct BundledFaces {
    detector: BlazeFace,
    landmarks: Option<LandmarkNet>,
}

impl BundledFaces {
    /// A finder from already loaded models.
    pub fn new(detector: BlazeFace, landmarks: Option<LandmarkNet>) -> Self {
        Self {
            detector,
            landmarks,
        }
    }

    /// Loads [`DETECTOR_FILE`] and (when `config.landmarks`) [`LANDMARKS_FILE`] from `dir`,
    /// or the embedded copies without one, on `engine` (the affect model's).
    pub fn load(
        dir: Option<&Path>,
        config: &FacesConfig,
        engine: &EngineConfig,
    ) -> Result<Self, FaceError> {
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
        Ok(Self::new(detector, landmarks))
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

impl FaceFinder for BundledFaces {
    fn find(&mut self, frame: &RgbImage) -> Result<Vec<Face>, FaceError> {
        let detections = self.detector.detect(frame)?;
        let boxes: Vec<FaceBox> = detections
            .iter()
            .map(|d| {
                let [x0, y0, x1, y1] = d.corners;
                FaceBox {
                    x: x0,
                    y: y0,
                    w: x1 - x0,
                    h: y1 - y0,
                }
            })
            .collect();
        let landmarks: Vec<Option<Landmarks68>> = match &mut self.landmarks {
            Some(net) => net
                .landmarks(frame, &boxes)?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; boxes.len()],
        };
        Ok(detections
            .iter()
            .zip(boxes)
            .zip(landmarks)
            .map(|((d, bbox), landmarks)| Face {
                bbox,
                score: d.score,
                keypoints: d.keypoints,
                landmarks,
            })
            .collect())
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
