//! A face network (detector or landmark net) on the engine the affect model runs on: tract, or
//! ONNX Runtime with the same provider options and TensorRT engine cache
//! ([`EngineConfig`]).

use super::FaceError;
use crate::backend::{BackendKind, EngineConfig};
use crate::batch::{BatchedInput, RowPlan};
use crate::models::ModelFile;
use tract_onnx::prelude::TractError;

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
    /// An ONNX Runtime session.
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime {
        /// The session.
        session: ort::session::Session,
        /// Whether the model takes any batch size (its input's first dimension is not a fixed
        /// 1): then a batch runs as one call, else row by row (an older batch-1 file).
        batched: bool,
    },
}

impl std::fmt::Debug for FaceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaceNet::Tract(_) => f.write_str("FaceNet::Tract"),
            #[cfg(feature = "onnxruntime")]
            FaceNet::OnnxRuntime { batched, .. } => {
                write!(f, "FaceNet::OnnxRuntime {{ batched: {batched} }}")
            }
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
            BackendKind::Tract | BackendKind::Auto => {
                crate::backend::set_tract_threads(engine.threads);
                FaceNet::Tract(
                    RowPlan::new(
                        super::read_model(model)?,
                        vec![BatchedInput {
                            shape: shape.into(),
                            axis: 0,
                        }],
                    )
                    .map_err(|e| super::wrong_input(model, shape, e))?,
                )
            }
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
                let batch = session
                    .inputs()
                    .first()
                    .and_then(|input| input.dtype().tensor_shape())
                    .and_then(|shape| shape.first().copied());
                FaceNet::OnnxRuntime {
                    session,
                    batched: batch != Some(1),
                }
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
        let outputs = net.run(shape, &zeros).map_err(|e| FaceError::Model {
            path: model.describe(),
            message: format!("does not take an input of shape {shape:?} (wrong model file?): {e}"),
        })?;
        Ok((net, outputs.into_iter().map(|o| o.shape).collect()))
    }

    /// Runs the net on `data` of `shape` (`shape[0]` rows) and returns every output in the
    /// model's order, `shape[0]` rows each.
    pub fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<Output>, FaceError> {
        match self {
            // Row by row on the batch-1 plan (faster per face in tract, see `crate::batch`).
            FaceNet::Tract(plan) => by_row(shape, data, |_, row| {
                let inference = |e: TractError| FaceError::Inference(format!("{e:#}"));
                plan.run(&[row.to_vec()])
                    .map_err(inference)?
                    .iter()
                    .map(|value| {
                        let view = value.to_plain_array_view::<f32>().map_err(inference)?;
                        Ok(Output {
                            shape: view.shape().to_vec(),
                            values: view.iter().copied().collect(),
                        })
                    })
                    .collect()
            }),
            #[cfg(feature = "onnxruntime")]
            FaceNet::OnnxRuntime {
                session,
                batched: true,
            } => run_session(session, shape, data),
            #[cfg(feature = "onnxruntime")]
            FaceNet::OnnxRuntime {
                session,
                batched: false,
            } => by_row(shape, data, |one, row| run_session(session, one, row)),
        }
    }
}

/// Runs `data` of `shape` one row at a time through `run_row` (given the batch-1 shape and the
/// row) and joins the rows of each output.
fn by_row(
    shape: &[usize],
    data: &[f32],
    mut run_row: impl FnMut(&[usize], &[f32]) -> Result<Vec<Output>, FaceError>,
) -> Result<Vec<Output>, FaceError> {
    let rows = shape.first().copied().unwrap_or(0);
    let mut one = shape.to_vec();
    if let Some(batch) = one.first_mut() {
        *batch = 1;
    }
    let row_len: usize = one.iter().product();
    if data.len() != rows * row_len {
        return Err(FaceError::Inference(format!(
            "{} input values for shape {shape:?}",
            data.len()
        )));
    }
    let mut joined: Vec<Output> = Vec::new();
    for row in data.chunks_exact(row_len.max(1)).take(rows) {
        for (ix, output) in run_row(&one, row)?.into_iter().enumerate() {
            if joined.len() <= ix {
                let mut shape = output.shape.clone();
                if let Some(batch) = shape.first_mut() {
                    *batch = rows;
                }
                joined.push(Output {
                    shape,
                    values: Vec::with_capacity(rows * output.values.len()),
                });
            }
            joined[ix].values.extend_from_slice(&output.values);
        }
    }
    Ok(joined)
}

/// One ONNX Runtime call on `data` of `shape` (borrowed, not copied into the runtime).
#[cfg(feature = "onnxruntime")]
fn run_session(
    session: &mut ort::session::Session,
    shape: &[usize],
    data: &[f32],
) -> Result<Vec<Output>, FaceError> {
    let error = |e: ort::Error| FaceError::Inference(e.to_string());
    let tensor = ort::value::TensorRef::from_array_view((shape.to_vec(), data)).map_err(error)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_by_row_runs_join_every_output_in_row_order() {
        // A fake net: output 0 is each row's sum, output 1 the row doubled.
        let data: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let mut calls = Vec::new();
        let joined = by_row(&[3, 2], &data, |one, row| {
            calls.push(one.to_vec());
            Ok(vec![
                Output {
                    shape: vec![1, 1],
                    values: vec![row.iter().sum()],
                },
                Output {
                    shape: vec![1, 2],
                    values: row.iter().map(|v| 2.0 * v).collect(),
                },
            ])
        })
        .unwrap();
        assert_eq!(calls, vec![vec![1, 2]; 3]);
        assert_eq!(joined[0].shape, [3, 1]);
        assert_eq!(joined[0].values, [1.0, 5.0, 9.0]);
        assert_eq!(joined[1].shape, [3, 2]);
        assert_eq!(joined[1].values, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let short = by_row(&[4, 2], &data, |_, _| Ok(Vec::new()));
        assert!(short.is_err(), "6 values are not 4 rows of 2");
    }
}
