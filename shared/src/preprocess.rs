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
        // Source coordinate of each output pixel: the integer texel left of / above it and the
        // bilinear weight. Without rotation x depends only on the column and y only on the row
        // (the rotation terms are exactly zero), so they are computed once per column / row.
        let split = |coordinate: f32| {
            let f = coordinate - 0.5;
            let floor = f.floor();
            (floor as i64, f - floor)
        };
        let side = self.size as usize;
        let sample = |x: (i64, f32), y: (i64, f32)| -> [u8; 3] {
            let ((x0, wx), (y0, wy)) = (x, y);
            let (p00, p10, p01, p11) = (
                texel(x0, y0),
                texel(x0 + 1, y0),
                texel(x0, y0 + 1),
                texel(x0 + 1, y0 + 1),
            );
            core::array::from_fn(|c| {
                let top = p00[c] + (p10[c] - p00[c]) * wx;
                let bottom = p01[c] + (p11[c] - p01[c]) * wx;
                (top + (bottom - top) * wy).round().clamp(0.0, 255.0) as u8
            })
        };
        let mut out = RgbImage::new(self.size, self.size);
        if t.a[1] == 0.0 {
            let columns: Vec<_> = (0..side)
                .map(|u| split(t.apply([u as f32 + 0.5, 0.5])[0]))
                .collect();
            let rows: Vec<_> = (0..side)
                .map(|v| split(t.apply([0.5, v as f32 + 0.5])[1]))
                .collect();
            for (row, line) in rows.iter().zip(out.chunks_exact_mut(3 * side)) {
                for (column, pixel) in columns.iter().zip(line.chunks_exact_mut(3)) {
                    pixel.copy_from_slice(&sample(*column, *row));
                }
            }
        } else {
            for (u, v, pixel) in out.enumerate_pixels_mut() {
                let [x, y] = t.apply([u as f32 + 0.5, v as f32 + 0.5]);
                pixel.0 = sample(split(x), split(y));
            }
        }
        Ok(out)
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
