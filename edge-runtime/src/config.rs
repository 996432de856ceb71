//! The runtime's one validated configuration: a TOML file (`--config edge.toml`) and command-line
//! flags map onto [`EdgeConfig`]; flags override the file. Errors name the field.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
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

/// Where reports go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ReportSpec {
    /// JSON lines on standard output.
    Stdout,
    /// `serial:PATH[@BAUD]`.
    Serial {
        /// Device path.
        path: PathBuf,
        /// Baud rate.
        baud: u32,
    },
    /// `mqtt://HOST:PORT/TOPIC` or `mqtts://…` (TLS).
    Mqtt {
        /// Broker host.
        host: String,
        /// Broker port.
        port: u16,
        /// Base topic.
        topic: String,
        /// TLS.
        tls: bool,
    },
}

impl FromStr for ReportSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "stdout" {
            return Ok(Self::Stdout);
        }
        if let Some(rest) = s.strip_prefix("serial:") {
            let (path, baud) = match rest.rsplit_once('@') {
                Some((p, b)) => (
                    p,
                    b.parse()
                        .map_err(|_| format!("serial baud rate {b:?} is not a number"))?,
                ),
                None => (rest, 115_200),
            };
            if path.is_empty() {
                return Err("serial: needs a device path, e.g. serial:/dev/ttyUSB0@115200".into());
            }
            return Ok(Self::Serial {
                path: path.into(),
                baud,
            });
        }
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "unknown report target {s:?} (expected stdout, serial:PATH[@BAUD] or mqtt://HOST:PORT/TOPIC)"
            ));
        };
        let (authority, topic) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: missing /TOPIC after the broker address"))?;
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(format!(
                "{s:?}: topic must be non-empty and free of MQTT wildcards"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .map_err(|_| format!("{s:?}: port {p:?} is not a number"))?,
            ),
            None => (authority, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("{s:?}: missing broker host"));
        }
        Ok(Self::Mqtt {
            host: host.into(),
            port,
            topic: topic.into(),
            tls,
        })
    }
}

impl TryFrom<String> for ReportSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ReportSpec> for String {
    fn from(r: ReportSpec) -> String {
        match r {
            ReportSpec::Stdout => "stdout".into(),
            ReportSpec::Serial { path, baud } => format!("serial:{}@{baud}", path.display()),
            ReportSpec::Mqtt {
                host,
                port,
                topic,
                tls,
            } => format!(
                "{}://{host}:{port}/{topic}",
                if tls { "mqtts" } else { "mqtt" }
            ),
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

/// V4L2 capture settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Requested width.
    pub width: u32,
    /// Requested height.
    pub height: u32,
    /// Requested frames per second.
    pub fps: u32,
    /// Pixel format: `mjpg` or `yuyv`.
    pub format: String,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 30,
            format: "mjpg".into(),
        }
    }
}

/// MQTT settings beyond the URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Client id (default: `affect-<hostname>`).
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (prefer the `AFFECT_MQTT_PASSWORD` environment variable).
    pub password: Option<String>,
    /// PEM file with the CA certificates that sign the broker's certificate (mqtts).
    pub ca_file: Option<PathBuf>,
    /// Reports kept while the broker is unreachable; the oldest are dropped beyond it.
    pub queue: usize,
    /// Keep-alive in seconds.
    pub keep_alive_s: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            queue: 10_000,
            keep_alive_s: 15,
        }
    }
}

/// Report shaping per track.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Exponential smoothing factor in (0, 1]: weight of the newest value; 1 = off.
    pub smoothing: f32,
    /// Most reports per second per track; 0 = every frame.
    pub max_rate_hz: f32,
    /// Human-readable serial lines instead of the binary wire format.
    pub serial_text: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            smoothing: 1.0,
            max_rate_hz: 0.0,
            serial_text: false,
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
    /// How faces are found; `None` picks the default for the source.
    pub faces: Option<FacesSpec>,
    /// Where reports go (one or more).
    pub report: Vec<ReportSpec>,
    /// Intra-op threads for the backend (0 = engine default).
    pub threads: usize,
    /// Stop after this many frames (0 = run until the source ends or a signal).
    pub max_frames: u64,
    /// Pace file and synthetic sources at this rate (0 = as fast as possible).
    pub fps: f32,
    /// Directory with the bundled models.
    pub models_dir: PathBuf,
    /// Camera settings.
    pub camera: CameraConfig,
    /// MQTT settings.
    pub mqtt: MqttConfig,
    /// Report shaping.
    pub output: OutputConfig,
    /// Face tracking.
    pub tracker: TrackerConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            source: SourceSpec::Camera("/dev/video0".into()),
            model: None,
            backend: BackendKind::Tract,
            faces: None,
            report: vec![ReportSpec::Stdout],
            threads: 0,
            max_frames: 0,
            fps: 0.0,
            models_dir: default_models_dir(),
            camera: CameraConfig::default(),
            mqtt: MqttConfig::default(),
            output: OutputConfig::default(),
            tracker: TrackerConfig::default(),
        }
    }
}

/// `$AFFECT_MODELS`, else `models/` next to the executable's workspace, else `./models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AFFECT_MODELS") {
        return dir.into();
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    if repo.is_dir() {
        return repo;
    }
    PathBuf::from("models")
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

    /// The model to load: explicit, or the bundled default for the source.
    pub fn model_path(&self) -> PathBuf {
        match &self.model {
            Some(m) => m.clone(),
            None => self.models_dir.join(match self.source {
                SourceSpec::Synthetic(_) => SYNTHETIC_MODEL,
                _ => EXPRESSION_MODEL,
            }),
        }
    }

    /// How faces are found: explicit, or the default for the source (the synthetic camera
    /// frames one face like the training crops; real sources use the detector).
    pub fn faces_mode(&self) -> FacesSpec {
        self.faces.unwrap_or(match self.source {
            SourceSpec::Synthetic(_) => FacesSpec::None,
            _ => FacesSpec::Bundled,
        })
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.report.is_empty() {
            return Err(invalid("report", "at least one report target is needed"));
        }
        if !(self.fps.is_finite() && self.fps >= 0.0) {
            return Err(invalid("fps", "must be ≥ 0"));
        }
        let o = &self.output;
        if !(o.smoothing > 0.0 && o.smoothing <= 1.0) {
            return Err(invalid("output.smoothing", "must be in (0, 1]; 1 = off"));
        }
        if !(o.max_rate_hz.is_finite() && o.max_rate_hz >= 0.0) {
            return Err(invalid(
                "output.max_rate_hz",
                "must be ≥ 0; 0 = every frame",
            ));
        }
        if self.mqtt.queue == 0 {
            return Err(invalid("mqtt.queue", "must be at least 1"));
        }
        if !["mjpg", "yuyv"].contains(&self.camera.format.as_str()) {
            return Err(invalid("camera.format", "must be mjpg or yuyv"));
        }
        if self.camera.width == 0 || self.camera.height == 0 || self.camera.fps == 0 {
            return Err(invalid("camera", "width, height and fps must be positive"));
        }
        let t = &self.tracker;
        if !(0.0..=1.0).contains(&t.min_iou) || t.max_tracks == 0 {
            return Err(invalid(
                "tracker",
                "min_iou must be in [0, 1] and max_tracks ≥ 1",
            ));
        }
        if self
            .report
            .iter()
            .filter(|r| **r == ReportSpec::Stdout)
            .count()
            > 1
        {
            return Err(invalid("report", "stdout listed twice"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_and_report_strings_round_trip() {
        for s in ["camera:/dev/video2", "images:/tmp/x", "synthetic:7"] {
            assert_eq!(String::from(s.parse::<SourceSpec>().unwrap()), s);
        }
        for s in [
            "stdout",
            "serial:/dev/ttyUSB0@9600",
            "mqtt://127.0.0.1:1883/affect/kiosk1",
            "mqtts://broker:8883/a",
        ] {
            assert_eq!(String::from(s.parse::<ReportSpec>().unwrap()), s);
        }
        assert_eq!(
            "serial:/dev/ttyS0".parse::<ReportSpec>().unwrap(),
            ReportSpec::Serial {
                path: "/dev/ttyS0".into(),
                baud: 115_200
            }
        );
        assert!("mqtt://host:1883/a/#".parse::<ReportSpec>().is_err());
        assert!("mqtt://host:x/a".parse::<ReportSpec>().is_err());
        assert!("webcam".parse::<SourceSpec>().is_err());
    }

    #[test]
    fn toml_maps_onto_the_config_and_errors_name_the_field() {
        let c = EdgeConfig::from_toml(
            "source = \"synthetic:3\"\nreport = [\"stdout\", \"mqtt://127.0.0.1:1883/a\"]\n\
             [output]\nsmoothing = 0.5\n[mqtt]\nqueue = 50\n",
            "edge.toml",
        )
        .unwrap();
        assert_eq!(c.source, SourceSpec::Synthetic(3));
        assert_eq!(c.report.len(), 2);
        assert_eq!(c.mqtt.queue, 50);
        c.validate().unwrap();
        assert!(c.model_path().ends_with(SYNTHETIC_MODEL));
        assert_eq!(c.faces_mode(), FacesSpec::None);

        let e = EdgeConfig::from_toml("[output]\nsmothing = 0.5\n", "edge.toml").unwrap_err();
        assert!(e.to_string().contains("smothing"), "{e}");
        let e = EdgeConfig::from_toml("source = \"webcam\"\n", "edge.toml").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let mut c = EdgeConfig::default();
        c.output.smoothing = 0.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("output.smoothing")
        );
    }
}
