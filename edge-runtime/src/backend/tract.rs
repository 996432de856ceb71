//! tract backend: pure Rust, runs the fp32 graph (tract keeps QDQ int8 graphs as float convs
//! and its own int8 kernels are slower than fp32 on x86, DESIGN.md §4).

use std::sync::Arc;

use affect_shared::contract::{
    C_IN, C_OUT, FACE, H_IN, H_OUT, LANDMARK_VALUES, LANDMARKS, VA, state_shape,
};
use affect_shared::metadata::Precision;
use affect_shared::preprocess::FaceInput;
use tract_onnx::prelude::*;

use super::contract::read_model;
use super::{AffectBackend, BackendError, ModelContract, TrackState};
use crate::models::ModelFile;

type Plan = Arc<TypedRunnableModel>;

/// An affect model compiled by tract for batch size 1.
pub struct TractBackend {
    contract: ModelContract,
    plan: Plan,
    /// Position of each contract input in the plan's input list.
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
        let mut model = tract_onnx::onnx()
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
        for (ix, name) in input_names.iter().enumerate() {
            let (which, shape): (InputName, TVec<usize>) = match name.as_str() {
                FACE => (InputName::Face, tvec![1, 3, s, s]),
                LANDMARKS => (InputName::Landmarks, tvec![1, LANDMARK_VALUES]),
                H_IN => (
                    InputName::H,
                    state_shape(st.layers, 1, st.hidden).into_iter().collect(),
                ),
                C_IN => (
                    InputName::C,
                    state_shape(st.layers, 1, st.hidden).into_iter().collect(),
                ),
                other => {
                    return Err(BackendError::Unsupported {
                        path: display.clone(),
                        reason: format!("unexpected input `{other}`"),
                    });
                }
            };
            model
                .set_input_fact(ix, f32::fact(shape).into())
                .map_err(load_err)?;
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
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(load_err)?;
        Ok(Self {
            h_out: position(H_OUT).filter(|_| !st.is_empty()),
            c_out: position(C_OUT).filter(|_| st.has_cell),
            contract,
            plan,
            input_order,
            va,
        })
    }
}

impl AffectBackend for TractBackend {
    fn contract(&self) -> &ModelContract {
        &self.contract
    }

    fn step(&mut self, face: &FaceInput, state: &mut TrackState) -> Result<[f32; 2], BackendError> {
        let s = self.contract.face_size;
        let st = self.contract.state;
        let run = |e: TractError| BackendError::Run(format!("{e:#}"));
        let mut inputs: TVec<TValue> = tvec![];
        for which in &self.input_order {
            let tensor = match which {
                InputName::Face => Tensor::from_shape(&[1, 3, s, s], &face.pixels),
                InputName::Landmarks => {
                    let lm = face.landmarks.as_ref().ok_or_else(|| {
                        BackendError::Run("the model needs landmarks but none were given".into())
                    })?;
                    Tensor::from_shape(&[1, LANDMARK_VALUES], lm)
                }
                InputName::H => Tensor::from_shape(&state_shape(st.layers, 1, st.hidden), &state.h),
                InputName::C => Tensor::from_shape(
                    &state_shape(st.layers, 1, st.hidden),
                    state.c.as_deref().unwrap_or(&[]),
                ),
            }
            .map_err(run)?;
            inputs.push(tensor.into_tvalue());
        }
        let outputs = self.plan.run(inputs).map_err(run)?;
        let va = floats(&outputs[self.va]).map_err(run)?;
        if va.len() != 2 {
            return Err(BackendError::Run(format!(
                "`va` has {} values, expected 2",
                va.len()
            )));
        }
        let result = [va[0], va[1]];
        if let Some(ix) = self.h_out {
            state.h = floats(&outputs[ix]).map_err(run)?;
        }
        if let Some(ix) = self.c_out {
            state.c = Some(floats(&outputs[ix]).map_err(run)?);
        }
        Ok(result)
    }

    fn name(&self) -> String {
        "tract".into()
    }
}

/// The values of an f32 output.
fn floats(value: &TValue) -> TractResult<Vec<f32>> {
    Ok(value.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}
