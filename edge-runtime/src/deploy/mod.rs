//! Hot model swap on a running device: candidates arrive from the watched directory
//! (`<state_dir>/models/incoming/`, files moved into place) or an MQTT deploy message on
//! `<topic>/cmd` ([`affect_shared::deploy`]); the deploy thread verifies each one beside the
//! frame loop ([`Verifier`]) and stores it by SHA-256 ([`ModelStore`]); between two frames the
//! frame loop swaps it in on trial ([`Pipeline::replace_backend`]); after its trial frames it
//! becomes the persistent active model, or the previous one is restored. Every outcome lands in
//! the retained status and the `affect_deploys_total` metric.
//!
//! ```text
//!  MQTT <topic>/cmd ─┐                          ┌─ rejected ────────────────┐
//!                    ├─ jobs ─▶ deploy thread ──┤                           ▼
//!  incoming/*.onnx ──┘         (verify, store)  └─ verified ─▶ frame loop: swap, trial ─▶ status
//! ```

mod client;
mod store;
mod verify;
mod watch;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use affect_shared::deploy::{DeployOutcome, DeployResult, decode_deploy};
use affect_shared::status::ModelIdentity;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};

pub use client::{
    DeployClientError, DeployRequest, DeviceAnswer, check_proof, deploy, proof_path, render_table,
};
pub use store::{ActivePointer, ModelStore};
pub use verify::{PROBE_BOUND, Verified, Verifier, probe};

use crate::pipeline::{Pipeline, SwapEvent};
use crate::telemetry::Telemetry;

/// `[deploy]`: accepting new models while running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeployConfig {
    /// Accept deploys (needs a state directory, where models are stored).
    pub enabled: bool,
    /// Largest model accepted, bytes (a bigger MQTT deploy is rejected unread).
    pub max_bytes: u64,
    /// Frames with faces a new model must run with finite outputs before it becomes the
    /// persistent active model; a failure within them restores the previous one (≥ 1).
    pub trial_frames: u32,
    /// The watched drop directory; default `<state_dir>/models/incoming`.
    pub watch: Option<PathBuf>,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 64 * 1024 * 1024,
            trial_frames: 30,
            watch: None,
        }
    }
}

/// Why deploys cannot be set up, or a store file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Reading or writing the model store failed.
    #[error("{}: {source}", path.display())]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A store file is not what it should be.
    #[error("{}: damaged: {message}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The drop directory cannot be watched.
    #[error("watching {}: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// notify's error.
        #[source]
        source: notify::Error,
    },
    /// The deploy thread could not start.
    #[error("starting the deploy thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Work for the deploy thread.
enum Job {
    /// An MQTT deploy message.
    Message {
        /// The raw payload.
        payload: Vec<u8>,
        /// Where it came from (the command topic), for logs.
        origin: String,
    },
    /// A file that appeared in the drop directory.
    File(PathBuf),
}

/// Where MQTT reporters hand deploy messages: never blocks; when the deploy thread is busy
/// with as many jobs as it queues, the message is rejected and the rejection reported.
#[derive(Clone)]
pub struct CommandSink {
    jobs: Sender<Job>,
    outcomes: Sender<DeployOutcome>,
    max_bytes: u64,
}

/// Deploy jobs queued at most (each may hold a model in memory).
const QUEUED_JOBS: usize = 2;

impl CommandSink {
    /// Largest model accepted, bytes (MQTT clients size their incoming packets by it).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Takes a deploy message received on `origin`.
    pub fn offer(&self, payload: Vec<u8>, origin: &str) {
        let job = Job::Message {
            payload,
            origin: origin.to_owned(),
        };
        if let Err(TrySendError::Full(Job::Message { payload, origin })) = self.jobs.try_send(job) {
            let (id, sha256) = claimed_identity(&payload);
            tracing::warn!("deploy {id:?} from {origin}: rejected, {QUEUED_JOBS} deploys waiting");
            let _ = self.outcomes.try_send(outcome(
                id,
                sha256,
                DeployResult::Rejected,
                Some(format!(
                    "busy: {QUEUED_JOBS} deploys are waiting to be verified; retry"
                )),
            ));
        }
    }
}

/// The id and SHA-256 a refused deploy message claims, to report the refusal under (empty
/// when even its header is unreadable; the size limit is not applied).
fn claimed_identity(payload: &[u8]) -> (String, String) {
    decode_deploy(payload, u64::MAX)
        .map(|(h, _)| (h.id, h.sha256))
        .unwrap_or_default()
}

/// Seconds since the Unix epoch now (0 for a clock before 1970).
pub fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn outcome(
    id: String,
    sha256: String,
    result: DeployResult,
    reason: Option<String>,
) -> DeployOutcome {
    DeployOutcome {
        id,
        sha256,
        result,
        reason,
        at_unix_s: now_unix_s(),
    }
}

/// A verified candidate on its way to the frame loop.
struct Ready {
    id: String,
    verified: Verified,
}

/// The model a device starts with: the last deployed one when the store has it intact,
/// otherwise the configured one.
pub struct StartModel {
    /// Stored model path (`None`: use the configured model).
    pub deployed: Option<PathBuf>,
    /// When the deployed model became active.
    pub since_unix_s: Option<u64>,
    /// The last deploy's outcome recorded by an earlier run.
    pub last_outcome: Option<DeployOutcome>,
}

impl ModelStore {
    /// What to start with; a damaged pointer or a stored model that does not match its name
    /// is logged and skipped (the configured model serves), never fatal.
    pub fn start_model(&self) -> StartModel {
        let last_outcome = self.last_outcome().unwrap_or_else(|e| {
            tracing::warn!("deploy: {e}; the last deploy's outcome is forgotten");
            None
        });
        let none = StartModel {
            deployed: None,
            since_unix_s: None,
            last_outcome: last_outcome.clone(),
        };
        let pointer = match self.active() {
            Ok(Some(pointer)) => pointer,
            Ok(None) => return none,
            Err(e) => {
                tracing::error!("deploy: {e}; starting with the configured model");
                return none;
            }
        };
        let path = self.model_path(&pointer.sha256);
        match std::fs::read(&path) {
            Ok(bytes) if crate::backend::sha256_hex(&bytes) == pointer.sha256 => StartModel {
                deployed: Some(path),
                since_unix_s: Some(pointer.since_unix_s),
                last_outcome,
            },
            Ok(_) => {
                tracing::error!(
                    "deploy: {} does not hash to its name; starting with the configured model",
                    path.display()
                );
                none
            }
            Err(e) => {
                tracing::error!(
                    "deploy: the active model {}: {e}; starting with the configured model",
                    path.display()
                );
                none
            }
        }
    }
}

/// The frame loop's side of deploys: takes verified models and outcomes between frames.
pub struct Deployments {
    store: ModelStore,
    ready: Receiver<Ready>,
    outcomes: Receiver<DeployOutcome>,
    trial_frames: u32,
    /// The deploy id and identity of the model on trial.
    on_trial: Option<(String, ModelIdentity)>,
    /// The model serving now (identity with `since`).
    serving: ModelIdentity,
    /// SHA-256 of the serving model when it is a stored one (the previous model to keep).
    serving_stored: Option<String>,
    _watcher: notify::RecommendedWatcher,
}

impl Deployments {
    /// Starts the deploy thread and the directory watcher. `serving` is the model the
    /// pipeline starts with, `serving_stored` whether it came from the store. Returns the
    /// frame loop's handle and the sink MQTT reporters pass deploy messages to.
    pub fn start(
        config: &DeployConfig,
        store: ModelStore,
        verifier: Verifier,
        serving: ModelIdentity,
        serving_stored: bool,
    ) -> Result<(Self, CommandSink), DeployError> {
        let (jobs_tx, jobs) = crossbeam_channel::bounded(QUEUED_JOBS);
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let (outcomes_tx, outcomes) = crossbeam_channel::bounded(64);
        let sink = CommandSink {
            jobs: jobs_tx.clone(),
            outcomes: outcomes_tx.clone(),
            max_bytes: config.max_bytes,
        };
        let watched = config.watch.clone().unwrap_or_else(|| store.incoming());
        std::fs::create_dir_all(&watched).map_err(|source| DeployError::Store {
            path: watched.clone(),
            source,
        })?;
        let watcher = watch::watch(&watched, jobs_tx)?;
        let worker = DeployWorker {
            store: store.clone(),
            verifier,
            max_bytes: config.max_bytes,
            ready: ready_tx,
            outcomes: outcomes_tx,
        };
        // Detached: it ends when the channels close, after the verification in progress.
        std::thread::Builder::new()
            .name("deploy".into())
            .spawn(move || worker.run(&jobs))
            .map_err(DeployError::Thread)?;
        tracing::info!(
            "deploy: accepting models moved into {} (at most {} bytes, {} trial frames)",
            watched.display(),
            config.max_bytes,
            config.trial_frames
        );
        let serving_stored = serving_stored.then(|| serving.sha256.clone());
        Ok((
            Self {
                store,
                ready,
                outcomes,
                trial_frames: config.trial_frames,
                on_trial: None,
                serving,
                serving_stored,
                _watcher: watcher,
            },
            sink,
        ))
    }

    /// Between two frames: ends a trial that ended, records rejections, and swaps in a
    /// verified model when none is on trial. Returns whether the status changed (to publish
    /// it now).
    pub fn between_frames(&mut self, pipeline: &mut Pipeline, telemetry: &Telemetry) -> bool {
        let mut changed = false;
        if let Some(event) = pipeline.take_swap_event()
            && let Some((id, candidate)) = self.on_trial.take()
        {
            changed = true;
            let finished = match event {
                SwapEvent::Passed => self.activate(id, candidate),
                // The status kept naming the previous model during the trial.
                SwapEvent::RolledBack { reason } => {
                    if let Err(e) = self.store.discard(&candidate.sha256) {
                        tracing::warn!("deploy: {e}");
                    }
                    outcome(id, candidate.sha256, DeployResult::RolledBack, Some(reason))
                }
            };
            self.record(finished, telemetry);
        }
        while let Ok(rejected) = self.outcomes.try_recv() {
            changed = true;
            self.record(rejected, telemetry);
        }
        if !pipeline.on_trial()
            && let Ok(Ready { id, verified }) = self.ready.try_recv()
        {
            changed = true;
            let Verified { backend, identity } = verified;
            match pipeline.replace_backend(backend, self.trial_frames) {
                Ok(()) => {
                    tracing::info!(
                        "deploy {id:?}: {} swapped in, on trial for {} frame(s) with faces",
                        identity.sha256,
                        self.trial_frames
                    );
                    self.on_trial = Some((id, identity));
                }
                Err(e) => {
                    if let Err(e) = self.store.discard(&identity.sha256) {
                        tracing::warn!("deploy: {e}");
                    }
                    let rejected = outcome(
                        id,
                        identity.sha256,
                        DeployResult::Rejected,
                        Some(e.to_string()),
                    );
                    self.record(rejected, telemetry);
                }
            }
        }
        changed
    }

    /// Makes the model that passed its trial the persistent active one.
    fn activate(&mut self, id: String, mut candidate: ModelIdentity) -> DeployOutcome {
        let since = now_unix_s();
        candidate.since_unix_s = Some(since);
        let pointer = ActivePointer {
            sha256: candidate.sha256.clone(),
            since_unix_s: since,
            previous: self.serving_stored.clone(),
        };
        let reason = match self.store.set_active(&pointer) {
            Ok(()) => None,
            Err(e) => {
                tracing::error!("deploy {id:?}: serving, but not persisted: {e}");
                Some(format!(
                    "serving, but not persisted (the previous model returns after a restart): {e}"
                ))
            }
        };
        tracing::info!(
            "deploy {id:?}: {} passed its trial and is the active model (was {})",
            candidate.sha256,
            self.serving.sha256
        );
        self.serving_stored = Some(candidate.sha256.clone());
        self.serving = candidate.clone();
        outcome(id, candidate.sha256, DeployResult::Active, reason)
    }

    fn record(&self, outcome: DeployOutcome, telemetry: &Telemetry) {
        if outcome.result == DeployResult::Active {
            telemetry.set_model(self.serving.clone());
        }
        if let Err(e) = self.store.record_outcome(&outcome) {
            tracing::warn!("deploy: recording the outcome: {e}");
        }
        telemetry.deploy_outcome(outcome, false);
    }
}

/// The deploy thread: verifies and stores candidates, one at a time.
struct DeployWorker {
    store: ModelStore,
    verifier: Verifier,
    max_bytes: u64,
    ready: Sender<Ready>,
    outcomes: Sender<DeployOutcome>,
}

impl DeployWorker {
    fn run(self, jobs: &Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            let handled = match job {
                Job::Message { payload, origin } => self.message(&payload, &origin),
                Job::File(path) => self.file(&path),
            };
            let sent = match handled {
                Some(Handled::Verified(ready)) => self.ready.send(ready).is_ok(),
                Some(Handled::Rejected(rejected)) => self.outcomes.send(rejected).is_ok(),
                None => true,
            };
            if !sent {
                return; // the frame loop is gone
            }
        }
    }

    fn message(&self, payload: &[u8], origin: &str) -> Option<Handled> {
        match decode_deploy(payload, self.max_bytes) {
            Ok((header, model)) => {
                tracing::info!(
                    "deploy {:?} from {origin}: {} bytes, SHA-256 {}",
                    header.id,
                    model.len(),
                    header.sha256
                );
                Some(self.candidate(header.id, model, Some(&header.sha256)))
            }
            Err(e) => {
                let (id, sha256) = claimed_identity(payload);
                tracing::warn!("deploy {id:?} from {origin}: rejected: {e}");
                Some(Handled::Rejected(outcome(
                    id,
                    sha256,
                    DeployResult::Rejected,
                    Some(e.to_string()),
                )))
            }
        }
    }

    /// A file from the drop directory; `<file>.sha256` beside it (as `sha256sum` writes it)
    /// is the claimed checksum. Both are removed once handled.
    fn file(&self, path: &Path) -> Option<Handled> {
        let id = path.file_name()?.to_string_lossy().into_owned();
        let sidecar = path.with_file_name(format!("{id}.sha256"));
        let size = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(_) => return None, // handled already (a second event for the same file)
        };
        let result = if size > self.max_bytes {
            Err(format!(
                "model of {size} bytes exceeds the device's limit of {} bytes",
                self.max_bytes
            ))
        } else {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let claimed = std::fs::read_to_string(&sidecar)
            .ok()
            .and_then(|text| text.split_whitespace().next().map(str::to_owned));
        for file in [path, sidecar.as_path()] {
            if let Err(e) = std::fs::remove_file(file)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("deploy: cannot remove {}: {e}", file.display());
            }
        }
        tracing::info!("deploy {id:?}: {} appeared", path.display());
        Some(match result {
            Ok(bytes) => self.candidate(id, &bytes, claimed.as_deref()),
            Err(reason) => Handled::Rejected(outcome(
                id,
                claimed.unwrap_or_default(),
                DeployResult::Rejected,
                Some(reason),
            )),
        })
    }

    fn candidate(&self, id: String, bytes: &[u8], claimed: Option<&str>) -> Handled {
        let sha256 = crate::backend::sha256_hex(bytes);
        let rejected = |reason: String| {
            tracing::warn!("deploy {id:?}: rejected: {reason}");
            Handled::Rejected(outcome(
                id.clone(),
                sha256.clone(),
                DeployResult::Rejected,
                Some(reason),
            ))
        };
        if let Some(claimed) = claimed
            && !claimed.eq_ignore_ascii_case(&sha256)
        {
            return rejected(format!(
                "SHA-256 mismatch: the deploy claims {claimed}, the received bytes hash to \
                 {sha256}"
            ));
        }
        let path = match self.store.put(&sha256, bytes) {
            Ok(path) => path,
            Err(e) => return rejected(format!("cannot store the model: {e}")),
        };
        match self.verifier.verify(&path) {
            Ok(verified) => Handled::Verified(Ready { id, verified }),
            Err(reason) => {
                if let Err(e) = self.store.discard(&sha256) {
                    tracing::warn!("deploy: {e}");
                }
                rejected(reason)
            }
        }
    }
}

enum Handled {
    Verified(Ready),
    Rejected(DeployOutcome),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{self, BackendKind, OnnxRuntimeConfig};
    use crate::models::ModelFile;
    use crate::pipeline::{FaceMode, PipelineConfig};
    use crate::source::Frame;
    use crate::telemetry::HealthPolicy;
    use std::time::{Duration, Instant};

    /// A frame loop with deploys, driven by the test.
    struct Rig {
        deployments: Deployments,
        pipeline: Pipeline,
        telemetry: Telemetry,
        incoming: PathBuf,
        next_frame: u64,
    }

    impl Rig {
        /// Moves `bytes` into the drop directory as `name` (with `name.sha256` claiming
        /// `claimed` first, when given) and runs frames, letting deploys act between them,
        /// until the status carries the outcome of `name`.
        fn drop_model(&mut self, name: &str, bytes: &[u8], claimed: Option<&str>) -> DeployOutcome {
            if let Some(sha) = claimed {
                let sidecar = self.incoming.join(format!("{name}.sha256"));
                std::fs::write(sidecar, format!("{sha}  {name}\n")).unwrap();
            }
            let temporary = self.incoming.join(format!(".{name}.tmp"));
            std::fs::write(&temporary, bytes).unwrap();
            std::fs::rename(&temporary, self.incoming.join(name)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                self.deployments
                    .between_frames(&mut self.pipeline, &self.telemetry);
                let status = self.telemetry.device_status(Instant::now());
                if let Some(outcome) = status.deploy.filter(|d| d.id == name) {
                    return outcome;
                }
                assert!(Instant::now() < deadline, "no outcome for {name}");
                let frame = Frame {
                    index: self.next_frame,
                    timestamp_ms: self.next_frame * 33,
                    image: image::RgbImage::from_pixel(64, 64, image::Rgb([120, 110, 100])),
                    truth: None,
                    cut: false,
                };
                self.next_frame += 1;
                assert_eq!(self.pipeline.process(&frame).unwrap().len(), 1);
            }
        }
    }

    #[test]
    fn dropped_models_are_verified_beside_the_frame_loop_and_the_active_one_persists() {
        let state = tempfile::tempdir().unwrap();
        let store = ModelStore::open(state.path()).unwrap();
        let onnxruntime = OnnxRuntimeConfig::default();
        let bundled = ModelFile::embedded("affect-synth.onnx").unwrap();
        let serving = backend::load(BackendKind::Tract, &bundled, 1, &onnxruntime).unwrap();
        let identity = serving.contract().identity();
        let pipeline =
            Pipeline::new(FaceMode::WholeFrame, serving, PipelineConfig::default()).unwrap();
        let telemetry = Telemetry::new(
            identity.clone(),
            "tract".into(),
            HealthPolicy {
                stale_after: Duration::from_secs(5),
            },
        );
        let verifier = Verifier {
            backend: BackendKind::Tract,
            threads: 1,
            onnxruntime,
            landmarks_available: false,
        };
        let config = DeployConfig {
            trial_frames: 3,
            ..DeployConfig::default()
        };
        let (deployments, _sink) =
            Deployments::start(&config, store.clone(), verifier, identity.clone(), false).unwrap();
        let mut rig = Rig {
            deployments,
            pipeline,
            telemetry,
            incoming: store.incoming(),
            next_frame: 0,
        };

        // Not a model: rejected with the loader's reason; the bundled model keeps serving.
        let junk = rig.drop_model("junk.onnx", b"not onnx", None);
        assert_eq!(junk.result, DeployResult::Rejected);
        assert!(junk.reason.unwrap().contains("ONNX"));
        assert_eq!(store.active().unwrap(), None);
        assert!(
            !rig.incoming.join("junk.onnx").exists(),
            "handled files leave the drop directory"
        );

        // A good model with a matching checksum file: on trial, then active and persisted.
        let bytes = bundled.read().unwrap();
        let good = rig.drop_model("good.onnx", &bytes, Some(&identity.sha256));
        assert_eq!((good.result, good.reason), (DeployResult::Active, None));
        let pointer = store.active().unwrap().unwrap();
        assert_eq!(pointer.sha256, identity.sha256);
        let status = rig.telemetry.device_status(Instant::now());
        assert_eq!(
            status.model.unwrap().since_unix_s,
            Some(pointer.since_unix_s)
        );
        let metrics = rig.telemetry.encode_metrics();
        for result in ["active", "rejected"] {
            let counted = format!("affect_deploys_total{{result=\"{result}\"}} 1");
            assert!(metrics.contains(&counted), "{metrics}");
        }

        // A reopened store starts with it.
        let start = ModelStore::open(state.path()).unwrap().start_model();
        assert_eq!(start.deployed, Some(store.model_path(&identity.sha256)));
        assert_eq!(start.last_outcome.unwrap().id, "good.onnx");

        // A checksum file that does not match: rejected.
        let bad = rig.drop_model("bad.onnx", &bytes, Some(&"00".repeat(32)));
        assert_eq!(bad.result, DeployResult::Rejected);
        assert!(bad.reason.unwrap().contains("SHA-256 mismatch"));
    }
}
