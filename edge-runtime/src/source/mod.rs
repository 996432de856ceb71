//! Frame sources: where pictures come from. A V4L2 camera ([`V4l2Camera`], MJPEG or YUYV,
//! reopened when unplugged), a directory of images ([`ImageDir`]), or the synthetic camera
//! ([`SyntheticCamera`]: generator faces with known valence/arousal). All behind
//! [`FrameSource`]; each has a serde-derivable config struct for the TOML configuration.
//! [`Replay`] serves frames recorded from any of them, [`InMemoryLoop`] loops over them;
//! [`WithOutages`] makes any of them unavailable on a schedule, to rehearse camera outages.
//! [`LatestFrame`] captures a live source on its own thread and always hands out the newest
//! frame; [`ReadAhead`] reads a file source on its own thread a few frames ahead, dropping none.

mod camera;
mod decode;
mod image_dir;
mod latest;
mod outages;
mod read_ahead;
mod synthetic;

use std::time::Duration;

pub(crate) use camera::wall_clock_ms;
pub use camera::{
    CameraConfig, CameraOpener, CameraStream, OfferedFormat, OpenError, PixelFormat, RawFrame,
    ReopeningCamera, StreamLayout, V4l2Camera, V4l2Opener, V4l2Stream, decode_frame,
    offered_formats,
};
pub use decode::{DecodeError, YuvRange, mjpeg_to_rgb, yuyv_to_rgb};
pub use image_dir::{ImageDir, ImageDirConfig, OnBadImage};
pub use latest::LatestFrame;
pub use outages::{OutageConfig, OutageSchedule, Phase, WithOutages};
pub use read_ahead::ReadAhead;
pub use synthetic::{SyntheticCamera, SyntheticConfig};

use image::RgbImage;

/// One picture from a source.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number since the source started, counting from 0 (gaps mean dropped frames).
    pub index: u64,
    /// Capture time in milliseconds since the Unix epoch (camera timestamp when available).
    pub timestamp_ms: u64,
    /// The picture, RGB8.
    pub image: RgbImage,
    /// Ground-truth (valence, arousal) per face in the frame, when the source knows it
    /// (synthetic camera); `None` for real sources.
    pub truth: Option<Vec<GroundTruth>>,
    /// The source knows the picture changed discontinuously here (another person in front of
    /// a fixed-framing camera): every track ends and starts again from a fresh state.
    pub cut: bool,
}

#[cfg(test)]
impl Frame {
    /// A 1×1 black frame numbered and timestamped `index`: what tests of sources that pass
    /// frames on (capture threads, read-ahead) deliver.
    pub(crate) fn numbered(index: u64) -> Self {
        Self {
            index,
            timestamp_ms: index,
            image: RgbImage::new(1, 1),
            truth: None,
            cut: false,
        }
    }
}

/// What a synthetic source knows about one face it drew.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// Face box in pixels of the frame.
    pub face: affect_shared::preprocess::FaceBox,
    /// True valence in [-1, 1].
    pub valence: f32,
    /// True arousal in [-1, 1].
    pub arousal: f32,
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The device or file could not be opened or read; retrying may help.
    #[error("{what}: {message}")]
    Unavailable {
        /// Device path or file.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The bytes could not be decoded into a picture.
    #[error("{what}: cannot decode frame: {message}")]
    Decode {
        /// Device path or file.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The source was configured with something it cannot do.
    #[error("{0}")]
    Config(String),
}

/// A stream of frames.
pub trait FrameSource {
    /// The next frame; `Ok(None)` when the source is exhausted (end of a directory or clip).
    /// Waits at most `timeout` for a live source; a camera that vanished is reopened with
    /// backoff inside the implementation and reports `Unavailable` only while it is gone.
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError>;
    /// Human-readable name for logs ("camera /dev/video0 640x480 MJPG", "images ./dir").
    fn describe(&self) -> String;
    /// Stale frames dropped so far because a newer one arrived before they were taken
    /// ([`LatestFrame`]); sources that deliver every frame drop none.
    fn dropped(&self) -> u64 {
        0
    }
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError> {
        (**self).next_frame(timeout)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
    fn dropped(&self) -> u64 {
        (**self).dropped()
    }
}

/// Frames held in memory, delivered in order: a recorded or pre-rendered clip, so a benchmark
/// times the pipeline rather than the synthetic renderer, and tests run without hardware.
pub struct Replay {
    frames: std::collections::VecDeque<Frame>,
    what: String,
}

impl Replay {
    /// Reads up to `limit` frames from `source` now (`None`: until it ends).
    pub fn record(source: &mut dyn FrameSource, limit: Option<u64>) -> Result<Self, SourceError> {
        let what = format!("replay of {}", source.describe());
        let mut frames = std::collections::VecDeque::new();
        while limit.is_none_or(|n| (frames.len() as u64) < n) {
            match source.next_frame(Duration::from_secs(5))? {
                Some(frame) => frames.push_back(frame),
                None => break,
            }
        }
        Ok(Self { frames, what })
    }

    /// Frames left.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether every frame has been delivered.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl FrameSource for Replay {
    fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
        Ok(self.frames.pop_front())
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// A short clip decoded once and then served in a loop from memory, each frame numbered and
/// stamped with the time it is handed out, as a camera hands over raw frames: a benchmark times
/// the perception without the file decoding (the copy out of memory stays in the source's time).
/// Holds the recorded frames only; the loop never ends (the caller bounds the frames taken).
pub struct InMemoryLoop {
    frames: Vec<Frame>,
    next: u64,
    what: String,
}

impl InMemoryLoop {
    /// How [`FrameSource::describe`] marks the source it loops over (in parentheses after it).
    pub const NOTE: &'static str = "decoded once, served from memory";

    /// Reads `source` until it ends or `limit` frames are held; a source without frames is
    /// refused.
    pub fn record(source: &mut dyn FrameSource, limit: u64) -> Result<Self, SourceError> {
        let recorded = Replay::record(source, Some(limit))?;
        let what = format!("{} ({})", source.describe(), Self::NOTE);
        if recorded.is_empty() {
            return Err(SourceError::Config(format!(
                "{what}: no frames to loop over"
            )));
        }
        Ok(Self {
            frames: recorded.frames.into(),
            next: 0,
            what,
        })
    }
}

impl FrameSource for InMemoryLoop {
    fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
        let mut frame = self.frames[(self.next % self.frames.len() as u64) as usize].clone();
        frame.index = self.next;
        frame.timestamp_ms = wall_clock_ms();
        self.next += 1;
        Ok(Some(frame))
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}
