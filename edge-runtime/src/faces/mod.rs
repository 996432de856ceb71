//! Faces in a frame: detection (BlazeFace) and 68-point landmarks (face-api.js landmark net),
//! both real pretrained ONNX models from `models/`, run with tract.

use affect_shared::preprocess::{FaceBox, Landmarks68};
use image::RgbImage;

/// One face found in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// Box in pixels of the frame.
    pub bbox: FaceBox,
    /// Detector confidence in [0, 1].
    pub score: f32,
    /// Detector keypoints in frame pixels: right eye, left eye (image left to right: subject's
    /// right eye first), nose tip, mouth centre, right ear, left ear.
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
}

/// Finds faces (and their landmarks) in frames.
pub trait FaceFinder {
    /// All faces in `frame`, best first.
    fn find(&mut self, frame: &RgbImage) -> Result<Vec<Face>, FaceError>;
}
