//! The serial report frame: payload → CRC-16 → COBS with a 0x00 delimiter (`docs/wire-format.md`).
//!
//! Layout (little-endian), specified byte for byte in `docs/wire-format.md`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, [`VERSION`] |
//! | 1 | 8 | `timestamp_ms` u64 |
//! | 9 | 4 | `frame` u32 |
//! | 13 | 2 | `track` u16 |
//! | 15 | 2 | valence i16, value × 10 000, clamped to [-1, 1] (decoder rejects others) |
//! | 17 | 2 | arousal i16, value × 10 000, clamped to [-1, 1] (decoder rejects others) |
//! | 19 | 8 | box x, y, w, h as u16 pixels, rounded, clamped to [0, 65 535] |
//! | 27 | 2 | score u16, value × 10 000, clamped to [0, 1] (decoder rejects others) |
//! | 29 | 1 | flags |
//! | 30 | 2 | `latency_ms` u16: capture to report, ms, at most [`LATENCY_MAX_MS`]; [`LATENCY_UNKNOWN`] when unknown |
//!
//! The 32-byte payload is followed by its CRC-16/CCITT-FALSE (`crc::CRC_16_IBM_3740`, poly
//! 0x1021, init 0xFFFF) little-endian, COBS-encoded, and terminated by one 0x00 byte. The
//! decoder also reads version-1 frames (the first 30 bytes alone, [`V1_PAYLOAD_LEN`]), written
//! before the latency was carried: their reports decode with `latency_ms: None`.

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
    /// Capture-to-report latency, milliseconds: from the capture of the frame `timestamp_ms`
    /// names to the moment the device handed this report to its reporters (time spent queued
    /// for a link that is down comes on top). `None` when unknown: a version-1 serial frame, or
    /// a report not (yet) handed over. The serial frame carries at most [`LATENCY_MAX_MS`].
    pub latency_ms: Option<u32>,
}

/// Status bits carried with each report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusFlags(pub u8);

impl StatusFlags {
    /// First report of a new track (its recurrent state was just reset).
    pub const NEW_TRACK: u8 = 1 << 0;
    /// Valence/arousal were smoothed (EMA) before reporting.
    pub const SMOOTHED: u8 = 1 << 1;
    /// Detector confidence below the configured threshold.
    pub const LOW_CONFIDENCE: u8 = 1 << 2;
    /// The track ended (its face was not seen for the tracker's limit, a scene cut, or the run
    /// stopped): the track's final report, with the values and box of its last frame.
    pub const FACE_LOST: u8 = 1 << 3;
    /// Every flag with its name as the text formats spell it (JSON lines, the serial text mode).
    pub const NAMES: [(u8, &'static str); 4] = [
        (Self::NEW_TRACK, "new-track"),
        (Self::SMOOTHED, "smoothed"),
        (Self::LOW_CONFIDENCE, "low-confidence"),
        (Self::FACE_LOST, "face-lost"),
    ];

    /// Names of the set flags, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(bit, _)| self.contains(*bit))
            .map(|(_, name)| name)
    }

    /// Whether every bit of `mask` is set.
    pub fn contains(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// Payload format version written by [`encode_frame`]; [`FrameDecoder`] accepts it and version 1.
pub const VERSION: u8 = 2;
/// Payload bytes before the CRC ([`VERSION`] 2).
pub const PAYLOAD_LEN: usize = 32;
/// Payload bytes before the CRC of a version-1 frame: the version-2 payload without the latency.
pub const V1_PAYLOAD_LEN: usize = 30;
/// Largest latency a frame carries, ms (about 65.5 s): longer latencies are sent as this.
pub const LATENCY_MAX_MS: u16 = u16::MAX - 1;
/// The latency field's value for an unknown latency (`latency_ms: None`).
pub const LATENCY_UNKNOWN: u16 = u16::MAX;
/// CRC-16/CCITT-FALSE as used on the wire.
pub const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);
/// Largest encoded frame: COBS of payload + CRC (one overhead byte per 254), plus the 0x00.
pub const MAX_FRAME_LEN: usize = PAYLOAD_LEN + 2 + (PAYLOAD_LEN + 2).div_ceil(254) + 1;

const FIXED_POINT: f64 = 10_000.0;
/// The fixed-point value of 1 (valence/arousal span ±this, score 0 to this).
const FIXED_ONE: i32 = 10_000;

/// Converts a decoded fixed-point field back to its value, rejecting what the encoder's clamp to
/// `[lo × FIXED_ONE, FIXED_ONE]` cannot produce.
fn from_fixed(raw: i32, lo: i32, field: &'static str) -> Result<f32, WireError> {
    if !(lo * FIXED_ONE..=FIXED_ONE).contains(&raw) {
        return Err(WireError::OutOfRange { field, raw });
    }
    Ok((f64::from(raw) / FIXED_POINT) as f32)
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The output buffer is shorter than the frame.
    #[error("output buffer holds {available} bytes, frame needs {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A value to encode is NaN or infinite.
    #[error("field {0} is not a finite number")]
    NonFinite(&'static str),
    /// The bytes between two delimiters are not valid COBS.
    #[error("invalid COBS encoding")]
    Cobs,
    /// The decoded frame has the length of no payload version.
    #[error(
        "frame has {0} bytes after COBS decoding, expected {v2} (version 2) or {v1} (version 1)",
        v2 = PAYLOAD_LEN + 2,
        v1 = V1_PAYLOAD_LEN + 2
    )]
    Length(usize),
    /// The checksum does not match.
    #[error("CRC mismatch: frame says {expected:#06x}, payload gives {computed:#06x}")]
    Crc {
        /// CRC carried by the frame.
        expected: u16,
        /// CRC computed over the received payload.
        computed: u16,
    },
    /// Unknown payload version.
    #[error("unsupported payload version {0} (this decoder reads versions 1 and 2)")]
    Version(u8),
    /// The version byte names a known version whose payload has another length.
    #[error("a version-{version} payload has {expected} bytes, this frame has {len}")]
    VersionLength {
        /// The version byte.
        version: u8,
        /// That version's payload length.
        expected: usize,
        /// Payload bytes in the frame.
        len: usize,
    },
    /// A fixed-point field holds a value the encoder never writes (valence or arousal outside
    /// ±10 000, i.e. [-1, 1]; score above 10 000, i.e. 1), so it would not re-encode to the
    /// same bytes.
    #[error("field {field} is {raw} in fixed point, outside the encodable range")]
    OutOfRange {
        /// Name of the field: `valence`, `arousal` or `score`.
        field: &'static str,
        /// The raw fixed-point value on the wire.
        raw: i32,
    },
    /// More than [`MAX_FRAME_LEN`] bytes arrived without a delimiter; they were discarded.
    #[error("frame longer than {MAX_FRAME_LEN} bytes discarded")]
    Overflow,
}

/// Clamps to `[lo, hi]`, scales exactly in binary64 and rounds half away from zero
/// (`no_std` has no `f64::round`; the cast truncates an exact value, so this is exact).
fn quantise(
    value: f32,
    lo: f32,
    hi: f32,
    scale: f64,
    name: &'static str,
) -> Result<i64, WireError> {
    if !value.is_finite() {
        return Err(WireError::NonFinite(name));
    }
    let x = f64::from(value.clamp(lo, hi)) * scale;
    Ok(if x >= 0.0 {
        (x + 0.5) as i64
    } else {
        -((-x + 0.5) as i64)
    })
}

fn fixed_i16(value: f32, name: &'static str) -> Result<i16, WireError> {
    Ok(quantise(value, -1.0, 1.0, FIXED_POINT, name)? as i16)
}

fn pixels_u16(value: f32) -> Result<u16, WireError> {
    Ok(quantise(value, 0.0, 65_535.0, 1.0, "bbox")? as u16)
}

fn payload(report: &Report) -> Result<[u8; PAYLOAD_LEN + 2], WireError> {
    let mut p = [0u8; PAYLOAD_LEN + 2];
    p[0] = VERSION;
    p[1..9].copy_from_slice(&report.timestamp_ms.to_le_bytes());
    p[9..13].copy_from_slice(&report.frame.to_le_bytes());
    p[13..15].copy_from_slice(&report.track.to_le_bytes());
    p[15..17].copy_from_slice(&fixed_i16(report.valence, "valence")?.to_le_bytes());
    p[17..19].copy_from_slice(&fixed_i16(report.arousal, "arousal")?.to_le_bytes());
    for (i, v) in report.bbox.iter().enumerate() {
        p[19 + 2 * i..21 + 2 * i].copy_from_slice(&pixels_u16(*v)?.to_le_bytes());
    }
    let score = quantise(report.score, 0.0, 1.0, FIXED_POINT, "score")? as u16;
    p[27..29].copy_from_slice(&score.to_le_bytes());
    p[29] = report.flags.0;
    let latency = report.latency_ms.map_or(LATENCY_UNKNOWN, |ms| {
        u16::try_from(ms).map_or(LATENCY_MAX_MS, |ms| ms.min(LATENCY_MAX_MS))
    });
    p[30..32].copy_from_slice(&latency.to_le_bytes());
    let crc = CRC.checksum(&p[..PAYLOAD_LEN]);
    p[PAYLOAD_LEN..].copy_from_slice(&crc.to_le_bytes());
    Ok(p)
}

/// Encodes one report as a complete frame (COBS bytes and the 0x00 delimiter) into `out`;
/// returns the number of bytes written.
pub fn encode_frame(report: &Report, out: &mut [u8]) -> Result<usize, WireError> {
    let raw = payload(report)?;
    let needed = cobs_encoded_len(&raw) + 1;
    if out.len() < needed {
        return Err(WireError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    let n = cobs_encode(&raw, out);
    out[n] = 0;
    Ok(n + 1)
}

/// [`encode_frame`] into a fixed-capacity vector.
pub fn encode_frame_vec(report: &Report) -> Result<heapless::Vec<u8, MAX_FRAME_LEN>, WireError> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = encode_frame(report, &mut buf)?;
    let mut v = heapless::Vec::new();
    // Cannot fail: n ≤ MAX_FRAME_LEN by construction.
    v.extend_from_slice(&buf[..n])
        .map_err(|_| WireError::Overflow)?;
    Ok(v)
}

fn cobs_encoded_len(data: &[u8]) -> usize {
    data.len() + data.len() / 254 + 1
}

/// COBS-encodes `data` into `out` (which must hold `cobs_encoded_len(data)` bytes).
fn cobs_encode(data: &[u8], out: &mut [u8]) -> usize {
    let mut code_at = 0;
    let mut code = 1u8;
    let mut w = 1;
    for &b in data {
        if b == 0 {
            out[code_at] = code;
            code_at = w;
            w += 1;
            code = 1;
        } else {
            out[w] = b;
            w += 1;
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = w;
                w += 1;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    w
}

/// Decodes one COBS block (no delimiter) into `out`; `None` if invalid or too long.
fn cobs_decode(data: &[u8], out: &mut [u8]) -> Option<usize> {
    let (mut r, mut w) = (0, 0);
    while r < data.len() {
        let code = usize::from(data[r]);
        if code == 0 || r + code > data.len() {
            return None;
        }
        for &b in &data[r + 1..r + code] {
            if b == 0 {
                return None;
            }
            *out.get_mut(w)? = b;
            w += 1;
        }
        r += code;
        if code != 0xFF && r < data.len() {
            *out.get_mut(w)? = 0;
            w += 1;
        }
    }
    Some(w)
}

/// Decodes the bytes of one frame without its 0x00 delimiter: a version-2 frame, or a
/// version-1 frame (whose report has `latency_ms: None`).
pub fn decode_frame(frame: &[u8]) -> Result<Report, WireError> {
    let mut raw = [0u8; MAX_FRAME_LEN];
    let n = cobs_decode(frame, &mut raw).ok_or(WireError::Cobs)?;
    if n != PAYLOAD_LEN + 2 && n != V1_PAYLOAD_LEN + 2 {
        return Err(WireError::Length(n));
    }
    let len = n - 2;
    let expected = u16::from_le_bytes([raw[len], raw[len + 1]]);
    let computed = CRC.checksum(&raw[..len]);
    if expected != computed {
        return Err(WireError::Crc { expected, computed });
    }
    let version = raw[0];
    let version_len = match version {
        1 => V1_PAYLOAD_LEN,
        VERSION => PAYLOAD_LEN,
        _ => return Err(WireError::Version(version)),
    };
    if len != version_len {
        return Err(WireError::VersionLength {
            version,
            expected: version_len,
            len,
        });
    }
    let u16_at = |i: usize| u16::from_le_bytes([raw[i], raw[i + 1]]);
    let i16_at = |i: usize| i16::from_le_bytes([raw[i], raw[i + 1]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&raw[1..9]);
    let latency_ms = match version {
        1 => None,
        _ => Some(u16_at(30))
            .filter(|&ms| ms != LATENCY_UNKNOWN)
            .map(u32::from),
    };
    Ok(Report {
        timestamp_ms: u64::from_le_bytes(ts),
        frame: u32::from_le_bytes([raw[9], raw[10], raw[11], raw[12]]),
        track: u16_at(13),
        valence: from_fixed(i16_at(15).into(), -1, "valence")?,
        arousal: from_fixed(i16_at(17).into(), -1, "arousal")?,
        bbox: [19, 21, 23, 25].map(|i| f32::from(u16_at(i))),
        score: from_fixed(u16_at(27).into(), 0, "score")?,
        flags: StatusFlags(raw[29]),
        latency_ms,
    })
}

/// Byte-at-a-time frame decoder for a serial stream: yields a report (or a typed error) at each
/// 0x00 delimiter and resynchronises after garbage, truncated or overlong frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: heapless::Vec<u8, MAX_FRAME_LEN>,
    overflowed: bool,
}

impl FrameDecoder {
    /// A decoder waiting for the first byte.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one byte. Returns `Some` when a delimiter completes a frame; empty frames (two
    /// delimiters in a row) are skipped.
    pub fn push(&mut self, byte: u8) -> Option<Result<Report, WireError>> {
        if byte != 0 {
            if self.buf.push(byte).is_err() {
                self.overflowed = true;
            }
            return None;
        }
        let result = if self.overflowed {
            Some(Err(WireError::Overflow))
        } else if self.buf.is_empty() {
            None
        } else {
            Some(decode_frame(&self.buf))
        };
        self.buf.clear();
        self.overflowed = false;
        result
    }
}
