//! Training-step throughput of our tch network against the same network in PyTorch, measured in
//! one run with the same thread count, weights and batch (`affect-train bench-train`).
//!
//! The Rust side saves its initial weights and a random batch as safetensors; the Python twin
//! (`tests/oracles/torch_bench_train.py`) rebuilds the network with the same parameter names,
//! loads them (refusing any name mismatch), checks that its first loss equals ours, and times the
//! same number of steps (forward, CCC loss, backward, Adam). Dropout is off on both sides.

use affect_shared::contract::LANDMARK_VALUES;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::config::{LossKind, TrainConfig};
use super::optim::{Adam, learning_rate};
use super::source::BatchTensors;
use super::{TrainError, loss_value};
use crate::model::{Architecture, Model, Outputs};

/// Relative difference of the first-step losses above which the two sides are not the same
/// network and loss (float rounding gives ~1e-7).
const FIRST_LOSS_TOLERANCE: f64 = 1e-4;

/// Result of one comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    /// Frames per training step.
    pub frames_per_step: usize,
    /// Timed steps on each side.
    pub steps: usize,
    /// Intra-op threads on each side.
    pub threads: u32,
    /// Our frames per second.
    pub tch_frames_per_second: f64,
    /// PyTorch's frames per second.
    pub torch_frames_per_second: f64,
    /// `tch / torch` (≥ 1: we are at least as fast).
    pub ratio: f64,
    /// Loss of the first step on our side …
    pub tch_first_loss: f64,
    /// … and on PyTorch's (equal up to float rounding: proves the same network and batch).
    pub torch_first_loss: f64,
    /// Loss of the last step on our side …
    pub tch_last_loss: f64,
    /// … and on PyTorch's (close: the same optimiser trajectory, up to rounding drift).
    pub torch_last_loss: f64,
}

#[derive(Debug, Deserialize)]
struct TorchOutput {
    frames_per_second: f64,
    first_loss: f64,
    last_loss: f64,
}

/// Runs the comparison; `python` runs `script` (the PyTorch twin); `work` holds the exchange
/// files.
pub fn bench_train(
    config: &TrainConfig,
    steps: usize,
    warmup: usize,
    threads: u32,
    python: &Path,
    script: &Path,
    work: &Path,
) -> Result<BenchResult, TrainError> {
    if config.network.outputs != Outputs::Joint || config.network.pretrained.is_some() {
        return Err(TrainError::Config(crate::model::ConfigError::new(
            "network.outputs",
            "bench-train compares joint-output networks with random initialisation",
        )));
    }
    let mut timer = StepTimer::new(config, threads)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(work).map_err(io(work))?;
    let weights = work.join("weights.safetensors");
    let batch_file = work.join("batch.safetensors");
    timer.model.save(&weights)?;
    let batch = &timer.batch;
    Tensor::write_safetensors(
        &[
            ("faces", &batch.faces),
            ("landmarks", &batch.landmarks),
            ("labels", &batch.labels),
            ("mask", &batch.mask),
        ],
        &batch_file,
    )?;

    let tch = time_steps(&mut timer, steps, warmup)?;
    let config = &timer.config;
    let (b, t) = config.batch_shape();
    let frames_per_step = b * t;

    let plan = config.network.head_plan();
    let n = &config.network;
    let spec = serde_json::json!({
        "network": {
            "backbone": n.backbone.name(),
            "kind": if n.kind == Architecture::Cnn { "cnn" } else { "cnn_rnn" },
            "cell": match n.cell { crate::model::Cell::Gru => "gru", crate::model::Cell::Lstm => "lstm" },
            "hidden": n.hidden,
            "layers": n.layers,
            "width": n.width,
            "pool": n.pool_side(),
            "fcs": plan.fcs,
            "landmarks_at": plan.landmarks_at,
            "outputs": plan.outputs,
            "feature_norm": n.feature_norm && n.kind == Architecture::CnnRnn,
        },
        "threads": threads,
        "steps": steps,
        "warmup": warmup,
        "loss": {
            "kind": match config.loss.kind {
                LossKind::Ccc => "ccc",
                LossKind::Mse => "mse",
                LossKind::Weighted => "weighted",
            },
            "anchor_weight": config.loss.anchor_weight,
            "mse_weight": config.loss.mse_weight,
        },
        "lr": learning_rate(&config.optim, 0),
        "weight_decay": config.optim.weight_decay,
        "weights": weights,
        "batch": batch_file,
    });
    let spec_path: PathBuf = work.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).map_err(io(&spec_path))?;
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(&spec_path)
        .output()
        .map_err(io(python))?;
    if !output.status.success() {
        return Err(TrainError::Run {
            path: script.to_owned(),
            message: format!(
                "PyTorch twin failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let torch: TorchOutput = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| TrainError::Run {
            path: script.to_owned(),
            message: format!("unexpected output: {stdout}"),
        })?;
    if (tch.first_loss - torch.first_loss).abs()
        > FIRST_LOSS_TOLERANCE * tch.first_loss.abs().max(1.0)
    {
        return Err(TrainError::Run {
            path: script.to_owned(),
            message: format!(
                "the PyTorch twin's first loss {} differs from ours {}: it does not build the \
                 same network or loss for this configuration, so its time would not be comparable",
                torch.first_loss, tch.first_loss
            ),
        });
    }
    Ok(BenchResult {
        frames_per_step,
        steps,
        threads,
        tch_frames_per_second: tch.frames_per_second,
        torch_frames_per_second: torch.frames_per_second,
        ratio: tch.frames_per_second / torch.frames_per_second,
        tch_first_loss: tch.first_loss,
        torch_first_loss: torch.first_loss,
        tch_last_loss: tch.last_loss,
        torch_last_loss: torch.last_loss,
    })
}

/// Rate and losses of timed training steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepRate {
    /// Frames per second consumed by the training step.
    pub frames_per_second: f64,
    /// Loss of the first (untimed) step.
    pub first_loss: f64,
    /// Loss of the last timed step.
    pub last_loss: f64,
}

/// Frames/s of our training step (forward, loss, backward, Adam) for `config`'s network and
/// batch shape on the CPU with `threads` intra-op threads, on a random batch.
pub fn training_step_rate(
    config: &TrainConfig,
    steps: usize,
    warmup: usize,
    threads: u32,
) -> Result<StepRate, TrainError> {
    time_steps(&mut StepTimer::new(config, threads)?, steps, warmup)
}

/// A network, its optimiser and a random batch of its configuration's shape on the CPU, ready
/// to time single training steps (forward, loss, backward, Adam at the first step's learning
/// rate). Several timers can take turns, so contention on a shared CPU hits them alike.
#[derive(Debug)]
pub struct StepTimer {
    config: TrainConfig,
    model: Model,
    batch: BatchTensors,
    adam: Adam,
    lr: f64,
}

impl StepTimer {
    /// Builds `config`'s network without dropout, seeded, with `threads` intra-op threads.
    pub fn new(config: &TrainConfig, threads: u32) -> Result<Self, TrainError> {
        let (config, model) = bench_model(config, threads)?;
        let batch = random_batch(&config);
        let adam = Adam::new(model.trainable_parameters(), &config.optim);
        let lr = learning_rate(&config.optim, 0);
        Ok(Self {
            config,
            model,
            batch,
            adam,
            lr,
        })
    }

    /// One training step: its loss and wall-clock seconds.
    pub fn step(&mut self) -> Result<(f64, f64), TrainError> {
        let started = Instant::now();
        let b = &self.batch;
        let (pred, _) =
            self.model
                .forward(&b.faces, Some(&b.landmarks), Some(&b.present), None, true)?;
        let loss = loss_value(&self.config, &pred, b);
        self.adam.zero_grad();
        loss.backward();
        self.adam.step(self.lr);
        let value = loss.double_value(&[]);
        Ok((value, started.elapsed().as_secs_f64()))
    }
}

/// `config` without dropout (so runs are comparable), validated, and its network seeded on the
/// CPU with `threads` intra-op threads.
fn bench_model(config: &TrainConfig, threads: u32) -> Result<(TrainConfig, Model), TrainError> {
    let mut config = config.clone();
    config.network.dropout = 0.0;
    config.validate()?;
    tch::set_num_threads(threads as i32);
    tch::manual_seed(config.seed as i64);
    let model = Model::new(&config.network, Device::Cpu)?;
    Ok((config, model))
}

/// A random batch of `config`'s shape.
fn random_batch(config: &TrainConfig) -> BatchTensors {
    let (b, t) = config.batch_shape();
    let s = i64::from(config.network.input_size);
    let opts = (Kind::Float, Device::Cpu);
    let (bi, ti) = (b as i64, t as i64);
    BatchTensors {
        faces: Tensor::randn([bi, ti, 3, s, s], opts),
        landmarks: Tensor::rand([bi, ti, LANDMARK_VALUES as i64], opts),
        labels: Tensor::rand([bi, ti, 2], opts) * 2.0 - 1.0,
        mask: Tensor::ones([bi, ti], opts),
        present: Tensor::ones([bi, ti], opts),
    }
}

/// One untimed step, `warmup` more, then `steps` timed ones.
fn time_steps(timer: &mut StepTimer, steps: usize, warmup: usize) -> Result<StepRate, TrainError> {
    let (first_loss, _) = timer.step()?;
    for _ in 0..warmup {
        timer.step()?;
    }
    let mut last_loss = first_loss;
    let mut seconds = 0.0;
    for _ in 0..steps {
        let (loss, s) = timer.step()?;
        last_loss = loss;
        seconds += s;
    }
    let (b, t) = timer.config.batch_shape();
    Ok(StepRate {
        frames_per_second: (b * t * steps) as f64 / seconds.max(1e-9),
        first_loss,
        last_loss,
    })
}
