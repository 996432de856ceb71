//! The serial report frame: payload → CRC-16 → COBS with a 0x00 delimiter (`docs/wire-format.md`).
//!
//! INTERFACE (fixed by the skeleton; the implementation fills the bodies and may add items).

use serde::{Deserialize, Serialize};

/// One face's affect estimate for one frame: what the device reports over every channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Capture time of the frame, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Frame number since the source started.
    pub frame: u32,
    /// Track id of the face (stable while the face stays in view).
    pub track: u16,
    /// Valence in [-1, 1].
    pub valence: f32,
    /// Arousal in [-1, 1].
    pub arousal: f32,
    /// Face box `[x, y, w, h]` in pixels of the source frame.
    pub bbox: [f32; 4],
    /// Detector confidence in [0, 1] (1 when faces are given, e.g. `--faces none`).
    pub score: f32,
    /// Status bits, see [`StatusFlags`].
    pub flags: StatusFlags,
}

/// Status bits carried with each report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusFlags(pub u8);
