//! Synthetic faces whose valence and arousal are visible in their geometry.
//!
//! The trainer's synthetic dataset (`affect-train synth`) and the edge runtime's synthetic camera
//! both render with this module, so a model trained on one is tested on exactly the other.
//!
//! * **Affect is geometry.** Valence bends the mouth (corners up or down), widens it and squints
//!   the eyes a little; arousal opens the mouth and the eyes and raises the brows; negative valence
//!   tilts the brows (inner ends down when aroused — anger — and up when not — sadness).
//! * **Nuisance is everything else.** Identity (face shape, skin, hair, eye and lip colour), head
//!   pose, lighting, cluttered background, sensor noise; on some frames blinks, occluders and blur.
//! * **Time matters.** Affect follows a smooth Ornstein–Uhlenbeck trajectory per video, while the
//!   expression actually shown jitters independently on every frame, and each person shows affect
//!   with their own offset and expressivity. A sequence model can average the jitter away and
//!   calibrate to the person; a per-frame model cannot.
//! * **Landmarks help.** The 68 landmarks are the clean geometry of the shown expression, even on
//!   frames whose pixels are blurred or occluded.
//! * **Annotators disagree.** With [`SynthConfig::annotators`] > 0 each video is labelled by that
//!   many simulated annotators, each a fixed person across the whole dataset with a reaction lag,
//!   a per-dimension bias and scale, and smooth noise of their own ([`Annotator`]); the frame's
//!   annotation is then the per-frame mean of their traces, as in the Aff-Wild release. With 0
//!   annotators (the default) the annotation is the true affect plus slowly varying noise.
//!
//! Everything is deterministic for a seed on every machine: the random numbers come from
//! [`ChaCha8Rng`], and the renderer uses only IEEE-exact arithmetic (`+ - * /`, `sqrt`, its own
//! polynomial sine and cosine) — no platform `libm` calls whose last bits could differ.

use crate::contract::LANDMARK_POINTS;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::preprocess::Landmarks68;

const PI: f32 = core::f32::consts::PI;

/// Sine and cosine from a fixed polynomial: identical bits on every platform (unlike `f32::sin`,
/// which calls the system maths library). Absolute error below 1e-7 for any finite input.
pub fn sin_cos(x: f32) -> (f32, f32) {
    let tau = 2.0 * core::f64::consts::PI;
    let mut r = f64::from(x);
    r -= tau * (r / tau).round();
    // r in [-pi, pi]; fold into [-pi/2, pi/2] for the sine, remembering the cosine's sign.
    let half_pi = core::f64::consts::FRAC_PI_2;
    let (s_arg, c_sign) = if r > half_pi {
        (core::f64::consts::PI - r, -1.0)
    } else if r < -half_pi {
        (-core::f64::consts::PI - r, -1.0)
    } else {
        (r, 1.0)
    };
    let x2 = s_arg * s_arg;
    // Taylor series to x^13 / x^12: error < 1e-9 on [-pi/2, pi/2].
    let sin = s_arg
        * (1.0
            - x2 / 6.0
                * (1.0
                    - x2 / 20.0
                        * (1.0
                            - x2 / 42.0
                                * (1.0 - x2 / 72.0 * (1.0 - x2 / 110.0 * (1.0 - x2 / 156.0))))));
    let cos = 1.0
        - x2 / 2.0
            * (1.0
                - x2 / 12.0
                    * (1.0
                        - x2 / 30.0 * (1.0 - x2 / 56.0 * (1.0 - x2 / 90.0 * (1.0 - x2 / 132.0)))));
    (sin as f32, (c_sign * cos) as f32)
}

/// A standard-normal-like sample (Irwin–Hall sum of four uniforms, rescaled to unit variance).
/// Bounded at ±3.46 σ, which suits noise, and free of `ln`/`exp` so it is bit-reproducible.
pub fn gaussian(rng: &mut impl Rng) -> f32 {
    let sum: f32 = (0..4).map(|_| rng.random::<f32>()).sum();
    (sum - 2.0) * 3.0f32.sqrt()
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

fn lerp_colour(a: [u8; 3], b: [u8; 3], t: f32) -> [u8; 3] {
    core::array::from_fn(|c| lerp(f32::from(a[c]), f32::from(b[c]), t).round() as u8)
}

fn random_colour(rng: &mut impl Rng) -> [u8; 3] {
    core::array::from_fn(|_| rng.random_range(20..=235))
}

/// The identity of a synthetic person: face shape, colours and how they show affect.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// Jaw half-width in face units (the face is about 2 units wide).
    pub face_width: f32,
    /// Chin height below the eye line, in face units.
    pub face_length: f32,
    /// Horizontal distance of each eye centre from the face's midline.
    pub eye_spacing: f32,
    /// Eye size multiplier.
    pub eye_size: f32,
    /// Mouth width multiplier.
    pub mouth_width: f32,
    /// Eyebrow thickness in face units.
    pub brow_thickness: f32,
    /// Skin colour (RGB).
    pub skin: [u8; 3],
    /// Hair and eyebrow colour.
    pub hair: [u8; 3],
    /// Iris colour.
    pub iris: [u8; 3],
    /// Lip colour.
    pub lips: [u8; 3],
    /// Added to valence before it is shown: this person's resting face looks happier or sadder.
    pub valence_offset: f32,
    /// Added to arousal before it is shown.
    pub arousal_offset: f32,
    /// How strongly affect shows (multiplies valence and arousal before the offset).
    pub expressivity: f32,
}

impl Person {
    /// A random identity.
    pub fn random(rng: &mut impl Rng) -> Self {
        const SKIN: [[u8; 3]; 5] = [
            [255, 224, 196],
            [234, 192, 160],
            [198, 144, 106],
            [141, 94, 62],
            [92, 58, 38],
        ];
        const HAIR: [[u8; 3]; 5] = [
            [30, 22, 18],
            [85, 55, 35],
            [160, 120, 70],
            [220, 190, 120],
            [120, 120, 120],
        ];
        let tone = rng.random::<f32>() * (SKIN.len() - 1) as f32;
        let i = (tone as usize).min(SKIN.len() - 2);
        let skin = lerp_colour(SKIN[i], SKIN[i + 1], tone - i as f32);
        let hair = HAIR[rng.random_range(0..HAIR.len())];
        let iris =
            [[60, 40, 25], [40, 90, 140], [70, 110, 60], [25, 20, 18]][rng.random_range(0..4)];
        let lips = lerp_colour(skin, [170, 60, 70], rng.random_range(0.35..0.7));
        Self {
            face_width: rng.random_range(0.85..1.05),
            face_length: rng.random_range(0.95..1.2),
            eye_spacing: rng.random_range(0.33..0.42),
            eye_size: rng.random_range(0.85..1.15),
            mouth_width: rng.random_range(0.85..1.15),
            brow_thickness: rng.random_range(0.045..0.08),
            skin,
            hair,
            iris,
            lips,
            valence_offset: 0.12 * gaussian(rng),
            arousal_offset: 0.12 * gaussian(rng),
            expressivity: rng.random_range(0.7..1.3),
        }
    }

    /// The expression this person shows for affect `[valence, arousal]`:
    /// `expressivity · affect + offset`, clamped to [-1, 1].
    pub fn shown(&self, affect: [f32; 2]) -> [f32; 2] {
        [
            (self.expressivity * affect[0] + self.valence_offset).clamp(-1.0, 1.0),
            (self.expressivity * affect[1] + self.arousal_offset).clamp(-1.0, 1.0),
        ]
    }
}

/// A smooth valence–arousal trajectory: a mean-reverting Ornstein–Uhlenbeck process per
/// dimension, reflected into [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct AffectTrajectory {
    /// Current `[valence, arousal]`.
    pub state: [f32; 2],
    /// Long-run mean the process reverts to.
    pub mean: [f32; 2],
    /// Fraction of the distance to the mean recovered per frame (1 / time constant in frames).
    pub reversion: f32,
    /// Stationary standard deviation.
    pub spread: f32,
}

impl AffectTrajectory {
    /// A trajectory with a random per-video mean (valence and arousal skewed slightly positive,
    /// as in Aff-Wild), a time constant of 30–80 frames, and a start drawn around the mean.
    pub fn random(rng: &mut impl Rng) -> Self {
        let mean = [
            (0.15 + 0.3 * gaussian(rng)).clamp(-0.8, 0.8),
            (0.1 + 0.25 * gaussian(rng)).clamp(-0.8, 0.8),
        ];
        let spread = rng.random_range(0.2..0.35);
        let state = [
            (mean[0] + spread * gaussian(rng)).clamp(-1.0, 1.0),
            (mean[1] + spread * gaussian(rng)).clamp(-1.0, 1.0),
        ];
        Self {
            state,
            mean,
            reversion: 1.0 / rng.random_range(30.0..80.0),
            spread,
        }
    }

    /// Advances one frame and returns the new `[valence, arousal]`.
    pub fn step(&mut self, rng: &mut impl Rng) -> [f32; 2] {
        // Euler–Maruyama step whose noise keeps the stationary deviation at `spread`.
        let noise = self.spread * (2.0 * self.reversion).sqrt();
        for d in 0..2 {
            let mut x = self.state[d]
                + self.reversion * (self.mean[d] - self.state[d])
                + noise * gaussian(rng);
            if x > 1.0 {
                x = 2.0 - x;
            }
            if x < -1.0 {
                x = -2.0 - x;
            }
            self.state[d] = x.clamp(-1.0, 1.0);
        }
        self.state
    }
}

/// Something in front of the face on this frame (a hand, a microphone, …): an ellipse in
/// fractions of the crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Occluder {
    /// Centre (x, y) as fractions of the crop.
    pub centre: [f32; 2],
    /// Half-axes (x, y) as fractions of the crop.
    pub radii: [f32; 2],
    /// Fill colour.
    pub colour: [u8; 3],
}

/// Everything that changes from frame to frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceState {
    /// Valence shown by the face, in [-1, 1] (after the person's offset and per-frame jitter).
    pub valence: f32,
    /// Arousal shown by the face, in [-1, 1].
    pub arousal: f32,
    /// Head yaw in radians (positive: the face turns to the image right).
    pub yaw: f32,
    /// Head pitch in radians (positive: the face tilts down).
    pub pitch: f32,
    /// Head roll in radians (in-plane rotation).
    pub roll: f32,
    /// Eye closure: 0 open as the expression says, 1 shut.
    pub blink: f32,
    /// An occluder in front of the face, if any.
    pub occlusion: Option<Occluder>,
    /// Overall brightness gain (1 = neutral).
    pub light: f32,
    /// Left-to-right brightness gradient (-0.5..0.5: light from the left or the right).
    pub light_direction: f32,
    /// Blur radius in pixels (0 = sharp).
    pub blur: f32,
    /// Face scale relative to the nominal crop framing (1 = nominal).
    pub scale: f32,
    /// Face centre offset from the nominal position, in fractions of the crop.
    pub shift: [f32; 2],
    /// Amplitude of per-pixel sensor noise, in 8-bit levels.
    pub noise: f32,
    /// Seed of the background clutter (fixed per video: the scene).
    pub scene_seed: u64,
    /// Background clutter displacement in fractions of the crop (camera motion).
    pub scene_shift: [f32; 2],
}

impl FaceState {
    /// A frontal, evenly lit, sharp face showing `[valence, arousal]` on a plain scene.
    pub fn neutral_pose(affect: [f32; 2]) -> Self {
        Self {
            valence: affect[0],
            arousal: affect[1],
            yaw: 0.0,
            pitch: 0.0,
            roll: 0.0,
            blink: 0.0,
            occlusion: None,
            light: 1.0,
            light_direction: 0.0,
            blur: 0.0,
            scale: 1.0,
            shift: [0.0, 0.0],
            noise: 0.0,
            scene_seed: 0,
            scene_shift: [0.0, 0.0],
        }
    }
}

/// Floating-point RGB canvas the renderer draws on before lighting, blur and quantisation.
struct Canvas {
    size: usize,
    px: Vec<[f32; 3]>,
}

impl Canvas {
    fn new(size: usize, colour: [u8; 3]) -> Self {
        Self {
            size,
            px: vec![colour.map(f32::from); size * size],
        }
    }

    /// Even-odd scanline fill of a polygon (vertex coordinates in pixels, pixel centres sampled),
    /// blended with `alpha`.
    fn fill_polygon(&mut self, pts: &[[f32; 2]], colour: [u8; 3], alpha: f32) {
        if pts.len() < 3 {
            return;
        }
        let colour = colour.map(f32::from);
        let (mut ymin, mut ymax) = (f32::INFINITY, f32::NEG_INFINITY);
        for p in pts {
            ymin = ymin.min(p[1]);
            ymax = ymax.max(p[1]);
        }
        if !(ymin.is_finite() && ymax.is_finite()) {
            return;
        }
        let n = self.size as i64;
        let row0 = ((ymin - 0.5).ceil() as i64).max(0);
        let row1 = ((ymax - 0.5).floor() as i64).min(n - 1);
        let mut xs: Vec<f32> = Vec::with_capacity(8);
        for row in row0..=row1 {
            let yc = row as f32 + 0.5;
            xs.clear();
            for (i, p0) in pts.iter().enumerate() {
                let p1 = pts[(i + 1) % pts.len()];
                if (p0[1] <= yc) != (p1[1] <= yc) {
                    xs.push(p0[0] + (yc - p0[1]) * (p1[0] - p0[0]) / (p1[1] - p0[1]));
                }
            }
            xs.sort_by(f32::total_cmp);
            for pair in xs.chunks_exact(2) {
                let c0 = ((pair[0] - 0.5).ceil() as i64).max(0);
                let c1 = ((pair[1] - 0.5).ceil() as i64).min(n);
                let base = row as usize * self.size;
                for col in c0..c1 {
                    let px = &mut self.px[base + col as usize];
                    for c in 0..3 {
                        px[c] += (colour[c] - px[c]) * alpha;
                    }
                }
            }
        }
    }

    /// A thick polyline as a chain of quadrilaterals.
    fn stroke(&mut self, pts: &[[f32; 2]], width: f32, colour: [u8; 3], alpha: f32) {
        for w in pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len = (dx * dx + dy * dy).sqrt();
            if len <= 0.0 {
                continue;
            }
            let (nx, ny) = (-dy / len * width / 2.0, dx / len * width / 2.0);
            self.fill_polygon(
                &[
                    [a[0] + nx, a[1] + ny],
                    [b[0] + nx, b[1] + ny],
                    [b[0] - nx, b[1] - ny],
                    [a[0] - nx, a[1] - ny],
                ],
                colour,
                alpha,
            );
        }
    }

    /// Separable box blur of integer `radius`, edges clamped.
    fn box_blur(&mut self, radius: usize) {
        if radius == 0 {
            return;
        }
        let n = self.size;
        let norm = 1.0 / (2 * radius + 1) as f32;
        let mut line = vec![[0.0f32; 3]; n];
        for horizontal in [true, false] {
            for k in 0..n {
                let index = |i: usize| if horizontal { k * n + i } else { i * n + k };
                for (i, out) in line.iter_mut().enumerate() {
                    let mut acc = [0.0f32; 3];
                    for j in i as i64 - radius as i64..=i as i64 + radius as i64 {
                        let src = self.px[index(j.clamp(0, n as i64 - 1) as usize)];
                        for c in 0..3 {
                            acc[c] += src[c];
                        }
                    }
                    *out = acc.map(|v| v * norm);
                }
                for (i, v) in line.iter().enumerate() {
                    self.px[index(i)] = *v;
                }
            }
        }
    }
}

/// Points of an ellipse (centre, half-axes, rotation) as a polygon.
fn ellipse(centre: [f32; 2], radii: [f32; 2], rotation: f32, segments: usize) -> Vec<[f32; 2]> {
    let (sr, cr) = sin_cos(rotation);
    (0..segments)
        .map(|i| {
            let (s, c) = sin_cos(2.0 * PI * i as f32 / segments as f32);
            let (x, y) = (radii[0] * c, radii[1] * s);
            [centre[0] + cr * x - sr * y, centre[1] + sr * x + cr * y]
        })
        .collect()
}

/// Face geometry in 3-D face units (x right, y down, z towards the camera; eye line at y = 0 minus
/// a little), before pose and projection.
struct FaceModel {
    landmarks: [[f32; 3]; LANDMARK_POINTS],
    outline: Vec<[f32; 3]>,
    hair: Vec<[f32; 3]>,
    eye_open: f32,
    iris_radius: f32,
}

fn face_model(person: &Person, state: &FaceState) -> FaceModel {
    let v = state.valence.clamp(-1.0, 1.0);
    let a = state.arousal.clamp(-1.0, 1.0);
    let mut lm = [[0.0f32; 3]; LANDMARK_POINTS];

    // Jaw 0..=16, from the image-left ear round the chin to the image-right ear.
    let mouth_gap = 0.01 + 0.17 * ((a + 1.0) / 2.0) * ((a + 1.0) / 2.0) + 0.04 * v.max(0.0);
    let chin = person.face_length + 0.5 * mouth_gap;
    let jaw_top = -0.2;
    for (i, p) in lm.iter_mut().take(17).enumerate() {
        let (s, c) = sin_cos(PI * i as f32 / 16.0);
        // Squarer jaw than an ellipse: blend towards the box corner.
        let x = -person.face_width * c * (0.85 + 0.15 * s);
        let y = jaw_top + (chin - jaw_top) * s;
        *p = [x, y, -0.35 * c * c];
    }

    // Brows 17..=21 (image left, outer → inner) and 22..=26 (inner → outer).
    let brow_y = -0.42 - 0.09 * a - 0.03 * v.max(0.0);
    // Inner ends: down for anger (negative valence, high arousal), up for sadness.
    let inner_drop = 0.12 * (-v).max(0.0) * (a + 0.2);
    for side in 0..2 {
        let sign = if side == 0 { -1.0 } else { 1.0 };
        let cx = sign * person.eye_spacing;
        for k in 0..5 {
            // t: 0 outer → 1 inner.
            let t = k as f32 / 4.0;
            let x = cx + sign * lerp(0.24, -0.2, t);
            let arch = 0.06 * (1.0 - (2.0 * t - 1.0) * (2.0 * t - 1.0));
            let y = brow_y - arch + inner_drop * t - 0.02 * (1.0 - t);
            let idx = if side == 0 { 17 + k } else { 26 - k };
            lm[idx] = [x, y, 0.15 - 0.1 * (1.0 - t)];
        }
    }

    // Nose bridge 27..=30 and base 31..=35.
    for k in 0..4 {
        let t = k as f32 / 3.0;
        lm[27 + k] = [0.0, lerp(-0.17, 0.2, t), 0.15 + 0.3 * t];
    }
    for k in 0..5 {
        let t = k as f32 / 4.0 * 2.0 - 1.0;
        lm[31 + k] = [
            0.15 * t,
            0.29 + 0.03 * (1.0 - t * t),
            0.28 + 0.08 * (1.0 - t * t),
        ];
    }

    // Eyes 36..=41 (image left: outer, top, top, inner, bottom, bottom) and 42..=47
    // (image right: inner, top, top, outer, bottom, bottom).
    let eye_open = ((0.6 + 0.35 * a - 0.2 * v.max(0.0)).clamp(0.12, 1.0)) * (1.0 - state.blink);
    let half_w = 0.16 * person.eye_size;
    let half_h = 0.085 * person.eye_size * eye_open;
    for side in 0..2 {
        let sign = if side == 0 { -1.0 } else { 1.0 };
        let (cx, cy) = (sign * person.eye_spacing, -0.12);
        // Outer corner on the side away from the midline.
        let outer = cx + sign * half_w;
        let inner = cx - sign * half_w;
        let third = |t: f32| lerp(outer, inner, t);
        let pts = [
            [outer, cy],
            [third(1.0 / 3.0), cy - half_h],
            [third(2.0 / 3.0), cy - half_h],
            [inner, cy],
            [third(2.0 / 3.0), cy + 0.75 * half_h],
            [third(1.0 / 3.0), cy + 0.75 * half_h],
        ];
        // iBUG order: the image-left eye starts at its outer corner, the image-right eye at its
        // inner corner, both clockwise in the image.
        let order: [usize; 6] = if side == 0 {
            [0, 1, 2, 3, 4, 5]
        } else {
            [3, 2, 1, 0, 5, 4]
        };
        for (k, &o) in order.iter().enumerate() {
            lm[36 + 6 * side + k] = [pts[o][0], pts[o][1], 0.12];
        }
    }

    // Mouth: corners rise with valence, the gap opens with arousal.
    let mw = 0.3 * person.mouth_width * (1.0 + 0.15 * v.max(0.0));
    let ym = 0.6;
    let curve = 0.11 * v;
    let centre_line = |x: f32| ym - curve * (x / mw) * (x / mw);
    let upper = |x: f32| 0.045 * (1.0 - 0.6 * (x / mw) * (x / mw)) + 0.01;
    let lower = |x: f32| 0.06 * (1.0 - 0.6 * (x / mw) * (x / mw)) + 0.01;
    let z_mouth = |x: f32| 0.25 - 0.15 * (x / mw) * (x / mw);
    let outer_xs = [
        -1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0, 0.6, 0.25, 0.0, -0.25, -0.6,
    ];
    for (k, &f) in outer_xs.iter().enumerate() {
        let x = f * mw;
        let y = if k == 0 || k == 6 {
            centre_line(x)
        } else if k < 6 {
            centre_line(x) - mouth_gap / 2.0 - upper(x) + if k == 3 { 0.012 } else { 0.0 }
        } else {
            centre_line(x) + mouth_gap / 2.0 + lower(x)
        };
        lm[48 + k] = [x, y, z_mouth(x)];
    }
    let inner_xs = [-0.85, -0.4, 0.0, 0.4, 0.85, 0.4, 0.0, -0.4];
    for (k, &f) in inner_xs.iter().enumerate() {
        let x = f * mw;
        let y = if k == 0 || k == 4 {
            centre_line(x)
        } else if k < 4 {
            centre_line(x) - mouth_gap / 2.0
        } else {
            centre_line(x) + mouth_gap / 2.0
        };
        lm[60 + k] = [x, y, z_mouth(x)];
    }

    // Head outline: the jaw plus a forehead arc; hair: a cap over the forehead.
    let mut outline: Vec<[f32; 3]> = lm[..17].to_vec();
    let mut hair = Vec::new();
    let forehead = 0.95;
    for k in 0..=12 {
        let (s, c) = sin_cos(PI * k as f32 / 12.0);
        outline.push([
            person.face_width * 0.98 * c,
            jaw_top - forehead * s,
            -0.3 * c * c,
        ]);
        hair.push([
            person.face_width * 1.06 * c,
            jaw_top - 0.1 - (forehead + 0.12) * s,
            -0.3 * c * c,
        ]);
    }
    // Hairline, back from the image-left temple to the image-right temple.
    for k in 0..=8 {
        let t = k as f32 / 8.0;
        let x = lerp(-person.face_width, person.face_width, t);
        let dip = 0.12 * (1.0 - (2.0 * t - 1.0) * (2.0 * t - 1.0));
        hair.push([x, jaw_top - 0.5 - dip, 0.0]);
    }
    FaceModel {
        landmarks: lm,
        outline,
        hair,
        eye_open,
        iris_radius: 0.07 * person.eye_size,
    }
}

/// Head pose and framing: face units → crop pixels.
struct Projection {
    rot: [[f32; 3]; 2],
    scale: f32,
    centre: [f32; 2],
}

impl Projection {
    fn new(state: &FaceState, size: f32) -> Self {
        let (sy, cy) = sin_cos(state.yaw);
        let (sp, cp) = sin_cos(state.pitch);
        let (sr, cr) = sin_cos(state.roll);
        // Yaw about the vertical axis, then pitch about the horizontal one, orthographic
        // projection, then roll in the image plane.
        // x1 = x cy + z sy; z1 = -x sy + z cy; y2 = y cp - z1 sp.
        let row_x = [cy, 0.0, sy];
        let row_y = [sy * sp, cp, -cy * sp];
        let rot = [
            core::array::from_fn(|k| cr * row_x[k] - sr * row_y[k]),
            core::array::from_fn(|k| sr * row_x[k] + cr * row_y[k]),
        ];
        // Nominal framing: the face box (about 2 units wide and tall) fills 1 / 1.4 of the crop,
        // i.e. the crop is the face box plus a 20 % margin on each side.
        let scale = size / 1.4 / 2.05 * state.scale;
        let centre = [size * (0.5 + state.shift[0]), size * (0.5 + state.shift[1])];
        Self { rot, scale, centre }
    }

    fn apply(&self, p: [f32; 3]) -> [f32; 2] {
        // The face box's centre (eye line to chin, brows included) sits at y ≈ 0.3.
        let q = [p[0], p[1] - 0.3, p[2]];
        let dot = |r: &[f32; 3]| r[0] * q[0] + r[1] * q[1] + r[2] * q[2];
        [
            self.centre[0] + self.scale * dot(&self.rot[0]),
            self.centre[1] + self.scale * dot(&self.rot[1]),
        ]
    }
}

/// Renders one face crop of `size`×`size` pixels. Returns the image and the 68 landmarks
/// (iBUG 300-W order) in pixels of that image. `rng` supplies the per-frame sensor noise only:
/// the same state renders the same geometry.
pub fn render_face(
    person: &Person,
    state: &FaceState,
    size: u32,
    rng: &mut impl Rng,
) -> (RgbImage, Landmarks68) {
    let n = size.max(1) as usize;
    let s = n as f32;
    let mut scene = ChaCha8Rng::seed_from_u64(state.scene_seed);
    let mut canvas = Canvas::new(n, random_colour(&mut scene));

    // Background clutter: a few shapes fixed per scene, drifting with the camera.
    let clutter = scene.random_range(3..8);
    for _ in 0..clutter {
        let colour = random_colour(&mut scene);
        let centre = [
            (scene.random::<f32>() + state.scene_shift[0]) * s,
            (scene.random::<f32>() + state.scene_shift[1]) * s,
        ];
        let radii = [
            scene.random_range(0.08..0.35) * s,
            scene.random_range(0.08..0.35) * s,
        ];
        let rotation = scene.random_range(0.0..PI);
        if scene.random_bool(0.5) {
            canvas.fill_polygon(&ellipse(centre, radii, rotation, 16), colour, 1.0);
        } else {
            canvas.fill_polygon(&ellipse(centre, radii, rotation, 4), colour, 1.0);
        }
    }

    let model = face_model(person, state);
    let proj = Projection::new(state, s);
    let lm2: [[f32; 2]; LANDMARK_POINTS] = core::array::from_fn(|i| proj.apply(model.landmarks[i]));
    let project_all = |pts: &[[f32; 3]]| pts.iter().map(|p| proj.apply(*p)).collect::<Vec<_>>();
    let unit = proj.scale;

    // Neck and shoulders, then head, hair, features.
    let shade = |c: [u8; 3], f: f32| c.map(|v| (f32::from(v) * f).round().clamp(0.0, 255.0) as u8);
    let neck = project_all(&[
        [-0.45, 0.6, -0.3],
        [0.45, 0.6, -0.3],
        [0.5, 2.0, -0.3],
        [-0.5, 2.0, -0.3],
    ]);
    canvas.fill_polygon(&neck, shade(person.skin, 0.8), 1.0);
    canvas.fill_polygon(&project_all(&model.outline), person.skin, 1.0);
    canvas.fill_polygon(&project_all(&model.hair), person.hair, 1.0);

    // Cheek shading that follows the pose (the side turning away darkens).
    let cheek_shift = 0.5 * state.yaw;
    for sign in [-1.0f32, 1.0] {
        let c = proj.apply([sign * 0.6, 0.35, 0.0]);
        let darken = if sign * cheek_shift < 0.0 { 0.85 } else { 0.95 };
        canvas.fill_polygon(
            &ellipse(c, [0.22 * unit, 0.3 * unit], state.roll, 12),
            shade(person.skin, darken),
            0.5,
        );
    }

    // Brows.
    let brow_w = person.brow_thickness * unit;
    canvas.stroke(&lm2[17..22], brow_w, person.hair, 1.0);
    canvas.stroke(&lm2[22..27], brow_w, person.hair, 1.0);

    // Eyes: white, then the iris squeezed by the lids, then the upper lid line.
    for range in [36..42, 42..48] {
        let eye = &lm2[range.clone()];
        let centre = [
            eye.iter().map(|p| p[0]).sum::<f32>() / 6.0,
            eye.iter().map(|p| p[1]).sum::<f32>() / 6.0,
        ];
        if model.eye_open > 0.05 {
            canvas.fill_polygon(eye, [240, 238, 232], 1.0);
            let r = model.iris_radius * unit;
            let open_h = 0.85 * model.eye_open * 0.085 * person.eye_size * unit;
            let iris_centre = [centre[0] + 0.3 * r * state.yaw, centre[1]];
            canvas.fill_polygon(
                &ellipse(iris_centre, [r, r.min(open_h)], state.roll, 12),
                person.iris,
                1.0,
            );
            canvas.fill_polygon(
                &ellipse(iris_centre, [0.4 * r, 0.4 * r.min(open_h)], state.roll, 8),
                [10, 10, 10],
                1.0,
            );
        }
        let lid = [eye[0], eye[1], eye[2], eye[3]];
        canvas.stroke(&lid, 0.025 * unit, shade(person.skin, 0.45), 1.0);
    }

    // Nose: a bridge shadow and nostrils.
    canvas.stroke(&lm2[27..31], 0.035 * unit, shade(person.skin, 0.82), 0.8);
    for i in [32, 34] {
        canvas.fill_polygon(
            &ellipse(lm2[i], [0.035 * unit, 0.022 * unit], state.roll, 8),
            shade(person.skin, 0.45),
            1.0,
        );
    }

    // Mouth: lips, the opening, teeth when wide open.
    canvas.fill_polygon(&lm2[48..60], person.lips, 1.0);
    canvas.fill_polygon(&lm2[60..68], [55, 18, 22], 1.0);
    let gap = lm2[66][1] - lm2[62][1];
    if gap > 0.08 * unit {
        let teeth = [
            lm2[61],
            lm2[62],
            lm2[63],
            [lm2[63][0], lm2[63][1] + 0.35 * gap],
            [lm2[61][0], lm2[61][1] + 0.35 * gap],
        ];
        canvas.fill_polygon(&teeth, [235, 235, 225], 1.0);
    }

    if let Some(occ) = &state.occlusion {
        canvas.fill_polygon(
            &ellipse(
                [occ.centre[0] * s, occ.centre[1] * s],
                [occ.radii[0] * s, occ.radii[1] * s],
                0.0,
                20,
            ),
            occ.colour,
            1.0,
        );
    }

    // Camera: lighting, blur, sensor noise, 8-bit quantisation.
    for (i, px) in canvas.px.iter_mut().enumerate() {
        let x = (i % n) as f32 / s - 0.5;
        let gain = state.light * (1.0 + state.light_direction * x);
        *px = px.map(|v| v * gain);
    }
    let radius = state.blur.max(0.0).round() as usize;
    if radius > 0 {
        canvas.box_blur(radius);
        canvas.box_blur(radius);
    }
    let mut image = RgbImage::new(n as u32, n as u32);
    let amplitude = state.noise.max(0.0);
    for (out, px) in image.pixels_mut().zip(&canvas.px) {
        for (channel, value) in out.0.iter_mut().zip(px) {
            let noise = if amplitude > 0.0 {
                (rng.random::<f32>() * 2.0 - 1.0) * amplitude
            } else {
                0.0
            };
            *channel = (value + noise).round().clamp(0.0, 255.0) as u8;
        }
    }
    (image, Landmarks68(lm2))
}

/// Side of the synthetic face crops rendered for a network with `input_size`-pixel input: 4/3 of
/// it (at least 32), so the crop is downsampled into the input as a camera face would be. The
/// trainer's ablations, the bundled model's training set (64-px crops, 48-px input) and the edge
/// runtime's synthetic camera all use it.
pub fn render_size(input_size: u32) -> u32 {
    (input_size * 4 / 3).max(32)
}

/// Rates and strengths of the synthetic dataset's nuisances. Rates are per frame.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Crop side length in pixels.
    pub size: u32,
    /// Frames per video.
    pub frames: usize,
    /// Standard deviation of the per-frame jitter of the shown expression (what a sequence
    /// model can average away).
    pub expression_jitter: f32,
    /// Standard deviation of the (slowly varying) annotation noise when there are no simulated
    /// annotators (`annotators == 0`); with annotators, their own noise model applies instead.
    pub annotation_noise: f32,
    /// Simulated annotators per video (0: none, the annotation is the true affect plus
    /// `annotation_noise`). Annotator `k` is the same person in every video of a seed.
    pub annotators: usize,
    /// How the simulated annotators deviate from the true affect.
    pub annotator_noise: AnnotatorNoise,
    /// Probability that a blink starts on a frame.
    pub blink_rate: f32,
    /// Probability that an occlusion episode starts on a frame.
    pub occlusion_rate: f32,
    /// Probability that a motion-blur episode starts on a frame.
    pub blur_rate: f32,
    /// Probability that a run of frames without a detected face starts on a frame.
    pub no_face_rate: f32,
    /// Probability that a run of unannotated (`-5`) frames starts on a frame.
    pub invalid_label_rate: f32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            size: 112,
            frames: 300,
            expression_jitter: 0.15,
            annotation_noise: 0.04,
            annotators: 0,
            annotator_noise: AnnotatorNoise::default(),
            blink_rate: 0.015,
            occlusion_rate: 0.01,
            blur_rate: 0.01,
            no_face_rate: 0.004,
            invalid_label_rate: 0.003,
        }
    }
}

/// One frame of a [`SyntheticVideo`].
#[derive(Debug, Clone)]
pub struct SyntheticFrame {
    /// 0-based frame index in the video.
    pub index: usize,
    /// The true affect `[valence, arousal]` of this frame.
    pub clean: [f32; 2],
    /// The frame's annotation, rounded to 3 decimals: without simulated annotators the true
    /// affect plus annotation noise; with them the mean of [`Self::annotators`] (what the
    /// Aff-Wild release ships). `None` for an unannotated frame (`-5` in the files).
    pub annotation: Option<[f32; 2]>,
    /// What each simulated annotator wrote, rounded to 3 decimals, in annotator order; empty
    /// for an unannotated frame and when the configuration has no annotators.
    pub annotators: Vec<[f32; 2]>,
    /// The face crop and its landmarks in crop pixels; `None` when no face was detected.
    pub face: Option<(RgbImage, Landmarks68)>,
    /// The state the face was rendered from.
    pub state: FaceState,
}

/// A remaining-frames counter for an episode (blink, occlusion, blur, …).
#[derive(Debug, Clone, Default)]
struct Episode {
    remaining: usize,
    length: usize,
}

impl Episode {
    /// Advances one frame; may start a new episode of `lengths` frames with probability `rate`.
    /// Returns the progress in (0, 1] while active.
    fn tick(
        &mut self,
        rng: &mut impl Rng,
        rate: f32,
        lengths: core::ops::Range<usize>,
    ) -> Option<f32> {
        if self.remaining == 0 && rng.random::<f32>() < rate {
            self.length = rng.random_range(lengths);
            self.remaining = self.length;
        }
        if self.remaining == 0 {
            return None;
        }
        let progress = (self.length - self.remaining + 1) as f32 / self.length as f32;
        self.remaining -= 1;
        Some(progress)
    }
}

/// A slowly varying quantity: first-order autoregressive noise around a mean.
#[derive(Debug, Clone)]
struct Drift {
    value: f32,
    mean: f32,
    keep: f32,
    step: f32,
}

impl Drift {
    fn new(mean: f32, spread: f32, time_constant: f32, rng: &mut impl Rng) -> Self {
        let keep = 1.0 - 1.0 / time_constant;
        Self {
            value: mean + spread * gaussian(rng),
            mean,
            keep,
            step: spread * (1.0 - keep * keep).sqrt(),
        }
    }

    fn next(&mut self, rng: &mut impl Rng) -> f32 {
        self.value = self.mean + self.keep * (self.value - self.mean) + self.step * gaussian(rng);
        self.value
    }
}

/// How simulated annotators deviate from the true affect: the noise model behind
/// [`SynthConfig::annotators`].
///
/// Annotator `k` writes, for dimension `d` (valence, arousal) of frame `t`,
///
/// ```text
/// clamp(scale[d] · true[d](t − lag) + bias[d] + noise[d](t), −1, 1), rounded to 3 decimals
/// ```
///
/// * `lag` — reaction time in frames, uniform in `0..=max_lag` (before frame `lag` the annotator
///   still holds the first frame's value);
/// * `bias[d]` — a constant offset, near-normal ([`gaussian`]) with standard deviation
///   [`Self::bias`];
/// * `scale[d]` — how much of the range the annotator uses, uniform in `1 ± scale`;
/// * `noise[d]` — smooth (first-order low-pass, autoregressive) noise with standard deviation
///   [`Self::noise`] and time constant [`Self::noise_frames`].
///
/// Lag, bias and scale belong to the annotator: drawn once per `(seed, k)` and the same in every
/// video, like a real annotator's habits. The noise is drawn per `(seed, video, k)`. Both come from
/// random streams of their own, so turning annotators on changes no face, landmark or true
/// affect value of any video.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotatorNoise {
    /// Largest reaction lag in frames.
    pub max_lag: usize,
    /// Standard deviation of the per-dimension bias.
    pub bias: f32,
    /// Half-width of the per-dimension scale around 1.
    pub scale: f32,
    /// Standard deviation of the smooth noise.
    pub noise: f32,
    /// Time constant of the smooth noise, in frames (at least 1).
    pub noise_frames: f32,
}

impl Default for AnnotatorNoise {
    fn default() -> Self {
        Self {
            max_lag: 12,
            bias: 0.1,
            scale: 0.25,
            noise: 0.08,
            noise_frames: 15.0,
        }
    }
}

/// Salt of the seed of the annotators' own random streams (their habits and their noise): keeps
/// them apart from the video's stream, which stays exactly what it is without annotators.
const ANNOTATOR_SALT: u64 = 0xA770_7A70_5EED_0001;

/// The name of simulated annotator `k` (0-based) in files and on the command line:
/// `annotator-1`, `annotator-2`, …
pub fn annotator_name(k: usize) -> String {
    format!("annotator-{}", k + 1)
}

/// One simulated annotator's habits (see [`AnnotatorNoise`] for the model).
#[derive(Debug, Clone, PartialEq)]
pub struct Annotator {
    /// Reaction lag in frames.
    pub lag: usize,
    /// Per-dimension bias (valence, arousal).
    pub bias: [f32; 2],
    /// Per-dimension scale (valence, arousal).
    pub scale: [f32; 2],
}

impl Annotator {
    /// Annotator `k` of the dataset with seed `seed`: the same in every video.
    pub fn new(noise: &AnnotatorNoise, seed: u64, k: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ANNOTATOR_SALT);
        rng.set_stream(k as u64);
        let lag = rng.random_range(0..=noise.max_lag);
        let bias = [
            noise.bias * gaussian(&mut rng),
            noise.bias * gaussian(&mut rng),
        ];
        let scale = [0, 1].map(|_| 1.0 + noise.scale * (2.0 * rng.random::<f32>() - 1.0));
        Self { lag, bias, scale }
    }

    /// What this annotator writes for true affect `lagged` (the value `lag` frames ago) with
    /// noise `noise`: scaled, biased, noisy, clamped to [-1, 1] and rounded to 3 decimals.
    pub fn write(&self, lagged: [f32; 2], noise: [f32; 2]) -> [f32; 2] {
        [0, 1]
            .map(|d| round3((self.scale[d] * lagged[d] + self.bias[d] + noise[d]).clamp(-1.0, 1.0)))
    }
}

/// Rounds to 3 decimals, as the annotation files store values.
fn round3(v: f32) -> f32 {
    (v * 1000.0).round() / 1000.0
}

/// The simulated annotators of one video: their habits, their noise and the recent true affect
/// their lags look back on.
#[derive(Debug, Clone)]
struct Annotators {
    annotators: Vec<Annotator>,
    noise: Vec<[Drift; 2]>,
    rng: ChaCha8Rng,
    /// True affect of the last `max lag + 1` frames, newest last.
    history: Vec<[f32; 2]>,
}

impl Annotators {
    fn new(config: &SynthConfig, seed: u64, index: u64) -> Self {
        let n = &config.annotator_noise;
        let annotators: Vec<Annotator> = (0..config.annotators)
            .map(|k| Annotator::new(n, seed, k))
            .collect();
        // A second salt: the per-video noise stream differs from the habits' stream.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ANNOTATOR_SALT.rotate_left(17));
        rng.set_stream(index);
        let time_constant = n.noise_frames.max(1.0);
        let noise = annotators
            .iter()
            .map(|_| {
                [
                    Drift::new(0.0, n.noise, time_constant, &mut rng),
                    Drift::new(0.0, n.noise, time_constant, &mut rng),
                ]
            })
            .collect();
        Self {
            annotators,
            noise,
            rng,
            history: Vec::new(),
        }
    }

    /// Records frame `clean` and returns every annotator's value for it.
    fn annotate(&mut self, clean: [f32; 2]) -> Vec<[f32; 2]> {
        let keep = self.annotators.iter().map(|a| a.lag).max().unwrap_or(0) + 1;
        if self.history.len() == keep {
            self.history.remove(0);
        }
        self.history.push(clean);
        let rng = &mut self.rng;
        let history = &self.history;
        self.annotators
            .iter()
            .zip(&mut self.noise)
            .map(|(a, noise)| {
                let lagged = history[history.len().saturating_sub(a.lag + 1)];
                a.write(lagged, [noise[0].next(rng), noise[1].next(rng)])
            })
            .collect()
    }
}

/// The per-frame mean of the annotators' values, rounded to 3 decimals; `None` for none.
pub fn mean_annotation(values: &[[f32; 2]]) -> Option<[f32; 2]> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f32;
    Some([0, 1].map(|d| round3(values.iter().map(|v| v[d]).sum::<f32>() / n)))
}

/// A synthetic video: one person, a smooth affect trajectory and per-frame nuisances. Iterates
/// over [`SyntheticFrame`]s. Fully determined by `(seed, index)` so videos can be rendered in
/// parallel, in any order, with identical results.
#[derive(Debug, Clone)]
pub struct SyntheticVideo {
    /// The person in this video.
    pub person: Person,
    /// The affect trajectory (its state is the last frame's clean affect).
    pub trajectory: AffectTrajectory,
    config: SynthConfig,
    rng: ChaCha8Rng,
    next_index: usize,
    scene_seed: u64,
    base_light: f32,
    yaw: Drift,
    pitch: Drift,
    roll: Drift,
    light: Drift,
    scene_x: Drift,
    scene_y: Drift,
    annotation_noise: [Drift; 2],
    annotators: Annotators,
    blink: Episode,
    occlusion: Episode,
    occluder: Option<Occluder>,
    blur: Episode,
    blur_radius: f32,
    no_face: Episode,
    invalid: Episode,
}

impl SyntheticVideo {
    /// Video `index` of the dataset with seed `seed`.
    pub fn new(config: &SynthConfig, seed: u64, index: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let person = Person::random(&mut rng);
        let trajectory = AffectTrajectory::random(&mut rng);
        let scene_seed = rng.random();
        let base_light = rng.random_range(0.75..1.15);
        let yaw = Drift::new(0.0, 0.25, 60.0, &mut rng);
        let pitch = Drift::new(0.0, 0.12, 60.0, &mut rng);
        let roll = Drift::new(0.0, 0.1, 60.0, &mut rng);
        let light = Drift::new(0.0, 0.2, 100.0, &mut rng);
        let scene_x = Drift::new(0.0, 0.05, 80.0, &mut rng);
        let scene_y = Drift::new(0.0, 0.05, 80.0, &mut rng);
        let annotation_noise = [
            Drift::new(0.0, config.annotation_noise, 10.0, &mut rng),
            Drift::new(0.0, config.annotation_noise, 10.0, &mut rng),
        ];
        Self {
            person,
            trajectory,
            config: config.clone(),
            rng,
            next_index: 0,
            scene_seed,
            base_light,
            yaw,
            pitch,
            roll,
            light,
            scene_x,
            scene_y,
            annotation_noise,
            annotators: Annotators::new(config, seed, index),
            blink: Episode::default(),
            occlusion: Episode::default(),
            occluder: None,
            blur: Episode::default(),
            blur_radius: 0.0,
            no_face: Episode::default(),
            invalid: Episode::default(),
        }
    }

    /// The configuration this video renders with.
    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    fn next_state(&mut self, clean: [f32; 2]) -> FaceState {
        let rng = &mut self.rng;
        let shown = self.person.shown(clean);
        let jitter = self.config.expression_jitter;
        let valence = (shown[0] + jitter * gaussian(rng)).clamp(-1.0, 1.0);
        let arousal = (shown[1] + jitter * gaussian(rng)).clamp(-1.0, 1.0);
        // Blinks: close and reopen over the episode.
        let blink = self
            .blink
            .tick(rng, self.config.blink_rate, 3..6)
            .map_or(0.0, |p| 1.0 - (2.0 * p - 1.0).abs().min(1.0) * 0.8);
        let occlusion = match self.occlusion.tick(rng, self.config.occlusion_rate, 4..20) {
            Some(_) => {
                if self.occluder.is_none() || self.occlusion.remaining + 1 == self.occlusion.length
                {
                    // A new occluder over the mouth, the eyes or one side of the face.
                    let centre = match rng.random_range(0..3) {
                        0 => [rng.random_range(0.35..0.65), rng.random_range(0.65..0.8)],
                        1 => [rng.random_range(0.3..0.7), rng.random_range(0.38..0.48)],
                        _ => [rng.random_range(0.15..0.85), rng.random_range(0.4..0.7)],
                    };
                    self.occluder = Some(Occluder {
                        centre,
                        radii: [rng.random_range(0.12..0.25), rng.random_range(0.1..0.2)],
                        colour: random_colour(rng),
                    });
                }
                self.occluder
            }
            None => {
                self.occluder = None;
                None
            }
        };
        let blur = match self.blur.tick(rng, self.config.blur_rate, 3..12) {
            Some(p) => {
                if p <= 1.0 / self.blur.length as f32 {
                    self.blur_radius = rng.random_range(1.5..3.5);
                }
                self.blur_radius * self.config.size as f32 / 112.0
            }
            None => 0.0,
        };
        FaceState {
            valence,
            arousal,
            yaw: self.yaw.next(rng),
            pitch: self.pitch.next(rng),
            roll: self.roll.next(rng),
            blink,
            occlusion,
            light: (self.base_light + 0.1 * self.light.value).clamp(0.5, 1.4),
            light_direction: self.light.next(rng).clamp(-0.5, 0.5),
            blur,
            scale: 1.0 + 0.03 * gaussian(rng),
            shift: [0.015 * gaussian(rng), 0.015 * gaussian(rng)],
            noise: 6.0,
            scene_seed: self.scene_seed,
            scene_shift: [self.scene_x.next(rng), self.scene_y.next(rng)],
        }
    }
}

impl Iterator for SyntheticVideo {
    type Item = SyntheticFrame;

    fn next(&mut self) -> Option<SyntheticFrame> {
        if self.next_index >= self.config.frames {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        let clean = if index == 0 {
            self.trajectory.state
        } else {
            self.trajectory.step(&mut self.rng)
        };
        let state = self.next_state(clean);
        let invalid = self
            .invalid
            .tick(&mut self.rng, self.config.invalid_label_rate, 5..40)
            .is_some();
        let noise = [
            self.annotation_noise[0].next(&mut self.rng),
            self.annotation_noise[1].next(&mut self.rng),
        ];
        // The annotators' noise advances on every frame, annotated or not, like the video's.
        let written = self.annotators.annotate(clean);
        let (annotation, annotators) = if invalid {
            (None, Vec::new())
        } else if written.is_empty() {
            (
                Some([0, 1].map(|d| round3((clean[d] + noise[d]).clamp(-1.0, 1.0)))),
                written,
            )
        } else {
            (mean_annotation(&written), written)
        };
        let missing = self
            .no_face
            .tick(&mut self.rng, self.config.no_face_rate, 2..12)
            .is_some();
        // Render even when the face is dropped so the random stream does not depend on it.
        let face = render_face(&self.person, &state, self.config.size, &mut self.rng);
        Some(SyntheticFrame {
            index,
            clean,
            annotation,
            annotators,
            face: (!missing).then_some(face),
            state,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.config.frames - self.next_index;
        (left, Some(left))
    }
}

impl ExactSizeIterator for SyntheticVideo {}
