//! `affect-edge doctor`: checks every part `run` would use on this device — configuration,
//! model, inference engine, face models, source, serial ports, MQTT brokers, disk, clock — and
//! gives one line per check: `ok`, `FAIL` with the fix, or `skipped` with the reason.
//!
//! [`check`] is the logic: which checks a configuration calls for and what each probe's answer
//! means for a technician (the fix). Everything that touches files, devices, libraries or the
//! network sits behind [`Probes`]; [`SystemProbes`] asks the machine, tests script the answers.
//! [`render_text`], [`render_json`] and [`exit_code`] turn the results into output.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use affect_shared::contract::LANDMARK_VALUES;
use affect_shared::preprocess::FaceInput;
use serde::Serialize;

use crate::backend::{
    self, BackendError, BackendKind, EngineConfig, ExecutionProvider, ModelContract,
    OnnxRuntimeConfig, TrackState,
};
use crate::config::{ConfigError, EdgeConfig, FacesSpec, SourceSpec};
use crate::deploy::{ModelStore, StartModel};
use crate::faces::{BundledFaces, FaceError, FacesConfig};
use crate::models::ModelFile;
use crate::report::{
    ConnectReturnCode, LinkOpener, MqttConfig, ProbeError, SerialConfig, SerialOpener,
};
use crate::source::{
    CameraConfig, CameraOpener, CameraStream, DecodeError, FrameSource, ImageDir, ImageDirConfig,
    OfferedFormat, OpenError, SourceError, V4l2Opener, decode_frame, offered_formats,
};

/// Free space below which a state or cache directory fails the check (the durable report
/// queue, deployed models and engine caches live there).
pub const MIN_FREE_BYTES: u64 = 100 * 1024 * 1024;

/// How long the camera may take to deliver its first frame.
pub const CAMERA_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Unix time (seconds) of the build: `SOURCE_DATE_EPOCH` when it was set, else when the build
/// script ran (see `build.rs`). A clock before its year is wrong.
pub const BUILD_EPOCH: u64 = parse_u64(env!("AFFECT_BUILD_EPOCH"));

const fn parse_u64(s: &str) -> u64 {
    let bytes = s.as_bytes();
    let mut value = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            bytes[i].is_ascii_digit(),
            "AFFECT_BUILD_EPOCH is not a number"
        );
        value = value * 10 + (bytes[i] - b'0') as u64;
        i += 1;
    }
    value
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The part works.
    Ok,
    /// The part is configured and does not work; `fix` says what to do.
    Fail,
    /// The part is not configured (or cannot be checked before another check passes).
    Skipped,
}

/// One checked part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Which part ("model", "mqtt", …).
    pub name: String,
    /// The verdict.
    pub outcome: Outcome,
    /// What was found (ok), what is wrong (fail) or why it was not checked (skipped).
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckResult {
    fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome: Outcome::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn skipped(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome: Outcome::Skipped,
            detail: reason.into(),
            fix: None,
        }
    }
}

/// What a camera showed the doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraReport {
    /// The formats and frame sizes it offers.
    pub offered: Vec<OfferedFormat>,
    /// What the driver agreed to deliver, e.g. `640x480 MJPG`.
    pub negotiated: String,
    /// Size of the decoded frame.
    pub frame: (u32, u32),
}

/// Why the camera check failed.
#[derive(Debug, thiserror::Error)]
pub enum CameraProbeError {
    /// The device could not be opened or queried.
    #[error("{0}")]
    Open(#[source] std::io::Error),
    /// The camera offers no format the runtime decodes.
    #[error("{0}")]
    Unsupported(String),
    /// The camera opened but delivered no frame.
    #[error("no frame: {0}")]
    NoFrame(#[source] std::io::Error),
    /// A frame came but does not decode.
    #[error("the frame does not decode: {0}")]
    Decode(#[source] DecodeError),
}

/// Whether the ONNX Runtime library offers GPU execution providers.
#[derive(Debug)]
pub enum GpuSupport {
    /// This build has no CUDA/TensorRT support (feature `cuda`).
    NotBuilt,
    /// The library's answer: `[CUDA, TensorRT]` available, or why it could not be asked.
    Library(Result<[bool; 2], BackendError>),
}

/// The questions the checks ask the machine; [`SystemProbes`] asks the real one.
pub trait Probes {
    /// Reads the model file and checks it against the streaming contract.
    fn model_contract(&mut self, model: &ModelFile) -> Result<ModelContract, BackendError>;
    /// Readies the inference engine (ONNX Runtime: loads its library) and describes it.
    fn engine(&mut self, kind: BackendKind) -> Result<String, BackendError>;
    /// Loads `model` on `kind` (ONNX Runtime with the configured provider) and runs one frame
    /// of a blank face: (valence, arousal).
    fn test_inference(
        &mut self,
        kind: BackendKind,
        model: &ModelFile,
        threads: usize,
        onnxruntime: &OnnxRuntimeConfig,
    ) -> Result<[f32; 2], BackendError>;
    /// The GPU execution providers the ONNX Runtime library offers.
    fn gpu_providers(&mut self) -> GpuSupport;
    /// Loads the bundled face models (from `dir`, else the embedded copies).
    fn face_models(&mut self, dir: Option<&Path>, config: &FacesConfig) -> Result<(), FaceError>;
    /// Lists the camera's formats, opens it and decodes one frame.
    fn camera(&mut self, config: &CameraConfig) -> Result<CameraReport, CameraProbeError>;
    /// Opens the image directory and decodes its first image: (files, width, height).
    fn images(&mut self, config: &ImageDirConfig) -> Result<(usize, u32, u32), SourceError>;
    /// Opens (and closes) the serial port.
    fn serial(&mut self, config: &SerialConfig) -> std::io::Result<()>;
    /// Connects to the broker, waits for its CONNACK and disconnects.
    fn mqtt(&mut self, config: &MqttConfig) -> Result<(), ProbeError>;
    /// Free bytes for an unprivileged user under `dir`, after creating and removing a file
    /// there.
    fn disk(&mut self, dir: &Path) -> std::io::Result<u64>;
    /// The system clock.
    fn now(&mut self) -> SystemTime;
    /// `ORT_DYLIB_PATH` (symbolic links resolved: the file's name carries the version), which
    /// the backend check shows and the fix for an ONNX Runtime that does not load names.
    fn ort_dylib_path(&self) -> Option<PathBuf>;
}

/// Runs every check for `config` (the loaded, overridden and validated configuration, or why
/// it is unusable; `origin` names where it came from). Parts the configuration does not use are
/// skipped with the reason; when the configuration itself fails, only the clock is checked.
pub fn check(
    config: &Result<EdgeConfig, ConfigError>,
    origin: &str,
    probes: &mut dyn Probes,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let config = match config {
        Ok(config) => {
            out.push(CheckResult::ok("config", describe_config(config, origin)));
            config
        }
        Err(e) => {
            out.push(config_failure(e));
            let reason = "the configuration did not load";
            for name in [
                "backend",
                "model",
                "gpu",
                "faces",
                "source",
                "serial",
                "mqtt",
                "deploy",
                "state dir",
                "cache dir",
            ] {
                out.push(CheckResult::skipped(name, reason));
            }
            out.push(clock(probes.now(), BUILD_EPOCH));
            return out;
        }
    };
    // `auto` is checked as the engine it picks: ONNX Runtime when its library loads.
    let kind = match config.backend {
        BackendKind::Auto if probes.engine(BackendKind::Onnxruntime).is_ok() => {
            BackendKind::Onnxruntime
        }
        BackendKind::Auto => BackendKind::Tract,
        other => other,
    };
    let mut engine = backend_check(kind, probes);
    if config.backend == BackendKind::Auto {
        engine.detail = format!("auto → {}", engine.detail);
    }
    let engine_ok = engine.outcome == Outcome::Ok;
    out.push(engine);
    let store = config
        .state_dir
        .as_deref()
        .filter(|_| config.deploy.enabled)
        .map(ModelStore::at);
    // Read (and the deployed model hashed) once, for the model and the deploy checks.
    let start = store.as_ref().map(ModelStore::start_model);
    let deployed = start
        .as_ref()
        .and_then(|s| s.deployed.clone())
        .map(ModelFile::Path);
    out.push(model_check(config, kind, deployed, engine_ok, probes));
    out.push(gpu_check(
        kind,
        config.onnxruntime.provider,
        probes.gpu_providers(),
    ));
    out.push(faces_check(config, probes));
    out.push(source_check(config, probes));
    out.extend(serial_checks(config, probes));
    out.extend(mqtt_checks(config, probes));
    out.push(deploy_check(config, store.as_ref().zip(start.as_ref())));
    out.push(disk_check(
        "state dir",
        "state_dir",
        "STATE_DIRECTORY",
        "/var/lib/affect",
        config.state_dir.as_deref(),
        probes,
    ));
    out.push(disk_check(
        "cache dir",
        "cache_dir",
        "CACHE_DIRECTORY",
        "/var/cache/affect",
        config.cache_dir.as_deref(),
        probes,
    ));
    out.push(clock(probes.now(), BUILD_EPOCH));
    out
}

fn describe_config(config: &EdgeConfig, origin: &str) -> String {
    let backend = match config.backend {
        BackendKind::Auto => "auto",
        BackendKind::Tract => "tract",
        BackendKind::Onnxruntime => "onnxruntime",
    };
    let report: Vec<String> = config.report.iter().map(|r| redact(r)).collect();
    format!(
        "{origin}: source {}, model {}, backend {backend}, report {}",
        String::from(config.source.clone()),
        config.model_file().describe(),
        report.join(", ")
    )
}

/// A report target with any `USER:PASS@` password replaced by `***`.
fn redact(target: &str) -> String {
    let Some((scheme, rest)) = target.split_once("://") else {
        return target.to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        Some((login, host)) => {
            let user = login.split_once(':').map_or(login, |(user, _)| user);
            let login = if login.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{login}@{host}/{path}")
        }
        None => target.to_owned(),
    }
}

fn config_failure(e: &ConfigError) -> CheckResult {
    let fix = match e {
        ConfigError::Read { path, source } => match source.kind() {
            ErrorKind::NotFound => format!(
                "create {path}: the package installs a documented default at \
                 /etc/affect/edge.toml (edge-runtime/debian/edge.toml); or pass --config with \
                 the right path"
            ),
            ErrorKind::PermissionDenied => format!("make it readable: chmod 644 {path}"),
            _ => format!("check that {path} is a readable file"),
        },
        ConfigError::Parse { .. } => "correct the line and key named above (every key is listed, \
                                      with its default, in the packaged /etc/affect/edge.toml)"
            .into(),
        ConfigError::Invalid { field, .. } => {
            format!("change `{field}` in the configuration (or the flag that overrides it)")
        }
    };
    let detail = match e {
        // toml's message spans lines (position, the line with a caret, the reason): keep the
        // position and the reason.
        ConfigError::Parse { path, message } => {
            let lines: Vec<&str> = message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            match (lines.first(), lines.last()) {
                (Some(first), Some(last)) if lines.len() > 1 => format!("{path}: {first}: {last}"),
                _ => e.to_string(),
            }
        }
        _ => e.to_string(),
    };
    CheckResult::fail("config", detail, fix)
}

fn backend_check(kind: BackendKind, probes: &mut dyn Probes) -> CheckResult {
    match probes.engine(kind) {
        Ok(info) if kind == BackendKind::Onnxruntime => {
            let library = probes.ort_dylib_path();
            let version = ort_version(&info, library.as_deref())
                .unwrap_or_else(|| format!("of unknown version ({info})"));
            let from = library
                .map(|p| format!(" from {}", p.display()))
                .unwrap_or_default();
            CheckResult::ok("backend", format!("ONNX Runtime {version}{from}"))
        }
        Ok(info) => CheckResult::ok("backend", info),
        Err(e) => {
            let fix = if !cfg!(feature = "onnxruntime") {
                "this binary was built without ONNX Runtime: set backend = \"tract\", or install \
                 the build with the `onnxruntime` feature"
                    .to_owned()
            } else {
                match probes.ort_dylib_path() {
                    None => "set ORT_DYLIB_PATH to libonnxruntime.so (for the service: \
                             `systemctl edit affect-edge`, Environment=ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.xx)"
                        .to_owned(),
                    Some(path) => format!(
                        "ORT_DYLIB_PATH={} does not load: point it at libonnxruntime.so of ONNX \
                         Runtime ≥ 1.22 built for this CPU (on a Jetson: the Jetson Zoo \
                         onnxruntime-gpu wheel's library)",
                        path.display()
                    ),
                }
            };
            CheckResult::fail("backend", e.to_string(), fix)
        }
    }
}

/// ONNX Runtime's version: from its build information (`git-branch=rel-1.23.2, …`), else
/// from the library's file name (`libonnxruntime.so.1.23.2`; release builds of the PyPI wheel
/// say `git-branch=HEAD`).
pub fn ort_version(info: &str, library: Option<&Path>) -> Option<String> {
    let from_branch = info.find("git-branch=rel-").map(|start| {
        let rest = &info[start + "git-branch=rel-".len()..];
        rest[..rest.find([',', ' ']).unwrap_or(rest.len())].to_owned()
    });
    let from_file = || {
        let name = library?.file_name()?.to_str()?;
        let version = &name[name.find(".so.")? + ".so.".len()..];
        version
            .starts_with(|c: char| c.is_ascii_digit())
            .then(|| version.to_owned())
    };
    from_branch.filter(|v| !v.is_empty()).or_else(from_file)
}

/// The model `run` starts with: the deployed one when the store has it intact, else the
/// configured one.
fn model_check(
    config: &EdgeConfig,
    kind: BackendKind,
    deployed: Option<ModelFile>,
    engine_ok: bool,
    probes: &mut dyn Probes,
) -> CheckResult {
    let model = deployed.unwrap_or_else(|| config.model_file());
    let contract = match probes.model_contract(&model) {
        Ok(contract) => contract,
        Err(e) => return model_failure(&e),
    };
    let described = format!(
        "{}: {}, sha256 {}",
        model.describe(),
        contract.summary(),
        contract.sha256
    );
    if !engine_ok {
        return CheckResult::ok(
            "model",
            format!("{described}; test inference not run (the backend is not ready)"),
        );
    }
    match probes.test_inference(kind, &model, config.threads, &config.onnxruntime) {
        Ok([valence, arousal]) if valence.is_finite() && arousal.is_finite() => CheckResult::ok(
            "model",
            format!("{described}; test inference: valence {valence:+.3}, arousal {arousal:+.3}"),
        ),
        Ok(va) => CheckResult::fail(
            "model",
            format!("{described}; test inference gave {va:?}"),
            "the model computes non-finite values: re-export it with `affect-train export`",
        ),
        Err(e) => model_failure(&e),
    }
}

/// Deploys: off, or the store's state (drop directory, active model, last deploy), given the
/// store and what `run` would start with from it.
fn deploy_check(config: &EdgeConfig, store: Option<(&ModelStore, &StartModel)>) -> CheckResult {
    let Some((store, start)) = store else {
        return CheckResult::skipped(
            "deploy",
            if config.deploy.enabled {
                "no state directory: deploys are off (set state_dir)"
            } else {
                "[deploy] enabled = false"
            },
        );
    };
    let active = match store.active() {
        Ok(active) => active,
        Err(e) => {
            return CheckResult::fail(
                "deploy",
                format!("{e}; `run` starts with the configured model"),
                "deploy the model again (`affect-edge deploy`), or remove the damaged file",
            );
        }
    };
    let serving = match (&active, &start.deployed) {
        (Some(a), Some(_)) => format!(
            "active: deployed model {} since {}",
            a.sha256, a.since_unix_s
        ),
        (Some(a), None) => {
            return CheckResult::fail(
                "deploy",
                format!(
                    "the deployed model {} is missing or does not match its SHA-256; `run`                      starts with the configured model",
                    store.model_path(&a.sha256).display()
                ),
                "deploy the model again (`affect-edge deploy`)",
            );
        }
        (None, _) => "active: the configured model (nothing deployed yet)".to_owned(),
    };
    let last = match store.last_outcome() {
        Ok(Some(o)) => format!(
            "; last deploy {:?}: {}{}",
            o.id,
            o.result.label(),
            o.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        Ok(None) => String::new(),
        Err(e) => format!("; {e}"),
    };
    let watched = config
        .deploy
        .watch
        .clone()
        .unwrap_or_else(|| store.incoming());
    CheckResult::ok(
        "deploy",
        format!("drop directory {}; {serving}{last}", watched.display()),
    )
}

fn model_failure(e: &BackendError) -> CheckResult {
    let fix = match e {
        BackendError::Load { message, .. } if message == "no such model file" => {
            "copy the model there, correct `model` (or --model), or remove `model` to use the \
             embedded default"
                .to_owned()
        }
        BackendError::Load { .. } => "the model file is not ONNX (a truncated or corrupt copy?): \
                                      copy it again and compare its SHA-256 with the release's, \
                                      or re-export it with `affect-train export`"
            .to_owned(),
        BackendError::Unsupported { .. } => "the model was not exported for this runtime (reason \
                                             above): re-export it with `affect-train export`"
            .to_owned(),
        BackendError::Run(_) => "the model loads but does not run on this backend: try backend = \
                                 \"tract\", or re-export it with `affect-train export`"
            .to_owned(),
        BackendError::Unavailable(_) => "see the backend check".to_owned(),
    };
    CheckResult::fail("model", e.to_string(), fix)
}

fn gpu_check(kind: BackendKind, provider: ExecutionProvider, support: GpuSupport) -> CheckResult {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let wanted = match provider {
        ExecutionProvider::Cpu => None,
        ExecutionProvider::Cuda => Some("CUDA"),
        ExecutionProvider::TensorRt => Some("TensorRT"),
    };
    match (kind, wanted, support) {
        (BackendKind::Tract, _, _) => CheckResult::skipped("gpu", "backend is tract (CPU)"),
        (_, None, GpuSupport::NotBuilt) => CheckResult::skipped(
            "gpu",
            "provider = cpu; this build has no CUDA/TensorRT support (feature `cuda`)",
        ),
        (_, Some(name), GpuSupport::NotBuilt) => CheckResult::fail(
            "gpu",
            format!("provider = {name}, but this build has no CUDA/TensorRT support"),
            "install the affect-edge package (built with the `cuda` feature) or rebuild with \
             `--features cuda`; or set [onnxruntime] provider = \"cpu\"",
        ),
        (_, _, GpuSupport::Library(Err(_))) => {
            CheckResult::skipped("gpu", "ONNX Runtime did not load (see the backend check)")
        }
        (_, None, GpuSupport::Library(Ok([cuda, tensorrt]))) => CheckResult::skipped(
            "gpu",
            format!(
                "provider = cpu; the library offers CUDA: {}, TensorRT: {}",
                yes_no(cuda),
                yes_no(tensorrt)
            ),
        ),
        (_, Some(name), GpuSupport::Library(Ok([cuda, tensorrt]))) => {
            let offered = cuda && (provider == ExecutionProvider::Cuda || tensorrt);
            if offered {
                CheckResult::ok(
                    "gpu",
                    format!("provider = {name}: offered by the ONNX Runtime library"),
                )
            } else {
                CheckResult::fail(
                    "gpu",
                    format!(
                        "provider = {name}, but the ONNX Runtime library offers CUDA: {}, \
                         TensorRT: {}",
                        yes_no(cuda),
                        yes_no(tensorrt)
                    ),
                    "ORT_DYLIB_PATH points at a CPU-only ONNX Runtime: use the onnxruntime-gpu \
                     build matching the JetPack (docs/jetson.md), or set [onnxruntime] provider \
                     = \"cpu\"",
                )
            }
        }
    }
}

fn faces_check(config: &EdgeConfig, probes: &mut dyn Probes) -> CheckResult {
    if config.faces_mode() == FacesSpec::None {
        return CheckResult::skipped(
            "faces",
            "faces = none: every frame is a face crop, no detector runs",
        );
    }
    let dir = config.models_dir.as_deref();
    let from = dir.map_or("embedded".to_owned(), |d| d.display().to_string());
    match probes.face_models(dir, &config.face_models) {
        Ok(()) => CheckResult::ok(
            "faces",
            format!(
                "BlazeFace{} ({from})",
                if config.face_models.landmarks {
                    " + 68 landmarks"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => CheckResult::fail(
            "faces",
            e.to_string(),
            match dir {
                Some(d) => format!(
                    "{} must hold blazeface.onnx and face-landmarks-68.onnx from the release \
                     (models/); or remove `models_dir` and unset $AFFECT_MODELS to use the \
                     embedded copies",
                    d.display()
                ),
                None => "the embedded face models do not load: reinstall the package".to_owned(),
            },
        ),
    }
}

fn source_check(config: &EdgeConfig, probes: &mut dyn Probes) -> CheckResult {
    match &config.source {
        SourceSpec::Synthetic(seed) => CheckResult::ok(
            "source",
            format!("synthetic:{seed} (generated faces, nothing to open)"),
        ),
        SourceSpec::Images(dir) => {
            let images = ImageDirConfig {
                path: dir.clone(),
                ..config.images.clone()
            };
            match probes.images(&images) {
                Ok((files, w, h)) => CheckResult::ok(
                    "source",
                    format!(
                        "images {}: {files} files, the first decoded ({w}x{h})",
                        dir.display()
                    ),
                ),
                Err(e) => CheckResult::fail(
                    "source",
                    e.to_string(),
                    format!(
                        "put readable PNG/JPEG files in {} or correct source = \"images:DIR\"",
                        dir.display()
                    ),
                ),
            }
        }
        SourceSpec::Camera(device) => {
            let camera = config.camera_settings(device);
            match probes.camera(&camera) {
                Ok(report) => CheckResult::ok(
                    "camera",
                    format!(
                        "{}: offers {}; opened {}, one frame decoded ({}x{})",
                        device.display(),
                        describe_offered(&report.offered),
                        report.negotiated,
                        report.frame.0,
                        report.frame.1
                    ),
                ),
                Err(e) => camera_failure(device, &e),
            }
        }
    }
}

fn describe_offered(offered: &[OfferedFormat]) -> String {
    if offered.is_empty() {
        return "no formats".into();
    }
    offered
        .iter()
        .map(|f| format!("{} {}", f.fourcc, f.sizes.join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn camera_failure(device: &Path, e: &CameraProbeError) -> CheckResult {
    let dev = device.display();
    let fix = match e {
        CameraProbeError::Open(io) => match io.kind() {
            ErrorKind::NotFound => format!(
                "no {dev}: plug the camera in, find its node with `v4l2-ctl --list-devices` (or \
                 `ls /dev/video*`) and set source = \"camera:/dev/videoN\""
            ),
            ErrorKind::PermissionDenied => "add user affect to group video (`usermod -aG video \
                                            affect`; the service gets it from \
                                            SupplementaryGroups=video)"
                .to_owned(),
            ErrorKind::ResourceBusy => {
                format!("another program holds the camera: stop it (`fuser -v {dev}`)")
            }
            _ => format!(
                "{dev} is not a V4L2 capture device: pick the camera's capture node \
                 (`v4l2-ctl --list-devices`)"
            ),
        },
        CameraProbeError::Unsupported(_) => "the camera offers neither MJPG nor YUYV: use another \
                                             camera, or bridge it through v4l2loopback \
                                             (docs/jetson.md)"
            .to_owned(),
        CameraProbeError::NoFrame(_) => format!(
            "the camera opened but sent no frame within {} s: reconnect it (a USB 2 port may \
             lack bandwidth: lower [camera] width/height or use format = \"mjpeg\")",
            CAMERA_FRAME_TIMEOUT.as_secs()
        ),
        CameraProbeError::Decode(_) => "the camera's frames do not decode: try the other \
                                        [camera] format (\"mjpeg\" or \"yuyv\")"
            .to_owned(),
    };
    CheckResult::fail("camera", format!("{dev}: {e}"), fix)
}

fn serial_checks(config: &EdgeConfig, probes: &mut dyn Probes) -> Vec<CheckResult> {
    let targets: Vec<&String> = config
        .report
        .iter()
        .filter(|t| t.starts_with("serial:"))
        .collect();
    if targets.is_empty() {
        return vec![CheckResult::skipped(
            "serial",
            "no serial:PATH target in `report`",
        )];
    }
    targets
        .into_iter()
        .map(|target| {
            let serial = match config.serial_target(target) {
                Ok(serial) => serial,
                Err(e) => {
                    return CheckResult::fail(
                        "serial",
                        e.to_string(),
                        "write the target as serial:PATH[@BAUD]",
                    );
                }
            };
            let what = format!("{}@{}", serial.path.display(), serial.baud);
            match probes.serial(&serial) {
                Ok(()) => CheckResult::ok("serial", format!("{what}: opens")),
                Err(e) => {
                    let path = serial.path.display();
                    let fix = match e.kind() {
                        ErrorKind::NotFound => format!(
                            "plug the adapter in; find it with `ls /dev/serial/by-id/` and set \
                             the report target serial:PATH (now {path})"
                        ),
                        ErrorKind::PermissionDenied => "add user affect to group dialout \
                                                        (`usermod -aG dialout affect`)"
                            .to_owned(),
                        _ => format!(
                            "check that {path} is a serial port and no other program holds it \
                             (`fuser -v {path}`)"
                        ),
                    };
                    CheckResult::fail("serial", format!("{what}: {e}"), fix)
                }
            }
        })
        .collect()
}

fn mqtt_checks(config: &EdgeConfig, probes: &mut dyn Probes) -> Vec<CheckResult> {
    let targets: Vec<&String> = config
        .report
        .iter()
        .filter(|t| t.starts_with("mqtt://") || t.starts_with("mqtts://"))
        .collect();
    if targets.is_empty() {
        return vec![CheckResult::skipped(
            "mqtt",
            "no mqtt:// or mqtts:// target in `report`",
        )];
    }
    targets
        .into_iter()
        .map(|target| {
            let mqtt = match config.mqtt_target(target) {
                Ok(mqtt) => mqtt,
                Err(e) => {
                    return CheckResult::fail(
                        "mqtt",
                        e.to_string(),
                        "write the target as mqtt://HOST[:PORT]/TOPIC or \
                         mqtts://HOST[:PORT]/TOPIC?ca=CA.pem",
                    );
                }
            };
            match probes.mqtt(&mqtt) {
                Ok(()) => {
                    let mut steps = vec!["connected".to_owned()];
                    if mqtt.tls.is_some() {
                        steps.push("TLS handshake ok".into());
                    }
                    steps.push(match &mqtt.username {
                        Some(user) => format!("login as {user} accepted"),
                        None => "accepted without login".into(),
                    });
                    CheckResult::ok("mqtt", format!("{}: {}", mqtt.address(), steps.join(", ")))
                }
                Err(e) => mqtt_failure(&mqtt, &e),
            }
        })
        .collect()
}

fn mqtt_failure(mqtt: &MqttConfig, e: &ProbeError) -> CheckResult {
    let endpoint = format!("{}:{}", mqtt.host, mqtt.port);
    let login_fix = "check [mqtt] username and the password ($AFFECT_MQTT_PASSWORD, [mqtt] \
                     password or USER:PASS@ in the URL) against the broker's password file";
    let (detail, fix) = match e {
        ProbeError::Config(_) => (
            e.to_string(),
            "correct the setting or file named above ([mqtt], [mqtt.tls] or the target URL)"
                .to_owned(),
        ),
        ProbeError::Unreachable { .. } => (
            e.to_string(),
            format!(
                "start the broker or correct HOST:PORT in the target (now {endpoint}); check \
                 the network and firewall (`nc -vz {} {}`)",
                mqtt.host, mqtt.port
            ),
        ),
        ProbeError::Tls { .. } => (
            e.to_string(),
            format!(
                "the broker's certificate must be signed by the CA in ca_file (?ca= or \
                 [mqtt.tls] ca_file) and name {}; check that port {} is the broker's TLS \
                 listener and the clock is right",
                mqtt.host, mqtt.port
            ),
        ),
        ProbeError::Refused { address, code } => match code {
            ConnectReturnCode::BadUserNamePassword => (
                format!("{address}: MQTT login refused: bad user name or password"),
                login_fix.to_owned(),
            ),
            ConnectReturnCode::NotAuthorized => (
                format!("{address}: MQTT login refused: not authorised"),
                format!(
                    "{login_fix}{}",
                    if mqtt.username.is_none() {
                        " (no username is set and the broker wants one)"
                    } else {
                        ""
                    }
                ),
            ),
            ConnectReturnCode::BadClientId => (
                format!("{address}: the broker rejects the client id"),
                "set [mqtt] client_id to an id the broker accepts (short, letters and digits)"
                    .to_owned(),
            ),
            ConnectReturnCode::RefusedProtocolVersion => (
                format!("{address}: the broker does not speak MQTT 3.1.1"),
                "enable MQTT 3.1.1 on the broker".to_owned(),
            ),
            ConnectReturnCode::ServiceUnavailable | ConnectReturnCode::Success => (
                format!("{address}: the broker is not serving ({code:?})"),
                "check the broker's log".to_owned(),
            ),
        },
        ProbeError::Closed { .. } => (
            e.to_string(),
            if mqtt.tls.is_none() {
                format!(
                    "if {endpoint} is a TLS listener use mqtts://{endpoint}/{}?ca=CA.pem; \
                     else check the broker's log",
                    mqtt.topic
                )
            } else {
                "check the broker's log".to_owned()
            },
        ),
        ProbeError::Timeout { address, .. } => (
            format!(
                "{address}: no MQTT answer within {} s",
                mqtt.connect_timeout_s.max(1)
            ),
            format!(
                "check that {endpoint} is the broker (a firewall may drop the packets), or \
                 raise [mqtt] connect_timeout_s"
            ),
        ),
    };
    CheckResult::fail("mqtt", detail, fix)
}

fn disk_check(
    name: &str,
    key: &str,
    env: &str,
    service_default: &str,
    dir: Option<&Path>,
    probes: &mut dyn Probes,
) -> CheckResult {
    let Some(dir) = dir else {
        return CheckResult::skipped(
            name,
            format!(
                "not set: no `{key}` in the configuration and ${env} is unset (the service gets \
                 {service_default} from systemd)"
            ),
        );
    };
    let d = dir.display();
    match probes.disk(dir) {
        Ok(free) if free >= MIN_FREE_BYTES => {
            CheckResult::ok(name, format!("{d}: writable, {} MiB free", free >> 20))
        }
        Ok(free) => CheckResult::fail(
            name,
            format!("{d}: only {} MiB free", free >> 20),
            format!(
                "free at least {} MiB on the filesystem of {d} (old journal: `journalctl \
                 --vacuum-size=100M`; old models and caches)",
                MIN_FREE_BYTES >> 20
            ),
        ),
        Err(e) => {
            let fix = match e.kind() {
                ErrorKind::NotFound => format!(
                    "create it: `install -d -o affect -g affect {d}` (systemd creates it for the \
                     service from StateDirectory=/CacheDirectory=)"
                ),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
                    format!("make it writable for user affect: `chown affect:affect {d}`")
                }
                _ => format!("check the filesystem of {d}"),
            };
            CheckResult::fail(name, format!("{d}: {e}"), fix)
        }
    }
}

/// The clock check: `now` must not be before the year of `build_epoch`.
pub fn clock(now: SystemTime, build_epoch: u64) -> CheckResult {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_date(secs / 86_400);
    let (build_year, ..) = civil_date(build_epoch / 86_400);
    let time = secs % 86_400;
    let stamp = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        time / 3600,
        time % 3600 / 60
    );
    if year >= build_year {
        CheckResult::ok("clock", format!("{stamp} (built {build_year})"))
    } else {
        CheckResult::fail(
            "clock",
            format!(
                "{stamp} is before this build ({build_year}): TLS and timestamps need the time"
            ),
            "enable time sync (`timedatectl set-ntp true`, needs the network) or set it with \
             `date -s`; a clock that resets at every boot needs the RTC battery",
        )
    }
}

/// (year, month 1–12, day 1–31) of a count of days since 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
pub fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The exit code for `results`: 0 when nothing failed (skipped parts are not configured), 1
/// otherwise.
pub fn exit_code(results: &[CheckResult]) -> u8 {
    u8::from(results.iter().any(|r| r.outcome == Outcome::Fail))
}

/// One line per check (`ok`, `FAIL … — fix: …`, `skipped`), then a count.
pub fn render_text(results: &[CheckResult]) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in results {
        let label = match r.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "FAIL",
            Outcome::Skipped => "skipped",
        };
        out.push_str(&format!(
            "{label:<7} {:<width$}  {}",
            r.name,
            one_line(&r.detail)
        ));
        if let Some(fix) = &r.fix {
            out.push_str(&format!(" — fix: {}", one_line(fix)));
        }
        out.push('\n');
    }
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    out.push_str(&format!(
        "{} ok, {} FAIL, {} skipped\n",
        count(Outcome::Ok),
        count(Outcome::Fail),
        count(Outcome::Skipped)
    ));
    out
}

/// `text` with its lines joined by `; ` (an error chain may span lines; a check is one line).
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `{"ok": bool, "checks": [{"name", "outcome", "detail", "fix"?}, …]}`.
pub fn render_json(results: &[CheckResult]) -> String {
    serde_json::json!({
        "ok": exit_code(results) == 0,
        "checks": results,
    })
    .to_string()
}

/// The real machine: files, `/dev`, ONNX Runtime, the network, the clock.
#[derive(Debug, Default)]
pub struct SystemProbes;

impl Probes for SystemProbes {
    fn model_contract(&mut self, model: &ModelFile) -> Result<ModelContract, BackendError> {
        ModelContract::load(model)
    }

    fn engine(&mut self, kind: BackendKind) -> Result<String, BackendError> {
        backend::engine_info(kind)
    }

    fn test_inference(
        &mut self,
        kind: BackendKind,
        model: &ModelFile,
        threads: usize,
        onnxruntime: &OnnxRuntimeConfig,
    ) -> Result<[f32; 2], BackendError> {
        let mut engine = backend::load(kind, model, threads, onnxruntime)?;
        let contract = engine.contract().clone();
        let face = FaceInput {
            pixels: vec![0.0; 3 * contract.face_size * contract.face_size],
            landmarks: contract.landmarks.then_some([0.5; LANDMARK_VALUES]),
        };
        let va = engine.step_batch(&[face], &mut [TrackState::zeros(&contract.state)])?;
        va.first()
            .copied()
            .ok_or_else(|| BackendError::Run("no output for the test face".into()))
    }

    fn gpu_providers(&mut self) -> GpuSupport {
        backend::gpu_providers().map_or(GpuSupport::NotBuilt, GpuSupport::Library)
    }

    fn face_models(&mut self, dir: Option<&Path>, config: &FacesConfig) -> Result<(), FaceError> {
        BundledFaces::load(dir, config, &EngineConfig::tract()).map(drop)
    }

    fn camera(&mut self, config: &CameraConfig) -> Result<CameraReport, CameraProbeError> {
        let offered = offered_formats(&config.device).map_err(CameraProbeError::Open)?;
        let mut stream = V4l2Opener::new(config.clone())
            .open()
            .map_err(|e| match e {
                OpenError::Absent(io) => CameraProbeError::Open(io),
                OpenError::Unsupported(m) => CameraProbeError::Unsupported(m),
            })?;
        let layout = stream.layout();
        let raw = stream
            .capture(CAMERA_FRAME_TIMEOUT)
            .map_err(CameraProbeError::NoFrame)?;
        let image = decode_frame(&layout, &raw.data).map_err(CameraProbeError::Decode)?;
        Ok(CameraReport {
            offered,
            negotiated: format!(
                "{}x{} {}",
                layout.width,
                layout.height,
                String::from_utf8_lossy(&layout.format.fourcc())
            ),
            frame: image.dimensions(),
        })
    }

    fn images(&mut self, config: &ImageDirConfig) -> Result<(usize, u32, u32), SourceError> {
        let mut images = ImageDir::open(config)?;
        let files = images.files().len();
        let frame = images.next_frame(Duration::from_secs(5))?.ok_or_else(|| {
            SourceError::Config(format!("images {}: no frame", config.path.display()))
        })?;
        Ok((files, frame.image.width(), frame.image.height()))
    }

    fn serial(&mut self, config: &SerialConfig) -> std::io::Result<()> {
        SerialOpener::new(
            config.path.clone(),
            config.baud,
            Duration::from_millis(config.write_timeout_ms.max(1)),
        )
        .open()
        .map(drop)
    }

    fn mqtt(&mut self, config: &MqttConfig) -> Result<(), ProbeError> {
        config.probe(Duration::from_secs(config.connect_timeout_s.max(1)))
    }

    fn disk(&mut self, dir: &Path) -> std::io::Result<u64> {
        let stats = rustix::fs::statvfs(dir)?;
        let probe = dir.join(format!(".affect-doctor-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        std::fs::remove_file(&probe)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    fn now(&mut self) -> SystemTime {
        SystemTime::now()
    }

    fn ort_dylib_path(&self) -> Option<PathBuf> {
        let path = PathBuf::from(std::env::var_os("ORT_DYLIB_PATH")?);
        Some(std::fs::canonicalize(&path).unwrap_or(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripted answers: everything works unless a field says otherwise.
    struct Scripted {
        model: Option<fn() -> BackendError>,
        engine: Option<fn() -> BackendError>,
        camera: Option<fn() -> CameraProbeError>,
        serial: Option<ErrorKind>,
        mqtt: Option<fn() -> ProbeError>,
        disk: Result<u64, ErrorKind>,
        now: SystemTime,
        ort_dylib_path: Option<PathBuf>,
    }

    impl Default for Scripted {
        fn default() -> Self {
            Self {
                model: None,
                engine: None,
                camera: None,
                serial: None,
                mqtt: None,
                disk: Ok(10 * MIN_FREE_BYTES),
                now: UNIX_EPOCH + Duration::from_secs(BUILD_EPOCH),
                ort_dylib_path: None,
            }
        }
    }

    impl Probes for Scripted {
        fn model_contract(&mut self, model: &ModelFile) -> Result<ModelContract, BackendError> {
            match self.model {
                Some(e) => Err(e()),
                None => ModelContract::from_bytes(
                    ModelFile::embedded("affect-synth.onnx")
                        .unwrap()
                        .read()
                        .unwrap()
                        .as_ref(),
                    &model.describe(),
                ),
            }
        }
        fn engine(&mut self, kind: BackendKind) -> Result<String, BackendError> {
            match (self.engine, kind) {
                (Some(e), _) => Err(e()),
                (None, BackendKind::Tract | BackendKind::Auto) => Ok("tract (built in)".into()),
                (None, BackendKind::Onnxruntime) => {
                    Ok("ORT Build Info: git-branch=HEAD, git-commit-id=abc".into())
                }
            }
        }
        fn test_inference(
            &mut self,
            _kind: BackendKind,
            _model: &ModelFile,
            _threads: usize,
            _onnxruntime: &OnnxRuntimeConfig,
        ) -> Result<[f32; 2], BackendError> {
            Ok([0.25, -0.5])
        }
        fn gpu_providers(&mut self) -> GpuSupport {
            GpuSupport::Library(Ok([true, false]))
        }
        fn face_models(&mut self, _: Option<&Path>, _: &FacesConfig) -> Result<(), FaceError> {
            Ok(())
        }
        fn camera(&mut self, _: &CameraConfig) -> Result<CameraReport, CameraProbeError> {
            match self.camera {
                Some(e) => Err(e()),
                None => Ok(CameraReport {
                    offered: vec![OfferedFormat {
                        fourcc: "MJPG".into(),
                        sizes: vec!["640x480".into(), "1280x720".into()],
                    }],
                    negotiated: "640x480 MJPG".into(),
                    frame: (640, 480),
                }),
            }
        }
        fn images(&mut self, _: &ImageDirConfig) -> Result<(usize, u32, u32), SourceError> {
            Ok((3, 64, 48))
        }
        fn serial(&mut self, _: &SerialConfig) -> std::io::Result<()> {
            self.serial.map_or(Ok(()), |k| Err(k.into()))
        }
        fn mqtt(&mut self, _: &MqttConfig) -> Result<(), ProbeError> {
            self.mqtt.map_or(Ok(()), |e| Err(e()))
        }
        fn disk(&mut self, _: &Path) -> std::io::Result<u64> {
            self.disk.map_err(ErrorKind::into)
        }
        fn now(&mut self) -> SystemTime {
            self.now
        }
        fn ort_dylib_path(&self) -> Option<PathBuf> {
            self.ort_dylib_path.clone()
        }
    }

    fn device() -> EdgeConfig {
        EdgeConfig {
            source: SourceSpec::Camera("/dev/video0".into()),
            report: vec![
                "serial:/dev/ttyUSB0@115200".into(),
                "mqtt://edge:hunter2@broker:1883/affect".into(),
            ],
            state_dir: Some("/var/lib/affect".into()),
            cache_dir: Some("/var/cache/affect".into()),
            ..EdgeConfig::default()
        }
    }

    fn run(config: EdgeConfig, probes: &mut Scripted) -> Vec<CheckResult> {
        check(&Ok(config), "edge.toml", probes)
    }

    fn find<'a>(results: &'a [CheckResult], name: &str) -> &'a CheckResult {
        results
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name}: {results:#?}"))
    }

    #[test]
    fn a_working_device_passes_and_the_password_is_not_shown() {
        let results = run(device(), &mut Scripted::default());
        assert_eq!(exit_code(&results), 0, "{results:#?}");
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "config",
                "backend",
                "model",
                "gpu",
                "faces",
                "camera",
                "serial",
                "mqtt",
                "deploy",
                "state dir",
                "cache dir",
                "clock"
            ]
        );
        let text = render_text(&results);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("mqtt://edge:***@broker:1883/affect"),
            "{text}"
        );
        assert!(
            find(&results, "camera")
                .detail
                .contains("offers MJPG 640x480 1280x720"),
            "{text}"
        );
        assert!(text.ends_with("11 ok, 0 FAIL, 1 skipped\n"), "{text}");
        // The default backend is auto: named with the engine it picked (the scripted ONNX
        // Runtime library loads).
        assert!(
            text.contains("\nok      backend    auto → ONNX Runtime of unknown version"),
            "{text}"
        );
        assert!(text.starts_with("ok      config     edge.toml: source camera:/dev/video0"));
    }

    #[test]
    fn each_seeded_fault_fails_with_its_own_fix() {
        let mut probes = Scripted {
            model: Some(|| BackendError::Load {
                path: "m.onnx".into(),
                message: "not a readable ONNX model: buffer underflow".into(),
            }),
            camera: Some(|| CameraProbeError::Open(ErrorKind::PermissionDenied.into())),
            serial: Some(ErrorKind::NotFound),
            mqtt: Some(|| ProbeError::Refused {
                address: "mqtt://broker:1883/affect".into(),
                code: ConnectReturnCode::NotAuthorized,
            }),
            disk: Ok(MIN_FREE_BYTES / 2),
            now: UNIX_EPOCH,
            ..Scripted::default()
        };
        let results = run(device(), &mut probes);
        assert_eq!(exit_code(&results), 1);
        let fix = |name: &str| {
            let r = find(&results, name);
            assert_eq!(r.outcome, Outcome::Fail, "{r:?}");
            r.fix.clone().unwrap()
        };
        assert!(fix("model").starts_with("the model file is not ONNX"));
        assert!(fix("camera").starts_with("add user affect to group video"));
        assert!(fix("serial").contains("ls /dev/serial/by-id/"));
        assert!(fix("mqtt").contains("$AFFECT_MQTT_PASSWORD"));
        assert!(find(&results, "mqtt").detail.contains("MQTT login refused"));
        assert!(fix("state dir").starts_with("free at least 100 MiB"));
        assert!(fix("clock").contains("timedatectl set-ntp true"));
        assert!(
            find(&results, "clock")
                .detail
                .starts_with("1970-01-01 00:00 UTC")
        );
    }

    #[test]
    fn camera_and_broker_errors_map_to_distinct_fixes() {
        let camera_fix =
            |e: CameraProbeError| camera_failure(Path::new("/dev/video9"), &e).fix.unwrap();
        assert!(
            camera_fix(CameraProbeError::Open(ErrorKind::NotFound.into()))
                .contains("v4l2-ctl --list-devices")
        );
        assert!(
            camera_fix(CameraProbeError::Open(ErrorKind::ResourceBusy.into()))
                .contains("fuser -v /dev/video9")
        );
        assert!(
            camera_fix(CameraProbeError::NoFrame(ErrorKind::TimedOut.into()))
                .contains("sent no frame within 5 s")
        );
        let mqtt = MqttConfig::from_url("mqtt://broker:8883/affect").unwrap();
        let address = || "mqtt://broker:8883/affect".to_owned();
        let errors = [
            ProbeError::Unreachable {
                address: address(),
                source: ErrorKind::ConnectionRefused.into(),
            },
            ProbeError::Tls {
                address: address(),
                message: "invalid peer certificate: UnknownIssuer".into(),
            },
            ProbeError::Refused {
                address: address(),
                code: ConnectReturnCode::BadUserNamePassword,
            },
            ProbeError::Closed {
                address: address(),
                message: "connection reset".into(),
            },
            ProbeError::Timeout {
                address: address(),
                waited_ms: 5000,
            },
        ];
        let fixes: Vec<String> = errors
            .iter()
            .map(|e| mqtt_failure(&mqtt, e).fix.unwrap())
            .collect();
        assert!(fixes[0].contains("nc -vz broker 8883"));
        assert!(fixes[1].contains("signed by the CA in ca_file"));
        assert!(fixes[2].contains("$AFFECT_MQTT_PASSWORD"));
        assert!(fixes[3].contains("use mqtts://broker:8883/affect?ca=CA.pem"));
        assert!(fixes[4].contains("connect_timeout_s"));
        let unique: std::collections::HashSet<&String> = fixes.iter().collect();
        assert_eq!(unique.len(), fixes.len());
    }

    #[test]
    fn unconfigured_parts_are_skipped_with_the_reason() {
        let config = EdgeConfig {
            source: SourceSpec::Synthetic(1),
            report: vec!["stdout".into()],
            state_dir: None,
            cache_dir: None,
            backend: BackendKind::Tract,
            ..EdgeConfig::default()
        };
        let results = run(config, &mut Scripted::default());
        assert_eq!(exit_code(&results), 0);
        for (name, reason) in [
            ("serial", "no serial:PATH target"),
            ("mqtt", "no mqtt:// or mqtts:// target"),
            ("faces", "faces = none"),
            ("gpu", "backend is tract"),
            ("state dir", "$STATE_DIRECTORY is unset"),
            ("cache dir", "$CACHE_DIRECTORY is unset"),
        ] {
            let r = find(&results, name);
            assert_eq!(r.outcome, Outcome::Skipped, "{r:?}");
            assert!(r.detail.contains(reason), "{r:?}");
        }
    }

    #[test]
    fn onnxruntime_shows_its_version_or_how_to_find_the_library() {
        let config = EdgeConfig {
            source: SourceSpec::Synthetic(1),
            backend: BackendKind::Onnxruntime,
            report: vec!["stdout".into()],
            ..EdgeConfig::default()
        };
        let mut probes = Scripted {
            ort_dylib_path: Some("/opt/ort/libonnxruntime.so.1.23.2".into()),
            ..Scripted::default()
        };
        let results = run(config.clone(), &mut probes);
        assert_eq!(
            find(&results, "backend").detail,
            "ONNX Runtime 1.23.2 from /opt/ort/libonnxruntime.so.1.23.2"
        );
        assert!(
            find(&results, "gpu")
                .detail
                .contains("CUDA: yes, TensorRT: no")
        );
        let mut missing = Scripted {
            engine: Some(|| BackendError::Unavailable("no library".into())),
            ..Scripted::default()
        };
        let results = run(config, &mut missing);
        let backend = find(&results, "backend");
        assert_eq!(backend.outcome, Outcome::Fail);
        if cfg!(feature = "onnxruntime") {
            assert!(
                backend
                    .fix
                    .as_ref()
                    .unwrap()
                    .starts_with("set ORT_DYLIB_PATH")
            );
        } else {
            assert!(
                backend
                    .fix
                    .as_ref()
                    .unwrap()
                    .contains("backend = \"tract\"")
            );
        }
        let model = find(&results, "model");
        assert_eq!(model.outcome, Outcome::Ok);
        assert!(
            model
                .detail
                .ends_with("test inference not run (the backend is not ready)")
        );
    }

    #[test]
    fn a_configuration_that_does_not_load_leaves_only_the_clock() {
        let error = EdgeConfig::from_toml("fps = \"fast\"\n", "edge.toml").unwrap_err();
        let results = check(&Err(error), "edge.toml", &mut Scripted::default());
        assert_eq!(exit_code(&results), 1);
        assert_eq!(results[0].outcome, Outcome::Fail);
        assert!(
            results[0]
                .fix
                .as_ref()
                .unwrap()
                .starts_with("correct the line")
        );
        let outcomes: Vec<Outcome> = results[1..].iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes.last(), Some(&Outcome::Ok));
        assert!(
            outcomes[..outcomes.len() - 1]
                .iter()
                .all(|o| *o == Outcome::Skipped)
        );
    }

    #[test]
    fn json_has_the_verdict_and_every_check() {
        let results = vec![
            CheckResult::ok("clock", "2026-12-06 12:00 UTC"),
            CheckResult::fail("mqtt", "refused", "check the password"),
            CheckResult::skipped("serial", "no target"),
        ];
        let v: serde_json::Value = serde_json::from_str(&render_json(&results)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][1]["outcome"], "fail");
        assert_eq!(v["checks"][1]["fix"], "check the password");
        assert!(v["checks"][0].get("fix").is_none());
        assert_eq!(v["checks"][2]["outcome"], "skipped");
    }

    #[test]
    fn dates_versions_and_redaction() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(20_453), (2025, 12, 31));
        assert_eq!(civil_date(20_454), (2026, 1, 1));
        const { assert!(BUILD_EPOCH > 1_700_000_000) };
        let wheel = Path::new("/venv/onnxruntime/capi/libonnxruntime.so.1.23.2");
        assert_eq!(
            ort_version(
                "ORT Build Info: git-branch=rel-1.22.0, git-commit-id=a",
                Some(wheel)
            ),
            Some("1.22.0".into())
        );
        assert_eq!(
            ort_version(
                "ORT Build Info: git-branch=HEAD, git-commit-id=a",
                Some(wheel)
            ),
            Some("1.23.2".into())
        );
        let unversioned = Path::new("/usr/lib/libonnxruntime.so");
        assert_eq!(ort_version("git-branch=HEAD", Some(unversioned)), None);
        assert_eq!(ort_version("git-branch=HEAD", None), None);
        assert_eq!(redact("mqtt://u:p@h:1/t"), "mqtt://u:***@h:1/t");
        assert_eq!(redact("mqtt://u@h/t"), "mqtt://u@h/t");
        assert_eq!(redact("serial:/dev/ttyUSB0"), "serial:/dev/ttyUSB0");
        let ok = clock(
            UNIX_EPOCH + Duration::from_secs(1_796_601_600),
            1_765_000_000,
        );
        assert_eq!(ok.detail, "2026-12-07 00:00 UTC (built 2025)");
    }

    #[test]
    fn a_gpu_provider_the_library_or_build_lacks_fails_with_a_fix() {
        let config = |provider| EdgeConfig {
            source: SourceSpec::Synthetic(1),
            backend: BackendKind::Onnxruntime,
            onnxruntime: OnnxRuntimeConfig {
                provider,
                ..OnnxRuntimeConfig::default()
            },
            report: vec!["stdout".into()],
            ..EdgeConfig::default()
        };
        // The scripted library offers CUDA but not TensorRT.
        let results = run(
            config(ExecutionProvider::TensorRt),
            &mut Scripted::default(),
        );
        let gpu = find(&results, "gpu");
        assert_eq!(gpu.outcome, Outcome::Fail, "{gpu:?}");
        assert!(
            gpu.fix.as_ref().unwrap().contains("onnxruntime-gpu"),
            "{gpu:?}"
        );
        assert_eq!(exit_code(&results), 1);
        let results = run(config(ExecutionProvider::Cuda), &mut Scripted::default());
        assert_eq!(find(&results, "gpu").outcome, Outcome::Ok);

        let not_built = gpu_check(
            BackendKind::Onnxruntime,
            ExecutionProvider::Cuda,
            GpuSupport::NotBuilt,
        );
        assert_eq!(not_built.outcome, Outcome::Fail);
        assert!(not_built.fix.unwrap().contains("--features cuda"));
    }

    #[test]
    fn the_deploy_check_names_the_active_model_and_fails_on_a_damaged_store() {
        let state = tempfile::tempdir().unwrap();
        let config = EdgeConfig {
            state_dir: Some(state.path().to_owned()),
            ..EdgeConfig::default()
        };
        let store = ModelStore::open(state.path()).unwrap();
        let fresh = deploy_check(&config, Some((&store, &store.start_model())));
        assert_eq!(fresh.outcome, Outcome::Ok);
        assert!(
            fresh.detail.contains("nothing deployed yet"),
            "{}",
            fresh.detail
        );

        let bytes = b"model bytes";
        let sha = crate::backend::sha256_hex(bytes);
        store.put(&sha, bytes).unwrap();
        store
            .set_active(&crate::deploy::ActivePointer {
                sha256: sha.clone(),
                since_unix_s: 42,
                previous: None,
            })
            .unwrap();
        let deployed = deploy_check(&config, Some((&store, &store.start_model())));
        assert!(
            deployed
                .detail
                .contains(&format!("deployed model {sha} since 42")),
            "{}",
            deployed.detail
        );

        std::fs::write(store.model_path(&sha), b"changed").unwrap();
        let tampered = deploy_check(&config, Some((&store, &store.start_model())));
        assert_eq!(tampered.outcome, Outcome::Fail);
        assert!(tampered.detail.contains("does not match its SHA-256"));

        std::fs::write(state.path().join("models/active.json"), "{").unwrap();
        let damaged = deploy_check(&config, Some((&store, &store.start_model())));
        assert_eq!(damaged.outcome, Outcome::Fail);
        assert!(damaged.detail.contains("active.json"), "{}", damaged.detail);

        let off = deploy_check(&EdgeConfig::default(), None);
        assert_eq!(off.outcome, Outcome::Skipped);
    }
}
