//! Face preprocessing shared by training and the device: crop a face box with margin, optionally
//! align it by the eyes (similarity transform), resize to `size`×`size`, reorder colours and
//! normalise; landmarks become 136 floats relative to the crop.
//!
//! INTERFACE (fixed by the skeleton; the implementation fills the bodies and may add items).

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// A face box in pixels of the source frame: top-left corner, width and height.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaceBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

/// 68 facial landmarks (iBUG 300-W ordering) in pixels of the source frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Landmarks68(pub [[f32; 2]; 68]);

/// Channel order of the tensor the network expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColourOrder {
    /// Red, green, blue (torchvision / ImageNet models).
    Rgb,
    /// Blue, green, red (Caffe VGG-Face).
    Bgr,
}

/// How the crop is aligned before resizing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alignment {
    /// Axis-aligned square crop around the (margin-enlarged) box.
    None,
    /// Similarity transform that puts the eye centres at fixed fractions of the output crop.
    Eyes {
        /// Left eye centre (subject's right eye, image left) as (x, y) fractions of the crop.
        left: [f32; 2],
        /// Right eye centre as (x, y) fractions of the crop.
        right: [f32; 2],
    },
}

/// Everything needed to turn a frame plus a face into network input. Saved with every training
/// run and embedded in every exported model, so the device preprocesses exactly like training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Output side length in pixels (crops are square).
    pub size: u32,
    /// Channel order of the output tensor.
    pub colour: ColourOrder,
    /// Pixel values are first scaled to this range maximum (1.0 or 255.0), then
    /// `(value - mean[c]) / std[c]` per output channel (in output channel order).
    pub scale: f32,
    /// Per-channel mean, in output channel order.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, in output channel order.
    pub std: [f32; 3],
    /// Fraction of the box size added on every side before cropping (0.2 = 20 %).
    pub margin: f32,
    /// Crop alignment.
    pub alignment: Alignment,
    /// Whether the network takes the 136 landmark values.
    pub landmarks: bool,
}

/// Network input for one face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceInput {
    /// `3 × size × size` floats, channel-major (CHW), normalised.
    pub pixels: Vec<f32>,
    /// 136 values `(x0, y0, x1, y1, …)` as fractions of the crop in [0, 1] when the
    /// preprocess uses landmarks, else `None`.
    pub landmarks: Option<[f32; 136]>,
}

/// Why preprocessing failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PreprocessError {
    /// The box has a non-finite coordinate or non-positive size.
    #[error("invalid face box {0:?}: coordinates must be finite and width/height positive")]
    InvalidBox(FaceBox),
    /// The frame has no pixels.
    #[error("empty frame ({width}x{height})")]
    EmptyFrame {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// Landmarks are required by this preprocess but none were given, or they are not finite.
    #[error("landmarks: {0}")]
    Landmarks(&'static str),
    /// The description itself is unusable (size 0, std 0, …).
    #[error("invalid preprocess description: {0}")]
    Invalid(String),
}
