//! Face preprocessing shared by training and the device: crop a face box with margin, optionally
//! align it by the eyes (similarity transform), resize to `size`×`size`, reorder colours and
//! normalise; landmarks become 136 floats relative to the crop.
//!
//! Both pixels and landmarks go through one similarity transform from crop coordinates to frame
//! coordinates (continuous coordinates: pixel `i` covers `[i, i + 1)`, its centre is `i + 0.5`;
//! landmarks use the same convention). Crop pixels sample the frame bilinearly; frame areas
//! outside the image read as black, so any box, even one partly or wholly outside the frame,
//! gives a full-size crop.

use crate::contract::{LANDMARK_POINTS, LANDMARK_VALUES};
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

impl FaceBox {
    /// The box of an image that already is a face crop (Aff-Wild2 `cropped_aligned`, a kiosk
    /// camera framed on the face): the centred square that a preprocess `margin` enlarges back
    /// to the whole image, so the network sees exactly the image.
    pub fn whole_crop(width: u32, height: u32, margin: f32) -> Self {
        let side = width.min(height) as f32 / (1.0 + 2.0 * margin);
        Self {
            x: (width as f32 - side) / 2.0,
            y: (height as f32 - side) / 2.0,
            w: side,
            h: side,
        }
    }
}

/// 68 facial landmarks (iBUG 300-W ordering) in pixels of the source frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Landmarks68(pub [[f32; 2]; LANDMARK_POINTS]);

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
    pub landmarks: Option<[f32; LANDMARK_VALUES]>,
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

/// The similarity transform `frame = a · crop + b` (complex multiplication: rotation and scale).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Similarity {
    a: [f32; 2],
    b: [f32; 2],
}

impl Similarity {
    fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let [ar, ai] = self.a;
        [
            ar * p[0] - ai * p[1] + self.b[0],
            ai * p[0] + ar * p[1] + self.b[1],
        ]
    }

    fn invert(&self, q: [f32; 2]) -> [f32; 2] {
        let [ar, ai] = self.a;
        let norm = ar * ar + ai * ai;
        let (dx, dy) = (q[0] - self.b[0], q[1] - self.b[1]);
        [(ar * dx + ai * dy) / norm, (ar * dy - ai * dx) / norm]
    }
}

/// Mean of landmarks `range` (iBUG indices).
fn centre(landmarks: &Landmarks68, range: core::ops::Range<usize>) -> [f32; 2] {
    let n = range.len() as f32;
    let (sx, sy) = landmarks.0[range]
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
    [sx / n, sy / n]
}

impl Preprocess {
    /// torchvision / ImageNet convention: RGB in [0, 1], ImageNet mean and std, 20 % margin.
    pub fn imagenet(size: u32) -> Self {
        Self {
            size,
            colour: ColourOrder::Rgb,
            scale: 1.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            margin: 0.2,
            alignment: Alignment::None,
            landmarks: false,
        }
    }

    /// Caffe VGG-Face convention: BGR in [0, 255] minus the VGG-Face mean, no scaling.
    pub fn vgg_face(size: u32) -> Self {
        Self {
            colour: ColourOrder::Bgr,
            scale: 255.0,
            mean: [93.594, 104.762, 129.186],
            std: [1.0, 1.0, 1.0],
            ..Self::imagenet(size)
        }
    }

    /// Checks that the description can be applied (positive size, finite non-zero std, …).
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let invalid = |m: &str| Err(PreprocessError::Invalid(m.to_owned()));
        if self.size == 0 || self.size > 4096 {
            return invalid("size must be in 1..=4096");
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return invalid("scale must be a positive number");
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return invalid("mean must be finite");
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return invalid("std must be finite and non-zero");
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return invalid("margin must be a non-negative number");
        }
        if let Alignment::Eyes { left, right } = self.alignment
            && (left.iter().chain(&right).any(|v| !v.is_finite()) || left == right)
        {
            return invalid("eye targets must be finite and distinct");
        }
        Ok(())
    }

    /// Crop-to-frame transform for one face.
    fn transform(
        &self,
        face: &FaceBox,
        landmarks: Option<&Landmarks68>,
    ) -> Result<Similarity, PreprocessError> {
        self.validate()?;
        let size = self.size as f32;
        match self.alignment {
            Alignment::None => {
                let finite = [face.x, face.y, face.w, face.h]
                    .iter()
                    .all(|v| v.is_finite());
                if !finite || face.w <= 0.0 || face.h <= 0.0 {
                    return Err(PreprocessError::InvalidBox(*face));
                }
                let side = face.w.max(face.h) * (1.0 + 2.0 * self.margin);
                let (cx, cy) = (face.x + face.w / 2.0, face.y + face.h / 2.0);
                Ok(Similarity {
                    a: [side / size, 0.0],
                    b: [cx - side / 2.0, cy - side / 2.0],
                })
            }
            Alignment::Eyes { left, right } => {
                let lm =
                    landmarks.ok_or(PreprocessError::Landmarks("eye alignment needs landmarks"))?;
                let (src_l, src_r) = (centre(lm, 36..42), centre(lm, 42..48));
                let (dst_l, dst_r) = (
                    [left[0] * size, left[1] * size],
                    [right[0] * size, right[1] * size],
                );
                let ds = [src_r[0] - src_l[0], src_r[1] - src_l[1]];
                let dc = [dst_r[0] - dst_l[0], dst_r[1] - dst_l[1]];
                let norm = dc[0] * dc[0] + dc[1] * dc[1];
                // a = ds / dc (complex division).
                let a = [
                    (ds[0] * dc[0] + ds[1] * dc[1]) / norm,
                    (ds[1] * dc[0] - ds[0] * dc[1]) / norm,
                ];
                if !(a[0].is_finite() && a[1].is_finite()) || a == [0.0, 0.0] {
                    return Err(PreprocessError::Landmarks(
                        "eye centres coincide or are not finite",
                    ));
                }
                let rotated = Similarity { a, b: [0.0, 0.0] }.apply(dst_l);
                Ok(Similarity {
                    a,
                    b: [src_l[0] - rotated[0], src_l[1] - rotated[1]],
                })
            }
        }
    }

    /// The face crop as an RGB image of `size`×`size` (before colour reordering and
    /// normalisation): what the network sees, for caches, plots and debugging.
    pub fn crop(
        &self,
        frame: &RgbImage,
        face: &FaceBox,
        landmarks: Option<&Landmarks68>,
    ) -> Result<RgbImage, PreprocessError> {
        let (width, height) = frame.dimensions();
        if width == 0 || height == 0 {
            return Err(PreprocessError::EmptyFrame { width, height });
        }
        let t = self.transform(face, landmarks)?;
        Ok(resample(frame, &t, self.size, t.a[1] == 0.0))
    }

    /// Landmarks in fractions of the crop (`x0, y0, x1, y1, …`), through the crop's transform.
    pub fn landmarks_in_crop(
        &self,
        face: &FaceBox,
        landmarks: &Landmarks68,
    ) -> Result<[f32; LANDMARK_VALUES], PreprocessError> {
        if landmarks.0.iter().flatten().any(|v| !v.is_finite()) {
            return Err(PreprocessError::Landmarks(
                "landmark coordinates must be finite",
            ));
        }
        let t = self.transform(face, Some(landmarks))?;
        let size = self.size as f32;
        let mut out = [0.0; LANDMARK_VALUES];
        for (i, p) in landmarks.0.iter().enumerate() {
            let [u, v] = t.invert(*p);
            out[2 * i] = u / size;
            out[2 * i + 1] = v / size;
        }
        Ok(out)
    }

    /// Network input for one face: the crop, colour-ordered and normalised (CHW), and the
    /// landmarks relative to the crop when this preprocess uses them.
    pub fn face_input(
        &self,
        frame: &RgbImage,
        face: &FaceBox,
        landmarks: Option<&Landmarks68>,
    ) -> Result<FaceInput, PreprocessError> {
        let landmarks_out = if self.landmarks {
            let lm =
                landmarks.ok_or(PreprocessError::Landmarks("this model needs 68 landmarks"))?;
            Some(self.landmarks_in_crop(face, lm)?)
        } else {
            None
        };
        let crop = self.crop(frame, face, landmarks)?;
        Ok(FaceInput {
            pixels: self.normalise(&crop),
            landmarks: landmarks_out,
        })
    }

    /// Colour order, scale, mean and std applied to a crop: `3 × size × size` floats, CHW.
    pub fn normalise(&self, crop: &RgbImage) -> Vec<f32> {
        let plane = (crop.width() * crop.height()) as usize;
        let mut out = vec![0.0; 3 * plane];
        let order = match self.colour {
            ColourOrder::Rgb => [0, 1, 2],
            ColourOrder::Bgr => [2, 1, 0],
        };
        let factor = self.scale / 255.0;
        // Every 8-bit value's normalised float, per output channel (the same expression).
        let table: [[f32; 256]; 3] = core::array::from_fn(|c| {
            core::array::from_fn(|q| (q as f32 * factor - self.mean[c]) / self.std[c])
        });
        for (i, px) in crop.pixels().enumerate() {
            for (c, &src) in order.iter().enumerate() {
                out[c * plane + i] = table[c][usize::from(px.0[src])];
            }
        }
        out
    }
}

/// The `size`×`size` crop whose pixel centres `t` maps into `frame`, sampled bilinearly (areas
/// outside the frame are black). `separable` (only for transforms without rotation, whose x
/// depends on the column alone and y on the row alone) interpolates each source row across the
/// columns once and reuses it for every output row that reads it (an upscaled small face reads
/// each source row for several output rows); the arithmetic per pixel is the same, so the result
/// is bit-identical to the per-pixel path.
fn resample(frame: &RgbImage, t: &Similarity, size: u32, separable: bool) -> RgbImage {
    let (width, height) = frame.dimensions();
    let raw = frame.as_raw();
    let texel = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= i64::from(width) || y >= i64::from(height) {
            return [0.0; 3];
        }
        let i = 3 * (y as usize * width as usize + x as usize);
        [
            f32::from(raw[i]),
            f32::from(raw[i + 1]),
            f32::from(raw[i + 2]),
        ]
    };
    // Source coordinate of an output pixel: the integer texel left of / above it and the
    // bilinear weight.
    let split = |coordinate: f32| {
        let f = coordinate - 0.5;
        let floor = f.floor();
        (floor as i64, f - floor)
    };
    // One source row between two texels of it, and the value between two such rows.
    let across = |p0: [f32; 3], p1: [f32; 3], w: f32| -> [f32; 3] {
        core::array::from_fn(|c| p0[c] + (p1[c] - p0[c]) * w)
    };
    let down = |top: &[f32; 3], bottom: &[f32; 3], wy: f32| -> [u8; 3] {
        core::array::from_fn(|c| to_u8(top[c] + (bottom[c] - top[c]) * wy))
    };
    let side = size as usize;
    let mut out = RgbImage::new(size, size);
    if separable {
        let columns: Vec<_> = (0..side)
            .map(|u| split(t.apply([u as f32 + 0.5, 0.5])[0]))
            .collect();
        let interpolate = |y: i64, row: &mut Vec<[f32; 3]>| {
            row.clear();
            row.extend(
                columns
                    .iter()
                    .map(|&(x0, wx)| across(texel(x0, y), texel(x0 + 1, y), wx)),
            );
        };
        // The interpolated source rows above and below the current output row.
        let mut top: (Option<i64>, Vec<[f32; 3]>) = (None, Vec::with_capacity(side));
        let mut bottom: (Option<i64>, Vec<[f32; 3]>) = (None, Vec::with_capacity(side));
        for (v, line) in out.chunks_exact_mut(3 * side).enumerate() {
            let (y0, wy) = split(t.apply([0.5, v as f32 + 0.5])[1]);
            if top.0 != Some(y0) {
                if bottom.0 == Some(y0) {
                    core::mem::swap(&mut top, &mut bottom);
                } else {
                    interpolate(y0, &mut top.1);
                    top.0 = Some(y0);
                }
            }
            if bottom.0 != Some(y0 + 1) {
                interpolate(y0 + 1, &mut bottom.1);
                bottom.0 = Some(y0 + 1);
            }
            for ((t, b), pixel) in top.1.iter().zip(&bottom.1).zip(line.chunks_exact_mut(3)) {
                pixel.copy_from_slice(&down(t, b, wy));
            }
        }
    } else {
        for (u, v, pixel) in out.enumerate_pixels_mut() {
            let [x, y] = t.apply([u as f32 + 0.5, v as f32 + 0.5]);
            let ((x0, wx), (y0, wy)) = (split(x), split(y));
            let top = across(texel(x0, y0), texel(x0 + 1, y0), wx);
            let bottom = across(texel(x0, y0 + 1), texel(x0 + 1, y0 + 1), wx);
            pixel.0 = down(&top, &bottom, wy);
        }
    }
    out
}

/// `v.round().clamp(0.0, 255.0) as u8` (round half away from zero), without a `roundf` call
/// for each of a crop's values: the whole part by truncation, up when the rest is ≥ ½ (exact for
/// |v| ≤ 256, the range after clamping; NaN gives 0 as the cast does).
fn to_u8(v: f32) -> u8 {
    let v = v.clamp(-1.0, 256.0);
    let whole = v as i32;
    let rounded = if v - whole as f32 >= 0.5 {
        whole + 1
    } else {
        whole
    };
    rounded.clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of pseudo-random pixels.
    fn noise(width: u32, height: u32) -> RgbImage {
        let mut state = 0x2545_f491_u32;
        RgbImage::from_fn(width, height, |_, _| {
            image::Rgb(core::array::from_fn(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            }))
        })
    }

    #[test]
    fn the_separable_path_equals_the_per_pixel_path_bit_for_bit() {
        let frame = noise(97, 61);
        // Upscaling, downscaling, fractional offsets, and boxes hanging off every edge.
        for (scale, bx, by) in [
            (0.37, 10.3, 5.7),
            (0.5, 0.0, 0.0),
            (1.0, 3.25, 2.5),
            (2.9, -20.4, -13.1),
            (0.81, 70.6, 40.2),
            (1.73, 50.0, -8.5),
        ] {
            let t = Similarity {
                a: [scale, 0.0],
                b: [bx, by],
            };
            for size in [1, 17, 112] {
                assert_eq!(
                    resample(&frame, &t, size, true),
                    resample(&frame, &t, size, false),
                    "scale {scale}, offset ({bx}, {by}), size {size}"
                );
            }
        }
    }

    #[test]
    fn rounding_to_a_byte_equals_round_then_clamp() {
        let reference = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        let mut values = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            1e10,
            -1e10,
        ];
        // Every 1/64 from -3 to 300, and the neighbours of every half.
        for k in -192..=19_200 {
            values.push(k as f32 / 64.0);
        }
        for k in -6..=600 {
            let half = k as f32 / 2.0;
            values.extend([half.next_down(), half, half.next_up()]);
        }
        for v in values {
            assert_eq!(to_u8(v), reference(v), "{v:e}");
        }
    }
}
