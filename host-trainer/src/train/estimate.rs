//! Peak memory of a training run, estimated from its configuration alone (no tensor is
//! allocated), and what the machine has available; `affect-train train` compares the two before
//! building the network and refuses a run that cannot fit.
//!
//! # What is counted (float32, 4 bytes a value)
//! - **parameters** of every network (both for per-dimension outputs), plus BatchNorm running
//!   statistics and the landmark buffers;
//! - **gradients**: one per trainable parameter (none for a frozen conv part);
//! - **optimiser**: Adam's two moments per trainable parameter;
//! - **activations** kept for the backward pass, walked layer by layer for one frame and
//!   multiplied by the frames of a batch (`batch.sequences × batch.sequence_length` for a
//!   CNN-RNN, `batch.frames` for a CNN): ReLU outputs (which are also the next convolution's
//!   saved input), BatchNorm inputs, max-pool outputs and their int64 indices, FC outputs and
//!   dropout masks, the landmark concatenation; for the recurrent layers the input projection
//!   and the gate values of every step;
//! - **inputs**: the batch's faces, landmarks, labels and mask, held by the loader's prefetch
//!   queue, the batch being trained on and its tensor copy;
//! - **workspace**, the stated margin: during the backward pass the gradients of the largest
//!   activation and of its input are alive together ([`BACKWARD_BUFFERS`] × the largest
//!   activation of the batch), plus [`FIXED_WORKSPACE`] for libtorch's scratch buffers and
//!   allocator slack, plus [`RELATIVE_WORKSPACE`] of everything else.
//!
//! Validated against the resident-set growth of real runs by `tests/train_memory.rs`.

use std::path::Path;

use super::config::TrainConfig;
use crate::data::LoaderConfig;
use crate::model::backbone::scaled;
use crate::model::{Architecture, Backbone, Cell, Outputs};
use affect_shared::contract::LANDMARK_VALUES;

/// Bytes of a float32 value.
const FLOAT: u64 = 4;
/// Bytes of an int64 value (max-pool indices).
const INDEX: u64 = 8;

/// Activation-sized gradient buffers alive at once at the peak of the backward pass.
pub const BACKWARD_BUFFERS: u64 = 2;
/// Fixed allowance for libtorch's scratch memory (convolution workspaces, thread pools) and
/// allocator slack, bytes.
pub const FIXED_WORKSPACE: u64 = 128 << 20;
/// Allowance proportional to everything else (allocator fragmentation).
pub const RELATIVE_WORKSPACE: f64 = 0.10;

/// Estimated peak memory of one training step, in bytes, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    /// Parameters and buffers of the network(s).
    pub parameters: u64,
    /// One gradient per trainable parameter.
    pub gradients: u64,
    /// Adam's first and second moments.
    pub optimizer: u64,
    /// Activations kept for the backward pass.
    pub activations: u64,
    /// Input batches in memory (prefetch queue, current batch, its tensors).
    pub inputs: u64,
    /// The margin: backward-pass gradient buffers, libtorch scratch, fragmentation.
    pub workspace: u64,
}

impl MemoryEstimate {
    /// Sum of all parts.
    pub fn total(&self) -> u64 {
        self.parameters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.inputs
            + self.workspace
    }

    /// Everything except the input batches: what building and training the network adds to a
    /// process that already holds its data.
    pub fn network(&self) -> u64 {
        self.total() - self.inputs
    }
}

/// Running totals of one frame's forward pass through one network.
#[derive(Debug, Default)]
struct Walk {
    /// Values of trainable parameters.
    trainable: u64,
    /// Values of buffers and frozen parameters.
    fixed: u64,
    /// Bytes kept for backward, per frame.
    saved: u64,
    /// Largest single activation of a frame, bytes.
    largest: u64,
}

impl Walk {
    /// An activation of `values` floats kept for backward.
    fn keep(&mut self, values: u64) {
        self.saved += values * FLOAT;
        self.largest = self.largest.max(values * FLOAT);
    }

    /// Max-pool output of `values` floats with its int64 indices.
    fn keep_pool(&mut self, values: u64) {
        self.keep(values);
        self.saved += values * INDEX;
    }

    /// A convolution or linear layer's parameters.
    fn weights(&mut self, values: u64) {
        self.trainable += values;
    }
}

fn conv_out(side: i64, kernel: i64, stride: i64, pad: i64) -> i64 {
    (side + 2 * pad - kernel) / stride + 1
}

fn square(side: i64) -> u64 {
    (side * side) as u64
}

/// VGG-16 conv part: 3×3 convs with bias, each followed by a ReLU (its output saved), max pools.
fn walk_vgg(walk: &mut Walk, width: f64, size: i64) {
    const LAYERS: [i64; 18] = [
        64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
    ];
    let (mut side, mut in_c) = (size, 3i64);
    for channels in LAYERS {
        if channels == 0 {
            side /= 2;
            walk.keep_pool(in_c as u64 * square(side));
        } else {
            let out_c = scaled(channels, width);
            walk.weights((in_c * out_c * 9 + out_c) as u64);
            walk.keep(out_c as u64 * square(side));
            in_c = out_c;
        }
    }
}

/// conv (no bias) → BatchNorm (saves its input, the conv output) → optionally ReLU (saves its
/// output); returns the output side.
fn walk_conv_bn(
    walk: &mut Walk,
    in_c: i64,
    out_c: i64,
    kernel: i64,
    stride: i64,
    side: i64,
    relu: bool,
) -> i64 {
    let pad = kernel / 2;
    let out = conv_out(side, kernel, stride, pad);
    walk.weights((in_c * out_c * kernel * kernel + 2 * out_c) as u64);
    walk.fixed += 2 * out_c as u64;
    walk.keep(out_c as u64 * square(out));
    if relu {
        walk.keep(out_c as u64 * square(out));
    }
    out
}

/// ResNet-50 conv part (torchvision v1.5), as in [`crate::model::backbone`].
fn walk_resnet(walk: &mut Walk, width: f64, size: i64) -> i64 {
    let stem = scaled(64, width);
    let mut side = walk_conv_bn(walk, 3, stem, 7, 2, size, true);
    side = conv_out(side, 3, 2, 1);
    walk.keep_pool(stem as u64 * square(side));
    let mut in_c = stem;
    for (count, base, stride) in [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)] {
        let w = scaled(base, width);
        for j in 0..count {
            let s = if j == 0 { stride } else { 1 };
            let out_c = w * 4;
            let a = walk_conv_bn(walk, in_c, w, 1, 1, side, true);
            let b = walk_conv_bn(walk, w, w, 3, s, a, true);
            let c = walk_conv_bn(walk, w, out_c, 1, 1, b, false);
            if s != 1 || in_c != out_c {
                walk_conv_bn(walk, in_c, out_c, 1, s, side, false);
            }
            // The ReLU after the residual sum.
            walk.keep(out_c as u64 * square(c));
            side = c;
            in_c = out_c;
        }
    }
    in_c
}

/// One network's parameters and per-frame activations, with the recurrent part for
/// `sequences` clips of `steps` frames.
fn walk_network(config: &TrainConfig) -> (Walk, u64) {
    let net = &config.network;
    let size = i64::from(net.input_size);
    let mut walk = Walk::default();
    let mut features = match net.backbone {
        Backbone::Vgg16 | Backbone::VggFace => {
            walk_vgg(&mut walk, net.width, size);
            let pool = net.pool_side();
            (scaled(512, net.width) * pool * pool) as u64
        }
        Backbone::Resnet50 => walk_resnet(&mut walk, net.width, size) as u64,
    };
    if net.freeze_conv {
        // Computed without gradients: nothing is kept, the weights are not trained.
        walk.fixed += walk.trainable;
        walk.trainable = 0;
        walk.saved = 0;
    }
    // The pooled feature vector, saved as `head.fc1`'s input.
    walk.keep(features);
    let plan = net.head_plan();
    let landmarks = LANDMARK_VALUES as u64;
    let dropout = net.dropout > 0.0;
    for (k, &units) in plan.fcs.iter().enumerate() {
        if plan.landmarks_at == Some(k) {
            features += landmarks;
            walk.keep(features);
        }
        let units = units as u64;
        walk.weights(features * units + units);
        walk.keep(units);
        if dropout {
            walk.keep(units);
        }
        features = units;
    }
    if plan.landmarks_at == Some(plan.fcs.len()) {
        features += landmarks;
        walk.keep(features);
    }
    let outputs = plan.outputs as u64;
    let (sequences, steps) = config.batch_shape();
    let mut sequence_bytes = 0;
    if net.kind == Architecture::CnnRnn {
        let h = u64::from(net.hidden);
        let (gates, per_step) = match net.cell {
            // hg [G·H] (kept through its chunk), r, z, n, h − n, h'.
            Cell::Gru => (3, 3 * h + 5 * h),
            // gates [4H], i, f, g, o, c', tanh c', p⊙c products, h'.
            Cell::Lstm => (4, 4 * h + 4 * h + 2 * h + 3 * h + h),
        };
        let mut input = features;
        for _ in 0..net.layers {
            walk.weights(gates * h * (input + h) + 2 * gates * h);
            if net.cell == Cell::Lstm {
                walk.weights(3 * h);
            }
            // Input projection of every step, the step's gates, the stacked outputs and their
            // dropout mask.
            let per_frame = gates * h + per_step + h + if dropout { h } else { 0 };
            sequence_bytes += per_frame * FLOAT * (sequences * steps) as u64;
            input = h;
        }
        features = input;
    }
    walk.weights(features * outputs + outputs);
    walk.keep(outputs);
    (walk, sequence_bytes)
}

/// Estimated peak memory of training `config` (pure: reads nothing but the configuration).
pub fn estimate(config: &TrainConfig) -> MemoryEstimate {
    let nets: u64 = match config.network.outputs {
        Outputs::Joint => 1,
        Outputs::PerDimension => 2,
    };
    let (walk, sequence_bytes) = walk_network(config);
    let (sequences, steps) = config.batch_shape();
    let frames = (sequences * steps) as u64;
    let landmark_buffers = if config.network.landmarks {
        2 * LANDMARK_VALUES as u64
    } else {
        0
    };
    let trainable = nets * walk.trainable * FLOAT;
    let parameters = trainable + (nets * walk.fixed + landmark_buffers) * FLOAT;
    let activations = nets * (walk.saved * frames + sequence_bytes);
    let side = u64::from(config.network.input_size);
    let batch_values = frames * (3 * side * side + LANDMARK_VALUES as u64 + 2 + 1);
    let batches_alive = LoaderConfig::default().prefetch as u64 + 2;
    let inputs = batches_alive * batch_values * FLOAT;
    let backward = BACKWARD_BUFFERS * walk.largest * frames;
    let counted = parameters + 3 * trainable + activations + inputs;
    let workspace = backward + FIXED_WORKSPACE + (RELATIVE_WORKSPACE * counted as f64) as u64;
    MemoryEstimate {
        parameters,
        gradients: trainable,
        optimizer: 2 * trainable,
        activations,
        inputs,
        workspace,
    }
}

/// Memory a training run may use, and where the figure comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// `MemAvailable of /proc/meminfo` or the cgroup limit.
    pub source: String,
}

/// Why the available memory could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct AvailableError {
    /// The file read.
    pub path: std::path::PathBuf,
    /// What went wrong.
    pub message: String,
}

/// `MemAvailable` of a `/proc/meminfo` text, bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Room left under a cgroup v2 limit: `memory.max` (`max` = none) minus `memory.current`.
pub fn parse_cgroup(max: &str, current: &str) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?;
    let current: u64 = current.trim().parse().unwrap_or(0);
    Some(max.saturating_sub(current))
}

/// Memory available to this process on the CPU: `MemAvailable` of `/proc/meminfo`, or the room
/// under the cgroup v2 limit (`/sys/fs/cgroup/memory.max`) when that is lower.
pub fn available_cpu_memory() -> Result<Available, AvailableError> {
    let meminfo = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(meminfo).map_err(|e| AvailableError {
        path: meminfo.to_owned(),
        message: e.to_string(),
    })?;
    let bytes = parse_meminfo(&text).ok_or_else(|| AvailableError {
        path: meminfo.to_owned(),
        message: "no MemAvailable line".into(),
    })?;
    let mut available = Available {
        bytes,
        source: "MemAvailable of /proc/meminfo".into(),
    };
    let cgroup = Path::new("/sys/fs/cgroup");
    if let Ok(max) = std::fs::read_to_string(cgroup.join("memory.max")) {
        let current = std::fs::read_to_string(cgroup.join("memory.current")).unwrap_or_default();
        if let Some(room) = parse_cgroup(&max, &current)
            && room < available.bytes
        {
            available = Available {
                bytes: room,
                source: "cgroup limit /sys/fs/cgroup/memory.max minus memory.current".into(),
            };
        }
    }
    Ok(available)
}

/// The run does not fit: the estimate, what is available, and the keys that shrink it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "training this configuration needs an estimated {total} but only {available} is available \
     ({source}): parameters {parameters}, gradients {gradients}, Adam state {optimizer}, \
     activations kept for backward {activations} ({frames} frames of {input_size} px), input \
     batches {inputs}, workspace margin {workspace}. Shrink it with {keys}, `network.input_size` \
     or `network.width` (e.g. `--config cpu`), or skip this check with --no-memory-check",
    total = gib(self.estimate.total()),
    available = gib(self.available.bytes),
    source = self.available.source,
    parameters = gib(self.estimate.parameters),
    gradients = gib(self.estimate.gradients),
    optimizer = gib(self.estimate.optimizer),
    activations = gib(self.estimate.activations),
    inputs = gib(self.estimate.inputs),
    workspace = gib(self.estimate.workspace),
    keys = self.batch_keys,
)]
pub struct MemoryShortage {
    /// The estimate.
    pub estimate: MemoryEstimate,
    /// What is available.
    pub available: Available,
    /// Frames of one batch.
    pub frames: usize,
    /// Input side, pixels.
    pub input_size: u32,
    /// The batch keys that shrink the activations, as the message shows them.
    pub batch_keys: &'static str,
}

/// `bytes` as GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// `Ok` when `estimate` fits into `available`, else the shortage naming the keys of `config`
/// that shrink it.
pub fn check(
    config: &TrainConfig,
    estimate: MemoryEstimate,
    available: Available,
) -> Result<(), MemoryShortage> {
    if estimate.total() <= available.bytes {
        return Ok(());
    }
    let (sequences, steps) = config.batch_shape();
    Err(MemoryShortage {
        estimate,
        available,
        frames: sequences * steps,
        input_size: config.network.input_size,
        batch_keys: if config.network.is_recurrent() {
            "`batch.sequences`, `batch.sequence_length`"
        } else {
            "`batch.frames`"
        },
    })
}

/// Resident memory of this process, from `/proc/self/status`, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Resident {
    /// `VmRSS`: resident now.
    pub now: u64,
    /// `VmHWM`: the peak since the start or the last [`reset_peak`].
    pub peak: u64,
}

/// `VmRSS` and `VmHWM` of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Option<Resident> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(Resident {
        now: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// This process's resident memory; `None` where `/proc` is not there.
pub fn resident() -> Option<Resident> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Resets `VmHWM` to the current resident size (Linux `clear_refs` value 5); `false` when the
/// kernel refuses.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sets: &[&str]) -> TrainConfig {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        TrainConfig::load(None, &sets).unwrap()
    }

    #[test]
    fn vgg16_parameters_match_the_paper_network() {
        // torchvision's VGG-16 conv part has 14 714 688 parameters; the CNN-RNN head adds
        // fc1 (25 088 + 0 → 4096), two GRU layers and the output layer.
        let c = config(&["network.landmarks=false"]);
        let e = estimate(&c);
        let conv = 14_714_688u64;
        let fc1 = 25_088 * 4096 + 4096;
        let gru0 = 3 * 128 * (4096 + 128) + 6 * 128;
        let gru1 = 3 * 128 * (128 + 128) + 6 * 128;
        let out = 128 * 2 + 2;
        assert_eq!(e.parameters, (conv + fc1 + gru0 + gru1 + out) * 4);
        assert_eq!(e.gradients, e.parameters);
        assert_eq!(e.optimizer, 2 * e.parameters);
    }

    #[test]
    fn resnet50_parameters_match_torchvision() {
        // torchvision's ResNet-50 without `fc`: 23 508 032 trainable values, 53 120 running
        // statistics; the CNN head without landmarks: fc1 2048 → 1500, out 1500 → 2.
        let c = config(&[
            "network.backbone=\"resnet50\"",
            "network.kind=\"cnn\"",
            "network.landmarks=false",
        ]);
        let e = estimate(&c);
        let head = 2048 * 1500 + 1500 + 1500 * 2 + 2;
        assert_eq!(e.gradients, (23_508_032 + head) * 4);
        assert_eq!(e.parameters, e.gradients + 53_120 * 4);
    }

    #[test]
    fn default_config_needs_far_more_than_this_kind_of_machine() {
        let e = estimate(&TrainConfig::default());
        // 400 frames of VGG-16 at 224 px: about 70 MiB kept per frame.
        assert!(e.activations > 25 << 30, "{e:?}");
        assert!(e.total() > 30 << 30, "{e:?}");
    }

    #[test]
    fn activations_scale_with_the_batch_and_shrink_with_size_and_width() {
        let base = estimate(&config(&[]));
        let double = estimate(&config(&["batch.sequences=8"]));
        assert_eq!(double.activations, 2 * base.activations);
        assert_eq!(double.parameters, base.parameters);
        let small = estimate(&config(&["network.input_size=112"]));
        assert!(small.activations * 3 < base.activations);
        let narrow = estimate(&config(&["network.width=0.25"]));
        assert!(narrow.parameters * 10 < base.parameters);
        assert!(narrow.activations * 3 < base.activations);
        let per_dimension = estimate(&config(&["network.outputs=\"per_dimension\""]));
        // Two networks, each with one output instead of two.
        let ratio = per_dimension.activations as f64 / base.activations as f64;
        assert!((ratio - 2.0).abs() < 1e-3, "{ratio}");
    }

    #[test]
    fn shortage_names_the_keys_and_the_breakdown() {
        let c = TrainConfig::default();
        let available = Available {
            bytes: 24 << 30,
            source: "test".into(),
        };
        let message = check(&c, estimate(&c), available.clone())
            .unwrap_err()
            .to_string();
        for word in [
            "batch.sequences",
            "batch.sequence_length",
            "network.input_size",
            "network.width",
            "parameters",
            "Adam state",
            "activations",
            "24.00 GiB",
            "--no-memory-check",
        ] {
            assert!(message.contains(word), "{word} missing: {message}");
        }
        let cnn = config(&["network.kind=\"cnn\"", "batch.frames=400"]);
        let message = check(&cnn, estimate(&cnn), available)
            .unwrap_err()
            .to_string();
        assert!(message.contains("batch.frames"), "{message}");
        let small = config(&["network.width=0.0625", "network.input_size=48"]);
        let roomy = Available {
            bytes: 24 << 30,
            source: "test".into(),
        };
        assert_eq!(check(&small, estimate(&small), roomy), Ok(()));
    }

    #[test]
    fn named_configs_fit_where_they_say() {
        let load = |name: &str| TrainConfig::load(Some(Path::new(name)), &[]).unwrap();
        let cpu = load("cpu");
        assert!(cpu.network.landmarks && cpu.network.is_recurrent());
        assert!(estimate(&cpu).total() < 1 << 30, "{:?}", estimate(&cpu));
        let paper = load("paper-cuda");
        assert_eq!(paper.network.input_size, 224);
        assert_eq!(paper.batch_shape(), (4, 100));
        assert!(estimate(&paper).total() > 24 << 30);
        let missing = TrainConfig::load(Some(Path::new("gpu")), &[]).unwrap_err();
        assert!(missing.message.contains("cpu, paper-cuda"), "{missing}");
    }

    #[test]
    fn reads_status_meminfo_and_cgroup_limits() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(
            parse_status(status),
            Some(Resident {
                now: 1 << 20,
                peak: 2 << 20
            })
        );
        let own = resident().unwrap();
        assert!(own.peak >= own.now && own.now > 0);
        let meminfo = "MemTotal:       24000000 kB\nMemAvailable:   23206884 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(23_206_884 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_cgroup("max\n", "100"), None);
        assert_eq!(parse_cgroup("1000\n", "300\n"), Some(700));
        assert_eq!(parse_cgroup("1000\n", ""), Some(1000));
    }
}
