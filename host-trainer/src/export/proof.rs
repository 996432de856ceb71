//! The proof every export carries: the trained tch network, the exported graph in tract and (when
//! available) in ONNX Runtime run the same held-out clip frame by frame with carried state, stepping only the frames with a face
//! ([`affect_shared::contract`]); the
//! report records their largest differences and each one's CCC/MSE against the labels, and
//! lists every bound that is broken.
//!
//! Bounds: the tch network frame by frame equals its whole-sequence forward to
//! [`Bounds::streaming`]; every fp32 engine equals the tch whole-sequence output to
//! [`Bounds::fp32`]; int8 loses at most [`Bounds::int8_ccc_drop`] CCC per dimension against the
//! tch network, and its Conv and Gemm weights (int8 values, per-channel scales and zero points)
//! take at most [`Bounds::int8_size_ratio`] of their fp32 bytes. The file ratio is reported
//! beside it: tensors that stay float by design (recurrent layers, biases as int32) keep it
//! above the weight ratio, little for the paper's networks, a lot for tiny recurrent ones.

use affect_shared::contract::LANDMARK_VALUES;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use affect_shared::metrics;
use serde::Serialize;
use tch::{Kind, Tensor};
use tract_onnx::pb;

use super::ort_oracle::{OracleError, OrtOracle};
use super::runner::{RunError, TractStreaming};
use crate::model::{Model, ModelError};

/// Consecutive frames of one held-out video with labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledClip {
    /// Video name.
    pub video: String,
    /// T.
    pub frames: usize,
    /// Crop side S.
    pub size: usize,
    /// `[T, 3, S, S]`.
    pub faces: Vec<f32>,
    /// `[T, 136]`.
    pub landmarks: Vec<f32>,
    /// `[T, 2]` valence, arousal.
    pub labels: Vec<f32>,
    /// `[T]`, 1 where the label (and face) is valid.
    pub mask: Vec<f32>,
    /// `[T]`, 1 where the frame has a face: the only frames the recurrent state advances on.
    pub present: Vec<f32>,
}

impl LabelledClip {
    /// Indices of the frames with a face, in order.
    fn face_frames(&self) -> Vec<usize> {
        (0..self.frames)
            .filter(|&t| self.present[t] > 0.5)
            .collect()
    }

    /// Faces (`[F, 3, S, S]`) and landmarks (`[F, 136]`) of the frames with a face only.
    fn faces_only(&self) -> (Vec<f32>, Vec<f32>) {
        let face_len = 3 * self.size * self.size;
        let (mut faces, mut landmarks) = (Vec::new(), Vec::new());
        for t in self.face_frames() {
            faces.extend_from_slice(&self.faces[t * face_len..(t + 1) * face_len]);
            landmarks
                .extend_from_slice(&self.landmarks[t * LANDMARK_VALUES..(t + 1) * LANDMARK_VALUES]);
        }
        (faces, landmarks)
    }

    /// Outputs of the frames with a face (`stepped`, one per face frame) spread over every frame:
    /// a frame without a face repeats the last output before it (zeros before the first), as a
    /// display holds the last reading. Only frames with a face are compared and scored.
    fn spread(&self, stepped: &[[f32; 2]]) -> Vec<[f32; 2]> {
        let mut out = Vec::with_capacity(self.frames);
        let mut stepped = stepped.iter();
        let mut last = [0.0; 2];
        for t in 0..self.frames {
            if self.present[t] > 0.5
                && let Some(va) = stepped.next()
            {
                last = *va;
            }
            out.push(last);
        }
        out
    }
}

/// Acceptance bounds of an export.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// fp32 engines vs the tch network: max abs difference.
    pub fp32: f64,
    /// tch frame by frame vs tch whole sequence: max abs difference.
    pub streaming: f64,
    /// int8 vs fp32 CCC loss per dimension.
    pub int8_ccc_drop: f64,
    /// int8 bytes / fp32 bytes of the Conv and Gemm weights.
    pub int8_size_ratio: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            fp32: 1e-4,
            streaming: 1e-5,
            int8_ccc_drop: 0.01,
            int8_size_ratio: 0.30,
        }
    }
}

/// CCC and MSE of one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    /// Concordance correlation coefficient (`null` when undefined).
    pub ccc: Option<f64>,
    /// Mean squared error.
    pub mse: Option<f64>,
}

/// One engine's result on the clip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineReport {
    /// Max abs difference from the tch whole-sequence output, over all frames and both outputs.
    pub max_abs_diff: f64,
    /// Valence against the labels.
    pub valence: Score,
    /// Arousal against the labels.
    pub arousal: Score,
    /// The engine's `[valence, arousal]` on every frame of the clip.
    pub outputs: Vec<[f32; 2]>,
}

/// The int8 model's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Int8Report {
    /// File size in bytes.
    pub file_bytes: u64,
    /// int8 file size / fp32 file size.
    pub size_ratio: f64,
    /// Bytes of the Conv and Gemm weights in the int8 file (values, scales, zero points) / their
    /// fp32 bytes.
    pub weights_ratio: f64,
    /// Share of the fp32 initializer bytes held by Conv and Gemm weights.
    pub quantizable_share: f64,
    /// tract running the QDQ graph (dequantized weights in float kernels).
    pub tract: EngineReport,
    /// ONNX Runtime running it on integer kernels.
    pub onnxruntime: Option<EngineReport>,
    /// Operators ONNX Runtime executes after its QDQ fusion.
    pub onnxruntime_ops: Option<BTreeMap<String, u64>>,
    /// CCC lost against the tch network, per dimension, measured on ONNX Runtime when available,
    /// else on tract.
    pub ccc_drop: [f64; 2],
    /// Which engine `ccc_drop` comes from.
    pub ccc_drop_engine: String,
}

/// `model.export.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    /// The fp32 model file.
    pub model: String,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// Held-out video the proof ran on.
    pub video: String,
    /// Frames run.
    pub frames: usize,
    /// Frames with a valid label.
    pub labelled_frames: usize,
    /// Bounds applied.
    pub bounds: Bounds,
    /// The tch network over the whole sequence (the reference).
    pub torch: EngineReport,
    /// The tch network frame by frame with carried state, against its whole-sequence output.
    pub torch_streaming: EngineReport,
    /// tract frame by frame.
    pub tract: EngineReport,
    /// ONNX Runtime frame by frame, `None` when unavailable.
    pub onnxruntime: Option<EngineReport>,
    /// `onnx.checker` full check of each written file (`"ok"` or the message).
    pub onnx_checker: BTreeMap<String, String>,
    /// Why ONNX Runtime / the checker did not run, if they did not.
    pub onnxruntime_skipped: Option<String>,
    /// The int8 model, when exported.
    pub int8: Option<Int8Report>,
    /// Every broken bound, in words. Empty = the export is proven.
    pub failures: Vec<String>,
}

/// Why the proof could not be carried out (as opposed to a bound being broken).
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The tch network failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// tract failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// ONNX Runtime / the checker failed.
    #[error(transparent)]
    Oracle(#[from] OracleError),
    /// The clip is unusable.
    #[error("held-out clip: {0}")]
    Clip(String),
}

/// Files the proof runs on.
#[derive(Debug, Clone, Copy)]
pub struct ExportedFiles<'a> {
    /// fp32 graph and its path.
    pub fp32: (&'a pb::ModelProto, &'a Path),
    /// int8 graph and its path, when exported.
    pub int8: Option<(&'a pb::ModelProto, &'a Path)>,
}

/// Sizes of the Conv and Gemm weights before and after quantization.
struct QuantizedWeights {
    /// fp32 bytes of the Conv / Gemm weights.
    fp32: usize,
    /// fp32 bytes of all initializers.
    fp32_all: usize,
    /// Bytes of `{w}.quantized`, `{w}.scale` and `{w}.zero_point` in the int8 graph.
    int8: usize,
}

impl QuantizedWeights {
    fn measure(fp32: &pb::ModelProto, int8: &pb::ModelProto) -> Self {
        let empty = Vec::new();
        let inits = |m: &pb::ModelProto| -> HashMap<String, usize> {
            m.graph
                .as_ref()
                .map_or(&empty, |g| &g.initializer)
                .iter()
                .map(|t| (t.name.clone(), tensor_bytes(t)))
                .collect()
        };
        let (before, after) = (inits(fp32), inits(int8));
        let weights: HashSet<&str> = fp32
            .graph
            .iter()
            .flat_map(|g| &g.node)
            .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
            .filter_map(|n| n.input.get(1).map(String::as_str))
            .collect();
        let mut sizes = Self {
            fp32: 0,
            fp32_all: before.values().sum(),
            int8: 0,
        };
        for w in weights {
            sizes.fp32 += before.get(w).copied().unwrap_or(0);
            sizes.int8 += ["quantized", "scale", "zero_point"]
                .iter()
                .map(|part| after.get(&format!("{w}.{part}")).copied().unwrap_or(0))
                .sum::<usize>();
            // A weight the int8 graph left in float counts at full size.
            sizes.int8 += after.get(w).copied().unwrap_or(0);
        }
        sizes
    }

    fn ratio(&self) -> f64 {
        self.int8 as f64 / self.fp32.max(1) as f64
    }
}

/// Bytes of an initializer's values, from its shape and element type.
fn tensor_bytes(t: &pb::TensorProto) -> usize {
    use pb::tensor_proto::DataType;
    let elements = t.dims.iter().product::<i64>().max(0) as usize;
    let width = match DataType::try_from(t.data_type) {
        Ok(DataType::Int8 | DataType::Uint8 | DataType::Bool) => 1,
        Ok(DataType::Int16 | DataType::Uint16 | DataType::Float16 | DataType::Bfloat16) => 2,
        Ok(DataType::Int64 | DataType::Uint64 | DataType::Double) => 8,
        _ => 4,
    };
    elements * width
}

fn scores(va: &[[f32; 2]], clip: &LabelledClip) -> [Score; 2] {
    std::array::from_fn(|d| {
        let (pred, truth): (Vec<f64>, Vec<f64>) = va
            .iter()
            .zip(clip.labels.chunks_exact(2))
            .zip(&clip.mask)
            .filter(|(_, m)| **m > 0.5)
            .map(|((p, t), _)| (f64::from(p[d]), f64::from(t[d])))
            .unzip();
        Score {
            ccc: metrics::ccc(&pred, &truth),
            mse: metrics::mse(&pred, &truth),
        }
    })
}

fn engine(va: &[[f32; 2]], reference: &[[f32; 2]], clip: &LabelledClip) -> EngineReport {
    let max_abs_diff = va
        .iter()
        .zip(reference)
        .zip(&clip.present)
        .filter(|(_, p)| **p > 0.5)
        .map(|(pair, _)| pair)
        .flat_map(|(a, b)| (0..2).map(move |d| f64::from((a[d] - b[d]).abs())))
        .fold(0.0, f64::max);
    let [valence, arousal] = scores(va, clip);
    EngineReport {
        max_abs_diff,
        valence,
        arousal,
        outputs: va.to_vec(),
    }
}

fn pairs(flat: &[f32]) -> Vec<[f32; 2]> {
    flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect()
}

fn tensor_pairs(t: &Tensor) -> Result<Vec<[f32; 2]>, ProofError> {
    let flat = t
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .flatten(0, -1);
    Ok(pairs(&Vec::<f32>::try_from(&flat)?))
}

fn tract_run(
    model: &pb::ModelProto,
    clip: &LabelledClip,
    landmarks: bool,
) -> Result<Vec<[f32; 2]>, ProofError> {
    let mut runner = TractStreaming::new(model, 1, &[])?;
    let face_len = 3 * clip.size * clip.size;
    let mut out = Vec::with_capacity(clip.frames);
    for t in clip.face_frames() {
        let lm = &clip.landmarks[t * LANDMARK_VALUES..(t + 1) * LANDMARK_VALUES];
        let step = runner.step(
            &clip.faces[t * face_len..(t + 1) * face_len],
            landmarks.then_some(lm),
        )?;
        out.extend(pairs(&step.va));
    }
    Ok(clip.spread(&out))
}

/// Runs the proof (see the module doc). `oracle` is ONNX Runtime + `onnx.checker`, or why it is
/// unavailable.
pub fn prove(
    model: &Model,
    files: ExportedFiles<'_>,
    clip: &LabelledClip,
    oracle: Result<&OrtOracle, String>,
    bounds: Bounds,
) -> Result<ExportReport, ProofError> {
    let config = model.config();
    let s = clip.size;
    if clip.frames == 0
        || s != config.input_size as usize
        || clip.faces.len() != clip.frames * 3 * s * s
        || clip.landmarks.len() != clip.frames * LANDMARK_VALUES
        || clip.labels.len() != clip.frames * 2
        || clip.mask.len() != clip.frames
        || clip.present.len() != clip.frames
    {
        return Err(ProofError::Clip(format!(
            "`{}`: {} frames of {s} px do not fit the network ({} px) or the arrays' lengths",
            clip.video, clip.frames, config.input_size
        )));
    }
    let device = model.device();
    let frames = clip.frames as i64;
    let size = s as i64;
    let faces = Tensor::from_slice(&clip.faces)
        .reshape([1, frames, 3, size, size])
        .to_device(device);
    let landmarks = Tensor::from_slice(&clip.landmarks)
        .reshape([1, frames, LANDMARK_VALUES as i64])
        .to_device(device);
    let present = Tensor::from_slice(&clip.present)
        .reshape([1, frames])
        .to_device(device);
    let use_landmarks = config.landmarks;
    let lm = use_landmarks.then_some(&landmarks);

    let (sequence, streaming) = tch::no_grad(|| -> Result<_, ProofError> {
        let (y, _) = model.forward(&faces, lm, Some(&present), None, false)?;
        let mut state = None;
        let mut steps = Vec::with_capacity(clip.frames);
        for t in clip.face_frames() {
            let t = t as i64;
            let face = faces.select(1, t);
            let l = landmarks.select(1, t);
            let (y, next) =
                model.forward_step(&face, use_landmarks.then_some(&l), state.as_ref())?;
            steps.push(y);
            state = next;
        }
        let streaming = if steps.is_empty() {
            Vec::new()
        } else {
            tensor_pairs(&Tensor::cat(&steps, 0))?
        };
        Ok((tensor_pairs(&y)?, clip.spread(&streaming)))
    })?;

    let mut failures = Vec::new();
    let torch = engine(&sequence, &sequence, clip);
    let torch_streaming = engine(&streaming, &sequence, clip);
    if torch_streaming.max_abs_diff > bounds.streaming {
        failures.push(format!(
            "tch frame by frame differs from the whole sequence by {:.3e} (bound {:.0e})",
            torch_streaming.max_abs_diff, bounds.streaming
        ));
    }
    let tract = engine(
        &tract_run(files.fp32.0, clip, use_landmarks)?,
        &sequence,
        clip,
    );
    if tract.max_abs_diff > bounds.fp32 {
        failures.push(format!(
            "tract fp32 differs from the tch network by {:.3e} (bound {:.0e})",
            tract.max_abs_diff, bounds.fp32
        ));
    }

    let file_bytes = std::fs::metadata(files.fp32.1)
        .map(|m| m.len())
        .unwrap_or(0);
    // ONNX Runtime runs the frames with a face only, like the runtime and tract above.
    let (ort_faces, ort_landmarks) = clip.faces_only();
    let ort_frames = clip.face_frames().len();
    let ort_landmarks = use_landmarks.then_some(ort_landmarks.as_slice());
    let mut onnx_checker = BTreeMap::new();
    let mut onnxruntime = None;
    let (oracle, skipped) = match oracle {
        Ok(oracle) => (Some(oracle), None),
        Err(why) => (None, Some(why)),
    };
    if let Some(oracle) = oracle {
        let mut paths = vec![files.fp32.1];
        paths.extend(files.int8.map(|(_, p)| p));
        for path in paths {
            let verdict = oracle.check(path)?;
            if let Some(message) = &verdict {
                failures.push(format!(
                    "onnx.checker rejects {}: {message}",
                    path.display()
                ));
            }
            onnx_checker.insert(
                path.display().to_string(),
                verdict.unwrap_or_else(|| "ok".into()),
            );
        }
        let run = oracle.run(
            files.fp32.1,
            &ort_faces,
            ort_landmarks,
            ort_frames,
            1,
            false,
        )?;
        let report = engine(&clip.spread(&pairs(&run.va.concat())), &sequence, clip);
        if report.max_abs_diff > bounds.fp32 {
            failures.push(format!(
                "ONNX Runtime fp32 differs from the tch network by {:.3e} (bound {:.0e})",
                report.max_abs_diff, bounds.fp32
            ));
        }
        onnxruntime = Some(report);
    }

    let int8 = match files.int8 {
        None => None,
        Some((int8_model, int8_path)) => {
            let int8_bytes = std::fs::metadata(int8_path).map(|m| m.len()).unwrap_or(0);
            let size_ratio = int8_bytes as f64 / file_bytes.max(1) as f64;
            let weights = QuantizedWeights::measure(files.fp32.0, int8_model);
            if weights.ratio() > bounds.int8_size_ratio {
                failures.push(format!(
                    "int8 Conv/Gemm weights take {:.1} % of their fp32 bytes (bound {:.0} %)",
                    100.0 * weights.ratio(),
                    100.0 * bounds.int8_size_ratio
                ));
            }
            let tract_int8 = engine(
                &tract_run(int8_model, clip, use_landmarks)?,
                &sequence,
                clip,
            );
            let (mut ort_int8, mut ops) = (None, None);
            if let Some(oracle) = oracle {
                let run = oracle.run(int8_path, &ort_faces, ort_landmarks, ort_frames, 1, true)?;
                ort_int8 = Some(engine(
                    &clip.spread(&pairs(&run.va.concat())),
                    &sequence,
                    clip,
                ));
                ops = run.ops;
            }
            let (measured, engine_name) = match &ort_int8 {
                Some(r) => (r, "onnxruntime"),
                None => (&tract_int8, "tract"),
            };
            let drop = |reference: Score, got: Score| match (reference.ccc, got.ccc) {
                (Some(a), Some(b)) => a - b,
                _ => f64::NAN,
            };
            let ccc_drop = [
                drop(torch.valence, measured.valence),
                drop(torch.arousal, measured.arousal),
            ];
            for (name, d) in ["valence", "arousal"].iter().zip(ccc_drop) {
                if d.is_nan() || d > bounds.int8_ccc_drop {
                    failures.push(format!(
                        "int8 ({engine_name}) loses {d:.4} CCC on {name} (bound {})",
                        bounds.int8_ccc_drop
                    ));
                }
            }
            Some(Int8Report {
                file_bytes: int8_bytes,
                size_ratio,
                weights_ratio: weights.ratio(),
                quantizable_share: weights.fp32 as f64 / weights.fp32_all.max(1) as f64,
                tract: tract_int8,
                onnxruntime: ort_int8,
                onnxruntime_ops: ops,
                ccc_drop,
                ccc_drop_engine: engine_name.into(),
            })
        }
    };

    Ok(ExportReport {
        model: files.fp32.1.display().to_string(),
        file_bytes,
        video: clip.video.clone(),
        frames: clip.frames,
        labelled_frames: clip.mask.iter().filter(|m| **m > 0.5).count(),
        bounds,
        torch,
        torch_streaming,
        tract,
        onnxruntime,
        onnx_checker,
        onnxruntime_skipped: skipped,
        int8,
        failures,
    })
}
