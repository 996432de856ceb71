//! Maps a trained [`Model`] (its [`NetworkConfig`] and parameters by name) onto the streaming
//! ONNX graph, reproducing the evaluation-mode forward documented in [`crate::model`]:
//! batch norm folded into the preceding convolution, dropout removed, landmarks standardised with
//! the training set's statistics and concatenated where the network joins them, recurrent layers as ONNX `GRU` / `LSTM` (with `P`) running one step.
//!
//! Graph interface ([`affect_shared::contract`], read by the edge runtime by name): inputs `face` `[N, 3, S, S]`, `landmarks`
//! `[N, 136]` (scenario 2), `h_in` `[layers, N, hidden]` and for LSTM `c_in` (CNN-RNN); outputs
//! `va` `[N, 2]` (valence, arousal), `h_out`, `c_out`. Per-dimension models hold both networks
//! side by side: `va` concatenates their outputs and the state stacks their layers (valence's
//! first), exactly like [`Model::forward_step`].

use std::collections::HashMap;

use affect_shared::contract::{C_IN, C_OUT, FACE, H_IN, H_OUT, LANDMARK_VALUES, LANDMARKS, VA};
use affect_shared::metadata::{Cell, METADATA_KEY};
use tch::{Device, Kind};
use tract_onnx::pb;

use super::onnx::{
    BatchNorm, ConvSpec, Dim, FloatTensor, GraphBuilder, OnnxError, PoolSpec, RecurrentCell,
    RecurrentLayer, Value,
};
use crate::model::{Backbone, FEATURE_NORM_EPS, Model, NetworkConfig, Outputs, backbone};

/// A recurrent network's next state in the graph: `h_out` and, for LSTM, `c_out`.
type NextState = (Value, Option<Value>);

/// Batch-norm ε of the trainer's backbones.
const BN_EPS: f64 = 1e-5;

/// Why a trained network could not be written as ONNX.
#[derive(Debug, thiserror::Error)]
pub enum NetworkExportError {
    /// The checkpoint lacks a parameter the configuration implies.
    #[error("the checkpoint has no parameter `{0}`: it does not match the run's network config")]
    MissingParameter(String),
    /// A parameter holds NaN or infinity: the exported graph would silently produce garbage.
    #[error("parameter `{0}` holds a non-finite value (diverged training?)")]
    NonFinite(String),
    /// The configuration asks for something the graph cannot reproduce exactly.
    #[error("cannot be expressed faithfully in ONNX: {0}")]
    Unsupported(String),
    /// Building the graph failed (inconsistent shapes).
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// Reading a parameter from libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Every parameter and buffer of a model as float tensors, by name.
#[derive(Debug, Clone, Default)]
pub struct Parameters(HashMap<String, FloatTensor>);

impl Parameters {
    /// Copies all variables of `model` to the CPU as f32.
    pub fn from_model(model: &Model) -> Result<Self, NetworkExportError> {
        let mut map = HashMap::new();
        for (name, tensor) in model.var_store().variables() {
            let tensor = tensor.detach().to_device(Device::Cpu).to_kind(Kind::Float);
            let dims = tensor.size().iter().map(|&d| d as usize).collect();
            let data = Vec::<f32>::try_from(&tensor.flatten(0, -1))?;
            if data.iter().any(|v| !v.is_finite()) {
                return Err(NetworkExportError::NonFinite(name));
            }
            map.insert(name.clone(), FloatTensor::new(&name, dims, data)?);
        }
        Ok(Self(map))
    }

    fn get(&self, name: &str) -> Result<&FloatTensor, NetworkExportError> {
        self.0
            .get(name)
            .ok_or_else(|| NetworkExportError::MissingParameter(name.to_owned()))
    }

    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn batch_norm(&self, prefix: &str) -> Result<BatchNorm, NetworkExportError> {
        let part =
            |p: &str| Ok::<_, NetworkExportError>(self.get(&format!("{prefix}.{p}"))?.data.clone());
        Ok(BatchNorm {
            weight: part("weight")?,
            bias: part("bias")?,
            running_mean: part("running_mean")?,
            running_var: part("running_var")?,
            eps: BN_EPS,
        })
    }

    fn recurrent_layer(
        &self,
        prefix: &str,
        cell: Cell,
    ) -> Result<RecurrentLayer, NetworkExportError> {
        let get = |p: &str| self.get(&format!("{prefix}.{p}")).cloned();
        Ok(RecurrentLayer {
            weight_ih: get("weight_ih")?,
            weight_hh: get("weight_hh")?,
            bias_ih: get("bias_ih")?,
            bias_hh: get("bias_hh")?,
            peepholes: match cell {
                Cell::Gru => None,
                Cell::Lstm => Some([get("peephole_i")?, get("peephole_f")?, get("peephole_o")?]),
            },
        })
    }
}

/// Builds one network's layers (parameters under `prefix`) and returns `(va, h, c)`.
struct NetworkGraph<'a> {
    g: &'a mut GraphBuilder,
    params: &'a Parameters,
    config: &'a NetworkConfig,
    prefix: &'a str,
}

impl NetworkGraph<'_> {
    fn name(&self, local: &str) -> String {
        format!("{}{local}", self.prefix)
    }

    fn conv(
        &mut self,
        layer: &str,
        x: &Value,
        spec: &ConvSpec,
        batch_norm: Option<&str>,
    ) -> Result<Value, NetworkExportError> {
        let name = self.name(layer);
        let weight = self.params.get(&format!("{name}.weight"))?;
        let bias_name = format!("{name}.bias");
        let bias = self
            .params
            .has(&bias_name)
            .then(|| self.params.get(&bias_name))
            .transpose()?;
        Ok(match batch_norm {
            Some(bn) => {
                let bn = self.params.batch_norm(&self.name(bn))?;
                self.g.conv_bn(&name, x, weight, bias, &bn, spec)?
            }
            None => self.g.conv(&name, x, weight, bias, spec)?,
        })
    }

    /// VGG-16: 13 conv + ReLU, 5 max pools, average pool to `pool × pool`, flatten.
    fn vgg(&mut self, face: &Value) -> Result<(Value, usize), NetworkExportError> {
        let indices = backbone::vgg16_conv_indices();
        let mut x = face.clone();
        let mut channels = 3;
        for (n, &i) in indices.iter().enumerate() {
            x = self.conv(&format!("features.{i}"), &x, &ConvSpec::new(1, 1), None)?;
            channels = self
                .params
                .get(&self.name(&format!("features.{i}.weight")))?
                .dims[0];
            x = self
                .g
                .relu(&self.name(&format!("features.{}", i + 1)), &x)?;
            // A max pool sits between convs whose indices differ by 3, and after the last conv.
            let next = indices.get(n + 1).copied();
            if next.is_none_or(|j| j == i + 3) {
                x = self.g.max_pool(
                    &self.name(&format!("features.{}", i + 2)),
                    &x,
                    &PoolSpec::new(2, 2, 0),
                )?;
            }
        }
        let side = backbone::vgg_feature_side(i64::from(self.config.input_size));
        let pool = self.config.pool_side();
        if side <= 0 || pool <= 0 || side % pool != 0 {
            return Err(NetworkExportError::Unsupported(format!(
                "VGG's last feature map ({side}×{side}) cannot be average-pooled to {pool}×{pool} \
                 with one exact window"
            )));
        }
        let window = (side / pool) as usize;
        if window > 1 {
            x = self.g.average_pool(
                &self.name("avgpool"),
                &x,
                &PoolSpec::new(window, window, 0),
                true,
            )?;
        }
        let x = self.g.flatten(&self.name("flatten"), &x, 1)?;
        Ok((x, channels * (pool * pool) as usize))
    }

    /// ResNet-50 (v1.5) with batch norms folded, global average pool, flatten.
    fn resnet(&mut self, face: &Value) -> Result<(Value, usize), NetworkExportError> {
        let mut x = self.conv("conv1", face, &ConvSpec::new(2, 3), Some("bn1"))?;
        x = self.g.relu(&self.name("relu"), &x)?;
        x = self
            .g
            .max_pool(&self.name("maxpool"), &x, &PoolSpec::new(3, 2, 1))?;
        let mut channels = 0;
        for (l, (count, stride)) in [(3, 1), (4, 2), (6, 2), (3, 2)].into_iter().enumerate() {
            for j in 0..count {
                let b = format!("layer{}.{j}", l + 1);
                let s = if j == 0 { stride } else { 1 };
                let y = self.conv(
                    &format!("{b}.conv1"),
                    &x,
                    &ConvSpec::new(1, 0),
                    Some(&format!("{b}.bn1")),
                )?;
                let y = self.g.relu(&self.name(&format!("{b}.relu1")), &y)?;
                let y = self.conv(
                    &format!("{b}.conv2"),
                    &y,
                    &ConvSpec::new(s, 1),
                    Some(&format!("{b}.bn2")),
                )?;
                let y = self.g.relu(&self.name(&format!("{b}.relu2")), &y)?;
                let y = self.conv(
                    &format!("{b}.conv3"),
                    &y,
                    &ConvSpec::new(1, 0),
                    Some(&format!("{b}.bn3")),
                )?;
                channels = self
                    .params
                    .get(&self.name(&format!("{b}.conv3.weight")))?
                    .dims[0];
                let shortcut = if self
                    .params
                    .has(&self.name(&format!("{b}.downsample.0.weight")))
                {
                    self.conv(
                        &format!("{b}.downsample.0"),
                        &x,
                        &ConvSpec::new(s, 0),
                        Some(&format!("{b}.downsample.1")),
                    )?
                } else {
                    x.clone()
                };
                let sum = self.g.add(&self.name(&format!("{b}.add")), &y, &shortcut)?;
                x = self.g.relu(&self.name(&format!("{b}.relu3")), &sum)?;
            }
        }
        let x = self.g.global_average_pool(&self.name("avgpool"), &x)?;
        let x = self.g.flatten(&self.name("flatten"), &x, 1)?;
        Ok((x, channels))
    }

    fn build(
        &mut self,
        face: &Value,
        landmarks: Option<&Value>,
        state: Option<(&Value, Option<&Value>, usize)>,
    ) -> Result<(Value, Option<NextState>), NetworkExportError> {
        let (mut x, features) = match self.config.backbone {
            Backbone::Vgg16 | Backbone::VggFace => self.vgg(face)?,
            Backbone::Resnet50 => self.resnet(face)?,
        };
        let plan = self.config.head_plan();
        let join = |this: &mut Self, x: Value, at: String| -> Result<Value, NetworkExportError> {
            let landmarks = landmarks.ok_or_else(|| {
                NetworkExportError::Unsupported(
                    "the network joins landmarks but has no input".into(),
                )
            })?;
            Ok(this.g.concat(&this.name(&at), &[&x, landmarks], 1)?)
        };
        let mut width = features;
        for k in 0..plan.fcs.len() {
            let fc = format!("head.fc{}", k + 1);
            if plan.landmarks_at == Some(k) {
                x = join(self, x, format!("{fc}.landmarks"))?;
                width += LANDMARK_VALUES;
            }
            let weight = self.params.get(&self.name(&format!("{fc}.weight")))?;
            if weight.dims.get(1) != Some(&width) {
                return Err(NetworkExportError::Unsupported(format!(
                    "`{}` takes {:?} inputs but the backbone (input {} px) gives {width}",
                    self.name(&fc),
                    weight.dims.get(1),
                    self.config.input_size
                )));
            }
            let bias = self.params.get(&self.name(&format!("{fc}.bias")))?;
            x = self.g.gemm(&self.name(&fc), &x, weight, bias)?;
            x = self.g.relu(&self.name(&format!("{fc}.relu")), &x)?;
            width = weight.dims[0];
        }
        if self.config.is_recurrent() && self.config.feature_norm {
            x = self.g.layer_norm(
                &self.name("rnn.feature_norm"),
                &x,
                width,
                FEATURE_NORM_EPS as f32,
            )?;
        }
        if plan.landmarks_at == Some(plan.fcs.len()) {
            x = join(self, x, "rnn.landmarks".into())?;
        }
        let mut next_state = None;
        if self.config.is_recurrent() {
            let (h_in, c_in, first) = state.ok_or_else(|| {
                NetworkExportError::Unsupported("a recurrent network needs state inputs".into())
            })?;
            let layers = (0..self.config.layers as usize)
                .map(|k| {
                    self.params
                        .recurrent_layer(&self.name(&format!("rnn.l{k}")), self.config.cell)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let cell = match self.config.cell {
                Cell::Gru => RecurrentCell::Gru,
                Cell::Lstm => RecurrentCell::Lstm,
            };
            let out = self
                .g
                .recurrent(&self.name("rnn"), cell, &x, h_in, c_in, first, &layers)?;
            x = out.y;
            next_state = Some((out.h, out.c));
        }
        let va = self.g.gemm(
            &self.name("out"),
            &x,
            self.params.get(&self.name("out.weight"))?,
            self.params.get(&self.name("out.bias"))?,
        )?;
        Ok((va, next_state))
    }
}

/// The streaming fp32 graph of a network, with `metadata_json` under
/// [`METADATA_KEY`] in `metadata_props`.
pub fn streaming_graph(
    config: &NetworkConfig,
    params: &Parameters,
    metadata_json: &str,
) -> Result<pb::ModelProto, NetworkExportError> {
    config
        .validate("network")
        .map_err(|e| NetworkExportError::Unsupported(e.to_string()))?;
    let mut g = GraphBuilder::new();
    let size = config.input_size as usize;
    let face = g.input(
        FACE,
        &[
            Dim::Batch,
            Dim::Fixed(3),
            Dim::Fixed(size),
            Dim::Fixed(size),
        ],
    )?;
    let landmarks = config
        .landmarks
        .then(|| g.input(LANDMARKS, &[Dim::Batch, Dim::Fixed(LANDMARK_VALUES)]))
        .transpose()?
        .map(|raw| {
            g.standardise(
                LANDMARKS,
                &raw,
                params.get("landmarks.mean")?,
                params.get("landmarks.std")?,
            )
            .map_err(NetworkExportError::from)
        })
        .transpose()?;
    let prefixes: &[&str] = match config.outputs {
        Outputs::Joint => &[""],
        Outputs::PerDimension => &["valence.", "arousal."],
    };
    let layers = config.layers as usize;
    let state_dims = [
        Dim::Fixed(layers * prefixes.len()),
        Dim::Batch,
        Dim::Fixed(config.hidden as usize),
    ];
    let (h_in, c_in) = if config.is_recurrent() {
        let h = g.input(H_IN, &state_dims)?;
        let c = (config.cell == Cell::Lstm)
            .then(|| g.input(C_IN, &state_dims))
            .transpose()?;
        (Some(h), c)
    } else {
        (None, None)
    };
    let (mut outputs, mut hs, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    for (j, prefix) in prefixes.iter().enumerate() {
        let mut net = NetworkGraph {
            g: &mut g,
            params,
            config,
            prefix,
        };
        let state = h_in.as_ref().map(|h| (h, c_in.as_ref(), j * layers));
        let (va, next) = net.build(&face, landmarks.as_ref(), state)?;
        outputs.push(va);
        if let Some((h, c)) = next {
            hs.push(h);
            cs.extend(c);
        }
    }
    let va = match &outputs[..] {
        [joint] => joint.clone(),
        parts => g.concat("va.concat", &parts.iter().collect::<Vec<_>>(), 1)?,
    };
    g.output(VA, &va, &[Dim::Batch, Dim::Fixed(2)])?;
    let mut stack = |states: &[Value], name: &str| -> Result<(), OnnxError> {
        let value = match states {
            [single] => single.clone(),
            parts => g.concat(
                &format!("{name}.concat"),
                &parts.iter().collect::<Vec<_>>(),
                0,
            )?,
        };
        g.output(name, &value, &state_dims)
    };
    if !hs.is_empty() {
        stack(&hs, H_OUT)?;
    }
    if !cs.is_empty() {
        stack(&cs, C_OUT)?;
    }
    Ok(g.finish(
        "affect_streaming",
        &[(METADATA_KEY.to_owned(), metadata_json.to_owned())],
    ))
}
