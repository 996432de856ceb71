//! A face network (detector or landmark net) on the engine the affect model runs on: tract, or
//! ONNX Runtime with the same provider options and TensorRT engine cache
//! ([`EngineConfig`]).

use super::FaceError;
use crate::backend::{BackendKind, EngineConfig};
use crate::batch::{BatchedInput, RowPlan, chunk_rows, run_split, worker_count};
use crate::models::ModelFile;
use tract_onnx::prelude::TractError;

/// One output of a run: its shape and values (row-major).
pub(crate) struct Output {
    /// Dimensions, batch first.
    pub shape: Vec<usize>,
    /// Values.
    pub values: Vec<f32>,
}

/// A single-input network whose first axis is the batch; a batch's rows are split across the
/// engine's threads ([`EngineConfig::threads`]) and joined back in order.
pub(crate) enum FaceNet {
    /// The tract plan for one row (a batch runs row by row), shared by `workers` threads.
    Tract {
        /// The plan.
        plan: RowPlan,
        /// Threads a batch's rows are split across.
        workers: usize,
    },
    /// ONNX Runtime sessions, one per thread a batch's rows are split across (one on a GPU).
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime {
        /// The sessions.
        sessions: Vec<ort::session::Session>,
        /// Whether the model takes any batch size (its input's first dimension is not a fixed
        /// 1): then a batch runs as one call per session, else row by row (an older batch-1
        /// file).
        batched: bool,
    },
}

impl std::fmt::Debug for FaceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaceNet::Tract { workers, .. } => write!(f, "FaceNet::Tract {{ workers: {workers} }}"),
            #[cfg(feature = "onnxruntime")]
            FaceNet::OnnxRuntime { sessions, batched } => write!(
                f,
                "FaceNet::OnnxRuntime {{ sessions: {}, batched: {batched} }}",
                sessions.len()
            ),
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
            BackendKind::Tract | BackendKind::Auto => FaceNet::Tract {
                plan: RowPlan::new(
                    super::read_model(model)?,
                    vec![BatchedInput {
                        shape: shape.into(),
                        axis: 0,
                    }],
                )
                .map_err(|e| super::wrong_input(model, shape, e))?,
                workers: worker_count(engine.threads),
            },
            #[cfg(feature = "onnxruntime")]
            BackendKind::Onnxruntime => {
                let bytes = model.read().map_err(|e| FaceError::Model {
                    path: model.describe(),
                    message: format!("cannot read the model: {e}"),
                })?;
                let sessions = crate::backend::onnxruntime_sessions(
                    &bytes,
                    &model.describe(),
                    &engine.onnxruntime,
                    engine.threads,
                )
                .map_err(|e| FaceError::Model {
                    path: model.describe(),
                    message: e.to_string(),
                })?;
                let batch = sessions
                    .first()
                    .and_then(|session| session.inputs().first())
                    .and_then(|input| input.dtype().tensor_shape())
                    .and_then(|shape| shape.first().copied());
                FaceNet::OnnxRuntime {
                    sessions,
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
    /// model's order, `shape[0]` rows each. The rows are split across the threads, one chunk
    /// per thread.
    pub fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<Output>, FaceError> {
        let row_len: usize = shape.iter().skip(1).product();
        let rows = shape.first().copied().unwrap_or(0);
        if data.len() != rows * row_len {
            return Err(FaceError::Inference(format!(
                "{} input values for shape {shape:?}",
                data.len()
            )));
        }
        self.run_filled(shape, &mut Vec::new(), |first, part| {
            part.copy_from_slice(&data[first * row_len..][..part.len()]);
            Ok(())
        })
    }

    /// [`Self::run`] on rows written into `buffer` (grown to the batch, so a reused one stops
    /// allocating) by `fill(first row, values of consecutive rows from it)`, which must write
    /// every value it is given (a reused buffer still holds the previous batch): each thread
    /// fills its own chunk of rows and runs it, so the input preparation (crops, letterboxes) is
    /// split across the threads too.
    pub fn run_filled(
        &mut self,
        shape: &[usize],
        buffer: &mut Vec<f32>,
        fill: impl Fn(usize, &mut [f32]) -> Result<(), FaceError> + Sync,
    ) -> Result<Vec<Output>, FaceError> {
        let rows = shape.first().copied().unwrap_or(0);
        let row_len: usize = shape.iter().skip(1).product();
        if rows == 0 || row_len == 0 {
            return Err(FaceError::Inference(format!(
                "no input values for shape {shape:?}"
            )));
        }
        // Grown, not cleared: `fill` overwrites every value of the batch anyway.
        if buffer.len() < rows * row_len {
            buffer.resize(rows * row_len, 0.0);
        }
        let buffer = &mut buffer[..rows * row_len];
        let part_shape = |part: &[f32]| {
            let mut part_shape = shape.to_vec();
            part_shape[0] = part.len() / row_len;
            part_shape
        };
        let parts = match self {
            // Row by row on the batch-1 plan (faster per face in tract, see `crate::batch`).
            FaceNet::Tract { plan, workers } => {
                let per_part = chunk_rows(rows, *workers) * row_len;
                let plan = &*plan;
                run_split(buffer.chunks_mut(per_part).enumerate(), |(index, part)| {
                    fill(index * per_part / row_len, part)?;
                    by_row(&part_shape(part), part, |_, row| run_tract(plan, row))
                })
            }
            #[cfg(feature = "onnxruntime")]
            FaceNet::OnnxRuntime { sessions, batched } => {
                let per_part = chunk_rows(rows, sessions.len()) * row_len;
                let batched = *batched;
                run_split(
                    sessions
                        .iter_mut()
                        .zip(buffer.chunks_mut(per_part).enumerate()),
                    |(session, (index, part))| {
                        fill(index * per_part / row_len, part)?;
                        match batched {
                            true => run_session(session, &part_shape(part), part),
                            false => by_row(&part_shape(part), part, |one, row| {
                                run_session(session, one, row)
                            }),
                        }
                    },
                )
            }
        };
        join_rows(parts.into_iter().collect::<Result<_, _>>()?, rows)
    }
}

/// One row through a tract plan.
fn run_tract(plan: &RowPlan, row: &[f32]) -> Result<Vec<Output>, FaceError> {
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
}

/// Joins the outputs of consecutive runs over parts of one batch of `rows` rows: each output's
/// values concatenated in run order, its batch dimension set to `rows`.
fn join_rows(runs: Vec<Vec<Output>>, rows: usize) -> Result<Vec<Output>, FaceError> {
    let mut runs = runs.into_iter();
    let Some(mut joined) = runs.next() else {
        return Ok(Vec::new());
    };
    for run in runs {
        if run.len() != joined.len() {
            return Err(FaceError::Inference(format!(
                "a run gave {} outputs, another {}",
                run.len(),
                joined.len()
            )));
        }
        for (all, part) in joined.iter_mut().zip(run) {
            all.values.extend_from_slice(&part.values);
        }
    }
    for output in &mut joined {
        if let Some(batch) = output.shape.first_mut() {
            *batch = rows;
        }
    }
    Ok(joined)
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
    let runs = data
        .chunks_exact(row_len.max(1))
        .take(rows)
        .map(|row| run_row(&one, row))
        .collect::<Result<_, _>>()?;
    join_rows(runs, rows)
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

    #[test]
    fn rows_split_across_threads_come_back_whole_and_bad_shapes_are_refused() {
        let model = ModelFile::embedded("face-landmarks-68.onnx").unwrap();
        let engine = EngineConfig {
            threads: 2,
            ..EngineConfig::tract()
        };
        let (mut net, shapes) = FaceNet::load(&model, &[1, 3, 112, 112], &engine).unwrap();
        assert_eq!(shapes, [vec![1, 136]]);
        let row = 3 * 112 * 112;
        let data: Vec<f32> = (0..3 * row).map(|i| (i % 251) as f32 / 251.0).collect();
        let all = net.run(&[3, 3, 112, 112], &data).unwrap();
        assert_eq!(all[0].shape, [3, 136]);
        let last = net.run(&[1, 3, 112, 112], &data[2 * row..]).unwrap();
        assert_eq!(all[0].values[2 * 136..], last[0].values[..]);
        // Each thread fills its own chunk, told the chunk's first row.
        let chunks = std::sync::Mutex::new(Vec::new());
        let mut buffer = Vec::new();
        let filled = net
            .run_filled(&[3, 3, 112, 112], &mut buffer, |first, part| {
                chunks.lock().unwrap().push((first, part.len() / row));
                part.copy_from_slice(&data[first * row..][..part.len()]);
                Ok(())
            })
            .unwrap();
        assert_eq!(filled[0].values, all[0].values);
        let mut chunks = chunks.into_inner().unwrap();
        chunks.sort();
        assert_eq!(chunks, [(0, 2), (2, 1)]);
        // The buffer, now larger than a one-row batch, is reused as it is.
        let one = net
            .run_filled(&[1, 3, 112, 112], &mut buffer, |_, part| {
                part.copy_from_slice(&data[2 * row..]);
                Ok(())
            })
            .unwrap();
        assert_eq!(one[0].values, last[0].values);
        assert_eq!(buffer.len(), 3 * row);
        let refused = net.run_filled(&[2, 3, 112, 112], &mut buffer, |first, _| {
            Err(FaceError::Inference(format!(
                "row {first} cannot be cropped"
            )))
        });
        assert!(
            refused
                .err()
                .unwrap()
                .to_string()
                .contains("cannot be cropped")
        );
        for (shape, len) in [
            (vec![0, 3, 112, 112], 0),
            (vec![2, 0], 0),
            (vec![2, 3, 112, 112], 5),
        ] {
            let err = net
                .run(&shape, &data[..len])
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(&format!("{shape:?}")), "{err}");
        }
    }
}
