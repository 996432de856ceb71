//! The streaming-model contract, checked on the ONNX file itself before any backend loads it.

use std::collections::HashSet;

use affect_shared::contract::{
    C_IN, C_OUT, FACE, H_IN, H_OUT, INPUTS, LANDMARK_VALUES, LANDMARKS, VA,
};
use affect_shared::metadata::{Cell, METADATA_KEY, ModelMetadata};
use affect_shared::status::ModelIdentity;
use sha2::{Digest, Sha256};
use tract_onnx::pb::{ModelProto, tensor_shape_proto::dimension::Value as Dim, type_proto};
use tract_onnx::prelude::Framework;

use super::BackendError;
use crate::models::ModelFile;

/// Shape of a track's recurrent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLayout {
    /// Recurrent layers.
    pub layers: usize,
    /// Units per layer.
    pub hidden: usize,
    /// LSTM: a cell state `c` travels with `h`.
    pub has_cell: bool,
}

impl StateLayout {
    /// Floats in `h` (and in `c`): `layers × hidden`.
    pub fn len(&self) -> usize {
        self.layers * self.hidden
    }

    /// True for models without recurrence (nothing to carry).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a model file promises, verified against the streaming contract.
#[derive(Debug, Clone)]
pub struct ModelContract {
    /// Path it was read from (for messages).
    pub path: String,
    /// The `affect` metadata.
    pub metadata: ModelMetadata,
    /// Side of the square face input.
    pub face_size: usize,
    /// Whether the model takes the `landmarks` input.
    pub landmarks: bool,
    /// Recurrent state layout (empty for CNN-only models).
    pub state: StateLayout,
    /// SHA-256 of the file, lowercase hex (the model's identity in status and metrics).
    pub sha256: String,
}

impl ModelContract {
    /// Reads the model and checks it.
    pub fn load(model: &ModelFile) -> Result<Self, BackendError> {
        Self::from_bytes(&read_model(model)?, &model.describe())
    }

    /// Checks the ONNX model in `bytes`; `path` names it in messages.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self, BackendError> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| BackendError::Load {
                path: path.to_owned(),
                message: format!("not a readable ONNX model: {e:#}"),
            })?;
        let mut contract = Self::from_proto(&proto, path)?;
        contract.sha256 = sha256_hex(bytes);
        Ok(contract)
    }

    /// The identity the device reports for this model.
    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            sha256: self.sha256.clone(),
            version: self.metadata.created.clone(),
            backbone: self.metadata.backbone.clone(),
            since_unix_s: None,
        }
    }

    /// One line for logs: backbone, input size, landmarks, recurrence, precision
    /// (`vgg16 48px +landmarks Gru 1×128 Fp32`).
    pub fn summary(&self) -> String {
        let m = &self.metadata;
        let recurrent = match m.recurrent {
            Some(r) => format!("{:?} {}×{}", r.cell, r.layers, r.hidden),
            None => "per-frame".into(),
        };
        format!(
            "{} {}px{} {recurrent} {:?}",
            m.backbone,
            self.face_size,
            if self.landmarks { " +landmarks" } else { "" },
            m.precision
        )
    }

    /// Checks an already parsed model; `path` is used in messages. The file's bytes are not
    /// known here, so `sha256` is left empty ([`Self::from_bytes`] fills it).
    fn from_proto(proto: &ModelProto, path: &str) -> Result<Self, BackendError> {
        let unsupported = |reason: String| BackendError::Unsupported {
            path: path.to_owned(),
            reason,
        };
        let json = proto
            .metadata_props
            .iter()
            .find(|p| p.key == METADATA_KEY)
            .map(|p| p.value.as_str())
            .ok_or_else(|| {
                unsupported(format!(
                    "no `{METADATA_KEY}` entry in metadata_props: not exported by affect-train \
                     (preprocessing unknown)"
                ))
            })?;
        let metadata = ModelMetadata::from_json(json).map_err(|e| unsupported(e.to_string()))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| unsupported("the file has no graph".into()))?;
        let initializers: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<(&str, Vec<Option<i64>>)> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(|i| (i.name.as_str(), dims(i.r#type.as_ref())))
            .collect();
        let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let input = |name: &str| inputs.iter().find(|(n, _)| *n == name).map(|(_, d)| d);

        for (name, _) in &inputs {
            if !INPUTS.contains(name) {
                return Err(unsupported(format!(
                    "unexpected input `{name}` (the streaming contract has face, landmarks, h_in, c_in)"
                )));
            }
        }
        let size = metadata.preprocess.size as i64;
        let face = input(FACE).ok_or_else(|| unsupported("no `face` input".into()))?;
        check_dims(FACE, face, &[None, Some(3), Some(size), Some(size)]).map_err(unsupported)?;
        if !outputs.contains(&VA) {
            return Err(unsupported("no `va` output".into()));
        }

        let landmarks = input(LANDMARKS).is_some();
        if landmarks != metadata.preprocess.landmarks {
            return Err(unsupported(format!(
                "metadata says landmarks={} but the graph {} a `landmarks` input",
                metadata.preprocess.landmarks,
                if landmarks { "has" } else { "has no" }
            )));
        }
        if let Some(d) = input(LANDMARKS) {
            check_dims(LANDMARKS, d, &[None, Some(LANDMARK_VALUES as i64)]).map_err(unsupported)?;
        }

        let state = match (metadata.recurrent, input(H_IN)) {
            (None, None) => StateLayout {
                layers: 0,
                hidden: 0,
                has_cell: false,
            },
            (Some(r), Some(h)) => {
                let layout = StateLayout {
                    layers: r.layers as usize,
                    hidden: r.hidden as usize,
                    has_cell: r.cell == Cell::Lstm,
                };
                let want = [Some(r.layers as i64), None, Some(r.hidden as i64)];
                check_dims(H_IN, h, &want).map_err(unsupported)?;
                if !outputs.contains(&H_OUT) {
                    return Err(unsupported("recurrent model without `h_out` output".into()));
                }
                match (layout.has_cell, input(C_IN)) {
                    (true, Some(c)) => {
                        check_dims(C_IN, c, &want).map_err(unsupported)?;
                        if !outputs.contains(&C_OUT) {
                            return Err(unsupported("LSTM model without `c_out` output".into()));
                        }
                    }
                    (true, None) => return Err(unsupported("LSTM model without `c_in`".into())),
                    (false, Some(_)) => {
                        return Err(unsupported("GRU model with an unexpected `c_in`".into()));
                    }
                    (false, None) => {}
                }
                layout
            }
            (Some(_), None) => {
                return Err(unsupported(
                    "metadata describes a recurrent model but the graph has no `h_in` input".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(unsupported(
                    "the graph has an `h_in` input but the metadata has no recurrent layout".into(),
                ));
            }
        };
        Ok(Self {
            path: path.to_owned(),
            metadata,
            face_size: size as usize,
            landmarks,
            state,
            sha256: String::new(),
        })
    }
}

/// The bytes of `model`; a missing or unreadable file is a load error naming it.
pub(super) fn read_model(
    model: &ModelFile,
) -> Result<std::borrow::Cow<'static, [u8]>, BackendError> {
    if !model.exists() {
        return Err(BackendError::Load {
            path: model.describe(),
            message: "no such model file".into(),
        });
    }
    model.read().map_err(|e| BackendError::Load {
        path: model.describe(),
        message: format!("cannot read: {e}"),
    })
}

/// Lowercase hex SHA-256 of `bytes` (a model's identity).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Static dimensions of a graph input (`None` for symbolic or unknown).
fn dims(t: Option<&tract_onnx::pb::TypeProto>) -> Vec<Option<i64>> {
    let Some(type_proto::Value::TensorType(tensor)) = t.and_then(|t| t.value.as_ref()) else {
        return Vec::new();
    };
    tensor
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) => Some(v),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks rank and every fixed dimension (`None` in `want` = any).
fn check_dims(name: &str, have: &[Option<i64>], want: &[Option<i64>]) -> Result<(), String> {
    let shape = |d: &[Option<i64>]| {
        d.iter()
            .map(|v| v.map_or("?".to_string(), |v| v.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let ok = have.len() == want.len()
        && have
            .iter()
            .zip(want)
            .all(|(h, w)| w.is_none() || h.is_none() || h == w);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "input `{name}` has shape [{}], expected [{}]",
            shape(have),
            shape(want)
        ))
    }
}
