//! The training configuration: defaults, a TOML file on top, `--set key=value` on top of that.
//! Saved as `config.toml` in every run directory; a bad value is reported with its dotted key.

use std::path::{Path, PathBuf};

use affect_shared::preprocess::Preprocess;
use serde::{Deserialize, Serialize};

use crate::data::Annotation;
use crate::model::{Backbone, ConfigError, NetworkConfig};
use crate::train::augment::AugmentConfig;

/// Which loss the optimiser minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// `1 − mean CCC` (the paper's best).
    Ccc,
    /// Mean squared error.
    Mse,
    /// `1 − mean CCC + mse_weight · MSE`.
    Weighted,
}

/// Which dimensions the loss trains (`loss.dimensions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimensions {
    /// Valence and arousal: one joint network (the paper's final design).
    #[default]
    Both,
    /// Valence only: one of the paper's separate per-dimension networks.
    Valence,
    /// Arousal only.
    Arousal,
}

impl Dimensions {
    /// Whether dimension `d` (0 valence, 1 arousal) is trained.
    pub fn trains(self, d: usize) -> bool {
        match self {
            Self::Both => d < 2,
            Self::Valence => d == 0,
            Self::Arousal => d == 1,
        }
    }

    /// The score that picks the best checkpoint: the mean CCC of the trained dimensions.
    pub fn selection_ccc(self, valence_ccc: f64, arousal_ccc: f64) -> f64 {
        match self {
            Self::Both => (valence_ccc + arousal_ccc) / 2.0,
            Self::Valence => valence_ccc,
            Self::Arousal => arousal_ccc,
        }
    }
}

/// Loss settings (`[loss]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Loss kind.
    pub kind: LossKind,
    /// Weight of the MSE term for [`LossKind::Weighted`].
    pub mse_weight: f64,
    /// Weight of the moment anchor ([`crate::loss::moment_anchor`]) added to the CCC term of
    /// [`LossKind::Ccc`] and [`LossKind::Weighted`]: holds the output's mean and standard
    /// deviation to the labels' without moving the CCC's optimum. Default 1; 0 is the paper's
    /// pure CCC loss (which collapses some runs, see [`crate::train::collapse`]).
    pub anchor_weight: f64,
    /// Steps trained on the MSE alone before `kind` takes over (0: `kind` from the first step,
    /// the paper's setting). The warm-up anchors the output's mean and scale to the labels'
    /// while the features carry no signal yet — when a CCC loss leaves them free (see
    /// [`crate::train::collapse`]).
    pub warmup_steps: u64,
    /// The dimensions the loss trains: `both` (default, one joint network), or `valence` /
    /// `arousal` alone (the paper's separate networks: the other output gets no gradient, and the
    /// best checkpoint is chosen on the trained dimension's CCC).
    pub dimensions: Dimensions,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::Ccc,
            mse_weight: 1.0,
            anchor_weight: 1.0,
            warmup_steps: 0,
            dimensions: Dimensions::Both,
        }
    }
}

/// Adam with a staircase exponential decay (`[optim]`): `lr · decay^⌊step / decay_steps⌋`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Initial learning rate (paper: 1e-3).
    pub lr: f64,
    /// Multiplier applied every `decay_steps` (paper: 0.97).
    pub decay: f64,
    /// Steps between decays (paper: 400).
    pub decay_steps: u64,
    /// L2 weight decay added to the gradient (PyTorch `Adam(weight_decay=…)`).
    pub weight_decay: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Rescale the gradient so its L2 norm over all parameters is at most this (`None`: no
    /// clipping, the paper's setting).
    pub clip_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            decay: 0.97,
            decay_steps: 400,
            weight_decay: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip_norm: None,
        }
    }
}

/// Batch shapes (`[batch]`): CNNs see `frames` single frames, CNN-RNNs `sequences` clips of
/// `sequence_length` consecutive frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Frames per CNN batch (paper: 80).
    pub frames: u32,
    /// Clips per CNN-RNN batch.
    pub sequences: u32,
    /// Frames per clip (paper: 100).
    pub sequence_length: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            frames: 80,
            sequences: 4,
            sequence_length: 100,
        }
    }
}

/// Length of training and how often to validate, log and checkpoint (`[schedule]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Optimiser steps in total.
    pub steps: u64,
    /// Steps between validations (0: only at the end).
    pub validate_every: u64,
    /// Steps between checkpoints (0: only at the end and on Ctrl-C).
    pub checkpoint_every: u64,
    /// Steps between training-loss lines in `metrics.jsonl`.
    pub log_every: u64,
    /// First step whose validation is checked for a collapse (`None`: a quarter of `steps`);
    /// see [`crate::train::collapse`].
    pub collapse_after: Option<u64>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            steps: 4000,
            validate_every: 400,
            checkpoint_every: 400,
            log_every: 20,
            collapse_after: None,
        }
    }
}

/// Where the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    /// CPU.
    Cpu,
    /// The first CUDA device (an error when there is none).
    Cuda,
}

/// Dataset side of training (`[data]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset directory the run trained on, recorded by `affect-train train` (absolute) so
    /// `eval`, `export` and `--resume` find it without `--data`.
    pub root: Option<PathBuf>,
    /// Split trained on.
    pub train_split: String,
    /// Split validated on (best checkpoint); empty to skip validation.
    pub validation_split: String,
    /// Oversample frames so valence/arousal quadrants are balanced (paper §2.1).
    pub balance: bool,
    /// Preprocessing; `None` picks the backbone's convention (VGG-Face: Caffe BGR, else
    /// ImageNet) at `network.input_size`, with landmarks when `network.landmarks`.
    pub preprocess: Option<Preprocess>,
    /// Directory for preprocessed crops, so later epochs skip JPEG decoding (keyed by the
    /// preprocess settings, so runs with other settings do not collide); `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Loader threads decoding and preprocessing; `None`: one per core.
    pub workers: Option<usize>,
    /// The annotation `train_split` is labelled with: `mean` (default; the release's files, the
    /// mean of the annotators) or one annotator's name (Aff-Wild layout with per-annotator files,
    /// e.g. from `affect-train synth --layout affwild --annotators 4`). Validation always scores
    /// against the mean, as in the paper's Table 6.
    pub annotation: Annotation,
}

impl DataConfig {
    /// The dataset directory: `given` (a `--data` flag) or the one the run recorded.
    pub fn dataset_dir(&self, given: Option<&Path>) -> Result<PathBuf, ConfigError> {
        given
            .map(Path::to_path_buf)
            .or_else(|| self.root.clone())
            .ok_or_else(|| {
                ConfigError::new(
                    "data.root",
                    "the run does not record its dataset directory; pass --data",
                )
            })
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            root: None,
            train_split: "Train_Set".into(),
            validation_split: "Validation_Set".into(),
            balance: true,
            preprocess: None,
            cache_dir: None,
            workers: None,
            annotation: Annotation::Mean,
        }
    }
}

/// Everything a training run needs; `config.toml` in the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed of initialisation, dropout and sampling.
    pub seed: u64,
    /// Device.
    pub device: DeviceChoice,
    /// libtorch intra-op threads (`None`: libtorch's default).
    pub threads: Option<u32>,
    /// Network architecture.
    pub network: NetworkConfig,
    /// Loss.
    pub loss: LossConfig,
    /// Optimiser.
    pub optim: OptimConfig,
    /// Batch shapes.
    pub batch: BatchConfig,
    /// Lengths and intervals.
    pub schedule: ScheduleConfig,
    /// Dataset options.
    pub data: DataConfig,
    /// Training-time augmentation ([`crate::train::augment`]).
    pub augment: AugmentConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            device: DeviceChoice::Auto,
            threads: None,
            network: NetworkConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            batch: BatchConfig::default(),
            schedule: ScheduleConfig::default(),
            data: DataConfig::default(),
            augment: AugmentConfig::default(),
        }
    }
}

/// Dotted leaves of a TOML table: `[("network.width", 0.25), …]`.
fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) if !t.is_empty() => leaves(&key, t, out),
            _ => out.push((key, v.clone())),
        }
    }
}

/// Sets `key` (dotted) in `root` to `value`, creating tables on the way.
fn set_dotted(root: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut table = root;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::new(key, format!("`{part}` is not a table")))?;
    }
    table.insert(parts[parts.len() - 1].to_owned(), value);
    Ok(())
}

/// Parses the value of `--set key=value`: a TOML value (`0.5`, `true`, `"x"`, `[1, 2]`), or
/// else the bare text as a string (`--set network.cell=lstm`).
pub fn parse_set(assignment: &str) -> Result<(String, toml::Value), ConfigError> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        ConfigError::new(
            assignment,
            "expected `key=value` (e.g. `network.hidden=150`)",
        )
    })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(ConfigError::new(key, "empty key part"));
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    Ok((key.to_owned(), value))
}

/// Configurations shipped in `host-trainer/configs/`, by name: `paper-cuda` (the paper's
/// VGG-Face CNN-GRU at 224 px, for a CUDA workstation) and `cpu` (a 1/16-width CNN-GRU with
/// landmarks at 48 px that trains in minutes on a 2-core CPU).
pub const NAMED_CONFIGS: [(&str, &str); 2] = [
    ("cpu", include_str!("../../configs/cpu.toml")),
    ("paper-cuda", include_str!("../../configs/paper-cuda.toml")),
];

/// The text of the named config `name` (a bare name like `cpu`, no directory or extension).
pub fn named_config(name: &Path) -> Option<&'static str> {
    let name = name.to_str()?;
    NAMED_CONFIGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

impl TrainConfig {
    /// Defaults, then the TOML `file`, then each `key=value` of `sets`; validated. Errors name
    /// the key that is wrong (and the file when it does not parse).
    /// `file` may also be the name of a [`NAMED_CONFIGS`] entry (`cpu`, `paper-cuda`) when no
    /// file of that name exists.
    pub fn load(file: Option<&Path>, sets: &[String]) -> Result<Self, ConfigError> {
        let mut overrides = match file {
            Some(path) => Self::file_overrides(path)?,
            None => Vec::new(),
        };
        for s in sets {
            overrides.push(parse_set(s)?);
        }
        Self::from_overrides(&overrides)
    }

    /// The dotted `key = value` pairs of a config file (or of a named config).
    fn file_overrides(path: &Path) -> Result<Vec<(String, toml::Value)>, ConfigError> {
        let text = match named_config(path) {
            Some(text) if !path.exists() => text.to_owned(),
            _ => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "--config",
                    format!(
                        "{}: {e} (named configs: {})",
                        path.display(),
                        NAMED_CONFIGS.map(|(name, _)| name).join(", ")
                    ),
                )
            })?,
        };
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
        let mut overrides = Vec::new();
        leaves("", &table, &mut overrides);
        Ok(overrides)
    }

    /// Reads a run's saved `config.toml` (strict: every key must be known). A run saved before
    /// `network.feature_norm` existed was trained without it, so its absence reads as `false`;
    /// likewise a run saved before `[augment]` existed was trained without augmentation.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        const FEATURE_NORM: &str = "network.feature_norm";
        let mut overrides = Self::file_overrides(path)?;
        if !overrides.iter().any(|(key, _)| key == FEATURE_NORM) {
            overrides.push((FEATURE_NORM.into(), toml::Value::Boolean(false)));
        }
        if !overrides.iter().any(|(key, _)| key.starts_with("augment.")) {
            let none = toml::Value::try_from(AugmentConfig::none())
                .map_err(|e| ConfigError::new("augment", e.to_string()))?;
            let mut table = toml::Table::new();
            table.insert("augment".into(), none);
            leaves("", &table, &mut overrides);
        }
        Self::from_overrides(&overrides)
    }

    /// Defaults with dotted overrides applied in order, then validated.
    pub fn from_overrides(overrides: &[(String, toml::Value)]) -> Result<Self, ConfigError> {
        let base: toml::Table = toml::from_str(&Self::default().to_toml())
            .map_err(|e| ConfigError::new("config", e.to_string()))?;
        let apply = |pairs: &[(String, toml::Value)]| -> Result<Self, ConfigError> {
            let mut table = base.clone();
            for (k, v) in pairs {
                set_dotted(&mut table, k, v.clone())?;
            }
            toml::Value::Table(table)
                .try_into::<Self>()
                .map_err(|e| ConfigError::new("config", e.to_string()))
        };
        let config = match apply(overrides) {
            Ok(c) => c,
            Err(whole) => {
                // Find the key to blame: the first override that fails on its own.
                for pair in overrides {
                    if let Err(e) = apply(std::slice::from_ref(pair)) {
                        return Err(ConfigError::new(pair.0.clone(), e.message));
                    }
                }
                return Err(whole);
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot (ranges, consistency); errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.network.validate("network")?;
        let o = &self.optim;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(o.lr) {
            return Err(ConfigError::new("optim.lr", "must be a positive number"));
        }
        if !(positive(o.decay) && o.decay <= 1.0) {
            return Err(ConfigError::new("optim.decay", "must be in (0, 1]"));
        }
        if o.decay_steps == 0 {
            return Err(ConfigError::new("optim.decay_steps", "must be at least 1"));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(ConfigError::new("optim.weight_decay", "must be >= 0"));
        }
        for (key, beta) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
            if !(beta.is_finite() && (0.0..1.0).contains(&beta)) {
                return Err(ConfigError::new(key, "must be in [0, 1)"));
            }
        }
        if !positive(o.eps) {
            return Err(ConfigError::new("optim.eps", "must be a positive number"));
        }
        if o.clip_norm.is_some_and(|c| !positive(c)) {
            return Err(ConfigError::new(
                "optim.clip_norm",
                "must be a positive number (leave it out for no clipping)",
            ));
        }
        if !(self.loss.mse_weight.is_finite() && self.loss.mse_weight >= 0.0) {
            return Err(ConfigError::new("loss.mse_weight", "must be >= 0"));
        }
        if !(self.loss.anchor_weight.is_finite() && self.loss.anchor_weight >= 0.0) {
            return Err(ConfigError::new("loss.anchor_weight", "must be >= 0"));
        }
        if let Some((key, problem)) = self.augment.problem() {
            return Err(ConfigError::new(key, problem));
        }
        let b = &self.batch;
        if self.network.is_recurrent() {
            if b.sequences == 0 {
                return Err(ConfigError::new("batch.sequences", "must be at least 1"));
            }
            if b.sequence_length < 2 {
                return Err(ConfigError::new(
                    "batch.sequence_length",
                    "must be at least 2",
                ));
            }
        } else if b.frames < 2 {
            return Err(ConfigError::new(
                "batch.frames",
                "must be at least 2 (CCC needs a spread)",
            ));
        }
        if self.schedule.steps == 0 {
            return Err(ConfigError::new("schedule.steps", "must be at least 1"));
        }
        if self.schedule.log_every == 0 {
            return Err(ConfigError::new("schedule.log_every", "must be at least 1"));
        }
        if self.threads == Some(0) {
            return Err(ConfigError::new("threads", "must be at least 1"));
        }
        if self.data.train_split.is_empty() {
            return Err(ConfigError::new("data.train_split", "must not be empty"));
        }
        if self.data.workers == Some(0) {
            return Err(ConfigError::new("data.workers", "must be at least 1"));
        }
        let p = self.preprocess();
        p.validate()
            .map_err(|e| ConfigError::new("data.preprocess", e.to_string()))?;
        if p.size != self.network.input_size {
            return Err(ConfigError::new(
                "data.preprocess.size",
                format!(
                    "is {} but network.input_size is {}",
                    p.size, self.network.input_size
                ),
            ));
        }
        if p.landmarks != self.network.landmarks {
            return Err(ConfigError::new(
                "data.preprocess.landmarks",
                "must equal network.landmarks",
            ));
        }
        Ok(())
    }

    /// The preprocessing the run uses (explicit, or the backbone's convention).
    pub fn preprocess(&self) -> Preprocess {
        self.data.preprocess.clone().unwrap_or_else(|| {
            let size = self.network.input_size;
            let base = match self.network.backbone {
                Backbone::VggFace => Preprocess::vgg_face(size),
                Backbone::Vgg16 | Backbone::Resnet50 => Preprocess::imagenet(size),
            };
            Preprocess {
                landmarks: self.network.landmarks,
                ..base
            }
        })
    }

    /// `(sequences, steps)` of one training batch.
    pub fn batch_shape(&self) -> (usize, usize) {
        if self.network.is_recurrent() {
            (
                self.batch.sequences as usize,
                self.batch.sequence_length as usize,
            )
        } else {
            (self.batch.frames as usize, 1)
        }
    }

    /// The configuration as TOML text (what `config.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a TrainConfig always serialises to TOML")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_run_without_feature_norm_reads_as_trained_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let saved = TrainConfig::default().to_toml();
        std::fs::write(&path, &saved).unwrap();
        assert!(TrainConfig::read(&path).unwrap().network.feature_norm);
        // A config written before the key existed: every line but `feature_norm`.
        let old: String = saved
            .lines()
            .filter(|l| !l.trim_start().starts_with("feature_norm"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(old, saved, "the saved config names feature_norm");
        std::fs::write(&path, &old).unwrap();
        assert!(!TrainConfig::read(&path).unwrap().network.feature_norm);
        // New runs and hand-written configs get the default.
        assert!(TrainConfig::default().network.feature_norm);
    }

    #[test]
    fn a_saved_run_without_augment_reads_as_trained_without_augmentation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let saved = TrainConfig::default().to_toml();
        std::fs::write(&path, &saved).unwrap();
        assert_eq!(
            TrainConfig::read(&path).unwrap().augment,
            AugmentConfig::default()
        );
        let old = saved.split("[augment]").next().unwrap();
        assert_ne!(old, saved, "the saved config has an [augment] table");
        std::fs::write(&path, old).unwrap();
        assert_eq!(
            TrainConfig::read(&path).unwrap().augment,
            AugmentConfig::none()
        );
        assert!(AugmentConfig::default().is_active(), "new runs augment");
        // A partly written table keeps the defaults for the keys it leaves out.
        std::fs::write(&path, format!("{old}[augment]\nmirror = false\n")).unwrap();
        let partial = TrainConfig::read(&path).unwrap().augment;
        assert!(!partial.mirror);
        assert_eq!(partial.shift, AugmentConfig::default().shift);
    }

    #[test]
    fn an_augment_strength_out_of_range_is_refused_naming_its_key() {
        let err = TrainConfig::load(None, &["augment.rotation_degrees=-3".into()]).unwrap_err();
        assert!(
            err.to_string().contains("augment.rotation_degrees"),
            "{err}"
        );
    }
}
