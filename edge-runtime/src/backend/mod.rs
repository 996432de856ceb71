//! Inference backends for exported affect models: tract (default, pure Rust) and ONNX Runtime
//! (feature `onnxruntime`; CUDA / TensorRT providers with feature `cuda`).
//!
//! Every backend serves the same streaming contract (DESIGN.md §1, [`affect_shared::contract`]):
//! inputs `face` `[N,3,S,S]`, optional `landmarks` `[N,136]` and recurrent state `h_in` (+ `c_in`
//! for LSTM) `[layers,N,hidden]`; outputs `va` `[N,2]` and `h_out` (+ `c_out`). [`ModelContract`]
//! checks a model file against it
//! and against its own metadata before anything runs, so a model the runtime cannot serve is
//! refused with the reason.

mod contract;
#[cfg(feature = "onnxruntime")]
mod onnxruntime;
mod tract;

use std::path::{Path, PathBuf};

use affect_shared::metadata::ModelMetadata;
use affect_shared::preprocess::FaceInput;

use crate::models::ModelFile;

pub use contract::{ModelContract, StateLayout, sha256_hex};
#[cfg(feature = "onnxruntime")]
pub(crate) use onnxruntime::sessions as onnxruntime_sessions;
#[cfg(feature = "onnxruntime")]
pub use onnxruntime::{OnnxRuntimeBackend, runtime_info};
pub use tract::TractBackend;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The file is missing or is not ONNX.
    #[error("{path}: {message}")]
    Load {
        /// Model file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The model does not follow the streaming contract or its metadata; the message says which
    /// input, output or field.
    #[error("{path}: this runtime cannot serve the model: {reason}")]
    Unsupported {
        /// Model file.
        path: String,
        /// The reason.
        reason: String,
    },
    /// Inference failed.
    #[error("inference: {0}")]
    Run(String),
    /// The backend is not available in this build or on this machine.
    #[error("{0}")]
    Unavailable(String),
}

/// Recurrent state of one face track: `h` (and `c` for LSTM), each `[layers, hidden]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackState {
    /// Hidden state.
    pub h: Vec<f32>,
    /// Cell state (LSTM only).
    pub c: Option<Vec<f32>>,
}

impl TrackState {
    /// The all-zero state a new track starts from (empty for models without recurrence).
    pub fn zeros(layout: &StateLayout) -> Self {
        Self {
            h: vec![0.0; layout.len()],
            c: layout.has_cell.then(|| vec![0.0; layout.len()]),
        }
    }
}

/// A loaded affect model that turns preprocessed faces into (valence, arousal), advancing each
/// track's recurrent state. `Send`: a deployed model is loaded and verified on the deploy
/// thread, then moved into the frame loop.
pub trait AffectBackend: Send {
    /// The model's metadata (preprocessing, recurrent layout, validation scores).
    fn contract(&self) -> &ModelContract;
    /// Runs one frame of several tracks in a single model call: `faces[i]` belongs to the track
    /// whose state is `states[i]`. Each track's state is gathered into the batch's `h_in`
    /// (`c_in`) and replaced by its row of `h_out` (`c_out`); returns (valence, arousal) per
    /// face, in order. On an error no state changes.
    fn step_batch(
        &mut self,
        faces: &[FaceInput],
        states: &mut [TrackState],
    ) -> Result<Vec<[f32; 2]>, BackendError>;
    /// Short name for logs and benchmarks ("tract", "onnxruntime/cpu").
    fn name(&self) -> String;
}

/// Checks that `faces` and `states` pair up and that every face has landmarks when the model
/// takes them.
fn check_batch(
    contract: &ModelContract,
    faces: &[FaceInput],
    states: &[TrackState],
) -> Result<(), BackendError> {
    if faces.len() != states.len() {
        return Err(BackendError::Run(format!(
            "{} faces but {} track states",
            faces.len(),
            states.len()
        )));
    }
    if contract.landmarks && faces.iter().any(|f| f.landmarks.is_none()) {
        return Err(BackendError::Run(
            "the model needs landmarks but none were given".into(),
        ));
    }
    Ok(())
}

/// Steps a batch in parts: each of `workers` takes one contiguous chunk of `faces` and of their
/// tracks' `states` on a thread of its own ([`crate::batch::run_split`]; one worker or one face
/// runs on the calling thread). Checks the batch first; `states` change only once every part
/// ran.
fn step_split<W: Send>(
    contract: &ModelContract,
    workers: impl ExactSizeIterator<Item = W>,
    faces: &[FaceInput],
    states: &mut [TrackState],
    step: impl Fn(W, &[FaceInput], &mut [TrackState]) -> Result<Vec<[f32; 2]>, BackendError> + Sync,
) -> Result<Vec<[f32; 2]>, BackendError> {
    check_batch(contract, faces, states)?;
    if faces.is_empty() {
        return Ok(Vec::new());
    }
    let mut next = states.to_vec();
    let rows = crate::batch::chunk_rows(faces.len(), workers.len());
    let parts = workers.zip(faces.chunks(rows).zip(next.chunks_mut(rows)));
    let mut estimates = Vec::with_capacity(faces.len());
    for part in crate::batch::run_split(parts, |(worker, (faces, states))| {
        step(worker, faces, states)
    }) {
        estimates.extend(part?);
    }
    states.clone_from_slice(&next);
    Ok(estimates)
}

/// The batch's model inputs, in contract order (`face`, then `landmarks`, `h_in`, `c_in` as
/// the model has them), laid out for `batch ≥ faces.len()` rows (extra rows zero).
fn batch_inputs(
    contract: &ModelContract,
    faces: &[FaceInput],
    states: &[TrackState],
    batch: usize,
) -> BatchInputs {
    let s = contract.face_size;
    let st = contract.state;
    let mut face = vec![0.0; batch * 3 * s * s];
    for (row, f) in face.chunks_exact_mut(3 * s * s).zip(faces) {
        row.copy_from_slice(&f.pixels);
    }
    let landmarks = contract.landmarks.then(|| {
        let mut out = vec![0.0; batch * affect_shared::contract::LANDMARK_VALUES];
        for (row, f) in out
            .chunks_exact_mut(affect_shared::contract::LANDMARK_VALUES)
            .zip(faces)
        {
            if let Some(lm) = &f.landmarks {
                row.copy_from_slice(lm);
            }
        }
        out
    });
    let recurrent = !st.is_empty();
    let h = recurrent.then(|| {
        crate::batch::gather(
            states.iter().map(|t| t.h.as_slice()),
            st.layers,
            st.hidden,
            batch,
        )
    });
    let c = (recurrent && st.has_cell).then(|| {
        crate::batch::gather(
            states.iter().map(|t| t.c.as_deref().unwrap_or(&[])),
            st.layers,
            st.hidden,
            batch,
        )
    });
    BatchInputs {
        face,
        landmarks,
        h,
        c,
    }
}

/// A batch's model inputs as flat buffers.
struct BatchInputs {
    face: Vec<f32>,
    landmarks: Option<Vec<f32>>,
    h: Option<Vec<f32>>,
    c: Option<Vec<f32>>,
}

/// Splits a batch's outputs into per-face results and new states (`va` `[batch, 2]`, `h_out`,
/// `c_out` `[layers, batch, hidden]`; only the first `states.len()` rows are used), replacing
/// `states` only once every output checked out.
fn scatter_outputs(
    contract: &ModelContract,
    batch: usize,
    va: &[f32],
    h: Option<&[f32]>,
    c: Option<&[f32]>,
    states: &mut [TrackState],
) -> Result<Vec<[f32; 2]>, BackendError> {
    let st = contract.state;
    let state_len = st.layers * batch * st.hidden;
    if va.len() != 2 * batch {
        return Err(BackendError::Run(format!(
            "`va` has {} values, expected {}",
            va.len(),
            2 * batch
        )));
    }
    for (name, out) in [("h_out", h), ("c_out", c)] {
        if let Some(out) = out
            && out.len() != state_len
        {
            return Err(BackendError::Run(format!(
                "`{name}` has {} values, expected {state_len}",
                out.len()
            )));
        }
    }
    for (n, state) in states.iter_mut().enumerate() {
        if let Some(h) = h {
            state.h = crate::batch::scatter(h, st.layers, st.hidden, batch, n);
        }
        if let Some(c) = c {
            state.c = Some(crate::batch::scatter(c, st.layers, st.hidden, batch, n));
        }
    }
    Ok(va
        .chunks_exact(2)
        .take(states.len())
        .map(|v| [v[0], v[1]])
        .collect())
}

/// Which engine runs the networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// ONNX Runtime when its library loads (`ORT_DYLIB_PATH`, in a build with the
    /// `onnxruntime` feature), else tract ([`resolve`]).
    Auto,
    /// tract (pure Rust).
    Tract,
    /// ONNX Runtime, loaded from `ORT_DYLIB_PATH`.
    Onnxruntime,
}

/// The engine `kind` stands for: [`BackendKind::Auto`] becomes ONNX Runtime when its library
/// loads, else tract; the others stay as they are.
pub fn resolve(kind: BackendKind) -> BackendKind {
    match kind {
        BackendKind::Auto if engine_info(BackendKind::Onnxruntime).is_ok() => {
            BackendKind::Onnxruntime
        }
        BackendKind::Auto => BackendKind::Tract,
        other => other,
    }
}

/// Where ONNX Runtime executes the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// The CPU provider.
    #[default]
    Cpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
    /// NVIDIA TensorRT (feature `cuda`), with CUDA behind it for nodes TensorRT cannot take.
    #[serde(rename = "tensorrt")]
    TensorRt,
}

/// ONNX Runtime's settings (`[onnxruntime]`; used when `backend = "onnxruntime"`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxRuntimeConfig {
    /// Execution provider: `cpu`, `cuda` or `tensorrt` (the GPU ones need a build with the
    /// `cuda` feature and an ONNX Runtime built with them, e.g. JetPack's). A provider that
    /// cannot be loaded is an error, never a silent fall back to the CPU.
    pub provider: ExecutionProvider,
    /// TensorRT: build FP16 engines (tensor cores; outputs move by ~1e-3).
    pub tensorrt_fp16: bool,
    /// TensorRT: INT8 engines, for the QDQ (`.int8.onnx`) exports, whose scales TensorRT uses.
    pub tensorrt_int8: bool,
    /// TensorRT: directory caching built engines (building one takes minutes on a Jetson);
    /// default `<cache_dir>/tensorrt`, none when there is no cache directory.
    pub tensorrt_cache: Option<PathBuf>,
}

impl Default for OnnxRuntimeConfig {
    fn default() -> Self {
        Self {
            provider: ExecutionProvider::Cpu,
            tensorrt_fp16: true,
            tensorrt_int8: false,
            tensorrt_cache: None,
        }
    }
}

/// The engine every network of the runtime runs on (affect model, face detector, landmark
/// net), with its thread count and ONNX Runtime settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// tract or ONNX Runtime.
    pub kind: BackendKind,
    /// CPU threads sharing a frame's faces, each running its part on a single-threaded
    /// engine (0 = one per core); one face runs on the calling thread alone. GPU providers take
    /// the whole batch in one call.
    pub threads: usize,
    /// Provider options and TensorRT engine cache (ONNX Runtime only).
    pub onnxruntime: OnnxRuntimeConfig,
}

impl EngineConfig {
    /// tract with one thread per core (the engine that needs nothing outside the binary).
    pub fn tract() -> Self {
        Self {
            kind: BackendKind::Tract,
            threads: 0,
            onnxruntime: OnnxRuntimeConfig::default(),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "tract" => Ok(Self::Tract),
            "onnxruntime" | "ort" => Ok(Self::Onnxruntime),
            other => Err(format!(
                "unknown backend {other:?} (expected auto, tract or onnxruntime)"
            )),
        }
    }
}

/// Loads `model` with the chosen backend ([`resolve`]d first). A batch of faces is split across
/// `threads` CPU threads (0 = one per core, [`crate::batch::worker_count`]); `onnxruntime`
/// applies to the ONNX Runtime backend only.
pub fn load(
    kind: BackendKind,
    model: &ModelFile,
    threads: usize,
    onnxruntime: &OnnxRuntimeConfig,
) -> Result<Box<dyn AffectBackend>, BackendError> {
    match resolve(kind) {
        BackendKind::Tract | BackendKind::Auto => {
            Ok(Box::new(TractBackend::load(model)?.with_threads(threads)))
        }
        #[cfg(feature = "onnxruntime")]
        BackendKind::Onnxruntime => Ok(Box::new(OnnxRuntimeBackend::load(
            model,
            onnxruntime,
            threads,
        )?)),
        #[cfg(not(feature = "onnxruntime"))]
        BackendKind::Onnxruntime => {
            let _ = (threads, onnxruntime);
            Err(BackendError::Unavailable(NO_ONNXRUNTIME.into()))
        }
    }
}

/// Which engine `kind` is, once it is ready to load models: `tract` (built in), or ONNX
/// Runtime's build information after its library was loaded from `ORT_DYLIB_PATH`.
pub fn engine_info(kind: BackendKind) -> Result<String, BackendError> {
    match kind {
        BackendKind::Auto => match resolve(kind) {
            BackendKind::Onnxruntime => engine_info(BackendKind::Onnxruntime),
            _ => Ok("tract (built in; ONNX Runtime not loadable)".into()),
        },
        BackendKind::Tract => Ok("tract (built in)".into()),
        #[cfg(feature = "onnxruntime")]
        BackendKind::Onnxruntime => runtime_info(),
        #[cfg(not(feature = "onnxruntime"))]
        BackendKind::Onnxruntime => Err(BackendError::Unavailable(NO_ONNXRUNTIME.into())),
    }
}

/// Whether the ONNX Runtime library offers the CUDA and the TensorRT execution providers, in
/// that order (loads the library first); `None` in a build without the `cuda` feature.
pub fn gpu_providers() -> Option<Result<[bool; 2], BackendError>> {
    #[cfg(feature = "cuda")]
    {
        Some(onnxruntime::gpu_providers())
    }
    #[cfg(not(feature = "cuda"))]
    {
        None
    }
}

#[cfg(not(feature = "onnxruntime"))]
const NO_ONNXRUNTIME: &str =
    "this build has no ONNX Runtime backend; rebuild with `--features onnxruntime`";

/// Reads and validates the `affect` metadata JSON of an ONNX file without running it.
pub fn read_metadata(path: &Path) -> Result<ModelMetadata, BackendError> {
    Ok(ModelContract::load(&path.into())?.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_resolves_to_onnx_runtime_exactly_when_its_library_loads() {
        assert_eq!(resolve(BackendKind::Tract), BackendKind::Tract);
        assert_eq!(resolve(BackendKind::Onnxruntime), BackendKind::Onnxruntime);
        let loads = engine_info(BackendKind::Onnxruntime).is_ok();
        let want = if loads {
            BackendKind::Onnxruntime
        } else {
            BackendKind::Tract
        };
        assert_eq!(resolve(BackendKind::Auto), want);
        assert_eq!("auto".parse::<BackendKind>(), Ok(BackendKind::Auto));
    }
}
