//! Faces in a frame: detection (BlazeFace) and 68-point landmarks (face-api.js landmark net),
//! both real pretrained ONNX models from `models/`, run on the engine the affect model uses.
//!
//! [`BundledFaces`] is the [`FaceFinder`] the runtime uses: [`BlazeFace`] finds faces (optionally
//! also on tiles of large frames), [`LandmarkNet`] adds 68 landmarks per face. The pure parts
//! (letterboxing, anchors, decoding, suppression, landmark mapping, landmark-driven tracking)
//! live in [`decode`], [`landmarks`] and [`follow`] and are tested without models.

use crate::models::ModelFile;

use affect_shared::preprocess::{FaceBox, Landmarks68, PreprocessError};
use image::RgbImage;
use tract_onnx::prelude::*;

pub mod blazeface;
pub mod decode;
pub mod follow;
pub mod landmarks;
mod net;
pub mod pipeline;

pub use blazeface::{BlazeFace, DetectorConfig};
pub use decode::{Detection, Suppression, Tiling};
pub use landmarks::LandmarkNet;
pub use pipeline::{BundledFaces, FacesConfig};

/// One face found in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// Box in pixels of the frame.
    pub bbox: FaceBox,
    /// Detector confidence in [0, 1]; for a face followed by its landmarks since the last
    /// detection ([`follow`]), that detection's confidence.
    pub score: f32,
    /// Detector keypoints in frame pixels: right eye, left eye (image left to right: subject's
    /// right eye first), nose tip, mouth centre, right ear, left ear. For a face followed by its
    /// landmarks, the last detection's keypoints moved and scaled with the landmarks.
    pub keypoints: [[f32; 2]; 6],
    /// 68 landmarks in frame pixels, when a landmark model ran.
    pub landmarks: Option<Landmarks68>,
}

/// Why face finding failed.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// A model file could not be loaded or is not the expected network.
    #[error("{path}: {message}")]
    Model {
        /// Model file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Running a model failed.
    #[error("inference: {0}")]
    Inference(String),
    /// A threshold, size or margin in the face-finding configuration is unusable.
    #[error("face finding configuration: {0}")]
    Config(String),
    /// A face could not be cropped for the landmark net.
    #[error("landmark crop: {0}")]
    Preprocess(#[from] PreprocessError),
}

/// Finds faces (and their landmarks) in frames.
pub trait FaceFinder {
    /// All faces in `frame`, best first.
    fn find(&mut self, frame: &RgbImage) -> Result<Vec<Face>, FaceError>;

    /// How often the detector ran so far, for finders that count it.
    fn stats(&self) -> Option<FinderStats> {
        None
    }
}

/// Counts of a finder's work since it was made (fixed size, however long the run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinderStats {
    /// Frames searched.
    pub frames: u64,
    /// Frames on which the detector ran (on the whole frame and its tiles, or on this frame's
    /// share of them, [`follow`]); the others had their faces' boxes from earlier landmarks.
    pub detections: u64,
    /// Regions (the whole frame, tiles) the detector ran on, over all frames.
    pub regions: u64,
    /// Followed faces that looked lost ([`follow::looks_lost`]): each was dropped and the
    /// regions around it searched on the same frame.
    pub lost: u64,
}

/// Reads an ONNX model with tract (not yet optimised). Errors name the file.
fn read_model(model: &ModelFile) -> Result<InferenceModel, FaceError> {
    let path = model.describe();
    if !model.exists() {
        return Err(FaceError::Model {
            path,
            message: "no such model file".into(),
        });
    }
    let bytes = model.read().map_err(|e| FaceError::Model {
        path: path.clone(),
        message: format!("cannot read the model: {e}"),
    })?;
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| FaceError::Model {
            path,
            message: format!("{e:#}"),
        })
}

/// The message for a model that does not take `shape` (the wrong file, most likely).
fn wrong_input(model: &ModelFile, shape: &[usize], e: TractError) -> FaceError {
    FaceError::Model {
        path: model.describe(),
        message: format!("does not take an input of shape {shape:?} (wrong model file?): {e:#}"),
    }
}
