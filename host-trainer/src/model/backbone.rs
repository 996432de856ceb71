//! Convolutional backbones with torchvision's layer structure and parameter names, channel
//! counts scaled by the network's `width`.
//!
//! **VGG-16** (also the VGG-Face layout): `features.{i}` with torchvision indices — 3×3 convs
//! (padding 1, bias) at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, each followed by ReLU,
//! 2×2/2 max pools at 4, 9, 16, 23, 30; then an average pool to `pool × pool` (torchvision's
//! `AdaptiveAvgPool2d(7)` at 224 px; here always an exact `side / pool` window) and flatten (C,H,W
//! order): `512·width·pool²` features.
//!
//! **ResNet-50** (torchvision v1.5: stride on the 3×3 conv): `conv1` 7×7/2 pad 3 no bias, `bn1`,
//! ReLU, max pool 3×3/2 pad 1; `layer1..4` with 3, 4, 6, 3 bottlenecks of width 64, 128, 256, 512
//! (×`width`), expansion 4, stride 1, 2, 2, 2 (first block of each layer); bottleneck `j`:
//! `conv1` 1×1 → `bn1` → ReLU → `conv2` 3×3/s pad 1 → `bn2` → ReLU → `conv3` 1×1 → `bn3`, plus the
//! identity or `downsample.0` (1×1/s conv, no bias) → `downsample.1` (BN), then ReLU. Global
//! average pool and flatten: `2048·width` features. BatchNorm: eps 1e-5, momentum 0.1.

use tch::{Tensor, nn};

/// Channel count `c` scaled by `width`, at least 1.
pub fn scaled(c: i64, width: f64) -> i64 {
    ((c as f64 * width).round() as i64).max(1)
}

/// VGG-16's configuration: channel counts, `None` for a max pool.
const VGG16: [Option<i64>; 18] = [
    Some(64),
    Some(64),
    None,
    Some(128),
    Some(128),
    None,
    Some(256),
    Some(256),
    Some(256),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
];

/// Index in `features` of each VGG-16 conv, in order (torchvision numbering).
pub fn vgg16_conv_indices() -> Vec<usize> {
    let mut index = 0;
    let mut out = Vec::new();
    for layer in VGG16 {
        match layer {
            Some(_) => {
                out.push(index);
                index += 2;
            }
            None => index += 1,
        }
    }
    out
}

/// VGG-16 convolutional part.
#[derive(Debug)]
pub struct Vgg {
    convs: Vec<Option<nn::Conv2D>>,
    pool: i64,
    channels: i64,
}

impl Vgg {
    /// Builds the conv part under `path` (`path.features.{i}`), pooling the last map to
    /// `pool × pool`.
    pub fn new(path: &nn::Path, width: f64, pool: i64) -> Self {
        let features = path / "features";
        let config = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let mut index = 0;
        let mut in_c = 3;
        let mut convs = Vec::new();
        for layer in VGG16 {
            match layer {
                Some(c) => {
                    let out_c = scaled(c, width);
                    convs.push(Some(nn::conv2d(&features / index, in_c, out_c, 3, config)));
                    in_c = out_c;
                    index += 2;
                }
                None => {
                    convs.push(None);
                    index += 1;
                }
            }
        }
        Self {
            convs,
            pool,
            channels: in_c,
        }
    }

    /// Feature vector length.
    pub fn features(&self) -> i64 {
        self.channels * self.pool * self.pool
    }

    /// `[N, 3, S, S]` → `[N, features]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for conv in &self.convs {
            x = match conv {
                Some(conv) => x.apply(conv).relu(),
                None => x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            };
        }
        let side = x.size()[2];
        let window = side / self.pool;
        x.avg_pool2d(
            [window, window],
            [window, window],
            [0, 0],
            false,
            true,
            None::<i64>,
        )
        .flatten(1, -1)
    }
}

/// Side length of VGG-16's last feature map for input side `size` (five floor-halvings).
pub fn vgg_feature_side(size: i64) -> i64 {
    (0..5).fold(size, |s, _| s / 2)
}

/// Side length of ResNet-50's last feature map for input side `size`.
pub fn resnet_feature_side(size: i64) -> i64 {
    let conv = |s: i64, k: i64, stride: i64, pad: i64| (s + 2 * pad - k) / stride + 1;
    let mut s = conv(size, 7, 2, 3); // conv1
    s = conv(s, 3, 2, 1); // max pool
    for _ in 0..3 {
        s = conv(s, 3, 2, 1); // layers 2-4
    }
    s
}

fn bn(path: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        path,
        c,
        nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.0),
            ..Default::default()
        },
    )
}

fn conv(path: nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(
        path,
        i,
        o,
        k,
        nn::ConvConfig {
            stride,
            padding,
            bias: false,
            ..Default::default()
        },
    )
}

#[derive(Debug)]
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Bottleneck {
    fn new(p: &nn::Path, in_c: i64, width: i64, stride: i64) -> Self {
        let out_c = width * 4;
        let downsample = (stride != 1 || in_c != out_c).then(|| {
            let d = p / "downsample";
            (conv(&d / 0, in_c, out_c, 1, stride, 0), bn(&d / 1, out_c))
        });
        Self {
            conv1: conv(p / "conv1", in_c, width, 1, 1, 0),
            bn1: bn(p / "bn1", width),
            conv2: conv(p / "conv2", width, width, 3, stride, 1),
            bn2: bn(p / "bn2", width),
            conv3: conv(p / "conv3", width, out_c, 1, 1, 0),
            bn3: bn(p / "bn3", out_c),
            downsample,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train)
            .relu()
            .apply(&self.conv3)
            .apply_t(&self.bn3, train);
        let shortcut = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + shortcut).relu()
    }
}

/// ResNet-50 convolutional part.
#[derive(Debug)]
pub struct ResNet50 {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<Bottleneck>,
    channels: i64,
}

impl ResNet50 {
    /// Builds the conv part under `path` (torchvision names).
    pub fn new(path: &nn::Path, width: f64) -> Self {
        let stem = scaled(64, width);
        let mut in_c = stem;
        let mut blocks = Vec::new();
        for (l, (count, base, stride)) in [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]
            .into_iter()
            .enumerate()
        {
            let layer = path / format!("layer{}", l + 1);
            let w = scaled(base, width);
            for j in 0..count {
                let s = if j == 0 { stride } else { 1 };
                blocks.push(Bottleneck::new(&(&layer / j), in_c, w, s));
                in_c = w * 4;
            }
        }
        Self {
            conv1: conv(path / "conv1", 3, stem, 7, 2, 3),
            bn1: bn(path / "bn1", stem),
            blocks,
            channels: in_c,
        }
    }

    /// Feature vector length.
    pub fn features(&self) -> i64 {
        self.channels
    }

    /// `[N, 3, S, S]` → `[N, features]`; `train` selects batch statistics in BatchNorm.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in &self.blocks {
            x = block.forward(&x, train);
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

/// Either backbone.
#[derive(Debug)]
pub enum Features {
    /// VGG-16 / VGG-Face.
    Vgg(Vgg),
    /// ResNet-50.
    ResNet(Box<ResNet50>),
}

impl Features {
    /// The backbone `config` names at its width (VGG pooled to [`super::NetworkConfig::pool_side`]),
    /// parameters under `p`.
    pub fn new(p: &nn::Path, config: &super::NetworkConfig) -> Self {
        if config.backbone.is_vgg() {
            Features::Vgg(Vgg::new(p, config.width, config.pool_side()))
        } else {
            Features::ResNet(Box::new(ResNet50::new(p, config.width)))
        }
    }

    /// Feature vector length.
    pub fn features(&self) -> i64 {
        match self {
            Features::Vgg(v) => v.features(),
            Features::ResNet(r) => r.features(),
        }
    }

    /// `[N, 3, S, S]` → `[N, features]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Features::Vgg(v) => v.forward(x),
            Features::ResNet(r) => r.forward(x, train),
        }
    }
}
