//! Runs an exported streaming model in tract one time step at a time, carrying the recurrent
//! state from step to step as the device does. Used for calibration and for the export proof.

use std::sync::Arc;

use affect_shared::contract::{
    C_IN, C_OUT, FACE, H_IN, H_OUT, LANDMARK_VALUES, LANDMARKS, VA, state_shape,
};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The graph does not have the streaming inputs and outputs.
    #[error("not a streaming affect model: {0}")]
    Layout(String),
    /// An input has the wrong number of values.
    #[error("input `{name}`: expected {expected} values, found {found}")]
    InputSize {
        /// Input name.
        name: &'static str,
        /// Values the model needs.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// tract refused the model or failed while running it.
    #[error("tract: {0:#}")]
    Tract(#[from] TractError),
}

/// Recurrent state shape of a streaming model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLayout {
    /// Stacked layers.
    pub layers: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Whether there is a cell state (`c_in`/`c_out`, LSTM).
    pub cell_state: bool,
}

/// The inputs a streaming model declares (batch dimension excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamingLayout {
    /// `face` is `[N, 3, size, size]`.
    pub size: usize,
    /// Whether there is a `landmarks` `[N, 136]` input.
    pub landmarks: bool,
    /// Recurrent state, `None` for CNN-only models.
    pub state: Option<StateLayout>,
}

fn fixed_dims(info: &pb::ValueInfoProto) -> Vec<Option<usize>> {
    use pb::tensor_shape_proto::dimension::Value as D;
    let Some(pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(t)),
        ..
    }) = &info.r#type
    else {
        return Vec::new();
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(D::DimValue(v)) => usize::try_from(v).ok(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

impl StreamingLayout {
    /// Reads the layout from the graph's declared inputs.
    pub fn of(model: &pb::ModelProto) -> Result<Self, RunError> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| RunError::Layout("no graph".into()))?;
        let find = |name: &str| graph.input.iter().find(|i| i.name == name).map(fixed_dims);
        let face = find(FACE).ok_or_else(|| RunError::Layout("no `face` input".into()))?;
        let size = match face[..] {
            [_, Some(3), Some(h), Some(w)] if h == w => h,
            _ => {
                return Err(RunError::Layout(format!(
                    "`face` must be [N, 3, S, S], found {face:?}"
                )));
            }
        };
        let landmarks = find(LANDMARKS).is_some();
        let state = match find(H_IN) {
            None => None,
            Some(h) => {
                let [Some(layers), _, Some(hidden)] = h[..] else {
                    return Err(RunError::Layout(format!(
                        "`h_in` must be [layers, N, hidden], found {h:?}"
                    )));
                };
                Some(StateLayout {
                    layers,
                    hidden,
                    cell_state: find(C_IN).is_some(),
                })
            }
        };
        Ok(Self {
            size,
            landmarks,
            state,
        })
    }
}

/// The values of a float tensor, row-major.
fn floats(tensor: &Tensor) -> TractResult<Vec<f32>> {
    Ok(tensor
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
}

/// One step's results.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// `[N, 2]` valence, arousal.
    pub va: Vec<f32>,
    /// The requested extra tensors, in request order, flattened.
    pub extra: Vec<Vec<f32>>,
}

/// A streaming model loaded in tract for a fixed batch size, with its carried state.
#[derive(Debug)]
pub struct TractStreaming {
    plan: Arc<TypedRunnableModel>,
    layout: StreamingLayout,
    batch: usize,
    h: Option<Tensor>,
    c: Option<Tensor>,
}

impl TractStreaming {
    /// Loads `model` for `batch` faces per step; `extra_outputs` names inner tensors to return
    /// too (for calibration).
    pub fn new(
        model: &pb::ModelProto,
        batch: usize,
        extra_outputs: &[String],
    ) -> Result<Self, RunError> {
        let layout = StreamingLayout::of(model)?;
        let bytes = super::onnx::encode(model);
        let mut inference = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
        let mut input = 0;
        let mut fact = |m: &mut InferenceModel, shape: &[usize]| -> TractResult<()> {
            m.set_input_fact(input, f32::fact(shape).into())?;
            input += 1;
            Ok(())
        };
        fact(&mut inference, &[batch, 3, layout.size, layout.size])?;
        if layout.landmarks {
            fact(&mut inference, &[batch, LANDMARK_VALUES])?;
        }
        if let Some(s) = layout.state {
            fact(&mut inference, &state_shape(s.layers, batch, s.hidden))?;
            if s.cell_state {
                fact(&mut inference, &state_shape(s.layers, batch, s.hidden))?;
            }
        }
        let mut outputs = vec![VA.to_owned()];
        if let Some(s) = layout.state {
            outputs.push(H_OUT.into());
            if s.cell_state {
                outputs.push(C_OUT.into());
            }
        }
        outputs.extend(extra_outputs.iter().cloned());
        inference.select_outputs_by_name(&outputs)?;
        let plan = inference.into_optimized()?.into_runnable()?;
        let mut runner = Self {
            plan,
            layout,
            batch,
            h: None,
            c: None,
        };
        runner.reset();
        Ok(runner)
    }

    /// The model's input layout.
    pub fn layout(&self) -> StreamingLayout {
        self.layout
    }

    /// Zeroes the recurrent state (start of a new clip / track).
    pub fn reset(&mut self) {
        let zeros = |s: &StateLayout| {
            Tensor::zero::<f32>(&state_shape(s.layers, self.batch, s.hidden)).ok()
        };
        self.h = self.layout.state.as_ref().and_then(zeros);
        self.c = self
            .layout
            .state
            .filter(|s| s.cell_state)
            .as_ref()
            .and_then(zeros);
    }

    /// Runs one time step: `face` `[N, 3, S, S]`, `landmarks` `[N, 136]` when the model takes
    /// them (ignored otherwise). Carries the new state to the next call.
    pub fn step(
        &mut self,
        face: &[f32],
        landmarks: Option<&[f32]>,
    ) -> Result<StepOutput, RunError> {
        let size = self.layout.size;
        let face_len = self.batch * 3 * size * size;
        if face.len() != face_len {
            return Err(RunError::InputSize {
                name: FACE,
                expected: face_len,
                found: face.len(),
            });
        }
        let mut inputs: TVec<TValue> =
            tvec![Tensor::from_shape(&[self.batch, 3, size, size], face)?.into()];
        if self.layout.landmarks {
            let expected = self.batch * LANDMARK_VALUES;
            let values = landmarks.unwrap_or(&[]);
            if values.len() != expected {
                return Err(RunError::InputSize {
                    name: LANDMARKS,
                    expected,
                    found: values.len(),
                });
            }
            inputs.push(Tensor::from_shape(&[self.batch, LANDMARK_VALUES], values)?.into());
        }
        for state in [&self.h, &self.c].into_iter().flatten() {
            inputs.push(state.clone().into());
        }
        let mut outputs = self.plan.run(inputs)?.into_iter();
        let mut next = || -> Result<Tensor, RunError> {
            Ok(outputs
                .next()
                .ok_or_else(|| RunError::Layout("missing output".into()))?
                .into_tensor())
        };
        let va = floats(&next()?)?;
        if self.h.is_some() {
            self.h = Some(next()?);
        }
        if self.c.is_some() {
            self.c = Some(next()?);
        }
        let mut extra = Vec::new();
        for tensor in outputs {
            extra.push(floats(&tensor.into_tensor())?);
        }
        Ok(StepOutput { va, extra })
    }
}
