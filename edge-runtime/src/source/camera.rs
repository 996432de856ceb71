//! Live cameras. [`ReopeningCamera`] holds the logic — decode, number and timestamp frames,
//! reopen with exponential backoff when the camera disappears, resume when it returns — over a
//! small [`CameraOpener`]/[`CameraStream`] pair; [`V4l2Opener`] is the real device (the `v4l`
//! crate, memory-mapped streaming), tests use a scripted one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use image::RgbImage;

use super::decode::{DecodeError, YuvRange, mjpeg_to_rgb, yuyv_to_rgb};
use super::{Frame, FrameSource, SourceError};
use crate::backoff::{Backoff, BackoffConfig};

/// Pixel formats the runtime decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion-JPEG (V4L2 `MJPG`): small buffers, high resolutions at full frame rate over USB 2.
    #[default]
    Mjpeg,
    /// Packed YUYV 4:2:2 (V4L2 `YUYV`): uncompressed, exact, limited by USB bandwidth.
    Yuyv,
}

impl PixelFormat {
    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }

    /// The format for a V4L2 four-character code, if the runtime decodes it.
    pub fn from_fourcc(code: [u8; 4]) -> Option<Self> {
        match &code {
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"YUYV" | b"YUY2" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }
}

/// What the driver agreed to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLayout {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per line (YUYV), 0 when not applicable.
    pub stride: usize,
    /// Quantisation range of YUYV samples.
    pub range: YuvRange,
}

/// One buffer as the driver delivered it.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// The bytes (MJPEG: one JPEG; YUYV: `stride × height`).
    pub data: Vec<u8>,
    /// Driver capture time on its own clock (monotonic for V4L2), if it set one.
    pub driver_time: Option<Duration>,
}

/// Why opening failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The device is absent or busy; retrying later may succeed.
    #[error("{0}")]
    Absent(#[from] std::io::Error),
    /// The device exists but cannot do what was asked; retrying will not help.
    #[error("{0}")]
    Unsupported(String),
}

/// An open capture stream.
pub trait CameraStream {
    /// What the stream delivers.
    fn layout(&self) -> StreamLayout;
    /// Waits at most `timeout` for the next buffer. `ErrorKind::TimedOut` when none came; any
    /// other error means the device is gone.
    fn capture(&mut self, timeout: Duration) -> std::io::Result<RawFrame>;
}

/// Opens (and reopens) a camera.
pub trait CameraOpener {
    /// The stream it opens.
    type Stream: CameraStream;
    /// Opens the camera and starts streaming.
    fn open(&mut self) -> Result<Self::Stream, OpenError>;
    /// Name for logs ("camera /dev/video0 640x480 MJPG 30 fps").
    fn describe(&self) -> String;
}

/// Decodes one driver buffer laid out as `layout` to RGB.
pub fn decode_frame(layout: &StreamLayout, data: &[u8]) -> Result<RgbImage, DecodeError> {
    match layout.format {
        PixelFormat::Mjpeg => mjpeg_to_rgb(data),
        PixelFormat::Yuyv => yuyv_to_rgb(
            data,
            layout.width,
            layout.height,
            layout.stride,
            layout.range,
        ),
    }
}

/// Consecutive capture timeouts after which a silent camera is closed and reopened.
const SILENT_TIMEOUTS_BEFORE_REOPEN: u32 = 3;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A camera that survives being unplugged: frames are numbered across reopens (a gap in `index`
/// is a lost frame), timestamped from the driver's clock mapped onto wall time, and decoded to
/// RGB. While the camera is gone, [`FrameSource::next_frame`] retries on the backoff schedule
/// within its timeout and returns [`SourceError::Unavailable`] if the camera did not come back.
pub struct ReopeningCamera<O: CameraOpener> {
    opener: O,
    stream: Option<O::Stream>,
    backoff: Backoff,
    next_index: u64,
    /// Wall-clock ms minus driver ms, fixed at the first frame of each open stream.
    clock_offset_ms: Option<i128>,
    silent_timeouts: u32,
    last_error: Option<String>,
    opens: u64,
}

impl<O: CameraOpener> ReopeningCamera<O> {
    /// A camera opened on the first [`next_frame`](FrameSource::next_frame).
    pub fn new(opener: O, backoff: BackoffConfig) -> Self {
        Self {
            opener,
            stream: None,
            backoff: Backoff::new(backoff),
            next_index: 0,
            clock_offset_ms: None,
            silent_timeouts: 0,
            last_error: None,
            opens: 0,
        }
    }

    /// Successful opens so far (1 + reopens).
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Whether the camera is open now.
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    fn close(&mut self, reason: String, now: Instant) {
        if self.stream.take().is_some() {
            tracing::warn!("{}: lost ({reason}); reopening", self.opener.describe());
        }
        self.backoff.failed(now);
        self.last_error = Some(reason);
        self.clock_offset_ms = None;
        self.silent_timeouts = 0;
    }

    fn timestamp_ms(&mut self, driver_time: Option<Duration>) -> u64 {
        let now = wall_clock_ms();
        let Some(driver) = driver_time.filter(|d| !d.is_zero()) else {
            return now;
        };
        let driver_ms = driver.as_millis() as i128;
        let offset = *self
            .clock_offset_ms
            .get_or_insert(i128::from(now) - driver_ms);
        u64::try_from(driver_ms + offset).unwrap_or(now)
    }

    fn unavailable(&self) -> SourceError {
        SourceError::Unavailable {
            what: self.opener.describe(),
            message: self
                .last_error
                .clone()
                .unwrap_or_else(|| "not opened".into()),
        }
    }
}

impl<O: CameraOpener> FrameSource for ReopeningCamera<O> {
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if self.stream.is_none() && self.backoff.ready(now) {
                match self.opener.open() {
                    Ok(stream) => {
                        self.opens += 1;
                        if self.opens > 1 {
                            tracing::info!("{}: back", self.opener.describe());
                        }
                        self.stream = Some(stream);
                        self.backoff.succeeded();
                    }
                    Err(OpenError::Unsupported(message)) => {
                        return Err(SourceError::Config(format!(
                            "{}: {message}",
                            self.opener.describe()
                        )));
                    }
                    Err(OpenError::Absent(e)) => self.close(e.to_string(), now),
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                match self.backoff.retry_at() {
                    Some(at) if at < deadline => {
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        continue;
                    }
                    _ => {
                        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                        return Err(self.unavailable());
                    }
                }
            };
            let layout = stream.layout();
            let wait = deadline.saturating_duration_since(now);
            let raw = match stream.capture(wait) {
                Ok(raw) => raw,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    self.silent_timeouts += 1;
                    let message = format!("no frame within {} ms", timeout.as_millis());
                    if self.silent_timeouts >= SILENT_TIMEOUTS_BEFORE_REOPEN {
                        self.close(message.clone(), Instant::now());
                    }
                    return Err(SourceError::Unavailable {
                        what: self.opener.describe(),
                        message,
                    });
                }
                Err(e) => {
                    self.close(e.to_string(), Instant::now());
                    if Instant::now() >= deadline {
                        return Err(self.unavailable());
                    }
                    continue;
                }
            };
            self.silent_timeouts = 0;
            let index = self.next_index;
            self.next_index += 1;
            let timestamp_ms = self.timestamp_ms(raw.driver_time);
            let image = decode_frame(&layout, &raw.data).map_err(|e| SourceError::Decode {
                what: format!("{} frame {index}", self.opener.describe()),
                message: e.to_string(),
            })?;
            return Ok(Some(Frame {
                index,
                timestamp_ms,
                image,
                truth: None,
                cut: false,
            }));
        }
    }

    fn describe(&self) -> String {
        self.opener.describe()
    }
}

/// V4L2 camera settings; maps onto a `[source.camera]`-style TOML table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CameraConfig {
    /// Device node, e.g. `/dev/video0` or `/dev/v4l/by-id/…`.
    pub device: PathBuf,
    /// Requested pixel format; if the driver offers only the other one, that one is used.
    pub format: PixelFormat,
    /// Requested width in pixels (the driver may pick the nearest it supports).
    pub width: u32,
    /// Requested height in pixels.
    pub height: u32,
    /// Requested frame rate.
    pub fps: u32,
    /// Memory-mapped driver buffers (more: fewer dropped frames, more latency).
    pub buffers: u32,
    /// Reopen schedule after the camera disappears.
    pub backoff: BackoffConfig,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            device: PathBuf::from("/dev/video0"),
            format: PixelFormat::Mjpeg,
            width: 640,
            height: 480,
            fps: 30,
            buffers: 4,
            backoff: BackoffConfig::default(),
        }
    }
}

/// Opens a V4L2 device, negotiates format, size and frame rate, and streams through mmap.
#[derive(Debug, Clone)]
pub struct V4l2Opener {
    config: CameraConfig,
}

impl V4l2Opener {
    /// An opener for the camera `config` describes (nothing is opened yet).
    pub fn new(config: CameraConfig) -> Self {
        Self { config }
    }
}

/// One pixel format a camera offers, with its frame sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedFormat {
    /// The V4L2 four-character code, e.g. `MJPG`.
    pub fourcc: String,
    /// Frame sizes as the driver lists them (`640x480`, or a stepwise range).
    pub sizes: Vec<String>,
}

/// The pixel formats and frame sizes the V4L2 device at `device` offers (opens it briefly).
pub fn offered_formats(device: &Path) -> std::io::Result<Vec<OfferedFormat>> {
    use v4l::video::Capture;
    let device = v4l::Device::with_path(device)?;
    device
        .enum_formats()?
        .into_iter()
        .map(|format| -> std::io::Result<OfferedFormat> {
            let sizes = device
                .enum_framesizes(format.fourcc)?
                .into_iter()
                .map(|size| match size.size {
                    v4l::framesize::FrameSizeEnum::Discrete(d) => {
                        format!("{}x{}", d.width, d.height)
                    }
                    v4l::framesize::FrameSizeEnum::Stepwise(s) => format!(
                        "{}x{}–{}x{}",
                        s.min_width, s.min_height, s.max_width, s.max_height
                    ),
                })
                .collect();
            Ok(OfferedFormat {
                fourcc: format.fourcc.to_string(),
                sizes,
            })
        })
        .collect()
}

/// An open V4L2 capture stream.
pub struct V4l2Stream {
    // Field order matters: the stream (mmap buffers) goes before the device it came from.
    stream: v4l::io::mmap::Stream<'static>,
    _device: v4l::Device,
    layout: StreamLayout,
}

impl CameraStream for V4l2Stream {
    fn layout(&self) -> StreamLayout {
        self.layout
    }

    fn capture(&mut self, timeout: Duration) -> std::io::Result<RawFrame> {
        use v4l::io::traits::CaptureStream;
        // v4l takes a poll(2) timeout in whole milliseconds; 0 would mean "wait forever".
        self.stream
            .set_timeout(timeout.max(Duration::from_millis(1)));
        let (buffer, meta) = CaptureStream::next(&mut self.stream)?;
        let used = (meta.bytesused as usize).min(buffer.len());
        let driver_time = (meta.timestamp.sec > 0 || meta.timestamp.usec > 0).then(|| {
            Duration::from_secs(meta.timestamp.sec as u64)
                + Duration::from_micros(meta.timestamp.usec as u64)
        });
        Ok(RawFrame {
            data: buffer[..used].to_vec(),
            driver_time,
        })
    }
}

impl CameraOpener for V4l2Opener {
    type Stream = V4l2Stream;

    fn open(&mut self) -> Result<V4l2Stream, OpenError> {
        use v4l::video::Capture;
        let c = &self.config;
        let device = v4l::Device::with_path(&c.device)?;
        let wanted = v4l::Format::new(c.width, c.height, v4l::FourCC::new(&c.format.fourcc()));
        let mut got = device.set_format(&wanted)?;
        let format = match PixelFormat::from_fourcc(got.fourcc.repr) {
            Some(format) => format,
            None => {
                // The driver substituted a format we do not decode: try the other one we do.
                let other = match c.format {
                    PixelFormat::Mjpeg => PixelFormat::Yuyv,
                    PixelFormat::Yuyv => PixelFormat::Mjpeg,
                };
                let retry = v4l::Format::new(c.width, c.height, v4l::FourCC::new(&other.fourcc()));
                got = device.set_format(&retry)?;
                PixelFormat::from_fourcc(got.fourcc.repr).ok_or_else(|| {
                    OpenError::Unsupported(format!(
                        "offers neither MJPG nor YUYV (driver chose {})",
                        got.fourcc
                    ))
                })?
            }
        };
        if format != c.format || (got.width, got.height) != (c.width, c.height) {
            tracing::info!(
                "{}: driver chose {}x{} {}",
                c.device.display(),
                got.width,
                got.height,
                got.fourcc
            );
        }
        if c.fps > 0 {
            // Not every driver lets the rate be set; the camera then runs at its own.
            if let Err(e) = device.set_params(&v4l::video::capture::Parameters::with_fps(c.fps)) {
                tracing::info!("{}: cannot set {} fps: {e}", c.device.display(), c.fps);
            }
        }
        let range = match got.quantization {
            v4l::format::Quantization::FullRange => YuvRange::Full,
            _ => YuvRange::Limited,
        };
        let stream = v4l::io::mmap::Stream::with_buffers(
            &device,
            v4l::buffer::Type::VideoCapture,
            c.buffers.max(2),
        )?;
        Ok(V4l2Stream {
            stream,
            _device: device,
            layout: StreamLayout {
                format,
                width: got.width,
                height: got.height,
                stride: got.stride as usize,
                range,
            },
        })
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "camera {} {}x{} {} {} fps",
            c.device.display(),
            c.width,
            c.height,
            String::from_utf8_lossy(&c.format.fourcc()),
            c.fps
        )
    }
}

/// A V4L2 webcam (MJPEG or YUYV) that is reopened when unplugged.
pub type V4l2Camera = ReopeningCamera<V4l2Opener>;

impl V4l2Camera {
    /// A camera with these settings; the device is opened on the first frame request, so a
    /// camera plugged in later is picked up. Errors only on an unusable configuration.
    pub fn open(config: &CameraConfig) -> Result<Self, SourceError> {
        let bad =
            |m: String| SourceError::Config(format!("camera {}: {m}", config.device.display()));
        if config.width == 0 || config.height == 0 {
            return Err(bad("width and height must be positive".into()));
        }
        config.backoff.validate().map_err(bad)?;
        Ok(ReopeningCamera::new(
            V4l2Opener::new(config.clone()),
            config.backoff,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// A USB camera on a bench: it can be unplugged, and it delivers YUYV frames whose luma
    /// encodes the driver's frame counter.
    #[derive(Default)]
    struct Bench {
        plugged: bool,
        opens: u32,
        delivered: u32,
        silent: bool,
    }

    struct FakeOpener(Rc<RefCell<Bench>>);
    struct FakeStream(Rc<RefCell<Bench>>);

    impl CameraStream for FakeStream {
        fn layout(&self) -> StreamLayout {
            StreamLayout {
                format: PixelFormat::Yuyv,
                width: 2,
                height: 1,
                stride: 4,
                range: YuvRange::Full,
            }
        }
        fn capture(&mut self, _timeout: Duration) -> std::io::Result<RawFrame> {
            let mut bench = self.0.borrow_mut();
            if !bench.plugged {
                return Err(std::io::Error::from_raw_os_error(19)); // ENODEV
            }
            if bench.silent {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            bench.delivered += 1;
            let y = bench.delivered as u8;
            Ok(RawFrame {
                data: vec![y, 128, y, 128],
                driver_time: Some(Duration::from_millis(5_000 + 33 * u64::from(y))),
            })
        }
    }

    impl CameraOpener for FakeOpener {
        type Stream = FakeStream;
        fn open(&mut self) -> Result<FakeStream, OpenError> {
            let mut bench = self.0.borrow_mut();
            if !bench.plugged {
                return Err(std::io::Error::from_raw_os_error(2).into()); // ENOENT
            }
            bench.opens += 1;
            Ok(FakeStream(self.0.clone()))
        }
        fn describe(&self) -> String {
            "fake camera".into()
        }
    }

    fn quick_backoff() -> BackoffConfig {
        BackoffConfig {
            initial_ms: 10,
            max_ms: 40,
            factor: 2.0,
        }
    }

    #[test]
    fn frames_are_decoded_numbered_and_timed_by_the_driver_clock() {
        let bench = Rc::new(RefCell::new(Bench {
            plugged: true,
            ..Bench::default()
        }));
        let mut camera = ReopeningCamera::new(FakeOpener(bench.clone()), quick_backoff());
        let a = camera
            .next_frame(Duration::from_millis(50))
            .unwrap()
            .unwrap();
        let b = camera
            .next_frame(Duration::from_millis(50))
            .unwrap()
            .unwrap();
        assert_eq!((a.index, b.index), (0, 1));
        assert_eq!(a.image.get_pixel(0, 0).0, [1, 1, 1]);
        assert_eq!(b.image.get_pixel(1, 0).0, [2, 2, 2]);
        // Driver timestamps 33 ms apart stay 33 ms apart, anchored near the wall clock.
        assert_eq!(b.timestamp_ms - a.timestamp_ms, 33);
        assert!(a.timestamp_ms.abs_diff(wall_clock_ms()) < 5_000);
    }

    #[test]
    fn an_unplugged_camera_is_reopened_with_backoff_and_numbering_continues() {
        let bench = Rc::new(RefCell::new(Bench {
            plugged: true,
            ..Bench::default()
        }));
        let mut camera = ReopeningCamera::new(FakeOpener(bench.clone()), quick_backoff());
        camera
            .next_frame(Duration::from_millis(50))
            .unwrap()
            .unwrap();
        bench.borrow_mut().plugged = false;
        let started = Instant::now();
        let err = camera.next_frame(Duration::from_millis(100)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(matches!(err, SourceError::Unavailable { .. }), "{err}");
        assert!(err.to_string().starts_with("fake camera: "), "{err}");
        assert!(!camera.is_open());
        bench.borrow_mut().plugged = true;
        let frame = camera
            .next_frame(Duration::from_millis(200))
            .unwrap()
            .unwrap();
        assert_eq!(frame.index, 1);
        assert_eq!((bench.borrow().opens, camera.opens()), (2, 2));
    }

    #[test]
    fn a_camera_that_stops_delivering_is_reopened_after_repeated_timeouts() {
        let bench = Rc::new(RefCell::new(Bench {
            plugged: true,
            silent: true,
            ..Bench::default()
        }));
        let mut camera = ReopeningCamera::new(FakeOpener(bench.clone()), quick_backoff());
        for _ in 0..SILENT_TIMEOUTS_BEFORE_REOPEN {
            let err = camera.next_frame(Duration::from_millis(5)).unwrap_err();
            assert!(err.to_string().contains("no frame within 5 ms"), "{err}");
        }
        assert!(!camera.is_open());
        bench.borrow_mut().silent = false;
        let frame = camera
            .next_frame(Duration::from_millis(200))
            .unwrap()
            .unwrap();
        assert_eq!(frame.index, 0);
        assert_eq!(bench.borrow().opens, 2);
    }

    #[test]
    fn a_missing_device_node_is_unavailable_not_a_panic() {
        let config = CameraConfig {
            device: PathBuf::from("/dev/video-affect-test-absent"),
            backoff: quick_backoff(),
            ..CameraConfig::default()
        };
        let mut camera = V4l2Camera::open(&config).unwrap();
        let err = camera.next_frame(Duration::from_millis(30)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("camera /dev/video-affect-test-absent 640x480 MJPG"),
            "{err}"
        );
    }
}
