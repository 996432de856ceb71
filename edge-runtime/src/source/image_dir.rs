//! A directory of images as a frame source: files in natural order (`2.png` before `10.png`),
//! paced at a frame rate or as fast as the pipeline takes them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::camera::wall_clock_ms;
use super::{Frame, FrameSource, SourceError};

/// What to do with a file that is not a readable image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadImage {
    /// Return a [`SourceError::Decode`] naming the file (the next call goes on with the next
    /// file, so the caller may still choose to continue).
    #[default]
    Fail,
    /// Log a warning naming the file and go on; the frame index keeps a gap where it was.
    Skip,
}

/// Image directory settings; maps onto a `[source.images]`-style TOML table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageDirConfig {
    /// The directory (not searched recursively).
    pub path: PathBuf,
    /// Frames per second to pace delivery at; `None`: as fast as they are asked for.
    pub fps: Option<f64>,
    /// Bad file policy.
    pub on_error: OnBadImage,
    /// Start again from the first file after the last (frame indices keep counting).
    pub repeat: bool,
}

impl Default for ImageDirConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("."),
            fps: None,
            on_error: OnBadImage::Fail,
            repeat: false,
        }
    }
}

/// Delivers frames no faster than a rate: each call waits until one interval after the previous
/// delivery was due. A consumer that falls behind is not made up for with a burst.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    interval: Option<Duration>,
    next_due: Option<Instant>,
}

impl Pacer {
    /// A pacer at `fps` (> 0), or one that never waits.
    pub(crate) fn new(fps: Option<f64>) -> Self {
        Self {
            interval: fps.map(|f| Duration::from_secs_f64(1.0 / f)),
            next_due: None,
        }
    }

    /// Sleeps until the next frame is due.
    pub(crate) fn wait(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        let due = self.next_due.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        self.next_due = Some(due.max(now) + interval);
    }
}

/// Checks a frame rate from a configuration (`what` names the field).
pub(crate) fn validate_fps(fps: Option<f64>, what: &str) -> Result<(), SourceError> {
    match fps {
        Some(f) if !(f.is_finite() && f > 0.0) => Err(SourceError::Config(format!(
            "{what}: fps must be a positive number, got {f}"
        ))),
        _ => Ok(()),
    }
}

/// File extensions the runtime decodes (the `image` crate's enabled codecs).
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Compares file names the way people number frames: digit runs by value.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let (da, db) = (&a[..na], &b[..nb]);
                let strip = |d: &[u8]| {
                    let zeros = d.iter().take_while(|c| **c == b'0').count();
                    d[zeros..].to_vec()
                };
                let (sa, sb) = (strip(da), strip(db));
                let by_value = sa.len().cmp(&sb.len()).then_with(|| sa.cmp(&sb));
                // Equal values: fewer leading zeros first, so the order is total.
                let order = by_value.then_with(|| na.cmp(&nb));
                if order != std::cmp::Ordering::Equal {
                    return order;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// The image files of `dir`, in natural order of their names.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let unreadable = |e: std::io::Error| SourceError::Unavailable {
        what: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| {
        natural_cmp(
            &a.file_name().unwrap_or_default().to_string_lossy(),
            &b.file_name().unwrap_or_default().to_string_lossy(),
        )
    });
    Ok(files)
}

/// Frames from the image files of a directory.
pub struct ImageDir {
    dir: PathBuf,
    files: Vec<PathBuf>,
    position: usize,
    next_index: u64,
    pacer: Pacer,
    on_error: OnBadImage,
    repeat: bool,
    skipped: u64,
    skipped_in_a_row: usize,
}

impl ImageDir {
    /// Lists the directory now; errors if it cannot be read, holds no PNG/JPEG files, or the
    /// frame rate is not positive.
    pub fn open(config: &ImageDirConfig) -> Result<Self, SourceError> {
        let what = format!("images {}", config.path.display());
        validate_fps(config.fps, &what)?;
        let files = list_images(&config.path)?;
        if files.is_empty() {
            return Err(SourceError::Config(format!(
                "{what}: no .png/.jpg/.jpeg files in the directory"
            )));
        }
        Ok(Self {
            dir: config.path.clone(),
            files,
            position: 0,
            next_index: 0,
            pacer: Pacer::new(config.fps),
            on_error: config.on_error,
            repeat: config.repeat,
            skipped: 0,
            skipped_in_a_row: 0,
        })
    }

    /// The files, in delivery order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Files skipped as unreadable so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl FrameSource for ImageDir {
    /// The next image. Pacing waits for the frame's slot regardless of `timeout` (an image
    /// directory is never "unavailable").
    fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
        loop {
            if self.position == self.files.len() {
                if !self.repeat {
                    return Ok(None);
                }
                self.position = 0;
            }
            let path = &self.files[self.position];
            let index = self.next_index;
            self.position += 1;
            self.next_index += 1;
            let decoded = image::ImageReader::open(path)
                .map_err(image::ImageError::IoError)
                .and_then(|r| r.with_guessed_format().map_err(image::ImageError::IoError))
                .and_then(|r| r.decode());
            match decoded {
                Ok(image) => {
                    self.skipped_in_a_row = 0;
                    self.pacer.wait();
                    return Ok(Some(Frame {
                        index,
                        timestamp_ms: wall_clock_ms(),
                        image: image.to_rgb8(),
                        truth: None,
                        cut: false,
                    }));
                }
                Err(e) => {
                    let what = path.display().to_string();
                    match self.on_error {
                        OnBadImage::Fail => {
                            return Err(SourceError::Decode {
                                what,
                                message: e.to_string(),
                            });
                        }
                        OnBadImage::Skip => {
                            self.skipped += 1;
                            self.skipped_in_a_row += 1;
                            tracing::warn!("{what}: skipped, cannot decode: {e}");
                            if self.skipped_in_a_row >= self.files.len() && self.repeat {
                                return Err(SourceError::Config(format!(
                                    "images {}: no file in the directory decodes",
                                    self.dir.display()
                                )));
                            }
                        }
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("images {} ({} files)", self.dir.display(), self.files.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers_by_value() {
        let mut names = vec![
            "frame10.png",
            "frame2.png",
            "frame1.png",
            "a.png",
            "frame02.png",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "a.png",
                "frame1.png",
                "frame2.png",
                "frame02.png",
                "frame10.png"
            ]
        );
        assert_eq!(
            natural_cmp("00001.jpg", "00002.jpg"),
            std::cmp::Ordering::Less
        );
    }

    #[test]
    fn pacer_spaces_frames_by_the_interval_without_bursts() {
        let mut pacer = Pacer::new(Some(100.0));
        let start = Instant::now();
        for _ in 0..6 {
            pacer.wait();
        }
        // First frame immediately, then five 10 ms intervals.
        assert!(start.elapsed() >= Duration::from_millis(50));
        let mut free = Pacer::new(None);
        free.wait();
        assert!(free.next_due.is_none());
    }
}
