//! The synthetic camera: faces from `affect_shared::synth` (the generator the trainer learns
//! from) composed into a larger scene — cluttered background, one to three people drifting
//! slowly in their own part of the frame — with each frame's true valence/arousal and face box in
//! [`Frame::truth`]. Every `visit_frames` frames the people are replaced by new ones (another
//! identity and affect trajectory), marked as a [`Frame::cut`], like visitors at a kiosk.
//! Everything is determined by the seed, so a run can be replayed exactly.

use std::time::Duration;

use affect_shared::preprocess::FaceBox;
use affect_shared::synth::{SynthConfig, SyntheticVideo, sin_cos};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::camera::wall_clock_ms;
use super::image_dir::{Pacer, validate_fps};
use super::{Frame, FrameSource, GroundTruth, SourceError};

/// Synthetic camera settings; maps onto a `[source.synthetic]`-style TOML table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Seed of everything: people, their affect, motion, background.
    pub seed: u64,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// People in the scene (1–3); `None`: chosen by the seed.
    pub people: Option<u32>,
    /// Side of each rendered face crop in pixels (the face fills about 60 % of it).
    pub face_size: u32,
    /// Frames per second to pace delivery at; `None`: as fast as they are asked for.
    pub fps: Option<f64>,
    /// Stop after this many frames; `None`: endless.
    pub frames: Option<u64>,
    /// Frames each visit lasts before new people take the places; `None`: the same people
    /// throughout.
    pub visit_frames: Option<u64>,
    /// Deliver frames as an MJPEG camera does (and as the trainer's synthetic crops are
    /// stored): JPEG at this quality, decoded by the V4L2 MJPEG decoder; `None`: raw renders.
    pub jpeg_quality: Option<u8>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            width: 640,
            height: 480,
            people: None,
            face_size: 128,
            fps: Some(30.0),
            frames: None,
            visit_frames: Some(150),
            jpeg_quality: Some(90),
        }
    }
}

/// Nominal frame interval of the synthetic clock when unpaced (30 fps).
const NOMINAL_FRAME_MS: f64 = 1000.0 / 30.0;

/// One person in the scene: their video (face crops + truth) and their slow path.
struct Actor {
    video: SyntheticVideo,
    /// The horizontal band of the frame this person stays in: [left, right).
    lane: (f32, f32),
    /// Path phases and angular speeds (radians per frame) in x and y.
    phase: [f32; 2],
    speed: [f32; 2],
}

/// A cluttered, static background: a vertical gradient plus shapes, fixed by the seed.
fn render_background(width: u32, height: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let top: [f32; 3] = [0, 1, 2].map(|_| rng.random_range(60.0..200.0));
    let bottom: [f32; 3] = [0, 1, 2].map(|_| rng.random_range(30.0..170.0));
    let mut image = RgbImage::from_fn(width, height, |_, y| {
        let t = y as f32 / height.max(1) as f32;
        Rgb([0, 1, 2].map(|c| (top[c] + (bottom[c] - top[c]) * t) as u8))
    });
    let shapes = rng.random_range(10..20);
    for _ in 0..shapes {
        let colour = Rgb([0, 1, 2].map(|_| rng.random_range(0..=255u8)));
        let (cx, cy) = (
            rng.random_range(0.0..width as f32),
            rng.random_range(0.0..height as f32),
        );
        let (rx, ry) = (
            rng.random_range(8.0..width as f32 / 5.0),
            rng.random_range(8.0..height as f32 / 5.0),
        );
        let ellipse = rng.random_bool(0.5);
        let x0 = (cx - rx).max(0.0) as u32;
        let x1 = ((cx + rx) as u32).min(width);
        let y0 = (cy - ry).max(0.0) as u32;
        let y1 = ((cy + ry) as u32).min(height);
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                if !ellipse || dx * dx + dy * dy <= 1.0 {
                    image.put_pixel(x, y, colour);
                }
            }
        }
    }
    image
}

/// Pastes `crop` centred on (`cx`, `cy`) through a feathered elliptical mask, so the crop's own
/// background blends into the scene instead of leaving a square edge.
fn paste_feathered(frame: &mut RgbImage, crop: &RgbImage, left: i64, top: i64) {
    let size = crop.width() as f32;
    let centre = size / 2.0;
    for (x, y, pixel) in crop.enumerate_pixels() {
        let (fx, fy) = (left + i64::from(x), top + i64::from(y));
        if fx < 0 || fy < 0 || fx >= i64::from(frame.width()) || fy >= i64::from(frame.height()) {
            continue;
        }
        let dx = (x as f32 + 0.5 - centre) / size;
        let dy = (y as f32 + 0.5 - centre) / size;
        let r = (dx * dx + dy * dy).sqrt();
        // Opaque inside 0.40 of the side, transparent beyond 0.49.
        let alpha = ((0.49 - r) / 0.09).clamp(0.0, 1.0);
        if alpha == 0.0 {
            continue;
        }
        let under = frame.get_pixel_mut(fx as u32, fy as u32);
        for c in 0..3 {
            let blended = alpha * f32::from(pixel[c]) + (1.0 - alpha) * f32::from(under[c]);
            under[c] = blended.round() as u8;
        }
    }
}

/// `image` compressed to JPEG at `quality` and decoded again, as an MJPEG camera delivers it.
fn through_jpeg(image: &RgbImage, quality: u8) -> Result<RgbImage, String> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality)
        .encode_image(image)
        .map_err(|e| e.to_string())?;
    super::mjpeg_to_rgb(&jpeg).map_err(|e| e.to_string())
}

/// The synthetic camera.
pub struct SyntheticCamera {
    config: SyntheticConfig,
    /// How each person's face video renders.
    synth: SynthConfig,
    background: RgbImage,
    actors: Vec<Actor>,
    next_index: u64,
    start_ms: u64,
    pacer: Pacer,
}

impl SyntheticCamera {
    /// Builds the scene for `config.seed`; errors if the faces cannot fit the frame.
    pub fn new(config: &SyntheticConfig) -> Result<Self, SourceError> {
        let what = format!("synthetic:{}", config.seed);
        validate_fps(config.fps, &what)?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let people = match config.people {
            Some(n) => n,
            None => rng.random_range(1..=3),
        };
        if !(1..=3).contains(&people) {
            return Err(SourceError::Config(format!(
                "{what}: people must be 1–3, got {people}"
            )));
        }
        if config.face_size < 32
            || config.face_size > config.height
            || config.face_size * people > config.width
        {
            return Err(SourceError::Config(format!(
                "{what}: {people} face(s) of {} px do not fit side by side in {}x{} \
                 (face_size ≥ 32, ≤ height, × people ≤ width)",
                config.face_size, config.width, config.height
            )));
        }
        if config.jpeg_quality.is_some_and(|q| !(1..=100).contains(&q)) {
            return Err(SourceError::Config(format!(
                "{what}: jpeg_quality must be 1–100"
            )));
        }
        if config.visit_frames == Some(0) {
            return Err(SourceError::Config(format!(
                "{what}: visit_frames must be at least 1"
            )));
        }
        let background = render_background(config.width, config.height, &mut rng);
        let synth = SynthConfig {
            size: config.face_size,
            frames: config
                .visit_frames
                .or(config.frames)
                .map_or(usize::MAX, |f| usize::try_from(f).unwrap_or(usize::MAX)),
            ..SynthConfig::default()
        };
        let lane_width = config.width as f32 / people as f32;
        let actors = (0..people)
            .map(|i| Actor {
                video: SyntheticVideo::new(&synth, config.seed, u64::from(i)),
                lane: (i as f32 * lane_width, (i + 1) as f32 * lane_width),
                phase: [
                    rng.random_range(0.0..std::f32::consts::TAU),
                    rng.random_range(0.0..std::f32::consts::TAU),
                ],
                // Periods of 10–25 s at 30 fps: slow drifts, not jumps.
                speed: [
                    std::f32::consts::TAU / rng.random_range(300.0..750.0),
                    std::f32::consts::TAU / rng.random_range(300.0..750.0),
                ],
            })
            .collect();
        Ok(Self {
            config: config.clone(),
            synth,
            background,
            actors,
            next_index: 0,
            start_ms: wall_clock_ms(),
            pacer: Pacer::new(config.fps),
        })
    }

    /// People in the scene.
    pub fn people(&self) -> usize {
        self.actors.len()
    }

    /// Top-left corner of actor `actor`'s crop on frame `index`.
    fn crop_position(&self, actor: &Actor, index: u64) -> (i64, i64) {
        let size = self.config.face_size as f32;
        let t = index as f32;
        let (sx, _) = sin_cos(actor.phase[0] + actor.speed[0] * t);
        let (sy, _) = sin_cos(actor.phase[1] + actor.speed[1] * t);
        let free_x = (actor.lane.1 - actor.lane.0 - size).max(0.0);
        let free_y = (self.config.height as f32 - size).max(0.0);
        let left = actor.lane.0 + free_x * (0.5 + 0.5 * sx);
        let top = free_y * (0.5 + 0.5 * sy);
        (left.floor() as i64, top.floor() as i64)
    }
}

impl FrameSource for SyntheticCamera {
    fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
        let index = self.next_index;
        if self.config.frames.is_some_and(|n| index >= n) {
            return Ok(None);
        }
        // A new visit: person `i` of visit `v` is video `v · people + i` of the seed.
        let people = self.actors.len() as u64;
        let cut = match self.config.visit_frames {
            Some(n) if index > 0 && index.is_multiple_of(n) => {
                let visit = index / n;
                for (i, actor) in self.actors.iter_mut().enumerate() {
                    actor.video = SyntheticVideo::new(
                        &self.synth,
                        self.config.seed,
                        visit * people + i as u64,
                    );
                }
                true
            }
            _ => false,
        };
        let mut image = self.background.clone();
        let mut truth = Vec::with_capacity(self.actors.len());
        for a in 0..self.actors.len() {
            let (left, top) = self.crop_position(&self.actors[a], index);
            let Some(face) = self.actors[a].video.next() else {
                return Ok(None);
            };
            let Some((crop, landmarks)) = &face.face else {
                continue; // this person is out of view on this frame
            };
            paste_feathered(&mut image, crop, left, top);
            let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
            for [x, y] in landmarks.0 {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
            truth.push(GroundTruth {
                face: FaceBox {
                    x: left as f32 + x0,
                    y: top as f32 + y0,
                    w: x1 - x0,
                    h: y1 - y0,
                },
                valence: face.clean[0],
                arousal: face.clean[1],
            });
        }
        if let Some(quality) = self.config.jpeg_quality {
            image = through_jpeg(&image, quality).map_err(|message| SourceError::Decode {
                what: format!("synthetic:{} frame {index}", self.config.seed),
                message,
            })?;
        }
        self.next_index += 1;
        self.pacer.wait();
        let interval = self.config.fps.map_or(NOMINAL_FRAME_MS, |fps| 1000.0 / fps);
        Ok(Some(Frame {
            index,
            timestamp_ms: self.start_ms + (index as f64 * interval).round() as u64,
            image,
            truth: Some(truth),
            cut,
        }))
    }

    fn describe(&self) -> String {
        format!(
            "synthetic:{} {}x{} {} people{}",
            self.config.seed,
            self.config.width,
            self.config.height,
            self.actors.len(),
            self.config
                .frames
                .map_or(String::new(), |n| format!(", {n} frames"))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64, people: u32) -> SyntheticConfig {
        SyntheticConfig {
            seed,
            width: 320,
            height: 240,
            people: Some(people),
            face_size: 96,
            fps: None,
            frames: Some(3),
            visit_frames: Some(2),
            jpeg_quality: None,
        }
    }

    #[test]
    fn visitors_change_at_a_cut_and_the_seed_replays_them() {
        let frames = |seed| {
            let mut camera = SyntheticCamera::new(&config(seed, 1)).unwrap();
            std::iter::from_fn(|| camera.next_frame(Duration::ZERO).unwrap()).collect::<Vec<_>>()
        };
        let run = frames(4);
        assert_eq!(
            run.iter().map(|f| f.cut).collect::<Vec<_>>(),
            [false, false, true]
        );
        // Person 0 of visit 1 is video 1 of the seed, not video 0 continued.
        let synth = SynthConfig {
            size: 96,
            frames: 2,
            ..SynthConfig::default()
        };
        let newcomer = SyntheticVideo::new(&synth, 4, 1).next().unwrap();
        let truth = run[2].truth.as_ref().unwrap();
        assert_eq!(truth.len(), usize::from(newcomer.face.is_some()));
        if let Some(t) = truth.first() {
            assert_eq!([t.valence, t.arousal], newcomer.clean);
        }
        let again = frames(4);
        assert!(run.iter().zip(&again).all(|(a, b)| a.image == b.image));
        let zero = SyntheticConfig {
            visit_frames: Some(0),
            ..config(4, 1)
        };
        assert!(SyntheticCamera::new(&zero).is_err());
    }

    #[test]
    fn faces_that_cannot_fit_are_a_configuration_error() {
        let crowded = SyntheticConfig {
            people: Some(3),
            face_size: 128,
            width: 320,
            ..config(1, 3)
        };
        let err = SyntheticCamera::new(&crowded).err().unwrap();
        assert!(err.to_string().contains("do not fit"), "{err}");
        let nobody = SyntheticCamera::new(&config(1, 0)).err().unwrap();
        assert!(
            nobody.to_string().contains("people must be 1–3"),
            "{nobody}"
        );
    }

    #[test]
    fn jpeg_delivery_stays_close_to_the_render_and_bad_quality_is_refused() {
        let first = |jpeg_quality| {
            let c = SyntheticConfig {
                jpeg_quality,
                ..config(2, 1)
            };
            SyntheticCamera::new(&c)
                .unwrap()
                .next_frame(Duration::ZERO)
                .unwrap()
                .unwrap()
                .image
        };
        let (raw, jpeg) = (first(None), first(Some(90)));
        assert_ne!(raw, jpeg);
        let mean_error = raw
            .as_raw()
            .iter()
            .zip(jpeg.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / raw.as_raw().len() as f64;
        assert!(mean_error < 4.0, "mean error {mean_error} levels");
        let bad = SyntheticConfig {
            jpeg_quality: Some(0),
            ..config(2, 1)
        };
        assert!(SyntheticCamera::new(&bad).is_err());
    }

    #[test]
    fn feathered_paste_is_opaque_in_the_middle_and_leaves_corners_alone() {
        let mut frame = RgbImage::from_pixel(40, 40, Rgb([0, 0, 0]));
        let crop = RgbImage::from_pixel(20, 20, Rgb([200, 100, 50]));
        paste_feathered(&mut frame, &crop, 10, 10);
        assert_eq!(frame.get_pixel(20, 20).0, [200, 100, 50]);
        assert_eq!(frame.get_pixel(10, 10).0, [0, 0, 0]);
        assert_eq!(frame.get_pixel(5, 5).0, [0, 0, 0]);
        // Partly off-frame pastes are clipped, not a panic.
        paste_feathered(&mut frame, &crop, -10, 35);
    }
}
