//! Frame sources: V4L2 camera, a directory of images, a synthetic camera with known truth.

use image::RgbImage;

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number since the source started (0-based, gaps mean dropped frames).
    pub index: u64,
    /// Capture time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The pixels.
    pub image: RgbImage,
    /// Ground truth when the source knows it (synthetic camera): one entry per face.
    pub truth: Vec<FaceTruth>,
}

/// Known valence/arousal of one face in a frame (synthetic sources).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceTruth {
    /// Face box `[x, y, w, h]` in frame pixels.
    pub bbox: [f32; 4],
    /// True valence.
    pub valence: f32,
    /// True arousal.
    pub arousal: f32,
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The device or directory cannot be opened or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being accessed (device path, file path).
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A frame could not be decoded.
    #[error("{what}: cannot decode frame: {reason}")]
    Decode {
        /// Device or file.
        what: String,
        /// Why.
        reason: String,
    },
    /// The source description is invalid.
    #[error("invalid source: {0}")]
    Config(String),
}

/// Anything that yields frames. `Ok(None)` means the source ended (end of a directory).
pub trait FrameSource {
    /// Next frame; blocks until one is available (or the pacing interval elapsed).
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
}
