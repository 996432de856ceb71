//! ONNX Runtime backend through `ort` with `load-dynamic`: the shared library is found at run
//! time (`ORT_DYLIB_PATH`, e.g. the PyPI wheel's `libonnxruntime.so.1.*`, or JetPack's build on a
//! Jetson). Runs fp32 and QDQ int8 models; on Jetson the CUDA / TensorRT providers are
//! registered with `error_on_failure`, so a missing provider is an error, never a silent CPU
//! fallback.

use std::sync::OnceLock;

use affect_shared::contract::{
    C_IN, C_OUT, FACE, H_IN, H_OUT, LANDMARK_VALUES, LANDMARKS, VA, state_shape,
};
use affect_shared::preprocess::FaceInput;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::contract::read_model;
use super::{
    AffectBackend, BackendError, ExecutionProvider, ModelContract, OnnxRuntimeConfig, TrackState,
    batch_inputs, scatter_outputs, step_split,
};
use crate::models::ModelFile;

/// ONNX Runtime allows one environment per process; it lives for the whole run.
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

fn environment() -> Result<&'static Environment, BackendError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = std::env::var_os("ORT_DYLIB_PATH").ok_or_else(|| {
                "ONNX Runtime backend: set ORT_DYLIB_PATH to libonnxruntime.so (tests/setup.sh \
                 points it at the onnxruntime wheel; on Jetson use JetPack's library)"
                    .to_string()
            })?;
            ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
                .with_name("affect-edge")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| BackendError::Unavailable(e.clone()))
}

/// Loads the ONNX Runtime library (once per process, as the backend does) and returns its
/// build information, e.g. `ORT Build Info: git-branch=rel-1.23.2, git-commit-id=…`.
pub fn runtime_info() -> Result<String, BackendError> {
    environment()?;
    Ok(ort::info().to_owned())
}

/// Whether the loaded ONNX Runtime library was built with the CUDA and the TensorRT execution
/// providers, in that order (loads the library first).
#[cfg(feature = "cuda")]
pub fn gpu_providers() -> Result<[bool; 2], BackendError> {
    use ort::ep::ExecutionProvider as _;
    environment()?;
    let available = |r: ort::Result<bool>| r.map_err(|e| BackendError::Unavailable(e.to_string()));
    Ok([
        available(ort::ep::CUDA::is_available())?,
        available(ort::ep::TensorRT::is_available())?,
    ])
}

/// An affect model in ONNX Runtime sessions: on the CPU, one single-threaded session per thread,
/// a frame's tracks split between them; on a GPU, one session taking all tracks in one call.
pub struct OnnxRuntimeBackend {
    contract: ModelContract,
    sessions: Vec<Session>,
    provider: ExecutionProvider,
}

impl OnnxRuntimeBackend {
    /// Loads and checks `model` on the configured execution provider; on the CPU the tracks of
    /// a frame are split across `threads` threads (0 = one per core).
    pub fn load(
        model: impl Into<ModelFile>,
        config: &OnnxRuntimeConfig,
        threads: usize,
    ) -> Result<Self, BackendError> {
        let provider = config.provider;
        let model = model.into();
        let bytes = read_model(&model)?;
        let display = model.describe();
        let contract = ModelContract::from_bytes(&bytes, &display)?;
        let sessions = sessions(&bytes, &display, config, threads)?;
        Ok(Self {
            contract,
            sessions,
            provider,
        })
    }

    /// Runs `faces` of a model with `contract` as one batch on `session`, replacing `states`
    /// only if it succeeded.
    fn step_on(
        contract: &ModelContract,
        session: &mut Session,
        faces: &[FaceInput],
        states: &mut [TrackState],
    ) -> Result<Vec<[f32; 2]>, BackendError> {
        let n = faces.len();
        let (batch, s) = (n as i64, contract.face_size as i64);
        let st = contract.state;
        let run = |e: ort::Error| BackendError::Run(e.to_string());
        let state_dims = state_shape(st.layers, n, st.hidden).map(|d| d as i64);
        let given = batch_inputs(contract, faces, states, n);
        let mut inputs = ort::inputs![
            FACE => Tensor::from_array(([batch, 3, s, s], given.face)).map_err(run)?,
        ];
        if let Some(lm) = given.landmarks {
            inputs.push((
                LANDMARKS.into(),
                Tensor::from_array(([batch, LANDMARK_VALUES as i64], lm))
                    .map_err(run)?
                    .into(),
            ));
        }
        if let Some(h) = given.h {
            inputs.push((
                H_IN.into(),
                Tensor::from_array((state_dims, h)).map_err(run)?.into(),
            ));
        }
        if let Some(c) = given.c {
            inputs.push((
                C_IN.into(),
                Tensor::from_array((state_dims, c)).map_err(run)?.into(),
            ));
        }
        let outputs = session.run(inputs).map_err(run)?;
        let extract = |name: &str| -> Result<&[f32], BackendError> {
            let value = outputs
                .get(name)
                .ok_or_else(|| BackendError::Run(format!("no `{name}` output")))?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(run)?;
            Ok(data)
        };
        let va = extract(VA)?;
        let h = (!st.is_empty()).then(|| extract(H_OUT)).transpose()?;
        let c = (!st.is_empty() && st.has_cell)
            .then(|| extract(C_OUT))
            .transpose()?;
        scatter_outputs(contract, n, va, h, c, states)
    }
}

/// The ONNX Runtime sessions of the ONNX model in `bytes` (named `display` in errors) on the
/// configured execution provider (with its TensorRT options and engine cache): on the CPU one
/// single-threaded session per thread of `threads` (0 = one per core), a batch's rows split
/// between them; on a GPU provider one session for whole batches. Every network of the
/// runtime (affect model, detector, landmark net) is loaded through here, so all get the same
/// options.
pub(crate) fn sessions(
    bytes: &[u8],
    display: &str,
    config: &OnnxRuntimeConfig,
    threads: usize,
) -> Result<Vec<Session>, BackendError> {
    let count = match config.provider {
        ExecutionProvider::Cpu => crate::batch::worker_count(threads),
        _ => 1,
    };
    (0..count)
        .map(|_| session(bytes, display, config))
        .collect()
}

/// One session of the model in `bytes` on the configured provider, with one intra-op thread:
/// the runtime's threads split batches themselves ([`sessions`]), which measured faster than
/// ONNX Runtime's own pools for networks this small (`crate::batch`).
fn session(
    bytes: &[u8],
    display: &str,
    config: &OnnxRuntimeConfig,
) -> Result<Session, BackendError> {
    let env = environment()?;
    let load_err = |e: String| BackendError::Load {
        path: display.to_owned(),
        message: e,
    };
    let builder = Session::builder(env).map_err(|e| load_err(e.to_string()))?;
    let builder = builder
        .with_intra_threads(1)
        .map_err(|e| load_err(e.to_string()))?;
    let mut builder = builder
        .with_inter_threads(1)
        .map_err(|e| load_err(e.to_string()))?;
    builder = match config.provider {
        ExecutionProvider::Cpu => builder,
        #[cfg(feature = "cuda")]
        ExecutionProvider::Cuda => builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| load_err(format!("CUDA execution provider: {e}")))?,
        #[cfg(feature = "cuda")]
        ExecutionProvider::TensorRt => builder
            .with_execution_providers([
                tensorrt(config).build().error_on_failure(),
                ort::ep::CUDA::default().build().error_on_failure(),
            ])
            .map_err(|e| load_err(format!("TensorRT execution provider: {e}")))?,
        #[cfg(not(feature = "cuda"))]
        other => {
            return Err(BackendError::Unavailable(format!(
                "{other:?} needs a build with `--features cuda`"
            )));
        }
    };
    builder
        .commit_from_memory(bytes)
        .map_err(|e| load_err(e.to_string()))
}

/// The TensorRT provider with the configured precision and engine cache.
#[cfg(feature = "cuda")]
fn tensorrt(config: &OnnxRuntimeConfig) -> ort::ep::TensorRT {
    let trt = ort::ep::TensorRT::default()
        .with_fp16(config.tensorrt_fp16)
        .with_int8(config.tensorrt_int8);
    match &config.tensorrt_cache {
        Some(dir) => trt
            .with_engine_cache(true)
            .with_engine_cache_path(dir.display())
            .with_timing_cache(true)
            .with_timing_cache_path(dir.display()),
        None => trt,
    }
}

impl AffectBackend for OnnxRuntimeBackend {
    fn contract(&self) -> &ModelContract {
        &self.contract
    }

    fn step_batch(
        &mut self,
        faces: &[FaceInput],
        states: &mut [TrackState],
    ) -> Result<Vec<[f32; 2]>, BackendError> {
        // The tracks split across the sessions, one chunk per session on its own thread.
        let contract = &self.contract;
        step_split(
            contract,
            self.sessions.iter_mut(),
            faces,
            states,
            |session, faces, states| Self::step_on(contract, session, faces, states),
        )
    }

    fn name(&self) -> String {
        format!("onnxruntime/{:?}", self.provider).to_lowercase()
    }
}
