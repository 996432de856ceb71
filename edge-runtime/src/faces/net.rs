//! A face network (detector or landmark net) on the engine the affect model runs on: tract, or
//! ONNX Runtime with the same provider options and TensorRT engine cache
//! ([`EngineConfig`]).

use super::FaceError;
use crate::backend::{BackendKind, EngineConfig};
use crate::batch::{BatchedInput, RowPlan};
use crate::models::ModelFile;

/// One output of a run: its shape and values (row-major).
pub(crate) struct Output {
    /// Dimensions, batch first.
    pub shape: Vec<usize>,
    /// Values.
    pub values: Vec<f32>,
}

/// A single-input network whose first axis is the batch.
pub(crate) enum FaceNet {
    /// The tract plan for one row (a batch runs row by row).
    Tract(RowPlan),
    /// An ONNX Runtime session (any batch size as it comes).
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(ort::session::Session),
}

impl std::fmt::Debug for FaceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaceNet::Tract(_) => f.write_str("FaceNet::Tract"),
            #[cfg(feature = "onnxruntime")]
            FaceNet::OnnxRuntime(_) => f.write_str("FaceNet::OnnxRuntime"),
        }
    }
}

impl FaceNet {
    /// Loads `model` on `engine` and runs it once on zeros of `shape` (batch 1) — a model that
    /// does not take that input fails here, naming the file — returning the net and the
    /// outputs' shapes.
    pub fn load(
        model: &ModelFile,
        shape: &[usize],
        engine: &EngineConfig,
    ) -> Result<(Self, Vec<Vec<usize>>), FaceError> {
        let mut net = match crate::backend::resolve(engine.kind) {
            BackendKind::Tract | BackendKind::Auto => FaceNet::Tract(
                RowPlan::new(
                    super::read_model(model)?,
                    vec![BatchedInput {
                        shape: shape.into(),
                        axis: 0,
                    }],
                )
                .map_err(|e| super::wrong_input(model, shape, e))?,
            ),
            #[cfg(feature = "onnxruntime")]
            BackendKind::Onnxruntime => {
                let bytes = model.read().map_err(|e| FaceError::Model {
                    path: model.describe(),
                    message: format!("cannot read the model: {e}"),
                })?;
                let session = crate::backend::onnxruntime_session(
                    &bytes,
                    &model.describe(),
                    &engine.onnxruntime,
                    engine.threads,
                )
                .map_err(|e| FaceError::Model {
                    path: model.describe(),
                    message: e.to_string(),
                })?;
                FaceNet::OnnxRuntime(session)
            }
            #[cfg(not(feature = "onnxruntime"))]
            BackendKind::Onnxruntime => {
                return Err(FaceError::Model {
                    path: model.describe(),
                    message: "this build has no ONNX Runtime backend; rebuild with \
                              `--features onnxruntime`"
                        .into(),
                });
            }
        };
        let zeros = vec![0.0; shape.iter().product()];
        let outputs = net.run(shape, zeros).map_err(|e| FaceError::Model {
            path: model.describe(),
            message: format!("does not take an input of shape {shape:?} (wrong model file?): {e}"),
        })?;
        Ok((net, outputs.into_iter().map(|o| o.shape).collect()))
    }

    /// Runs the net on `data` of `shape` (`shape[0]` rows) and returns every output in the
    /// model's order, `shape[0]` rows each.
    pub fn run(&mut self, shape: &[usize], data: Vec<f32>) -> Result<Vec<Output>, FaceError> {
        let inference = |e: String| FaceError::Inference(e);
        match self {
            FaceNet::Tract(plan) => {
                // Row by row on the batch-1 plan (faster per face in tract, see `crate::batch`).
                let rows = shape[0];
                let row_len = data.len() / rows.max(1);
                let mut joined: Vec<Output> = Vec::new();
                for row in data.chunks_exact(row_len.max(1)).take(rows) {
                    let outputs = plan
                        .run(&[row.to_vec()])
                        .map_err(|e| inference(format!("{e:#}")))?;
                    for (ix, value) in outputs.iter().enumerate() {
                        let view = value
                            .to_plain_array_view::<f32>()
                            .map_err(|e| inference(format!("{e:#}")))?;
                        if joined.len() <= ix {
                            let mut shape = view.shape().to_vec();
                            shape[0] = rows;
                            joined.push(Output {
                                shape,
                                values: Vec::with_capacity(rows * view.len()),
                            });
                        }
                        joined[ix].values.extend(view.iter().copied());
                    }
                }
                Ok(joined)
            }
            #[cfg(feature = "onnxruntime")]
            FaceNet::OnnxRuntime(session) => {
                let error = |e: ort::Error| inference(e.to_string());
                let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                let tensor = ort::value::Tensor::from_array((dims, data)).map_err(error)?;
                let outputs = session.run(ort::inputs![tensor]).map_err(error)?;
                outputs
                    .iter()
                    .map(|(_, value)| {
                        let (shape, values) = value.try_extract_tensor::<f32>().map_err(error)?;
                        Ok(Output {
                            shape: shape.iter().map(|&d| d as usize).collect(),
                            values: values.to_vec(),
                        })
                    })
                    .collect()
            }
        }
    }
}
