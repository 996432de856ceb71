//! The face-api.js 68-point landmark net (`models/face-landmarks-68.onnx`) on the configured
//! engine:
//! a square crop around each face box, one batched run, outputs mapped back to frame pixels.

use affect_shared::contract::{LANDMARK_POINTS, LANDMARK_VALUES};

use affect_shared::preprocess::{Alignment, ColourOrder, FaceBox, Landmarks68, Preprocess};
use image::RgbImage;

use super::FaceError;
use super::net::FaceNet;
use crate::backend::EngineConfig;
use crate::models::ModelFile;

/// Side of the landmark net's square input.
pub const INPUT_SIZE: u32 = 112;

/// face-api.js's per-channel RGB mean (`FaceFeatureExtractor.ts`); inputs are
/// `(value - mean) / 255`.
pub const FACE_API_MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// Margin around the detector box (fraction of its side, each side) of the landmark crop;
/// chosen on the Solvay photo, where it best matched BlazeFace's eye, nose and mouth keypoints.
/// The bundled `expression-va.onnx` declares the same margin in its metadata.
pub const DEFAULT_MARGIN: f32 = 0.2;

/// The preprocessing face-api.js nets expect, with crop `margin`: 112×112 RGB, no alignment,
/// `(value - mean) / 255`.
pub fn face_api_preprocess(margin: f32) -> Preprocess {
    Preprocess {
        size: INPUT_SIZE,
        colour: ColourOrder::Rgb,
        scale: 255.0,
        mean: FACE_API_MEAN_RGB,
        std: [255.0; 3],
        margin,
        alignment: Alignment::None,
        landmarks: false,
    }
}

/// The square frame area a face's crop covers: top-left corner and side, in frame pixels
/// (side `max(w, h) · (1 + 2 · margin)`, centred on the box), as `Preprocess::crop` takes it.
pub fn crop_square(face: &FaceBox, margin: f32) -> ([f32; 2], f32) {
    let side = face.w.max(face.h) * (1.0 + 2.0 * margin);
    let centre = [face.x + face.w / 2.0, face.y + face.h / 2.0];
    ([centre[0] - side / 2.0, centre[1] - side / 2.0], side)
}

/// Maps the net's 136 outputs (`x0, y0, x1, y1, …` as fractions of the crop) to frame pixels.
pub fn to_frame(fractions: &[f32], origin: [f32; 2], side: f32) -> Landmarks68 {
    let mut points = [[0.0; 2]; LANDMARK_POINTS];
    for (p, xy) in points.iter_mut().zip(fractions.chunks_exact(2)) {
        *p = [origin[0] + xy[0] * side, origin[1] + xy[1] * side];
    }
    Landmarks68(points)
}

/// The 68-point landmark net.
#[derive(Debug)]
pub struct LandmarkNet {
    net: FaceNet,
    model: ModelFile,
    preprocess: Preprocess,
    /// The batch input, reused from frame to frame.
    input: Vec<f32>,
}

impl LandmarkNet {
    /// Loads `face-landmarks-68.onnx` (input `[N, 3, 112, 112]`, output `[N, 136]`) with tract
    /// and the given crop margin; refuses another network, naming the file.
    pub fn load(model: impl Into<ModelFile>, margin: f32) -> Result<Self, FaceError> {
        Self::load_on(model, margin, &EngineConfig::tract())
    }

    /// [`Self::load`] on `engine` (tract, or ONNX Runtime with its provider options).
    pub fn load_on(
        model: impl Into<ModelFile>,
        margin: f32,
        engine: &EngineConfig,
    ) -> Result<Self, FaceError> {
        let model = model.into();
        let preprocess = face_api_preprocess(margin);
        preprocess
            .validate()
            .map_err(|e| FaceError::Config(format!("landmark margin: {e}")))?;
        // All faces of a frame in one run.
        let side = INPUT_SIZE as usize;
        let (net, outputs) = FaceNet::load(&model, &[1, 3, side, side], engine)?;
        if outputs != [vec![1, LANDMARK_VALUES]] {
            return Err(FaceError::Model {
                path: model.describe(),
                message: format!(
                    "not the 68-landmark net: expected one input [N,3,112,112] and one output \
                     [N,136], found outputs {outputs:?}"
                ),
            });
        }
        Ok(Self {
            net,
            model,
            preprocess,
            input: Vec::new(),
        })
    }

    /// The model it runs.
    pub fn model(&self) -> &ModelFile {
        &self.model
    }

    /// The crop and normalisation in use.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Landmarks in frame pixels for each face box, in order: every crop in one batched run.
    pub fn landmarks(
        &mut self,
        frame: &RgbImage,
        faces: &[FaceBox],
    ) -> Result<Vec<Landmarks68>, FaceError> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let side = INPUT_SIZE as usize;
        let preprocess = &self.preprocess;
        // Each thread crops the faces it runs.
        let outputs = self.net.run_filled(
            &[faces.len(), 3, side, side],
            &mut self.input,
            |first, rows| {
                for (row, face) in rows.chunks_exact_mut(3 * side * side).zip(&faces[first..]) {
                    row.copy_from_slice(&preprocess.face_input(frame, face, None)?.pixels);
                }
                Ok(())
            },
        )?;
        let fractions = outputs.first().map_or(&[][..], |o| &o.values[..]);
        if fractions.len() != faces.len() * LANDMARK_VALUES {
            return Err(FaceError::Inference(format!(
                "{}: {} landmark values for {} faces, expected 136 each",
                self.model.describe(),
                fractions.len(),
                faces.len()
            )));
        }
        Ok(faces
            .iter()
            .zip(fractions.chunks_exact(LANDMARK_VALUES))
            .map(|(face, fractions)| {
                let (origin, side) = crop_square(face, self.preprocess.margin);
                to_frame(fractions, origin, side)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_square_is_centred_and_enlarged() {
        let face = FaceBox {
            x: 100.0,
            y: 50.0,
            w: 40.0,
            h: 50.0,
        };
        let (origin, side) = crop_square(&face, 0.2);
        assert!((side - 70.0).abs() < 1e-4);
        assert!((origin[0] - 85.0).abs() < 1e-4);
        assert!((origin[1] - 40.0).abs() < 1e-4);
    }

    #[test]
    fn fractions_map_to_frame_pixels() {
        let mut fractions = [0.5f32; LANDMARK_VALUES];
        fractions[0] = 0.0;
        fractions[1] = 1.0;
        let lm = to_frame(&fractions, [10.0, 20.0], 100.0);
        assert_eq!(lm.0[0], [10.0, 120.0]);
        assert_eq!(lm.0[67], [60.0, 70.0]);
    }

    #[test]
    fn the_crop_matches_crop_square() {
        // A frame with one bright pixel: it must land where crop_square says it does.
        let mut frame = RgbImage::new(200, 200);
        frame.put_pixel(120, 80, image::Rgb([255, 255, 255]));
        let face = FaceBox {
            x: 100.0,
            y: 60.0,
            w: 56.0,
            h: 56.0,
        };
        let pre = face_api_preprocess(0.0);
        let crop = pre.crop(&frame, &face, None).unwrap();
        let (origin, side) = crop_square(&face, 0.0);
        let scale = INPUT_SIZE as f32 / side;
        let (u, v) = (
            ((120.5 - origin[0]) * scale) as u32,
            ((80.5 - origin[1]) * scale) as u32,
        );
        assert!(crop.get_pixel(u, v).0[0] > 128, "pixel at ({u}, {v})");
        let normalised = pre.normalise(&crop);
        assert!((normalised[0] - (0.0 - 122.782) / 255.0).abs() < 1e-6);
    }
}
