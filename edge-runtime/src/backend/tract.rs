//! tract backend: pure Rust, runs the fp32 graph (tract keeps QDQ int8 graphs as float convs
//! and its own int8 kernels are slower than fp32 on x86, DESIGN.md §4).

use affect_shared::contract::{
    C_IN, C_OUT, FACE, H_IN, H_OUT, LANDMARK_VALUES, LANDMARKS, VA, state_shape,
};
use affect_shared::metadata::Precision;
use affect_shared::preprocess::FaceInput;
use tract_onnx::prelude::*;

use super::contract::read_model;
use super::{
    AffectBackend, BackendError, ModelContract, TrackState, batch_inputs, scatter_outputs,
    step_split,
};
use crate::batch::{BatchedInput, RowPlan};
use crate::models::ModelFile;

/// An affect model compiled by tract for one row; a batch runs row by row (`batch::RowPlan`),
/// its rows shared by [`TractBackend::with_threads`] threads.
pub struct TractBackend {
    contract: ModelContract,
    plan: RowPlan,
    /// Threads a batch's rows are split across.
    workers: usize,
    /// Which contract input each of the model's inputs is, in the model's order.
    input_order: Vec<InputName>,
    /// Positions of `va`, `h_out`, `c_out` in the plan's outputs.
    va: usize,
    h_out: Option<usize>,
    c_out: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum InputName {
    Face,
    Landmarks,
    H,
    C,
}

impl TractBackend {
    /// Loads, checks and optimises `model` (a path or an embedded model).
    pub fn load(model: impl Into<ModelFile>) -> Result<Self, BackendError> {
        let model = model.into();
        let bytes = read_model(&model)?;
        let display = model.describe();
        let contract = ModelContract::from_bytes(&bytes, &display)?;
        if contract.metadata.precision == Precision::Int8 {
            return Err(BackendError::Unsupported {
                path: display,
                reason: "int8 (QDQ) models run as slow float emulation in tract; use the fp32 \
                         export with tract, or the int8 one with --backend onnxruntime"
                    .into(),
            });
        }
        let load_err = |e: TractError| BackendError::Load {
            path: display.clone(),
            message: format!("{e:#}"),
        };
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(load_err)?;
        let model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(load_err)?;

        let s = contract.face_size;
        let st = contract.state;
        let mut input_order = Vec::new();
        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(load_err)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let mut batched = Vec::new();
        for name in &input_names {
            let (which, shape, axis): (InputName, TVec<usize>, usize) = match name.as_str() {
                FACE => (InputName::Face, tvec![1, 3, s, s], 0),
                LANDMARKS => (InputName::Landmarks, tvec![1, LANDMARK_VALUES], 0),
                H_IN => (
                    InputName::H,
                    state_shape(st.layers, 1, st.hidden).into_iter().collect(),
                    1,
                ),
                C_IN => (
                    InputName::C,
                    state_shape(st.layers, 1, st.hidden).into_iter().collect(),
                    1,
                ),
                other => {
                    return Err(BackendError::Unsupported {
                        path: display.clone(),
                        reason: format!("unexpected input `{other}`"),
                    });
                }
            };
            batched.push(BatchedInput { shape, axis });
            input_order.push(which);
        }
        let output_names: Vec<String> = proto
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
            .unwrap_or_default();
        let position = |n: &str| output_names.iter().position(|o| o == n);
        let va = position(VA).ok_or_else(|| BackendError::Unsupported {
            path: display.clone(),
            reason: "no `va` output".into(),
        })?;
        let plan = RowPlan::new(model, batched).map_err(load_err)?;
        Ok(Self {
            h_out: position(H_OUT).filter(|_| !st.is_empty()),
            c_out: position(C_OUT).filter(|_| st.has_cell),
            contract,
            plan,
            workers: 1,
            input_order,
            va,
        })
    }

    /// Splits each batch across `threads` threads (0 = one per core) sharing the plan; one
    /// thread, the default, runs it on the calling thread. Outputs do not depend on it.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.workers = crate::batch::worker_count(threads);
        self
    }

    /// Runs `faces` one row at a time, replacing each row's state in `states` as it goes.
    fn step_rows(
        &self,
        faces: &[FaceInput],
        states: &mut [TrackState],
    ) -> Result<Vec<[f32; 2]>, BackendError> {
        let run = |e: TractError| BackendError::Run(format!("{e:#}"));
        let mut estimates = Vec::with_capacity(faces.len());
        for (face, state) in faces.iter().zip(states.chunks_mut(1)) {
            let mut given = batch_inputs(&self.contract, std::slice::from_ref(face), state, 1);
            let mut inputs = Vec::with_capacity(self.input_order.len());
            for which in &self.input_order {
                let data = match which {
                    InputName::Face => Some(std::mem::take(&mut given.face)),
                    InputName::Landmarks => given.landmarks.take(),
                    InputName::H => given.h.take(),
                    InputName::C => given.c.take(),
                };
                inputs.push(data.ok_or_else(|| {
                    BackendError::Run(format!("no data for the model's {which:?} input"))
                })?);
            }
            let outputs = self.plan.run(&inputs).map_err(run)?;
            let slice = |ix: usize| outputs[ix].try_as_plain_ram()?.as_slice::<f32>();
            let va = slice(self.va).map_err(run)?;
            let h = self.h_out.map(slice).transpose().map_err(run)?;
            let c = self.c_out.map(slice).transpose().map_err(run)?;
            estimates.extend(scatter_outputs(&self.contract, 1, va, h, c, state)?);
        }
        Ok(estimates)
    }
}

impl AffectBackend for TractBackend {
    fn contract(&self) -> &ModelContract {
        &self.contract
    }

    fn step_batch(
        &mut self,
        faces: &[FaceInput],
        states: &mut [TrackState],
    ) -> Result<Vec<[f32; 2]>, BackendError> {
        // One row at a time on the batch-1 plan (faster per face in tract, see
        // `crate::batch`), the rows shared by the threads.
        let this = &*self;
        step_split(
            &this.contract,
            std::iter::repeat_n((), this.workers),
            faces,
            states,
            |(), faces, states| this.step_rows(faces, states),
        )
    }

    fn name(&self) -> String {
        "tract".into()
    }
}
