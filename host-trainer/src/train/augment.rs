//! Training-time augmentation (`[augment]`): every training clip is seen through a random
//! camera — its crop shifted, scaled, rotated and mirrored, its colours re-balanced — with the
//! landmarks moved exactly as the pixels are. Validation and evaluation data are never touched.
//!
//! Why: a network that sees a few dozen people memorises them — their colours, and the pose and
//! lighting that drift with time within each video — instead of reading the expression (the
//! image-only ablation variants fitted their training batches to a CCC loss of 0.03 while
//! validating at CCC ≈ 0). Random framing and colour make those shortcuts useless.
//!
//! One draw per clip: the frames of a clip keep one camera, as in a real video, so a recurrent
//! network still sees a smooth sequence. The draw comes from a generator seeded by the run's seed
//! and the batch's position, so a resumed run sees exactly the batches the first one would have.
//! The pure parts ([`Camera::map_landmarks`], [`warp_into`], [`recolour`]) are tested alone.

use affect_shared::contract::{LANDMARK_POINTS, LANDMARK_VALUES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::source::{BatchSource, SourceError};
use crate::data::Batch;

/// Strength of each random transform (`[augment]`); zeros everywhere (see [`Self::none`]) is
/// the paper's setting: no augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Largest shift of the face in the crop, per axis, as a fraction of the crop's side.
    pub shift: f32,
    /// Largest zoom: the face is scaled by a factor in `[1 / (1 + scale), 1 + scale]`.
    pub scale: f32,
    /// Largest in-plane rotation, degrees.
    pub rotation_degrees: f32,
    /// Whether half of the clips are mirrored left to right (landmarks re-indexed so point 36
    /// stays the subject's right eye corner).
    pub mirror: bool,
    /// Largest change of each colour channel's contrast: its deviations from the crop's mean are
    /// scaled by a factor in `1 ± contrast`.
    pub contrast: f32,
    /// Largest shift of each colour channel's level, in standard deviations of that channel over
    /// the crop (so it means the same whatever the input normalisation).
    pub brightness: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            shift: 0.06,
            scale: 0.1,
            rotation_degrees: 10.0,
            mirror: true,
            contrast: 0.3,
            brightness: 0.4,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all (the paper's setting, and what runs saved before `[augment]`
    /// existed were trained with).
    pub fn none() -> Self {
        Self {
            shift: 0.0,
            scale: 0.0,
            rotation_degrees: 0.0,
            mirror: false,
            contrast: 0.0,
            brightness: 0.0,
        }
    }

    /// Whether any transform is on.
    pub fn is_active(&self) -> bool {
        *self != Self::none()
    }

    /// The offending key and why, when a strength is negative, not finite or too large to keep
    /// the face in the crop.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let limits = [
            ("augment.shift", self.shift, 0.5),
            ("augment.scale", self.scale, 1.0),
            ("augment.rotation_degrees", self.rotation_degrees, 180.0),
            ("augment.contrast", self.contrast, 1.0),
            ("augment.brightness", self.brightness, 10.0),
        ];
        limits.into_iter().find_map(|(key, value, max)| {
            (!(0.0..=max).contains(&value))
                .then(|| (key, format!("{value} must be between 0 and {max}")))
        })
    }
}

/// One random camera: a similarity transform of the crop about its centre, an optional mirror,
/// and per-channel colour gains and offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    /// Zoom factor (> 1 enlarges the face).
    pub scale: f32,
    /// Rotation, radians (counter-clockwise in image coordinates, y down).
    pub rotation: f32,
    /// Shift of the face, fractions of the crop side (x, y).
    pub shift: [f32; 2],
    /// Mirror left to right after the similarity transform.
    pub mirror: bool,
    /// Per-channel contrast factor.
    pub gain: [f32; 3],
    /// Per-channel level shift, in standard deviations of the channel over the crop.
    pub offset: [f32; 3],
}

impl Camera {
    /// The camera that changes nothing.
    pub const IDENTITY: Self = Self {
        scale: 1.0,
        rotation: 0.0,
        shift: [0.0, 0.0],
        mirror: false,
        gain: [1.0; 3],
        offset: [0.0; 3],
    };

    /// A random camera within `config`'s strengths.
    pub fn random(config: &AugmentConfig, rng: &mut impl Rng) -> Self {
        let mut symmetric = |limit: f32| {
            if limit > 0.0 {
                rng.random_range(-limit..=limit)
            } else {
                0.0
            }
        };
        let scale = (1.0 + config.scale).powf(symmetric(1.0));
        let rotation = symmetric(config.rotation_degrees).to_radians();
        let shift = [symmetric(config.shift), symmetric(config.shift)];
        let gain = [0; 3].map(|_| 1.0 + symmetric(config.contrast));
        let offset = [0; 3].map(|_| symmetric(config.brightness));
        let mirror = config.mirror && rng.random_bool(0.5);
        Self {
            scale,
            rotation,
            shift,
            mirror,
            gain,
            offset,
        }
    }

    /// Where a point of the original crop (fractions of its side) lands in the augmented crop.
    pub fn forward(&self, p: [f32; 2]) -> [f32; 2] {
        let (sin, cos) = self.rotation.sin_cos();
        let (dx, dy) = (p[0] - 0.5, p[1] - 0.5);
        let x = 0.5 + self.scale * (cos * dx - sin * dy) + self.shift[0];
        let y = 0.5 + self.scale * (sin * dx + cos * dy) + self.shift[1];
        if self.mirror { [1.0 - x, y] } else { [x, y] }
    }

    /// Where a point of the augmented crop (fractions) comes from in the original crop: the
    /// inverse of [`Self::forward`].
    pub fn backward(&self, q: [f32; 2]) -> [f32; 2] {
        let x = if self.mirror { 1.0 - q[0] } else { q[0] };
        let (dx, dy) = (x - 0.5 - self.shift[0], q[1] - 0.5 - self.shift[1]);
        let (sin, cos) = self.rotation.sin_cos();
        [
            0.5 + (cos * dx + sin * dy) / self.scale,
            0.5 + (-sin * dx + cos * dy) / self.scale,
        ]
    }

    /// The 136 landmark values (fractions, `x0, y0, x1, y1, …`, iBUG order) as seen by this
    /// camera; mirrored landmarks are re-indexed with [`MIRRORED_POINT`].
    pub fn map_landmarks(&self, landmarks: &[f32]) -> [f32; LANDMARK_VALUES] {
        let mut out = [0.0; LANDMARK_VALUES];
        for i in 0..LANDMARK_POINTS {
            let [x, y] = self.forward([landmarks[2 * i], landmarks[2 * i + 1]]);
            let j = if self.mirror { MIRRORED_POINT[i] } else { i };
            out[2 * j] = x;
            out[2 * j + 1] = y;
        }
        out
    }
}

/// For each iBUG 300-W landmark, the landmark it becomes in a mirror image: jaw 0–16 reversed,
/// brows 17–21 ↔ 26–22, nose bridge kept, nostrils 31–35 reversed, eyes 36–41 ↔ 45–46 (corner
/// to corner), outer lips 48–54 and 55–59 reversed, inner lips 60–64 and 65–67 reversed.
pub const MIRRORED_POINT: [usize; LANDMARK_POINTS] = [
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, // jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17, // brows
    27, 28, 29, 30, // nose bridge
    35, 34, 33, 32, 31, // nostrils
    45, 44, 43, 42, 47, 46, // right eye -> left eye
    39, 38, 37, 36, 41, 40, // left eye -> right eye
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, // outer lips
    64, 63, 62, 61, 60, 67, 66, 65, // inner lips
];

/// Resamples one `3 × size × size` crop (CHW) through `camera`'s geometry into `out`: bilinear,
/// with the crop's edge pixels repeated beyond it.
pub fn warp_into(crop: &[f32], size: usize, camera: &Camera, out: &mut [f32]) {
    let plane = size * size;
    let s = size as f32;
    let last = size as f32 - 1.0;
    for y in 0..size {
        for x in 0..size {
            let [u, v] = camera.backward([(x as f32 + 0.5) / s, (y as f32 + 0.5) / s]);
            let (fx, fy) = (
                (u * s - 0.5).clamp(0.0, last),
                (v * s - 0.5).clamp(0.0, last),
            );
            let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(size - 1), (y0 + 1).min(size - 1));
            let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
            for c in 0..3 {
                let p = &crop[c * plane..(c + 1) * plane];
                let top = p[y0 * size + x0] * (1.0 - ax) + p[y0 * size + x1] * ax;
                let bottom = p[y1 * size + x0] * (1.0 - ax) + p[y1 * size + x1] * ax;
                out[c * plane + y * size + x] = top * (1.0 - ay) + bottom * ay;
            }
        }
    }
}

/// Applies `camera`'s colour change to one `3 × size × size` crop in place: each channel's
/// deviations from its mean scaled by the gain, its level moved by the offset times its
/// standard deviation (a flat channel keeps its level).
pub fn recolour(crop: &mut [f32], size: usize, camera: &Camera) {
    let plane = size * size;
    for (c, channel) in crop.chunks_exact_mut(plane).enumerate().take(3) {
        let n = channel.len() as f32;
        let mean = channel.iter().sum::<f32>() / n;
        let sd = (channel.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        let level = mean + camera.offset[c] * sd;
        for v in channel.iter_mut() {
            *v = level + camera.gain[c] * (*v - mean);
        }
    }
}

/// Applies `camera` to frame `frame` of `batch` (pixels and, where the face is present,
/// landmarks); `scratch` holds one crop.
fn apply(batch: &mut Batch, frame: usize, camera: &Camera, scratch: &mut [f32]) {
    if batch.present[frame] == 0.0 {
        return;
    }
    let size = batch.size;
    let crop_len = 3 * size * size;
    let crop = &mut batch.faces[frame * crop_len..(frame + 1) * crop_len];
    warp_into(crop, size, camera, scratch);
    crop.copy_from_slice(scratch);
    recolour(crop, size, camera);
    let landmarks = &mut batch.landmarks[frame * LANDMARK_VALUES..(frame + 1) * LANDMARK_VALUES];
    let mapped = camera.map_landmarks(landmarks);
    landmarks.copy_from_slice(&mapped);
}

/// A [`BatchSource`] whose batches pass through random cameras, one per clip.
pub struct Augmented<'a> {
    inner: &'a mut dyn BatchSource,
    config: AugmentConfig,
    seed: u64,
    scratch: Vec<f32>,
}

impl<'a> Augmented<'a> {
    /// Augments `inner`'s batches with `config`'s strengths; the cameras follow `seed` and the
    /// batch position.
    pub fn new(inner: &'a mut dyn BatchSource, config: &AugmentConfig, seed: u64) -> Self {
        Self {
            inner,
            config: config.clone(),
            seed,
            scratch: Vec::new(),
        }
    }
}

impl BatchSource for Augmented<'_> {
    fn next_batch(&mut self) -> Result<Batch, SourceError> {
        let position = self.inner.position();
        let mut batch = self.inner.next_batch()?;
        if !self.config.is_active() {
            return Ok(batch);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(
            (self.seed ^ 0xA6A6_5EED_0000_0000).wrapping_add(position.wrapping_mul(0x2545_F491)),
        );
        self.scratch.resize(3 * batch.size * batch.size, 0.0);
        let steps = batch.steps;
        for clip in 0..batch.sequences {
            let camera = Camera::random(&self.config, &mut rng);
            for t in 0..steps {
                apply(&mut batch, clip * steps + t, &camera, &mut self.scratch);
            }
        }
        Ok(batch)
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn seek(&mut self, position: u64) -> Result<(), SourceError> {
        self.inner.seek(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [f32; 2], b: [f32; 2]) -> bool {
        (a[0] - b[0]).abs() < 1e-5 && (a[1] - b[1]).abs() < 1e-5
    }

    #[test]
    fn backward_inverts_forward() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            let camera = Camera::random(&AugmentConfig::default(), &mut rng);
            let p = [rng.random::<f32>(), rng.random::<f32>()];
            assert!(
                close(camera.backward(camera.forward(p)), p),
                "{camera:?} {p:?}"
            );
        }
    }

    #[test]
    fn mirror_map_is_an_involution_that_swaps_sides() {
        for (i, &j) in MIRRORED_POINT.iter().enumerate() {
            assert_eq!(MIRRORED_POINT[j], i, "point {i}");
        }
        // Subject's right eye outer corner (36) becomes the left eye's outer corner (45).
        assert_eq!(MIRRORED_POINT[36], 45);
        assert_eq!(MIRRORED_POINT[48], 54);
        for fixed in [8, 27, 30, 33, 51, 57, 62, 66] {
            assert_eq!(MIRRORED_POINT[fixed], fixed);
        }
    }

    /// A crop with a single bright pixel: after warping, the brightest pixel is where the
    /// camera maps that pixel's centre — pixels and landmarks move together.
    #[test]
    fn pixels_move_with_landmarks() {
        let size = 32;
        let mut crop = vec![0.0; 3 * size * size];
        let (px, py) = (11, 19);
        for c in 0..3 {
            crop[c * size * size + py * size + px] = 1.0;
        }
        let camera = Camera {
            scale: 1.1,
            rotation: 8f32.to_radians(),
            shift: [0.05, -0.03],
            mirror: true,
            ..Camera::IDENTITY
        };
        let mut out = vec![0.0; crop.len()];
        warp_into(&crop, size, &camera, &mut out);
        let brightest = (0..size * size)
            .max_by(|&a, &b| out[a].total_cmp(&out[b]))
            .unwrap();
        let s = size as f32;
        let expected = camera.forward([(px as f32 + 0.5) / s, (py as f32 + 0.5) / s]);
        let (ex, ey) = (expected[0] * s - 0.5, expected[1] * s - 0.5);
        let (bx, by) = ((brightest % size) as f32, (brightest / size) as f32);
        assert!(
            (bx - ex).abs() <= 1.0 && (by - ey).abs() <= 1.0,
            "bright pixel at ({bx}, {by}), landmark mapped to ({ex:.2}, {ey:.2})"
        );
    }

    #[test]
    fn identity_camera_changes_nothing() {
        let size = 8;
        let crop: Vec<f32> = (0..3 * size * size)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let mut out = vec![0.0; crop.len()];
        warp_into(&crop, size, &Camera::IDENTITY, &mut out);
        recolour(&mut out, size, &Camera::IDENTITY);
        for (a, b) in crop.iter().zip(&out) {
            assert!((a - b).abs() < 1e-5);
        }
        let landmarks: Vec<f32> = (0..LANDMARK_VALUES).map(|i| i as f32 / 200.0).collect();
        let mapped = Camera::IDENTITY.map_landmarks(&landmarks);
        for (a, b) in landmarks.iter().zip(&mapped) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn recolour_sets_channel_level_and_spread() {
        let size = 4;
        let crop: Vec<f32> = (0..3 * size * size).map(|i| (i % 7) as f32).collect();
        let camera = Camera {
            gain: [2.0, 0.5, 1.0],
            offset: [1.0, 0.0, -0.5],
            ..Camera::IDENTITY
        };
        let mut out = crop.clone();
        recolour(&mut out, size, &camera);
        let stats = |c: &[f32]| {
            let n = c.len() as f32;
            let m = c.iter().sum::<f32>() / n;
            (
                m,
                (c.iter().map(|v| (v - m).powi(2)).sum::<f32>() / n).sqrt(),
            )
        };
        let plane = size * size;
        for c in 0..3 {
            let (m0, s0) = stats(&crop[c * plane..(c + 1) * plane]);
            let (m1, s1) = stats(&out[c * plane..(c + 1) * plane]);
            assert!(
                (m1 - (m0 + camera.offset[c] * s0)).abs() < 1e-4,
                "channel {c} level"
            );
            assert!(
                (s1 - camera.gain[c] * s0).abs() < 1e-4,
                "channel {c} spread"
            );
        }
    }

    #[test]
    fn strengths_out_of_range_name_their_key() {
        let bad = AugmentConfig {
            shift: 0.7,
            ..AugmentConfig::default()
        };
        assert_eq!(bad.problem().unwrap().0, "augment.shift");
        let nan = AugmentConfig {
            contrast: f32::NAN,
            ..AugmentConfig::default()
        };
        assert_eq!(nan.problem().unwrap().0, "augment.contrast");
        assert!(AugmentConfig::default().problem().is_none());
        assert!(!AugmentConfig::none().is_active());
    }
}
