//! The runtime's one validated configuration: a TOML file (`--config edge.toml`) and command-line
//! flags map onto [`EdgeConfig`]; flags override the file. Errors name the field.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendKind, ExecutionProvider, OnnxRuntimeConfig};
use crate::deploy::DeployConfig;
use crate::faces::FacesConfig;
use crate::http::HttpConfig;
use crate::models::ModelFile;
use crate::report::{MqttConfig, RateLimitConfig, ReportError, SerialConfig, SmoothConfig};
use crate::source::{CameraConfig, ImageDirConfig, OutageConfig, SyntheticConfig};
use crate::tracker::TrackerConfig;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// Config file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or a field of the wrong type (the message names line and field).
    #[error("{path}: {message}")]
    Parse {
        /// Config file.
        path: String,
        /// toml's message.
        message: String,
    },
    /// A value is out of range or contradicts another.
    #[error("`{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SourceSpec {
    /// `camera:/dev/video0`.
    Camera(PathBuf),
    /// `images:DIR`.
    Images(PathBuf),
    /// `synthetic[:SEED]`.
    Synthetic(u64),
}

impl FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "camera" if !rest.is_empty() => Ok(Self::Camera(rest.into())),
            "camera" => Ok(Self::Camera("/dev/video0".into())),
            "images" if !rest.is_empty() => Ok(Self::Images(rest.into())),
            "synthetic" if rest.is_empty() => Ok(Self::Synthetic(1)),
            "synthetic" => rest
                .parse()
                .map(Self::Synthetic)
                .map_err(|_| format!("synthetic seed {rest:?} is not a number")),
            _ => Err(format!(
                "unknown source {s:?} (expected camera:/dev/videoN, images:DIR or synthetic[:SEED])"
            )),
        }
    }
}

impl TryFrom<String> for SourceSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<SourceSpec> for String {
    fn from(s: SourceSpec) -> String {
        match s {
            SourceSpec::Camera(p) => format!("camera:{}", p.display()),
            SourceSpec::Images(p) => format!("images:{}", p.display()),
            SourceSpec::Synthetic(seed) => format!("synthetic:{seed}"),
        }
    }
}

/// How faces are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FacesSpec {
    /// The bundled BlazeFace detector and 68-landmark model.
    Bundled,
    /// Each frame is already a face crop.
    None,
}

impl FromStr for FacesSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bundled" | "blazeface" => Ok(Self::Bundled),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "unknown faces mode {s:?} (expected bundled or none)"
            )),
        }
    }
}

/// Everything `affect-edge run` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Frame source.
    pub source: SourceSpec,
    /// Model file; `None` picks the bundled default for the source.
    pub model: Option<PathBuf>,
    /// Inference engine.
    pub backend: BackendKind,
    /// ONNX Runtime's execution provider and TensorRT options (`[onnxruntime]`).
    pub onnxruntime: OnnxRuntimeConfig,
    /// How faces are found; `None` picks the default for the source.
    pub faces: Option<FacesSpec>,
    /// Where reports go (one or more): `stdout`, `serial:PATH[@BAUD]`,
    /// `mqtt://[USER[:PASS]@]HOST[:PORT]/TOPIC` or `mqtts://…`.
    pub report: Vec<String>,
    /// CPU threads sharing a frame's faces: crops and every network's batch split across them,
    /// each part on a single-threaded engine (0 = one per core; one face uses one thread; GPU
    /// providers take a batch in one call).
    pub threads: usize,
    /// Stop after this many frames (0 = run until the source ends or a signal).
    pub max_frames: u64,
    /// Pace file and synthetic sources at this rate (0 = as fast as possible).
    pub fps: f32,
    /// Directory with the bundled models' files, overriding the copies embedded in the
    /// binary; default `$AFFECT_MODELS`, else none (the embedded models).
    pub models_dir: Option<PathBuf>,
    /// Camera settings (`[camera]`; the device comes from `source`).
    pub camera: CameraConfig,
    /// Image directory settings (`[images]`; the path comes from `source`).
    pub images: ImageDirConfig,
    /// Synthetic camera settings (`[synthetic]`; the seed comes from `source`).
    pub synthetic: SyntheticConfig,
    /// Rehearsed outages of the source (`[source_outages]`; absent = off): it works for
    /// `up_s` seconds, is unavailable for `down_s`, and so on, like a camera unplugged on a
    /// schedule — to rehearse monitoring and alerts.
    pub source_outages: Option<OutageConfig>,
    /// Detector and landmark settings (`[face_models]`).
    pub face_models: FacesConfig,
    /// Serial settings besides path and baud (`[serial]`: mode, queue, timeouts, backoff).
    pub serial: SerialConfig,
    /// MQTT settings besides the URL (`[mqtt]`: credentials, TLS, queue bounds and fsync
    /// interval, keep-alive, backoff).
    pub mqtt: MqttConfig,
    /// Exponential smoothing per track (`[smoothing]`; absent = off).
    pub smoothing: Option<SmoothConfig>,
    /// Rate limit per track (`[rate_limit]`; absent = every frame).
    pub rate_limit: Option<RateLimitConfig>,
    /// Face tracking.
    pub tracker: TrackerConfig,
    /// Health, metrics and status over HTTP (`[http]`; off unless `listen` is set).
    pub http: HttpConfig,
    /// Seconds between refreshes of the retained MQTT status.
    pub status_interval_s: f64,
    /// Directory for state that must survive a restart (the durable report queue, deployed
    /// models); default `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`), else none:
    /// nothing is kept across runs.
    pub state_dir: Option<PathBuf>,
    /// Directory for caches that can be rebuilt (e.g. TensorRT engines); default
    /// `$CACHE_DIRECTORY` (systemd's `CacheDirectory=`), else none.
    pub cache_dir: Option<PathBuf>,
    /// `[deploy]`: new models while running (watched directory, MQTT `<topic>/cmd`).
    pub deploy: DeployConfig,
    /// `[fleet]`: this device's place in the fleet topic scheme.
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: a device's site and id. An MQTT report target without a topic
/// (`mqtt://broker:1883`) then uses `affect/<site>/<device>`
/// ([`affect_shared::deploy::fleet_topic`]) and the client id `affect-<site>-<device>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Site id (`[A-Za-z0-9_.-]`, ≤ 64 characters).
    pub site: String,
    /// Device id within the site (same characters).
    pub device: String,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            source: SourceSpec::Camera("/dev/video0".into()),
            model: None,
            backend: BackendKind::Auto,
            onnxruntime: OnnxRuntimeConfig::default(),
            faces: None,
            report: vec!["stdout".into()],
            threads: 0,
            max_frames: 0,
            fps: 0.0,
            models_dir: std::env::var_os("AFFECT_MODELS").map(PathBuf::from),
            camera: CameraConfig::default(),
            images: ImageDirConfig::default(),
            synthetic: SyntheticConfig::default(),
            source_outages: None,
            face_models: FacesConfig::default(),
            serial: SerialConfig::default(),
            mqtt: MqttConfig::default(),
            smoothing: None,
            rate_limit: None,
            tracker: TrackerConfig::default(),
            http: HttpConfig::default(),
            status_interval_s: 30.0,
            state_dir: std::env::var_os("STATE_DIRECTORY").map(PathBuf::from),
            cache_dir: std::env::var_os("CACHE_DIRECTORY").map(PathBuf::from),
            deploy: DeployConfig::default(),
            fleet: None,
        }
    }
}

/// Bundled model trained on the synthetic generator (for the synthetic camera / demo).
pub const SYNTHETIC_MODEL: &str = "affect-synth.onnx";
/// Bundled default for real faces: face-api expressions mapped onto the valence–arousal plane.
pub const EXPRESSION_MODEL: &str = "expression-va.onnx";

impl EdgeConfig {
    /// Reads a TOML file; unknown keys and wrong types are errors naming line and field.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// The model to load: explicit, or the bundled default for the source (from
    /// `models_dir` when set, else embedded): the model trained on the synthetic generator for
    /// the synthetic camera when it is there, otherwise the expression-based model for real
    /// faces.
    pub fn model_file(&self) -> ModelFile {
        if let Some(m) = &self.model {
            return ModelFile::Path(m.clone());
        }
        let dir = self.models_dir.as_deref();
        let synthetic = ModelFile::resolve(dir, SYNTHETIC_MODEL);
        if matches!(self.source, SourceSpec::Synthetic(_)) && synthetic.exists() {
            synthetic
        } else {
            ModelFile::resolve(dir, EXPRESSION_MODEL)
        }
    }

    /// ONNX Runtime's settings with the TensorRT engine cache resolved (default
    /// `<cache_dir>/tensorrt`, created when missing).
    pub fn onnxruntime_options(&self) -> Result<OnnxRuntimeConfig, ConfigError> {
        let mut options = self.onnxruntime.clone();
        if options.provider != ExecutionProvider::TensorRt {
            return Ok(options);
        }
        if options.tensorrt_cache.is_none() {
            options.tensorrt_cache = self.cache_dir.as_ref().map(|d| d.join("tensorrt"));
        }
        if let Some(dir) = &options.tensorrt_cache {
            std::fs::create_dir_all(dir).map_err(|e| {
                invalid(
                    "onnxruntime.tensorrt_cache",
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        }
        Ok(options)
    }

    /// How faces are found: explicit, or the default for the source (the synthetic camera
    /// frames one face like the training crops; real sources use the detector).
    pub fn faces_mode(&self) -> FacesSpec {
        self.faces.unwrap_or(match self.source {
            SourceSpec::Synthetic(_) => FacesSpec::None,
            _ => FacesSpec::Bundled,
        })
    }

    /// The camera settings for `device` (the `source`'s device with the `[camera]` table).
    pub fn camera_settings(&self, device: &Path) -> CameraConfig {
        CameraConfig {
            device: device.to_owned(),
            ..self.camera.clone()
        }
    }

    /// The settings of a `serial:PATH[@BAUD]` report target: path and baud from the target,
    /// the rest from the `[serial]` table.
    pub fn serial_target(&self, target: &str) -> Result<SerialConfig, ReportError> {
        let from_target =
            SerialConfig::from_spec(target.strip_prefix("serial:").unwrap_or(target))?;
        Ok(SerialConfig {
            path: from_target.path,
            baud: from_target.baud,
            ..self.serial.clone()
        })
    }

    /// The settings of an `mqtt://…` or `mqtts://…` report target: host, port, topic (and
    /// login and TLS files when the URL has them) from the URL, the rest from the `[mqtt]`
    /// table.
    pub fn mqtt_target(&self, url: &str) -> Result<MqttConfig, ReportError> {
        let mqtt = MqttConfig::from_url(&self.with_fleet_topic(url))?;
        let extra = &self.mqtt;
        let fleet_client = self
            .fleet
            .as_ref()
            .map(|f| format!("affect-{}-{}", f.site, f.device));
        Ok(MqttConfig {
            client_id: mqtt
                .client_id
                .or_else(|| extra.client_id.clone())
                .or(fleet_client),
            username: mqtt.username.or_else(|| extra.username.clone()),
            password: mqtt.password.or_else(|| extra.password.clone()),
            tls: mqtt.tls.or_else(|| extra.tls.clone()),
            keep_alive_s: extra.keep_alive_s,
            connect_timeout_s: extra.connect_timeout_s,
            queue: extra.queue,
            queue_bytes: extra.queue_bytes,
            fsync_interval_ms: extra.fsync_interval_ms,
            inflight: extra.inflight,
            backoff: extra.backoff,
            ..mqtt
        })
    }

    /// `url` with the fleet topic appended when it names no topic and `[fleet]` is set.
    fn with_fleet_topic(&self, url: &str) -> String {
        let Some(fleet) = &self.fleet else {
            return url.to_owned();
        };
        let (base, query) = url
            .split_once('?')
            .map_or((url, None), |(b, q)| (b, Some(q)));
        let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
        if !authority.trim_end_matches('/').contains('/') {
            let topic = affect_shared::deploy::fleet_topic(&fleet.site, &fleet.device);
            let base = base.trim_end_matches('/');
            return match query {
                Some(q) => format!("{base}/{topic}?{q}"),
                None => format!("{base}/{topic}"),
            };
        }
        url.to_owned()
    }

    /// Checks ranges and combinations (reporter and source settings are checked again by the
    /// components themselves when they open).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.report.is_empty() {
            return Err(invalid("report", "at least one report target is needed"));
        }
        for target in &self.report {
            let known = target == "stdout"
                || target.starts_with("serial:")
                || target.starts_with("mqtt://")
                || target.starts_with("mqtts://");
            if !known {
                return Err(invalid(
                    "report",
                    format!(
                        "{target:?}: expected stdout, serial:PATH[@BAUD] or mqtt://HOST:PORT/TOPIC"
                    ),
                ));
            }
        }
        if self.report.iter().filter(|r| *r == "stdout").count() > 1 {
            return Err(invalid("report", "stdout listed twice"));
        }
        if self.backend != BackendKind::Onnxruntime
            && self.onnxruntime.provider != ExecutionProvider::Cpu
        {
            return Err(invalid(
                "onnxruntime.provider",
                "a GPU provider needs backend = \"onnxruntime\"",
            ));
        }
        if !(self.fps.is_finite() && self.fps >= 0.0) {
            return Err(invalid("fps", "must be ≥ 0"));
        }
        if let Some(s) = &self.smoothing
            && !(s.time_constant_ms.is_finite() && s.time_constant_ms > 0.0)
        {
            return Err(invalid("smoothing.time_constant_ms", "must be > 0"));
        }
        if let Some(r) = &self.rate_limit
            && !(r.max_hz.is_finite() && r.max_hz > 0.0)
        {
            return Err(invalid("rate_limit.max_hz", "must be > 0"));
        }
        if let Some(o) = &self.source_outages {
            crate::source::OutageSchedule::new(o)
                .map_err(|e| invalid("source_outages", e.to_string()))?;
        }
        if self.mqtt.queue == 0 {
            return Err(invalid("mqtt.queue", "must be at least 1"));
        }
        if self.mqtt.queue_bytes < crate::report::journal::MIN_BYTES {
            return Err(invalid(
                "mqtt.queue_bytes",
                "must be at least 65536 (64 KiB)",
            ));
        }
        if self.serial.queue_bytes < crate::report::journal::MIN_BYTES {
            return Err(invalid(
                "serial.queue_bytes",
                "must be at least 65536 (64 KiB)",
            ));
        }
        if self.serial.fsync_interval_ms == 0 {
            return Err(invalid("serial.fsync_interval_ms", "must be at least 1"));
        }
        if self.mqtt.fsync_interval_ms == 0 {
            return Err(invalid("mqtt.fsync_interval_ms", "must be at least 1"));
        }
        if !(self.http.stale_after_s.is_finite() && self.http.stale_after_s > 0.0) {
            return Err(invalid("http.stale_after_s", "must be > 0"));
        }
        if !(self.status_interval_s.is_finite() && self.status_interval_s >= 1.0) {
            return Err(invalid("status_interval_s", "must be ≥ 1"));
        }
        if self.deploy.max_bytes < 1024 {
            return Err(invalid("deploy.max_bytes", "must be at least 1024"));
        }
        if self.deploy.trial_frames == 0 {
            return Err(invalid("deploy.trial_frames", "must be at least 1"));
        }
        if let Some(fleet) = &self.fleet {
            for (field, id) in [("fleet.site", &fleet.site), ("fleet.device", &fleet.device)] {
                if !affect_shared::deploy::valid_fleet_id(id) {
                    return Err(invalid(
                        field,
                        format!("{id:?}: use 1-64 characters of A-Z a-z 0-9 _ . -"),
                    ));
                }
            }
        }
        if self.face_models.redetect_every == 0 {
            return Err(invalid(
                "face_models.redetect_every",
                "must be at least 1 (1 = run the detector on every frame)",
            ));
        }
        let t = &self.tracker;
        if !(0.0..=1.0).contains(&t.min_iou) || t.max_tracks == 0 {
            return Err(invalid(
                "tracker",
                "min_iou must be in [0, 1] and max_tracks ≥ 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_strings_round_trip() {
        for s in ["camera:/dev/video2", "images:/tmp/x", "synthetic:7"] {
            assert_eq!(String::from(s.parse::<SourceSpec>().unwrap()), s);
        }
        assert_eq!(
            "synthetic".parse::<SourceSpec>().unwrap(),
            SourceSpec::Synthetic(1)
        );
        assert!("synthetic:x".parse::<SourceSpec>().is_err());
        assert!("webcam".parse::<SourceSpec>().is_err());
    }

    #[test]
    fn a_fleet_device_gets_its_topic_and_client_id_from_site_and_device() {
        let c = EdgeConfig::from_toml(
            "[fleet]\nsite = \"site-a\"\ndevice = \"kiosk-3\"\n",
            "edge.toml",
        )
        .unwrap();
        c.validate().unwrap();
        for url in ["mqtt://broker:1883", "mqtt://broker:1883/"] {
            let m = c.mqtt_target(url).unwrap();
            assert_eq!(m.topic, "affect/site-a/kiosk-3");
            assert_eq!(m.command_topic(), "affect/site-a/kiosk-3/cmd");
            assert_eq!(m.client_id.as_deref(), Some("affect-site-a-kiosk-3"));
        }
        let tls = c.mqtt_target("mqtts://broker?ca=/ca.pem").unwrap();
        assert_eq!(tls.topic, "affect/site-a/kiosk-3");
        assert!(tls.tls.is_some());
        // An explicit topic wins.
        assert_eq!(c.mqtt_target("mqtt://b/lab/x").unwrap().topic, "lab/x");
        let bad = EdgeConfig::from_toml("[fleet]\nsite = \"a/b\"\ndevice = \"k\"\n", "e")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(bad.contains("fleet.site"), "{bad}");
    }

    #[test]
    fn report_targets_take_the_rest_of_their_settings_from_the_tables() {
        let c = EdgeConfig::from_toml(
            "[serial]\nmode = \"text\"\nqueue = 9\n[mqtt]\nusername = \"edge\"\nqueue = 7\n",
            "edge.toml",
        )
        .unwrap();
        // The `serial:` prefix is not part of the device path.
        let serial = c.serial_target("serial:/dev/ttyACM0@9600").unwrap();
        assert_eq!(serial.path, PathBuf::from("/dev/ttyACM0"));
        assert_eq!((serial.baud, serial.queue), (9600, 9));
        assert_eq!(serial.mode, crate::report::SerialMode::Text);
        let mqtt = c.mqtt_target("mqtt://broker:1884/lab").unwrap();
        assert_eq!(
            (mqtt.host.as_str(), mqtt.port, mqtt.queue),
            ("broker", 1884, 7)
        );
        assert_eq!(mqtt.username.as_deref(), Some("edge"));
        // A login in the URL wins over the table.
        let mqtt = c.mqtt_target("mqtt://other:pw@broker/lab").unwrap();
        assert_eq!(mqtt.username.as_deref(), Some("other"));
        let camera = c.camera_settings(Path::new("/dev/video4"));
        assert_eq!(camera.device, PathBuf::from("/dev/video4"));
    }

    #[test]
    fn toml_maps_onto_the_config_and_errors_name_the_field() {
        let c = EdgeConfig::from_toml(
            "source = \"synthetic:3\"\nreport = [\"stdout\", \"mqtt://127.0.0.1:1883/a\"]\n\
             [smoothing]\ntime_constant_ms = 200.0\n[mqtt]\nqueue = 50\n",
            "edge.toml",
        )
        .unwrap();
        assert_eq!(c.source, SourceSpec::Synthetic(3));
        assert_eq!(c.report.len(), 2);
        assert_eq!(c.mqtt.queue, 50);
        c.validate().unwrap();
        assert!(c.model_file().describe().ends_with(SYNTHETIC_MODEL));
        assert_eq!(c.faces_mode(), FacesSpec::None);

        let e =
            EdgeConfig::from_toml("[smoothing]\ntime_constant = 5.0\n", "edge.toml").unwrap_err();
        assert!(e.to_string().contains("time_constant"), "{e}");
        let e = EdgeConfig::from_toml("source = \"webcam\"\n", "edge.toml").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let c = EdgeConfig {
            report: vec!["udp://x".into()],
            ..EdgeConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`report`"));
    }

    #[test]
    fn gpu_providers_need_the_onnxruntime_backend_and_tensorrt_caches_in_the_cache_dir() {
        let text = "[onnxruntime]\nprovider = \"tensorrt\"\n";
        let c = EdgeConfig::from_toml(text, "edge.toml").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("onnxruntime.provider"), "{e}");

        let cache = tempfile::tempdir().unwrap();
        let c = EdgeConfig {
            backend: BackendKind::Onnxruntime,
            cache_dir: Some(cache.path().to_owned()),
            ..EdgeConfig::from_toml(text, "edge.toml").unwrap()
        };
        c.validate().unwrap();
        let options = c.onnxruntime_options().unwrap();
        let engines = cache.path().join("tensorrt");
        assert_eq!(options.tensorrt_cache.as_deref(), Some(engines.as_path()));
        assert!(engines.is_dir());
        assert!(options.tensorrt_fp16);

        let e = EdgeConfig::from_toml("[onnxruntime]\nprovider = \"npu\"\n", "edge.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("provider") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn rehearsed_outages_are_off_unless_configured_and_checked_when_they_are() {
        assert_eq!(EdgeConfig::default().source_outages, None);
        let c = EdgeConfig::from_toml("[source_outages]\nup_s = 60.0\ndown_s = 5.0\n", "edge.toml")
            .unwrap();
        assert_eq!(
            c.source_outages,
            Some(OutageConfig {
                up_s: 60.0,
                down_s: 5.0
            })
        );
        c.validate().unwrap();
        let c =
            EdgeConfig::from_toml("[source_outages]\nup_s = 60.0\ndown_s = 0.0\n", "e").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("source_outages") && e.contains("down_s"), "{e}");
        let e = EdgeConfig::from_toml("[source_outages]\nup_s = 60.0\n", "e").unwrap_err();
        assert!(e.to_string().contains("down_s"), "{e}");
    }

    #[test]
    fn redetect_every_zero_is_refused_by_name() {
        let c = EdgeConfig::from_toml("[face_models]\nredetect_every = 3\n", "edge.toml").unwrap();
        assert_eq!(c.face_models.redetect_every, 3);
        c.validate().unwrap();
        let c = EdgeConfig::from_toml("[face_models]\nredetect_every = 0\n", "edge.toml").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("face_models.redetect_every"), "{e}");
    }
}
