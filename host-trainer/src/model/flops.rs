//! Parameters and forward multiply-adds of a network, counted analytically from its
//! [`NetworkConfig`] (no network is built), layer by layer as [`super::backbone`],
//! [`super::rnn`] and the head of [`super`] build it.
//!
//! A *multiply-add* (MAC) is one `a · b + c`; GPU data sheets count it as 2 FLOPs. Counted: every
//! convolution (`out_side² · out_c · in_c · k²`), fully connected layer (`in · out`) and the
//! recurrent layers' matrix products (`G · H · (I + H)` per frame and layer, `G` = 3 gates for the
//! GRU, 4 for the LSTM). Left out, as in the usual published figures (VGG-16 ≈ 15.5 G, ResNet-50
//! ≈ 4.1 G multiply-adds per 224 px image): biases, activations, pooling, BatchNorm, the layer
//! normalisation and the gates' element-wise arithmetic, together well under 1 % of the total for
//! these networks.

use super::backbone::{scaled, vgg_feature_side};
use super::{Architecture, Backbone, Cell, LANDMARK_DIM, NetworkConfig, Outputs};

/// Trainable parameters and forward multiply-adds per frame of (part of) a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Cost {
    /// Trainable parameters (BatchNorm running statistics and the landmark statistics are
    /// buffers, not counted).
    pub parameters: u64,
    /// Multiply-adds of one frame's forward pass.
    pub macs: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost {
            parameters: self.parameters + other.parameters,
            macs: self.macs + other.macs,
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, other: Cost) {
        *self = *self + other;
    }
}

/// The cost of a network by part (for per-dimension outputs: of both networks together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct NetworkCost {
    /// Convolutional backbone.
    pub backbone: Cost,
    /// `head.fc*` layers.
    pub head: Cost,
    /// Recurrent layers (zero for a CNN).
    pub recurrent: Cost,
    /// Output layer.
    pub output: Cost,
}

impl NetworkCost {
    /// All parts together.
    pub fn total(&self) -> Cost {
        self.backbone + self.head + self.recurrent + self.output
    }
}

fn conv(side: i64, in_c: i64, out_c: i64, k: i64, bias: bool) -> Cost {
    Cost {
        parameters: (k * k * in_c * out_c + if bias { out_c } else { 0 }) as u64,
        macs: (side * side * out_c * in_c * k * k) as u64,
    }
}

fn linear(inputs: i64, outputs: i64) -> Cost {
    Cost {
        parameters: (inputs * outputs + outputs) as u64,
        macs: (inputs * outputs) as u64,
    }
}

/// VGG-16's conv part ([`super::backbone::Vgg`]) at `width` and `input_size` px: thirteen 3×3
/// convolutions with bias, five 2×2 max pools. Returns the cost and the feature side before the
/// final average pool.
pub fn vgg16(width: f64, input_size: u32) -> (Cost, i64) {
    const BLOCKS: [(i64, usize); 5] = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)];
    let mut side = i64::from(input_size);
    let mut in_c = 3;
    let mut cost = Cost::default();
    for (channels, convs) in BLOCKS {
        let out_c = scaled(channels, width);
        for _ in 0..convs {
            cost += conv(side, in_c, out_c, 3, true);
            in_c = out_c;
        }
        side /= 2;
    }
    debug_assert_eq!(side, vgg_feature_side(i64::from(input_size)));
    (cost, side)
}

/// ResNet-50's conv part ([`super::backbone::ResNet50`], torchvision v1.5) at `width` and
/// `input_size` px, BatchNorm weight and bias included in the parameters.
pub fn resnet50(width: f64, input_size: u32) -> Cost {
    let out_side = |s: i64, k: i64, stride: i64, pad: i64| (s + 2 * pad - k) / stride + 1;
    let bn = |c: i64| Cost {
        parameters: 2 * c as u64,
        macs: 0,
    };
    let stem = scaled(64, width);
    let mut side = out_side(i64::from(input_size), 7, 2, 3);
    let mut cost = conv(side, 3, stem, 7, false) + bn(stem);
    side = out_side(side, 3, 2, 1);
    let mut in_c = stem;
    for (count, base, stride) in [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)] {
        let w = scaled(base, width);
        for j in 0..count {
            let s = if j == 0 { stride } else { 1 };
            let next = out_side(side, 3, s, 1);
            cost += conv(side, in_c, w, 1, false) + bn(w);
            cost += conv(next, w, w, 3, false) + bn(w);
            cost += conv(next, w, 4 * w, 1, false) + bn(4 * w);
            if s != 1 || in_c != 4 * w {
                cost += conv(next, in_c, 4 * w, 1, false) + bn(4 * w);
            }
            side = next;
            in_c = 4 * w;
        }
    }
    cost
}

/// One stack of `layers` recurrent layers of `hidden` units reading `input` features
/// ([`super::rnn::Recurrent`]): per layer `weight_ih`, `weight_hh`, both biases, and for the
/// peephole LSTM three peephole vectors.
pub fn recurrent(cell: Cell, input: i64, hidden: i64, layers: u32) -> Cost {
    let gates = match cell {
        Cell::Gru => 3,
        Cell::Lstm => 4,
    };
    let peepholes = if cell == Cell::Lstm { 3 * hidden } else { 0 };
    (0..i64::from(layers))
        .map(|k| {
            let i = if k == 0 { input } else { hidden };
            Cost {
                parameters: (gates * hidden * (i + hidden) + 2 * gates * hidden + peepholes) as u64,
                macs: (gates * hidden * (i + hidden)) as u64,
            }
        })
        .fold(Cost::default(), |a, b| a + b)
}

/// The cost of the network `config` describes: backbone, head (with the landmarks joining where
/// [`NetworkConfig::head_plan`] says), recurrent layers and output layer; twice that for
/// per-dimension outputs.
pub fn network(config: &NetworkConfig) -> NetworkCost {
    let (backbone, mut features) = match config.backbone {
        Backbone::Vgg16 | Backbone::VggFace => {
            let (cost, _) = vgg16(config.width, config.input_size);
            let channels = scaled(512, config.width);
            (cost, channels * config.pool_side() * config.pool_side())
        }
        Backbone::Resnet50 => (
            resnet50(config.width, config.input_size),
            4 * scaled(512, config.width),
        ),
    };
    let plan = config.head_plan();
    let mut head = Cost::default();
    for (k, &units) in plan.fcs.iter().enumerate() {
        if plan.landmarks_at == Some(k) {
            features += LANDMARK_DIM;
        }
        head += linear(features, units);
        features = units;
    }
    if plan.landmarks_at == Some(plan.fcs.len()) {
        features += LANDMARK_DIM;
    }
    let mut recurrent_cost = Cost::default();
    if config.kind == Architecture::CnnRnn {
        let hidden = i64::from(config.hidden);
        recurrent_cost = recurrent(config.cell, features, hidden, config.layers);
        features = hidden;
    }
    let output = linear(features, plan.outputs);
    let nets = match config.outputs {
        Outputs::Joint => 1,
        Outputs::PerDimension => 2,
    };
    let times = |c: Cost| Cost {
        parameters: c.parameters * nets,
        macs: c.macs * nets,
    };
    NetworkCost {
        backbone: times(backbone),
        head: times(head),
        recurrent: times(recurrent_cost),
        output: times(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    #[test]
    fn a_small_cnn_gru_costs_what_the_hand_count_says() {
        // 1/16-width VGG-16 (channels 4, 8, 16, 32, 32) at 32 px, GRU 8 × 1 with landmarks.
        let config = NetworkConfig {
            backbone: Backbone::Vgg16,
            width: 0.0625,
            input_size: 32,
            hidden: 8,
            layers: 1,
            ..NetworkConfig::default()
        };
        let convs = 32 * 32 * 9 * (3 * 4 + 4 * 4)        // block 1 at 32 px
            + 16 * 16 * 9 * (4 * 8 + 8 * 8)             // block 2 at 16 px
            + 8 * 8 * 9 * (8 * 16 + 16 * 16 + 16 * 16)  // block 3 at 8 px
            + 4 * 4 * 9 * (16 * 32 + 32 * 32 + 32 * 32) // block 4 at 4 px
            + 2 * 2 * 9 * (3 * 32 * 32); // block 5 at 2 px → 1 px: global pool, 32 features
        assert_eq!(convs, 1_327_104);
        let fc1 = 32 * 256; // head.fc1: 4096/16 units
        let gru = 3 * 8 * (256 + 136) + 3 * 8 * 8; // landmarks join the GRU's input
        let out = 8 * 2;
        let cost = network(&config);
        assert_eq!(cost.backbone.macs, convs);
        assert_eq!(cost.head.macs, fc1);
        assert_eq!(cost.recurrent.macs, gru);
        assert_eq!(cost.output.macs, out);
        assert_eq!(cost.total().macs, 1_327_104 + 8_192 + 9_600 + 16);
        // Two networks for per-dimension outputs, one output each.
        let separate = network(&NetworkConfig {
            outputs: Outputs::PerDimension,
            ..config
        });
        assert_eq!(separate.total().macs, 2 * (convs + fc1 + gru + 8));
    }

    #[test]
    fn full_size_backbones_match_the_published_figures() {
        // VGG-16 with its ImageNet classifier (25088 → 4096 → 4096 → 1000): 15.47 G
        // multiply-adds and 138 357 544 parameters per 224 px image (torchvision).
        let (vgg, side) = vgg16(1.0, 224);
        assert_eq!(side, 7);
        assert_eq!(vgg.parameters, 14_714_688, "torchvision vgg16().features");
        let classifier = linear(512 * 7 * 7, 4096) + linear(4096, 4096) + linear(4096, 1000);
        let whole = vgg + classifier;
        assert_eq!(whole.parameters, 138_357_544);
        let gmacs = whole.macs as f64 / 1e9;
        assert!((gmacs - 15.47).abs() < 0.01, "VGG-16: {gmacs} GMAC");
        // ResNet-50 with its 2048 → 1000 classifier: 25 557 032 parameters, ≈ 4.1 G multiply-adds.
        let resnet = resnet50(1.0, 224) + linear(2048, 1000);
        assert_eq!(resnet.parameters, 25_557_032);
        let gmacs = resnet.macs as f64 / 1e9;
        assert!((gmacs - 4.09).abs() < 0.03, "ResNet-50: {gmacs} GMAC");
    }

    #[test]
    fn the_parameter_count_equals_the_built_networks() {
        let small = NetworkConfig {
            width: 0.0625,
            input_size: 48,
            hidden: 12,
            ..NetworkConfig::default()
        };
        let variants = [
            small.clone(),
            NetworkConfig {
                landmarks: false,
                cell: Cell::Lstm,
                layers: 1,
                ..small.clone()
            },
            NetworkConfig {
                kind: Architecture::Cnn,
                ..small.clone()
            },
            NetworkConfig {
                kind: Architecture::Cnn,
                backbone: Backbone::Resnet50,
                ..small.clone()
            },
            NetworkConfig {
                kind: Architecture::Cnn,
                backbone: Backbone::Resnet50,
                landmarks: false,
                ..small.clone()
            },
            NetworkConfig {
                backbone: Backbone::Resnet50,
                outputs: Outputs::PerDimension,
                ..small.clone()
            },
            NetworkConfig {
                input_size: 224,
                width: 0.125,
                ..small
            },
        ];
        for config in variants {
            let model = Model::new(&config, tch::Device::Cpu).unwrap();
            let built: i64 = model
                .trainable_parameters()
                .iter()
                .map(|(_, t)| t.numel() as i64)
                .sum();
            assert_eq!(
                network(&config).total().parameters,
                built as u64,
                "{config:?}"
            );
        }
    }
}
