//! The BlazeFace detector (`models/blazeface.onnx`, MediaPipe front / short-range model) run
//! on the configured engine: letterbox → model → decode → suppression, on tiles of large frames
//! too, all regions of a frame batched into few runs.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::FaceError;
use super::decode::{
    self, Detection, INPUT_SIZE, INPUT_VALUES, RawOutputs, Region, Suppression, Tiling,
};
use super::net::FaceNet;
use crate::backend::EngineConfig;
use crate::models::ModelFile;

/// Detector settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Minimum confidence of a detection, in [0, 1] (MediaPipe: 0.5).
    pub score_threshold: f32,
    /// Detections overlapping more than this IoU are merged or suppressed (MediaPipe: 0.3).
    pub iou_threshold: f32,
    /// How overlapping detections are merged.
    pub suppression: Suppression,
    /// At most this many faces per frame (the most confident); the default fits a group in
    /// front of a kiosk (the Solvay photo's 28 faces).
    pub max_faces: usize,
    /// Also run on tiles, for frames whose faces are small (group photos, wide shots).
    /// Unset, frames of [`Self::auto_tiling_from`] pixels or more get [`AUTO_TILING`].
    pub tiling: Option<Tiling>,
    /// Without an explicit `tiling`, frames whose longer side has at least this many pixels
    /// (much larger than the 128 px detector input, where a face of a group shrinks below what
    /// BlazeFace sees) are also searched in tiles of [`AUTO_TILING`]; 0 turns this off.
    pub auto_tiling_from: u32,
    /// At most this many regions (the frame and its tiles) go through the detector in one run.
    /// Larger batches cost ONNX Runtime more per region on this 2-core CPU (71 Solvay regions:
    /// ~8 per run was fastest on 1 and on 2 threads, all 71 at once 20–30 % slower); tract runs
    /// a batch row by row anyway. A batch-1 model file runs one region per call whatever this
    /// says.
    pub batch: usize,
}

/// The tiles of automatic tiling: 256 px, overlapping by 96 px (faces of ~30–90 px in the frame
/// are found whole in some tile; chosen on the Solvay photo).
pub const AUTO_TILING: Tiling = Tiling {
    tile: 256,
    overlap: 96,
};

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            score_threshold: 0.5,
            iou_threshold: 0.3,
            suppression: Suppression::Weighted,
            max_faces: 32,
            tiling: None,
            auto_tiling_from: 1024,
            batch: 8,
        }
    }
}

impl DetectorConfig {
    /// The tiling used on a `width × height` frame: the configured one, else [`AUTO_TILING`]
    /// when the frame's longer side reaches [`Self::auto_tiling_from`], else none.
    pub fn tiling_for(&self, width: u32, height: u32) -> Option<Tiling> {
        let large = self.auto_tiling_from > 0 && width.max(height) >= self.auto_tiling_from;
        self.tiling.or(large.then_some(AUTO_TILING))
    }

    /// Checks thresholds, face count and tiling.
    pub fn validate(&self) -> Result<(), FaceError> {
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if !unit(self.score_threshold) {
            return Err(FaceError::Config(format!(
                "score_threshold {} must be in [0, 1]",
                self.score_threshold
            )));
        }
        if !unit(self.iou_threshold) {
            return Err(FaceError::Config(format!(
                "iou_threshold {} must be in [0, 1]",
                self.iou_threshold
            )));
        }
        if self.max_faces == 0 {
            return Err(FaceError::Config("max_faces must be at least 1".into()));
        }
        if self.batch == 0 {
            return Err(FaceError::Config("batch must be at least 1".into()));
        }
        if let Some(Tiling { tile, overlap }) = self.tiling
            && (tile < 32 || overlap >= tile)
        {
            return Err(FaceError::Config(format!(
                "tiling: tile {tile} must be at least 32 px and overlap {overlap} smaller than the tile"
            )));
        }
        Ok(())
    }
}

/// Which model output holds what: indices of the score and regressor outputs of the 16×16
/// (512 anchors) and 8×8 (384 anchors) layers.
#[derive(Debug, Clone, Copy)]
struct OutputLayout {
    scores: [usize; 2],
    regressors: [usize; 2],
}

/// The BlazeFace face detector.
#[derive(Debug)]
pub struct BlazeFace {
    net: FaceNet,
    model: ModelFile,
    layout: OutputLayout,
    anchors: Vec<[f64; 2]>,
    config: DetectorConfig,
    /// The batch input, reused from frame to frame (grows to `config.batch` regions once).
    input: Vec<f32>,
}

impl BlazeFace {
    /// Loads `blazeface.onnx` (input NHWC `[N, 128, 128, 3]`, outputs scores `[N, 512|384, 1]`
    /// and regressors `[N, 512|384, 16]`; a file with a fixed batch of 1 works too, one region
    /// per run) with tract; refuses any other network, naming the file.
    pub fn load(model: impl Into<ModelFile>, config: DetectorConfig) -> Result<Self, FaceError> {
        Self::load_on(model, config, &EngineConfig::tract())
    }

    /// [`Self::load`] on `engine` (tract, or ONNX Runtime with its provider options).
    pub fn load_on(
        model: impl Into<ModelFile>,
        config: DetectorConfig,
        engine: &EngineConfig,
    ) -> Result<Self, FaceError> {
        let model = model.into();
        config.validate()?;
        let (net, shapes) = FaceNet::load(&model, &[1, INPUT_SIZE, INPUT_SIZE, 3], engine)?;
        let layout = output_layout(&shapes).map_err(|message| FaceError::Model {
            path: model.describe(),
            message: format!("not the BlazeFace front model: {message}"),
        })?;
        Ok(Self {
            net,
            model,
            layout,
            anchors: decode::anchors(),
            config,
            input: Vec::new(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// The model it runs.
    pub fn model(&self) -> &ModelFile {
        &self.model
    }

    /// Raw candidates of one region (above the score threshold), in frame pixels.
    pub fn candidates(
        &mut self,
        frame: &RgbImage,
        region: Region,
    ) -> Result<Vec<Detection>, FaceError> {
        Ok(self.run(frame, &[region])?.pop().unwrap_or_default())
    }

    /// Raw candidates of every region, in order: [`Self::candidates`] of each, the regions
    /// letterboxed into batches of up to [`DetectorConfig::batch`] rows, one run per batch.
    pub fn candidates_of(
        &mut self,
        frame: &RgbImage,
        regions: &[Region],
    ) -> Result<Vec<Vec<Detection>>, FaceError> {
        let mut all = Vec::with_capacity(regions.len());
        for batch in regions.chunks(self.config.batch) {
            all.extend(self.run(frame, batch)?);
        }
        Ok(all)
    }

    /// One run on `regions`, letterboxed into the reused input buffer by the threads that run
    /// them.
    fn run(
        &mut self,
        frame: &RgbImage,
        regions: &[Region],
    ) -> Result<Vec<Vec<Detection>>, FaceError> {
        let mappings: Vec<decode::Letterbox> =
            regions.iter().map(|&r| decode::Letterbox::of(r)).collect();
        let outputs = self.net.run_filled(
            &[regions.len(), INPUT_SIZE, INPUT_SIZE, 3],
            &mut self.input,
            |first, rows| {
                // One scratch per thread's chunk, reused across its regions.
                let mut scratch = Vec::new();
                for (row, &region) in rows.chunks_exact_mut(INPUT_VALUES).zip(&regions[first..]) {
                    decode::letterbox_into(frame, region, row, &mut scratch);
                }
                Ok(())
            },
        )?;
        let values = |i: usize| outputs.get(i).map_or(&[][..], |o| &o.values[..]);
        let raw = RawOutputs {
            logits: self.layout.scores.map(values),
            regressors: self.layout.regressors.map(values),
        };
        decode::decode_rows(raw, &self.anchors, &mappings, self.config.score_threshold)
            .map_err(|e| FaceError::Inference(format!("{}: {e}", self.model.describe())))
    }

    /// The regions searched on a `width × height` frame: the whole frame, then the tiles of
    /// [`DetectorConfig::tiling_for`] it.
    pub fn regions(&self, width: u32, height: u32) -> Vec<Region> {
        decode::regions(width, height, self.config.tiling_for(width, height))
    }

    /// Faces in `frame`, best first: candidates of the whole frame and of every tile (without
    /// those cut by an inner tile edge), merged by non-maximum suppression.
    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        let (width, height) = frame.dimensions();
        let regions = self.regions(width, height);
        self.detect_in(frame, &regions)
    }

    /// Faces in `regions` of `frame` (some of [`Self::regions`]), best first: their candidates
    /// (a tile's without those cut by one of its inner edges) merged by non-maximum suppression.
    pub fn detect_in(
        &mut self,
        frame: &RgbImage,
        regions: &[Region],
    ) -> Result<Vec<Detection>, FaceError> {
        let (width, height) = frame.dimensions();
        if width == 0 || height == 0 || regions.is_empty() {
            return Ok(Vec::new());
        }
        let mut all = Vec::new();
        for (region, candidates) in regions.iter().zip(self.candidates_of(frame, regions)?) {
            let whole = region.width == width && region.height == height;
            all.extend(
                candidates
                    .into_iter()
                    .filter(|d| whole || !decode::touches_inner_edge(d, *region, width, height)),
            );
        }
        Ok(decode::suppress(
            all,
            self.config.iou_threshold,
            self.config.suppression,
            self.config.max_faces,
        ))
    }
}

/// Finds the four outputs by shape.
fn output_layout(shapes: &[Vec<usize>]) -> Result<OutputLayout, String> {
    let count = shapes.len();
    if count != 4 {
        return Err(format!("expected 4 outputs, found {count}"));
    }
    let mut scores = [None; 2];
    let mut regressors = [None; 2];
    for (i, shape) in shapes.iter().enumerate() {
        let layer = match shape.as_slice() {
            [1, 512, _] => 0,
            [1, 384, _] => 1,
            _ => return Err(format!("output {i} has shape {shape:?}")),
        };
        let slot = match shape[2] {
            1 => &mut scores[layer],
            decode::REGRESSOR_WIDTH => &mut regressors[layer],
            _ => return Err(format!("output {i} has shape {shape:?}")),
        };
        if slot.replace(i).is_some() {
            return Err(format!("two outputs of shape {shape:?}"));
        }
    }
    match (scores, regressors) {
        ([Some(s0), Some(s1)], [Some(r0), Some(r1)]) => Ok(OutputLayout {
            scores: [s0, s1],
            regressors: [r0, r1],
        }),
        _ => Err("missing score or regressor outputs".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_bad_setting() {
        assert!(DetectorConfig::default().validate().is_ok());
        let bad = DetectorConfig {
            score_threshold: 1.5,
            ..DetectorConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("score_threshold")
        );
        let bad = DetectorConfig {
            tiling: Some(Tiling {
                tile: 256,
                overlap: 256,
            }),
            ..DetectorConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("overlap"));
        let bad = DetectorConfig {
            batch: 0,
            ..DetectorConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("batch"));
        let bad = DetectorConfig {
            max_faces: 0,
            ..DetectorConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("max_faces")
        );
    }

    #[test]
    fn large_frames_are_tiled_automatically_unless_configured_otherwise() {
        let auto = DetectorConfig::default();
        assert_eq!(auto.tiling_for(512, 512), None, "a selfie-sized frame");
        assert_eq!(auto.tiling_for(1280, 720), Some(AUTO_TILING));
        assert_eq!(auto.tiling_for(1666, 1125), Some(AUTO_TILING));
        let off = DetectorConfig {
            auto_tiling_from: 0,
            ..auto
        };
        assert_eq!(off.tiling_for(4000, 3000), None);
        let explicit = Tiling {
            tile: 320,
            overlap: 64,
        };
        let fixed = DetectorConfig {
            tiling: Some(explicit),
            ..auto
        };
        assert_eq!(fixed.tiling_for(400, 300), Some(explicit));
        assert_eq!(fixed.tiling_for(2000, 2000), Some(explicit));
    }

    #[test]
    fn config_reads_from_toml_with_defaults() {
        let config: DetectorConfig =
            toml::from_str("score_threshold = 0.6\ntiling = { tile = 256, overlap = 96 }\n")
                .unwrap();
        assert_eq!(config.score_threshold, 0.6);
        assert_eq!(config.iou_threshold, 0.3);
        assert_eq!(
            config.tiling,
            Some(Tiling {
                tile: 256,
                overlap: 96
            })
        );
        assert!(toml::from_str::<DetectorConfig>("scor = 1").is_err());
    }
}
