//! Checks a candidate model before it may serve: its SHA-256 against the deploy's claim, its
//! metadata and streaming contract (the same refusals as at start-up: the backend's loader
//! runs), whether the face pipeline can feed it, and a probe inference on a fixed input giving
//! finite outputs in range, on the configured backend. Runs on the deploy thread, beside the
//! frame loop.

use std::path::Path;

use affect_shared::preprocess::FaceBox;
use affect_shared::status::ModelIdentity;
use affect_shared::synth::{FaceState, Person, render_face, render_size};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::backend::{self, AffectBackend, BackendKind, OnnxRuntimeConfig, TrackState};
use crate::models::ModelFile;

/// Largest |valence| or |arousal| the probe accepts: the label range [-1, 1] with a margin for
/// regressors without a bounded output (the pipeline clamps to [-1, 1] when reporting).
pub const PROBE_BOUND: f32 = 1.5;

/// Steps of the probe: the second one runs on the state the first produced.
const PROBE_STEPS: usize = 2;

/// How candidates are loaded and what the running face pipeline can give them.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The configured backend.
    pub backend: BackendKind,
    /// Engine threads (0 = one per core), as the serving model gets them.
    pub threads: usize,
    /// ONNX Runtime's settings (provider, TensorRT cache).
    pub onnxruntime: OnnxRuntimeConfig,
    /// Whether the face pipeline computes 68 landmarks (a landmark model needs them).
    pub landmarks_available: bool,
}

/// A candidate that passed every check, loaded and ready to swap in.
pub struct Verified {
    /// The loaded model.
    pub backend: Box<dyn AffectBackend>,
    /// Its identity (no `since` yet).
    pub identity: ModelIdentity,
}

impl Verifier {
    /// Verifies the model stored at `path` (its checksum already checked); the error is the
    /// rejection reason, for the status.
    pub fn verify(&self, path: &Path) -> Result<Verified, String> {
        let mut backend = backend::load(
            self.backend,
            &ModelFile::Path(path.to_owned()),
            self.threads,
            &self.onnxruntime,
        )
        .map_err(|e| e.to_string())?;
        let contract = backend.contract().clone();
        if contract.landmarks && !self.landmarks_available {
            return Err(
                "the model needs 68 facial landmarks, which this device's face pipeline does not \
                 compute (it runs without the landmark model, or with `faces = \"none\"`); \
                 deploy a model trained without landmarks, or restart the device with a \
                 landmark model configured"
                    .into(),
            );
        }
        probe(backend.as_mut())?;
        Ok(Verified {
            backend,
            identity: contract.identity(),
        })
    }
}

/// Runs the model on a fixed synthetic face (with its landmarks) from a zero state; refuses
/// non-finite or out-of-range outputs and non-finite states.
pub fn probe(backend: &mut dyn AffectBackend) -> Result<[f32; 2], String> {
    let contract = backend.contract().clone();
    let preprocess = &contract.metadata.preprocess;
    let mut rng = ChaCha8Rng::seed_from_u64(0x0af1_ec75);
    let person = Person::random(&mut rng);
    let size = render_size(contract.face_size as u32);
    let (image, landmarks) = render_face(
        &person,
        &FaceState::neutral_pose([0.3, 0.2]),
        size,
        &mut rng,
    );
    let face = FaceBox::whole_crop(size, size, preprocess.margin);
    let input = preprocess
        .face_input(&image, &face, Some(&landmarks))
        .map_err(|e| format!("probe input: {e}"))?;
    let mut states = [TrackState::zeros(&contract.state)];
    let mut out = [0.0; 2];
    for step in 1..=PROBE_STEPS {
        out = backend
            .step_batch(std::slice::from_ref(&input), &mut states)
            .map_err(|e| format!("probe inference failed: {e}"))?
            .first()
            .copied()
            .ok_or_else(|| "probe inference returned no output".to_owned())?;
        let state = &states[0];
        let state_finite = state
            .h
            .iter()
            .chain(state.c.iter().flatten())
            .all(|v| v.is_finite());
        if !out.iter().all(|v| v.is_finite()) || !state_finite {
            return Err(format!(
                "probe inference gave non-finite values at step {step}: output {out:?}{}",
                if state_finite {
                    ""
                } else {
                    ", recurrent state not finite"
                }
            ));
        }
        if out.iter().any(|v| v.abs() > PROBE_BOUND) {
            return Err(format!(
                "probe inference out of range at step {step}: (valence, arousal) = {out:?}, \
                 expected within ±{PROBE_BOUND}"
            ));
        }
    }
    Ok(out)
}
