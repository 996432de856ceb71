//! The paper's CNN and CNN-RNN valence/arousal regressors (Kollias et al. 2017, Tables 1–3).
//!
//! # Parameters (the contract with the ONNX exporter)
//!
//! With joint outputs all names sit at the root; with [`Outputs::PerDimension`] there are two
//! complete networks, one under `valence.` and one under `arousal.`, each with one output.
//! - backbone: torchvision names, see [`backbone`] (`features.{i}.*` for VGG, `conv1`, `bn1`,
//!   `layer{1..4}.{j}.*` for ResNet-50);
//! - head: `head.fc{k}.weight` `[out, in]` and `head.fc{k}.bias`, `k` from 1;
//! - recurrent (CNN-RNN only): `rnn.l{k}.*`, `k` from 0, see [`rnn`];
//! - output: `out.weight` `[outputs, in]`, `out.bias`.
//!
//! # Head sizes (× `width`, at least 1 unit; 136 landmark values are never scaled)
//!
//! | kind | backbone | landmarks | `head.fc*` outputs | landmarks concatenated to the input of |
//! |---|---|---|---|---|
//! | cnn | resnet50 | no | 1500 | — |
//! | cnn | resnet50 | yes | 1500, 256 | `head.fc1` |
//! | cnn | vgg16 / vgg_face | no | 4096, 4096 | — |
//! | cnn | vgg16 / vgg_face | yes | 4096, 4096, 2622 | `head.fc2` |
//! | cnn_rnn | any | no / yes | 4096 | `rnn.l0` |
//!
//! # Forward (evaluation mode; the exporter reproduces exactly this)
//!
//! ```text
//! face  [N, 3, S, S]           (N = B·T frames; preprocessed by affect_shared::preprocess)
//! x = backbone(face)            [N, F]   (VGG: avg-pool to pool×pool then flatten C,H,W; ResNet: global avg-pool)
//! lm = (landmarks − landmarks.mean) / landmarks.std          [N, 136] (scenario 2 only)
//! for k = 1..=K:                          (head.fc1 … head.fcK)
//!     if landmarks join at head.fck: x = concat([x, lm], dim 1)   (features first)
//!     x = dropout(relu(head.fck(x)))      (dropout only in training)
//! CNN:      va = out(x)                   [N, outputs]   (no activation)
//! CNN-RNN:  if feature_norm: x = (x − mean(x)) / sqrt(var(x) + 1e-5)   (over each frame's D values)
//!           if landmarks: x = concat([x, lm], dim 1)
//!           x → [B, T, D]; for each layer l: y = cell_l over time (state h_in[l], c_in[l]);
//!           y = dropout(y); va = out(y)   [B, T, outputs]; h_out[l] = last step's state
//! ```
//! `landmarks.mean` and `landmarks.std` (`[136]` buffers, not trained) are the training set's
//! per-coordinate statistics, set by the trainer before the first step
//! ([`Model::set_landmark_statistics`]) and saved with the weights: crop-relative coordinates
//! move by only a few hundredths of the crop with expression, far below the scale of the
//! backbone features they join, so unstandardised they barely reach the next layer.
//! Initialisation: convolutions and hidden FC layers He-uniform (fan-in), BatchNorm weight 1 and
//! bias 0, recurrent layers as in PyTorch, the output layer N(0, 0.01²) with bias 0.
//!
//! Per-dimension networks run side by side on the same input; their outputs are concatenated
//! (valence, arousal) and their states stacked on the layer axis (valence's layers first).
//! Dropout probability is `dropout`; it is inactive in evaluation, so the exported graph has
//! none. [`Model::forward_step`] runs one frame of `B` streams from a carried state and equals
//! [`Model::forward`] on the whole sequence.

pub mod backbone;
pub mod flops;
pub mod pretrained;
pub mod rnn;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use affect_shared::metadata::Cell;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use affect_shared::contract::LANDMARK_VALUES;
use backbone::{Features, scaled};
use rnn::{Recurrent, RnnState};

/// Landmark values per frame as a libtorch dimension ([`LANDMARK_VALUES`]).
const LANDMARK_DIM: i64 = LANDMARK_VALUES as i64;

/// Convolutional backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backbone {
    /// VGG-16 (torchvision layout, ImageNet weights).
    Vgg16,
    /// VGG-Face: the VGG-16 layout with face-recognition weights (Parkhi et al. 2015).
    VggFace,
    /// ResNet-50 (torchvision layout, ImageNet weights).
    Resnet50,
}

impl Backbone {
    /// Name as written in configs and model metadata.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Vgg16 => "vgg16",
            Backbone::VggFace => "vgg_face",
            Backbone::Resnet50 => "resnet50",
        }
    }

    fn is_vgg(self) -> bool {
        matches!(self, Backbone::Vgg16 | Backbone::VggFace)
    }
}

/// Per-frame CNN (Tables 1–2) or CNN-RNN (Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Frame-by-frame regression.
    Cnn,
    /// Per-frame features, then recurrent layers over time.
    CnnRnn,
}

/// One network predicting both dimensions, or one network per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outputs {
    /// One network, two outputs.
    Joint,
    /// Two networks (`valence.*`, `arousal.*`), one output each.
    PerDimension,
}

/// Architecture of a network; saved in the run's `config.toml` under `[network]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Convolutional backbone.
    pub backbone: Backbone,
    /// CNN or CNN-RNN.
    pub kind: Architecture,
    /// Scenario 2 of the paper: the 136 landmark values join the network.
    pub landmarks: bool,
    /// Recurrent cell (CNN-RNN only).
    pub cell: Cell,
    /// Hidden units per recurrent layer (paper: 100–150).
    pub hidden: u32,
    /// Recurrent layers (paper: 1–2).
    pub layers: u32,
    /// Multiplier on conv channels and FC sizes (1.0 = the paper's network).
    pub width: f64,
    /// Side of the square input crop in pixels (paper: 224).
    pub input_size: u32,
    /// VGG only: side of the pooled feature map before `head.fc1`; `None` picks 7 (torchvision)
    /// when the last feature map's side is a multiple of 7, else 1 (global average).
    pub pool: Option<u32>,
    /// Dropout probability after hidden FC and recurrent layers.
    pub dropout: f64,
    /// LSTM only: initial forget-gate bias (`bias_ih`'s forget block; `bias_hh`'s is then 0).
    /// `None` keeps PyTorch's uniform initialisation (the paper's frameworks' default); 1 keeps
    /// the cell memory open while the gates learn (Jozefowicz et al. 2015).
    pub forget_bias: Option<f64>,
    /// CNN-RNN only: layer normalisation (no learnt scale or shift) of the head's output before
    /// the landmarks join it and the recurrent layers read it. Trained from scratch, the
    /// unnormalised features grow until they saturate the recurrent gates and some seeds never
    /// learn; `false` is the paper's network (and what a saved run without this key was).
    pub feature_norm: bool,
    /// Joint or per-dimension networks.
    pub outputs: Outputs,
    /// Pretrained backbone weights (torchvision VGG-16 / ResNet-50 state dict or VGG-Face),
    /// `.safetensors` or `.pt`; `None` = random initialisation.
    pub pretrained: Option<PathBuf>,
    /// Keep the conv part fixed (evaluation-mode BatchNorm, no gradients) and train the rest.
    pub freeze_conv: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            backbone: Backbone::VggFace,
            kind: Architecture::CnnRnn,
            landmarks: true,
            cell: Cell::Gru,
            hidden: 128,
            layers: 2,
            width: 1.0,
            input_size: 224,
            pool: None,
            dropout: 0.5,
            forget_bias: None,
            feature_norm: true,
            outputs: Outputs::Joint,
            pretrained: None,
            freeze_conv: false,
        }
    }
}

/// A configuration value that cannot be used; names the key (`network.width`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    /// Dotted key, e.g. `network.hidden`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Why a model could not be built, run, saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An input tensor has the wrong shape or is missing.
    #[error("model input: {0}")]
    Input(String),
    /// Pretrained weights could not be mapped onto the network.
    #[error("pretrained weights {path}: {message}")]
    Pretrained {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Saved weights do not fit this network (another configuration, or not a checkpoint).
    #[error("{path} does not fit this network: {message}")]
    Mismatch {
        /// The weights file.
        path: PathBuf,
        /// Every tensor that is missing, unexpected or shaped differently, in name order.
        message: String,
    },
    /// libtorch failed (file I/O, shapes).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Sizes derived from a [`NetworkConfig`]: what the head looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadPlan {
    /// Output units of `head.fc1`, `head.fc2`, ….
    pub fcs: Vec<i64>,
    /// Index of the layer whose input gets the landmarks: `k` = `head.fc{k+1}`,
    /// `fcs.len()` = the layer after the head (`rnn.l0`); `None` = no landmarks.
    pub landmarks_at: Option<usize>,
    /// Number of outputs of each network (2 joint, 1 per dimension).
    pub outputs: i64,
}

impl NetworkConfig {
    /// Checks every field; the error names the offending key under `prefix` (e.g. `network`).
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if !(self.width.is_finite() && self.width > 0.0 && self.width <= 4.0) {
            return Err(ConfigError::new(key("width"), "must be in (0, 4]"));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(ConfigError::new(key("dropout"), "must be in [0, 1)"));
        }
        if self.forget_bias.is_some_and(|b| !b.is_finite()) {
            return Err(ConfigError::new(
                key("forget_bias"),
                "must be a finite number",
            ));
        }
        if self.kind == Architecture::CnnRnn {
            if !(1..=4096).contains(&self.hidden) {
                return Err(ConfigError::new(key("hidden"), "must be in 1..=4096"));
            }
            if !(1..=8).contains(&self.layers) {
                return Err(ConfigError::new(key("layers"), "must be in 1..=8"));
            }
        }
        let size = i64::from(self.input_size);
        match self.backbone {
            Backbone::Resnet50 => {
                if !(32..=1024).contains(&size) {
                    return Err(ConfigError::new(
                        key("input_size"),
                        "ResNet-50 needs 32..=1024 pixels",
                    ));
                }
            }
            Backbone::Vgg16 | Backbone::VggFace => {
                if !(32..=1024).contains(&size) {
                    return Err(ConfigError::new(
                        key("input_size"),
                        "VGG needs 32..=1024 pixels",
                    ));
                }
                let side = backbone::vgg_feature_side(size);
                if let Some(pool) = self.pool
                    && (pool == 0 || side % i64::from(pool) != 0)
                {
                    return Err(ConfigError::new(
                        key("pool"),
                        format!(
                            "must divide the last feature map's side ({side} px at input {size})"
                        ),
                    ));
                }
            }
        }
        if self.pool.is_some() && !self.backbone.is_vgg() {
            return Err(ConfigError::new(
                key("pool"),
                "only VGG backbones take a pool size (ResNet-50 pools globally)",
            ));
        }
        if self.freeze_conv && self.pretrained.is_none() {
            return Err(ConfigError::new(
                key("freeze_conv"),
                "freezing a randomly initialised conv part makes no sense: set `pretrained`",
            ));
        }
        Ok(())
    }

    /// VGG pooled side actually used (see [`NetworkConfig::pool`]); 1 for ResNet.
    pub fn pool_side(&self) -> i64 {
        if !self.backbone.is_vgg() {
            return 1;
        }
        let side = backbone::vgg_feature_side(i64::from(self.input_size));
        match self.pool {
            Some(p) => i64::from(p),
            None if side % 7 == 0 => 7,
            None => 1,
        }
    }

    /// The head's layer sizes and where the landmarks join.
    pub fn head_plan(&self) -> HeadPlan {
        let w = |c| scaled(c, self.width);
        let outputs = match self.outputs {
            Outputs::Joint => 2,
            Outputs::PerDimension => 1,
        };
        let (fcs, at) = match (self.kind, self.backbone.is_vgg(), self.landmarks) {
            (Architecture::CnnRnn, _, _) => (vec![w(4096)], 1),
            (Architecture::Cnn, false, false) => (vec![w(1500)], 0),
            (Architecture::Cnn, false, true) => (vec![w(1500), w(256)], 0),
            (Architecture::Cnn, true, false) => (vec![w(4096), w(4096)], 1),
            (Architecture::Cnn, true, true) => (vec![w(4096), w(4096), w(2622)], 1),
        };
        HeadPlan {
            fcs,
            landmarks_at: self.landmarks.then_some(at),
            outputs,
        }
    }

    /// Whether the network has recurrent layers.
    pub fn is_recurrent(&self) -> bool {
        self.kind == Architecture::CnnRnn
    }
}

/// ε of the feature normalisation ([`NetworkConfig::feature_norm`]), as PyTorch's `LayerNorm`.
pub const FEATURE_NORM_EPS: f64 = 1e-5;

/// One network (backbone, head, optional recurrent layers, output layer).
#[derive(Debug)]
struct Network {
    features: Features,
    head: Vec<nn::Linear>,
    landmarks_at: Option<usize>,
    rnn: Option<Recurrent>,
    feature_norm: bool,
    out: nn::Linear,
    dropout: f64,
    frozen_conv: bool,
}

impl Network {
    fn new(p: &nn::Path, config: &NetworkConfig) -> Self {
        let features = Features::new(p, config);
        let plan = config.head_plan();
        let mut in_features = features.features();
        let mut head = Vec::new();
        for (k, &units) in plan.fcs.iter().enumerate() {
            if plan.landmarks_at == Some(k) {
                in_features += LANDMARK_DIM;
            }
            let path = p / "head" / format!("fc{}", k + 1);
            head.push(nn::linear(path, in_features, units, Default::default()));
            in_features = units;
        }
        if plan.landmarks_at == Some(plan.fcs.len()) {
            in_features += LANDMARK_DIM;
        }
        let rnn = config.is_recurrent().then(|| {
            let mut r = Recurrent::new(
                &(p / "rnn"),
                config.cell,
                in_features,
                i64::from(config.hidden),
                config.layers as usize,
            );
            if let Some(bias) = config.forget_bias {
                r.set_forget_bias(bias);
            }
            in_features = i64::from(config.hidden);
            r
        });
        // Near-zero initial predictions: with the CCC loss, output noise that is uncorrelated
        // with the labels gets no gradient (∂CCC/∂var ∝ cov ≈ 0), so it must start small.
        let out = nn::linear(
            p / "out",
            in_features,
            plan.outputs,
            nn::LinearConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.01,
                },
                bs_init: Some(nn::Init::Const(0.0)),
                bias: true,
            },
        );
        Self {
            features,
            head,
            landmarks_at: plan.landmarks_at,
            feature_norm: config.feature_norm && rnn.is_some(),
            rnn,
            out,
            dropout: config.dropout,
            frozen_conv: config.freeze_conv,
        }
    }

    /// Frames `[N, 3, S, S]` (+ landmarks `[N, 136]`) → CNN outputs `[N, outputs]` or, for the
    /// CNN-RNN, the recurrent layers' input `[N, D]`.
    fn frames(&self, faces: &Tensor, landmarks: Option<&Tensor>, train: bool) -> Tensor {
        let mut x = if self.frozen_conv {
            tch::no_grad(|| self.features.forward(faces, false))
        } else {
            self.features.forward(faces, train)
        };
        let join = |x: Tensor| match &landmarks {
            Some(l) => Tensor::cat(&[x, l.to_kind(Kind::Float)], 1),
            None => x,
        };
        for (k, fc) in self.head.iter().enumerate() {
            if self.landmarks_at == Some(k) {
                x = join(x);
            }
            x = x.apply(fc).relu().dropout(self.dropout, train);
        }
        if self.feature_norm {
            let width = x.size()[1];
            x = x.layer_norm(
                [width],
                None::<&Tensor>,
                None::<&Tensor>,
                FEATURE_NORM_EPS,
                false,
            );
        }
        if self.landmarks_at == Some(self.head.len()) {
            x = join(x);
        }
        if self.rnn.is_none() {
            x = x.apply(&self.out);
        }
        x
    }

    /// `[B, T, …]` inputs → `[B, T, outputs]` and the state after the last step; the state
    /// advances only where `present` `[B, T]` is nonzero (see [`Recurrent::forward`]).
    fn forward(
        &self,
        faces: &Tensor,
        landmarks: Option<&Tensor>,
        present: Option<&Tensor>,
        state: Option<&RnnState>,
        train: bool,
    ) -> (Tensor, Option<RnnState>) {
        let size = faces.size();
        let (b, t) = (size[0], size[1]);
        let flat_faces = faces.reshape([b * t, size[2], size[3], size[4]]);
        let flat_landmarks = landmarks.map(|l| l.reshape([b * t, LANDMARK_DIM]));
        let x = self.frames(&flat_faces, flat_landmarks.as_ref(), train);
        match &self.rnn {
            None => (x.reshape([b, t, -1]), None),
            Some(rnn) => {
                let (y, next) =
                    rnn.forward(&x.reshape([b, t, -1]), present, state, self.dropout, train);
                (y.apply(&self.out), Some(next))
            }
        }
    }
}

/// A network (or a valence and an arousal network) with its parameters.
#[derive(Debug)]
pub struct Model {
    config: NetworkConfig,
    vs: nn::VarStore,
    nets: Vec<Network>,
    landmark_stats: Option<LandmarkStatistics>,
}

/// The `landmarks.mean` / `landmarks.std` buffers (see the module documentation).
#[derive(Debug)]
struct LandmarkStatistics {
    mean: Tensor,
    std: Tensor,
}

impl Model {
    /// Builds a randomly initialised model on `device` (call [`tch::manual_seed`] first for a
    /// reproducible initialisation). Loads `config.pretrained` when set.
    pub fn new(config: &NetworkConfig, device: Device) -> Result<Self, ModelError> {
        config.validate("network")?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let nets = match config.outputs {
            Outputs::Joint => vec![Network::new(&root, config)],
            Outputs::PerDimension => vec![
                Network::new(&(&root / "valence"), config),
                Network::new(&(&root / "arousal"), config),
            ],
        };
        let landmark_stats = config.landmarks.then(|| {
            let p = &root / "landmarks";
            LandmarkStatistics {
                mean: p.zeros_no_train("mean", &[LANDMARK_DIM]),
                std: p.ones_no_train("std", &[LANDMARK_DIM]),
            }
        });
        let mut model = Self {
            config: config.clone(),
            vs,
            nets,
            landmark_stats,
        };
        if let Some(path) = &config.pretrained {
            pretrained::load_backbone(&mut model, path)?;
        }
        if config.freeze_conv {
            for (name, tensor) in model.vs.variables() {
                if pretrained::is_backbone_parameter(&model.config, &name) {
                    let _ = tensor.set_requires_grad(false);
                }
            }
        }
        Ok(model)
    }

    /// The architecture.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Sets the training set's per-coordinate landmark mean and standard deviation (136 values
    /// each, every deviation positive and finite). Scenario-1 networks have no landmark input.
    pub fn set_landmark_statistics(&mut self, mean: &[f32], std: &[f32]) -> Result<(), ModelError> {
        let Some(stats) = &mut self.landmark_stats else {
            return Err(ModelError::Input(
                "this network takes no landmarks (scenario 1)".into(),
            ));
        };
        let expected = LANDMARK_VALUES;
        if mean.len() != expected || std.len() != expected {
            return Err(ModelError::Input(format!(
                "landmark statistics need {expected} means and deviations, got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if let Some(i) =
            (0..expected).find(|&i| !mean[i].is_finite() || !std[i].is_finite() || std[i] <= 0.0)
        {
            return Err(ModelError::Input(format!(
                "landmark value {i}: mean {} and deviation {} must be finite, the deviation positive",
                mean[i], std[i]
            )));
        }
        tch::no_grad(|| {
            stats.mean.copy_(&Tensor::from_slice(mean));
            stats.std.copy_(&Tensor::from_slice(std));
        });
        Ok(())
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// All parameters and buffers (BatchNorm running statistics) by name.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Parameters the optimiser updates, sorted by name (frozen conv weights and BatchNorm
    /// running statistics excluded).
    pub fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        let mut params: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params
    }

    /// Saves every parameter and buffer (safetensors when `path` ends in `.safetensors`).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        Ok(self.vs.save(path)?)
    }

    /// Loads every parameter and buffer saved by [`Model::save`] for the same configuration. A
    /// safetensors file is checked against the network first, so a mismatch names every
    /// differing tensor in name order (libtorch stops at whichever its hash order meets first).
    pub fn load(&mut self, path: &Path) -> Result<(), ModelError> {
        if path.extension().is_some_and(|e| e == "safetensors") {
            self.check_fits(path)?;
        }
        Ok(self.vs.load(path)?)
    }

    /// Compares the tensor names and shapes in a safetensors file's header with the network's.
    fn check_fits(&self, path: &Path) -> Result<(), ModelError> {
        let mismatch = |message: String| ModelError::Mismatch {
            path: path.to_owned(),
            message,
        };
        let saved = safetensors_shapes(path).map_err(mismatch)?;
        let mut problems = Vec::new();
        let ours: BTreeMap<String, Vec<i64>> = self
            .vs
            .variables()
            .into_iter()
            .map(|(name, t)| (name, t.size()))
            .collect();
        for (name, shape) in &ours {
            match saved.get(name) {
                None => problems.push(format!("{name} missing from the file")),
                Some(s) if s != shape => problems.push(format!(
                    "{name} is {s:?} in the file, {shape:?} in the network"
                )),
                Some(_) => {}
            }
        }
        problems.extend(
            saved
                .keys()
                .filter(|name| !ours.contains_key(*name))
                .map(|name| format!("{name} in the file is not in the network")),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(mismatch(problems.join("; ")))
        }
    }

    /// The zero recurrent state for `batch` streams (`None` for CNN models).
    pub fn zero_state(&self, batch: i64) -> Option<RnnState> {
        let states: Vec<RnnState> = self
            .nets
            .iter()
            .filter_map(|n| n.rnn.as_ref().map(|r| r.zero_state(batch)))
            .collect();
        join_states(states)
    }

    fn check_inputs(
        &self,
        faces: &Tensor,
        landmarks: Option<&Tensor>,
        rank: usize,
    ) -> Result<(), ModelError> {
        let size = faces.size();
        let s = i64::from(self.config.input_size);
        if size.len() != rank || size[rank - 3..] != [3, s, s] {
            return Err(ModelError::Input(format!(
                "faces must be [{}3, {s}, {s}], got {size:?}",
                if rank == 5 { "B, T, " } else { "B, " }
            )));
        }
        match (self.config.landmarks, landmarks) {
            (true, None) => Err(ModelError::Input(
                "this network takes landmarks (scenario 2) but none were given".into(),
            )),
            (true, Some(l)) if l.size()[..] != [&size[..rank - 3], &[LANDMARK_DIM]].concat() => {
                Err(ModelError::Input(format!(
                    "landmarks must be {:?}, got {:?}",
                    [&size[..rank - 3], &[LANDMARK_DIM]].concat(),
                    l.size()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whole sequences: faces `[B, T, 3, S, S]`, landmarks `[B, T, 136]` (scenario 2), face
    /// presence `[B, T]` (nonzero = the frame has a face; `None` = all have one), optional
    /// initial state → predictions `[B, T, 2]` (valence, arousal) and the final state.
    /// The recurrent state advances only on frames with a face ([`affect_shared::contract`]);
    /// predictions at face-less frames are meaningless and must be masked out by the caller.
    /// `train` enables dropout and batch statistics.
    pub fn forward(
        &self,
        faces: &Tensor,
        landmarks: Option<&Tensor>,
        present: Option<&Tensor>,
        state: Option<&RnnState>,
        train: bool,
    ) -> Result<(Tensor, Option<RnnState>), ModelError> {
        self.check_inputs(faces, landmarks, 5)?;
        if let Some(p) = present
            && p.size()[..] != faces.size()[..2]
        {
            return Err(ModelError::Input(format!(
                "face presence must be {:?}, got {:?}",
                &faces.size()[..2],
                p.size()
            )));
        }
        let landmarks = match (&self.landmark_stats, landmarks) {
            (Some(stats), Some(l)) => Some((l.to_kind(Kind::Float) - &stats.mean) / &stats.std),
            _ => None,
        };
        let landmarks = landmarks.as_ref();
        let parts = split_state(state, self.nets.len());
        let mut outputs = Vec::new();
        let mut states = Vec::new();
        for (net, part) in self.nets.iter().zip(&parts) {
            let (y, s) = net.forward(faces, landmarks, present, part.as_ref(), train);
            outputs.push(y);
            states.extend(s);
        }
        Ok((Tensor::cat(&outputs, -1), join_states(states)))
    }

    /// Backbone features of frames `[N, 3, S, S]` in evaluation mode (the first network's, for
    /// per-dimension models): `[N, F]`, the input of `head.fc1`.
    pub fn backbone_features(&self, faces: &Tensor) -> Tensor {
        tch::no_grad(|| self.nets[0].features.forward(faces, false))
    }

    /// Streaming, evaluation mode: one frame of `B` streams, faces `[B, 3, S, S]`, landmarks
    /// `[B, 136]`, the state carried from the previous frame (zeros when `None`) → `[B, 2]` and
    /// the new state. Equal to [`Model::forward`] over the whole sequence. A frame without a face
    /// is simply not stepped: the caller keeps the state ([`affect_shared::contract`]).
    pub fn forward_step(
        &self,
        face: &Tensor,
        landmarks: Option<&Tensor>,
        state: Option<&RnnState>,
    ) -> Result<(Tensor, Option<RnnState>), ModelError> {
        self.check_inputs(face, landmarks, 4)?;
        let landmarks = landmarks.map(|l| l.unsqueeze(1));
        let (y, s) = self.forward(&face.unsqueeze(1), landmarks.as_ref(), None, state, false)?;
        Ok((y.squeeze_dim(1), s))
    }
}

/// Splits a stacked state into one state per network (layers axis).
fn split_state(state: Option<&RnnState>, nets: usize) -> Vec<Option<RnnState>> {
    match state {
        None => (0..nets).map(|_| None).collect(),
        Some(s) if nets == 1 => vec![Some(RnnState {
            h: s.h.shallow_clone(),
            c: s.c.as_ref().map(Tensor::shallow_clone),
        })],
        Some(s) => {
            let hs = s.h.chunk(nets as i64, 0);
            let cs = s.c.as_ref().map(|c| c.chunk(nets as i64, 0));
            hs.into_iter()
                .enumerate()
                .map(|(i, h)| {
                    Some(RnnState {
                        h,
                        c: cs.as_ref().map(|c| c[i].shallow_clone()),
                    })
                })
                .collect()
        }
    }
}

/// Stacks per-network states on the layers axis.
fn join_states(states: Vec<RnnState>) -> Option<RnnState> {
    match states.len() {
        0 => None,
        1 => states.into_iter().next(),
        _ => {
            let hs: Vec<&Tensor> = states.iter().map(|s| &s.h).collect();
            let cs: Option<Vec<&Tensor>> = states.iter().map(|s| s.c.as_ref()).collect();
            Some(RnnState {
                h: Tensor::cat(&hs, 0),
                c: cs.map(|c| Tensor::cat(&c, 0)),
            })
        }
    }
}

/// Tensor names and shapes from a safetensors file's header (8-byte little-endian length, then
/// JSON), without reading the tensor data.
fn safetensors_shapes(path: &Path) -> Result<BTreeMap<String, Vec<i64>>, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| format!("no safetensors header: {e}"))?;
    let len = u64::from_le_bytes(len);
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    if len > file_len.saturating_sub(8) {
        return Err(format!(
            "header length {len} exceeds the file ({file_len} bytes)"
        ));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| format!("truncated safetensors header: {e}"))?;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("safetensors header is not JSON: {e}"))?;
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, entry)| {
            let shape = entry["shape"]
                .as_array()
                .and_then(|dims| dims.iter().map(serde_json::Value::as_i64).collect())
                .ok_or_else(|| format!("{name}: no shape in the header"))?;
            Ok((name, shape))
        })
        .collect()
}
