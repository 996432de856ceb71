//! Training: Adam on the CCC / MSE loss, validation, checkpoints, exact resume.
//!
//! # Run directory
//! ```text
//! RUN/config.toml                      the full TrainConfig (network, optimiser, data, …)
//! RUN/metrics.jsonl                    one JSON object per line: {"step","lr","loss",
//!                                      "grad_norm","pred_mean":[v,a],"pred_std":[v,a]} every
//!                                      `schedule.log_every` steps (gradient norm before the
//!                                      update, batch output mean and deviation),
//!                                      {"step","validation":{…},"mean_ccc","spread":{…}} after
//!                                      each validation, {"step","collapse":{…}} when that
//!                                      validation looks collapsed (see [`collapse`])
//! RUN/checkpoint/model.safetensors     latest weights (+ BatchNorm statistics)
//! RUN/checkpoint/optimizer.safetensors Adam moments and step count
//! RUN/checkpoint/state.json            step, loader position, best score so far
//! RUN/best/model.safetensors           weights with the best validation mean CCC
//! RUN/best/score.json                  that validation score and its step
//! ```
//! Checkpoints are written every `schedule.checkpoint_every` steps, at the end, and when the
//! stop flag is raised (Ctrl-C). `checkpoint/` and `best/` are replaced through fresh
//! directories and renames ([`slot`]), so a kill at any instant leaves a complete copy of each
//! (once one was written), possibly under `checkpoint.new` / `checkpoint.old`: readers go through
//! [`RunDir::checkpoint`] and [`RunDir::best`], which find it.
//!
//! # Landmark statistics
//! Before the first step of a scenario-2 network, the first [`LANDMARK_STATISTICS_BATCHES`]
//! training batches are read for the per-coordinate landmark mean and deviation the network
//! standardises with (see [`crate::model`]); the source is then rewound, so training sees the
//! same batches as without this pass. The statistics are saved with the weights.
//!
//! # Reproducibility
//! Initialisation is seeded with `seed`; before step `n` the libtorch generator is re-seeded with
//! `seed + n + 1` (dropout), and the batch source is positioned by count. Together with the saved
//! weights, BatchNorm statistics and Adam state, a resumed CPU run continues bit for bit.
//! libtorch's generator is process-global: run one training at a time per process.

pub mod augment;
pub mod bench;
pub mod collapse;
pub mod config;
pub mod dataset;
pub mod estimate;
pub mod memory;
pub mod optim;
pub mod pretext;
pub mod slot;
pub mod source;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use affect_shared::metadata::Validation;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::eval::{EvalError, predict};
use crate::loss;
use crate::model::{ConfigError, Model, ModelError};
use collapse::{Collapse, Spread, collapse_check_start};
use config::{DeviceChoice, Dimensions, LossKind, TrainConfig};
use optim::{Adam, learning_rate};
use slot::Slot;
use source::{BatchShapeError, BatchSource, BatchTensors, SourceError, VideoSource};

/// Why training stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The network could not be built or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The data source failed.
    #[error("training data: {0}")]
    Source(SourceError),
    /// A batch has inconsistent field lengths.
    #[error(transparent)]
    Batch(#[from] BatchShapeError),
    /// Validation failed.
    #[error("validation: {0}")]
    Validation(#[from] EvalError),
    /// Reading or writing the run directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// libtorch failed while saving or loading.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The run directory cannot be started or resumed.
    #[error("run directory {}: {message}", path.display())]
    Run {
        /// Run directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint to resume from does not fit the run's configuration (e.g. a `--set`
    /// that changes the network's shape).
    #[error("cannot resume from {}: {source}", path.display())]
    Resume {
        /// Checkpoint file.
        path: PathBuf,
        /// Which tensor does not fit, and how.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged at step {step} (loss {loss}); try a lower optim.lr")]
    Diverged {
        /// Step at which it happened.
        step: u64,
        /// The loss value.
        loss: f64,
    },
}

/// Training batches read for the landmark statistics.
pub const LANDMARK_STATISTICS_BATCHES: u64 = 32;

/// Smallest standard deviation a landmark coordinate is divided by (fractions of the crop).
const MIN_LANDMARK_STD: f64 = 1e-4;

/// Per-coordinate mean and standard deviation of the landmarks of frames that count (mask 1) in
/// the next `batches` batches of `source`, which is then rewound to where it was.
pub fn landmark_statistics(
    source: &mut dyn BatchSource,
    batches: u64,
) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
    const N: usize = affect_shared::contract::LANDMARK_VALUES;
    let start = source.position();
    let (mut sum, mut square) = ([0.0f64; N], [0.0f64; N]);
    let mut frames = 0usize;
    for _ in 0..batches {
        let batch = source.next_batch().map_err(TrainError::Source)?;
        for (f, &m) in batch.mask.iter().enumerate() {
            let Some(values) = batch.landmarks.get(f * N..(f + 1) * N) else {
                break;
            };
            if m > 0.0 {
                frames += 1;
                for (i, &v) in values.iter().enumerate() {
                    sum[i] += f64::from(v);
                    square[i] += f64::from(v) * f64::from(v);
                }
            }
        }
    }
    source.seek(start).map_err(TrainError::Source)?;
    if frames < 2 {
        return Err(TrainError::Source(
            format!(
                "the first {batches} training batches hold {frames} frame(s) with a face and a \
                 label: too few for the landmark statistics"
            )
            .into(),
        ));
    }
    let n = frames as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = (0..N)
        .map(|i| {
            let var = (square[i] / n - (sum[i] / n).powi(2)).max(0.0);
            var.sqrt().max(MIN_LANDMARK_STD) as f32
        })
        .collect();
    Ok((mean, std))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    /// `checkpoint/`: the latest weights, optimiser state and `state.json` (its marker).
    pub fn checkpoint(&self) -> Slot {
        Slot::new(&self.root, "checkpoint", "state.json")
    }
    /// `best/`: the best validated weights and `score.json` (its marker).
    pub fn best(&self) -> Slot {
        Slot::new(&self.root, "best", "score.json")
    }
    /// The weights to evaluate or export: the best validated ones when validation ran, else the
    /// latest checkpoint's.
    pub fn weights(&self) -> Result<PathBuf, TrainError> {
        self.best()
            .current()
            .or_else(|| self.checkpoint().current())
            .map(|dir| dir.join("model.safetensors"))
            .ok_or_else(|| TrainError::Run {
                path: self.root.clone(),
                message: "no checkpoint yet (no complete checkpoint/ or best/)".into(),
            })
    }
}

/// Best validation score so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestScore {
    /// Step at which it was reached.
    pub step: u64,
    /// Mean CCC of the trained dimensions ([`config::Dimensions::selection_ccc`]): of valence
    /// and arousal, or of the one dimension a `loss.dimensions = "valence"` run trains.
    pub mean_ccc: f64,
    /// The full score.
    pub validation: Validation,
}

/// `checkpoint/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckpointState {
    step: u64,
    source_position: u64,
    best: Option<BestScore>,
}

/// Reads `state.json` of the checkpoint in `dir` (a copy of `run`'s checkpoint slot).
fn read_checkpoint_state(run: &RunDir, dir: &Path) -> Result<CheckpointState, TrainError> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Run {
        path: run.root().to_owned(),
        message: format!("{}: {e}", state_path.display()),
    })
}

/// The step of `run`'s complete checkpoint, `None` without one (what `resume` would continue
/// from).
pub fn checkpoint_step(run: &RunDir) -> Result<Option<u64>, TrainError> {
    run.checkpoint()
        .current()
        .map(|dir| read_checkpoint_state(run, &dir).map(|state| state.step))
        .transpose()
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All `schedule.steps` done.
    Finished,
    /// The stop flag was raised; a checkpoint was saved at this step.
    Interrupted {
        /// Steps completed.
        step: u64,
    },
}

/// Result of [`train`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Finished or interrupted.
    pub outcome: Outcome,
    /// Training loss of the last step.
    pub last_loss: Option<f64>,
    /// The last validation score.
    pub last_validation: Option<Validation>,
    /// The best validation score.
    pub best: Option<BestScore>,
    /// Set when the last validation looked collapsed ([`collapse`]): what and why.
    pub collapse: Option<Collapse>,
}

/// Run-time switches that are not part of the saved configuration.
#[derive(Debug, Default)]
pub struct TrainOptions {
    /// Continue the run in the directory from its checkpoint.
    pub resume: bool,
    /// Draw an indicatif progress bar on stderr.
    pub progress: bool,
    /// Raised (e.g. by a SIGINT handler) to checkpoint and stop after the current step.
    pub stop: std::sync::Arc<AtomicBool>,
}

/// The device `choice` selects.
pub fn select_device(choice: DeviceChoice) -> Result<Device, ConfigError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(ConfigError::new(
            "device",
            "CUDA requested but libtorch sees no CUDA device",
        )),
    }
}

/// The training loss at 0-based `step`: the MSE during `loss.warmup_steps`, then
/// [`loss_value`]. With `loss.dimensions` set to one dimension, the loss of that dimension alone:
/// the other output is replaced by its labels ([`focus`], so no gradient reaches it and its
/// terms are constant) and the two-dimension average is doubled.
pub fn loss_at_step(config: &TrainConfig, step: u64, pred: &Tensor, t: &BatchTensors) -> Tensor {
    let focused = focus(pred, &t.labels, config.loss.dimensions);
    let pred = focused.as_ref().unwrap_or(pred);
    let loss = if step < config.loss.warmup_steps {
        loss::mse_loss(pred, &t.labels, &t.mask)
    } else {
        loss_value(config, pred, t)
    };
    match config.loss.dimensions {
        Dimensions::Both => loss,
        Dimensions::Valence | Dimensions::Arousal => loss * 2.0,
    }
}

/// Predictions `[..., 2]` with the dimension `dimensions` does not train replaced by `labels`
/// (detached): its CCC is 1 and its squared error and moment gap 0, whatever the network
/// outputs, so the loss's gradient reaches only the trained dimension. `None` for
/// [`Dimensions::Both`].
pub fn focus(pred: &Tensor, labels: &Tensor, dimensions: Dimensions) -> Option<Tensor> {
    let keep: [f32; 2] = match dimensions {
        Dimensions::Both => return None,
        Dimensions::Valence => [1.0, 0.0],
        Dimensions::Arousal => [0.0, 1.0],
    };
    let keep = Tensor::from_slice(&keep)
        .to_kind(pred.kind())
        .to_device(pred.device());
    let other = 1.0 - &keep;
    Some(pred * &keep + labels.detach().to_kind(pred.kind()) * other)
}

/// The training loss of `config.loss` on predictions `[B, T, 2]` (after any warm-up); the CCC
/// term carries the moment anchor when `loss.anchor_weight` > 0.
pub fn loss_value(config: &TrainConfig, pred: &Tensor, t: &BatchTensors) -> Tensor {
    let ccc = || {
        let c = loss::ccc_loss(pred, &t.labels, &t.mask);
        if config.loss.anchor_weight > 0.0 {
            c + loss::moment_anchor(pred, &t.labels, &t.mask) * config.loss.anchor_weight
        } else {
            c
        }
    };
    match config.loss.kind {
        LossKind::Ccc => ccc(),
        LossKind::Mse => loss::mse_loss(pred, &t.labels, &t.mask),
        LossKind::Weighted => {
            ccc() + loss::mse_loss(pred, &t.labels, &t.mask) * config.loss.mse_weight
        }
    }
}

/// Builds the model of a finished or running run and loads its evaluation weights
/// ([`RunDir::weights`]).
pub fn load_run_model(run: &RunDir, device: Device) -> Result<(TrainConfig, Model), TrainError> {
    let config = TrainConfig::read(&run.config())?;
    let mut network = config.network.clone();
    // The weights come from the run; the pretrained file is not needed (or maybe not present).
    network.pretrained = None;
    network.freeze_conv = false;
    let mut model = Model::new(&network, device)?;
    model.load(&run.weights()?)?;
    Ok((config, model))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).expect("plain data serialises");
    std::fs::write(path, text).map_err(io_err(path))
}

/// The stateful part of a run.
struct Session<'a> {
    config: &'a TrainConfig,
    run: RunDir,
    model: Model,
    adam: Adam,
    step: u64,
    best: Option<BestScore>,
    metrics: std::fs::File,
}

impl Session<'_> {
    fn log(&mut self, value: serde_json::Value) -> Result<(), TrainError> {
        let path = self.run.metrics();
        writeln!(self.metrics, "{value}").map_err(io_err(&path))?;
        self.metrics.flush().map_err(io_err(&path))
    }

    fn save_checkpoint(&self, source_position: u64) -> Result<(), TrainError> {
        self.run.checkpoint().replace(self.step, |dir| {
            self.model.save(&dir.join("model.safetensors"))?;
            self.adam.save(&dir.join("optimizer.safetensors"))?;
            write_json(
                &dir.join("state.json"),
                &CheckpointState {
                    step: self.step,
                    source_position,
                    best: self.best,
                },
            )
        })
    }

    /// Scores the model on `videos`, keeps the best weights, and checks for a collapse (from
    /// [`collapse_check_start`] on; a collapse is logged as a warning and a `collapse` line in
    /// `metrics.jsonl`).
    fn validate(
        &mut self,
        videos: &dyn VideoSource,
        train_loss: Option<f64>,
    ) -> Result<Option<(Validation, Option<Collapse>)>, TrainError> {
        let chunk = self
            .config
            .batch
            .sequence_length
            .max(self.config.batch.frames) as usize;
        let predictions = predict::predict_split(&self.model, videos, chunk)?;
        let Some(score) = predict::split_scores(&predictions).pooled else {
            return Ok(None);
        };
        let mean_ccc = self
            .config
            .loss
            .dimensions
            .selection_ccc(score.valence.ccc, score.arousal.ccc);
        let spread = Spread::of(&predictions);
        self.log(serde_json::json!({
            "step": self.step,
            "validation": score,
            "mean_ccc": mean_ccc,
            "spread": spread,
        }))?;
        let collapse = spread
            .filter(|_| self.step >= collapse_check_start(self.config))
            .and_then(|spread| {
                collapse::check(self.config, self.step, &score, &spread, train_loss)
            });
        if let Some(c) = &collapse {
            tracing::warn!("{}: {c}", self.run.root().display());
            self.log(serde_json::json!({"step": self.step, "collapse": c}))?;
        }
        if self.best.is_none_or(|b| mean_ccc > b.mean_ccc) {
            let best = BestScore {
                step: self.step,
                mean_ccc,
                validation: score,
            };
            self.best = Some(best);
            self.run.best().replace(self.step, |dir| {
                self.model.save(&dir.join("model.safetensors"))?;
                write_json(&dir.join("score.json"), &best)
            })?;
        }
        Ok(Some((score, collapse)))
    }
}

/// Keeps the lines of `metrics.jsonl` up to `step` (a resumed run rewrites what came after).
fn truncate_metrics(path: &Path, step: u64) -> Result<(), TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(io_err(path))
}

/// Trains `config` in `run` on batches from `source`, validating on `validation` (best
/// checkpoint by mean CCC). With `options.resume`, continues the run from its checkpoint
/// (`config` must then be the run's saved configuration, possibly with more steps).
pub fn train(
    config: &TrainConfig,
    run: &Path,
    source: &mut dyn BatchSource,
    validation: Option<&dyn VideoSource>,
    options: &TrainOptions,
) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let run = RunDir::new(run);
    let device = select_device(config.device)?;
    if let Some(threads) = config.threads {
        tch::set_num_threads(threads as i32);
    }
    let run_error = |message: &str| TrainError::Run {
        path: run.root().to_owned(),
        message: message.to_owned(),
    };
    tch::manual_seed(config.seed as i64);
    let mut model = Model::new(&config.network, device)?;
    let mut augmented = augment::Augmented::new(source, &config.augment, config.seed);
    let source: &mut dyn BatchSource = &mut augmented;
    if config.network.landmarks && !options.resume {
        let (mean, std) = landmark_statistics(source, LANDMARK_STATISTICS_BATCHES)?;
        model.set_landmark_statistics(&mean, &std)?;
    }
    let mut adam = Adam::new(model.trainable_parameters(), &config.optim);
    let mut best = None;
    let mut step = 0;
    if options.resume {
        let dir = run.checkpoint().current().ok_or_else(|| {
            run_error("no complete checkpoint to resume from (checkpoint/state.json)")
        })?;
        let state = read_checkpoint_state(&run, &dir)?;
        step = state.step;
        best = state.best;
        source
            .seek(state.source_position)
            .map_err(TrainError::Source)?;
        // Everything the resume needs loads before the run directory is touched: a checkpoint
        // that does not fit `config` leaves the run as it was.
        let model_path = dir.join("model.safetensors");
        model.load(&model_path).map_err(|e| TrainError::Resume {
            path: model_path.clone(),
            source: Box::new(e),
        })?;
        let adam_path = dir.join("optimizer.safetensors");
        adam.load(&adam_path).map_err(|e| TrainError::Resume {
            path: adam_path.clone(),
            source: Box::new(e),
        })?;
        truncate_metrics(&run.metrics(), step)?;
    } else {
        if run.checkpoint().current().is_some() || run.metrics().exists() {
            return Err(run_error(
                "already holds a run; pass --resume to continue it or choose a new --out",
            ));
        }
        std::fs::create_dir_all(run.root()).map_err(io_err(run.root()))?;
    }
    std::fs::write(run.config(), config.to_toml()).map_err(io_err(&run.config()))?;
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.metrics())
        .map_err(io_err(&run.metrics()))?;
    let mut session = Session {
        config,
        run: run.clone(),
        model,
        adam,
        step,
        best,
        metrics,
    };

    let total = config.schedule.steps;
    let bar = progress_bar(options.progress, total, session.step);
    let started = Instant::now();
    let first_step = session.step;
    let mut summary = TrainSummary {
        outcome: Outcome::Finished,
        last_loss: None,
        last_validation: None,
        best: session.best,
        collapse: None,
    };
    let mut smoothed: Option<f64> = None;
    let mut val_text = String::new();
    while session.step < total {
        if options.stop.load(Ordering::SeqCst) {
            session.save_checkpoint(source.position())?;
            bar.abandon_with_message(format!("interrupted at step {}", session.step));
            summary.outcome = Outcome::Interrupted { step: session.step };
            summary.best = session.best;
            return Ok(summary);
        }
        let step = session.step;
        tch::manual_seed(config.seed.wrapping_add(step + 1) as i64);
        let batch = source.next_batch().map_err(TrainError::Source)?;
        let tensors = BatchTensors::new(&batch, device)?;
        let (pred, _) = session.model.forward(
            &tensors.faces,
            Some(&tensors.landmarks),
            Some(&tensors.present),
            None,
            true,
        )?;
        let loss = loss_at_step(config, step, &pred, &tensors);
        session.adam.zero_grad();
        loss.backward();
        let logging = (step + 1).is_multiple_of(config.schedule.log_every);
        let diagnostics = logging.then(|| StepDiagnostics::measure(&session.adam, &pred, &tensors));
        let lr = learning_rate(&config.optim, step);
        session.adam.step(lr);
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::Diverged {
                step: step + 1,
                loss: value,
            });
        }
        session.step += 1;
        summary.last_loss = Some(value);
        smoothed = Some(smoothed.map_or(value, |s| 0.9 * s + 0.1 * value));
        if let Some(d) = diagnostics {
            session.log(serde_json::json!({
                "step": session.step,
                "lr": lr,
                "loss": value,
                "grad_norm": d.grad_norm,
                "pred_mean": d.pred_mean,
                "pred_std": d.pred_std,
            }))?;
        }
        let at_end = session.step == total;
        let done = session.step;
        let every = |n: u64| n > 0 && done.is_multiple_of(n);
        if let Some(videos) = validation
            && (every(config.schedule.validate_every) || at_end)
            && let Some((score, collapse)) = session.validate(videos, smoothed)?
        {
            val_text = format!(
                " | val CCC v {:.3} a {:.3}",
                score.valence.ccc, score.arousal.ccc
            );
            summary.last_validation = Some(score);
            if collapse.is_some() {
                val_text.push_str(" COLLAPSED");
            }
            summary.collapse = collapse;
        }
        if every(config.schedule.checkpoint_every) || at_end {
            session.save_checkpoint(source.position())?;
        }
        bar.set_position(session.step);
        bar.set_message(format!(
            "loss {:.4}{val_text} | {:.2} steps/s",
            smoothed.unwrap_or(value),
            (session.step - first_step) as f64 / started.elapsed().as_secs_f64().max(1e-9)
        ));
    }
    bar.finish();
    summary.best = session.best;
    Ok(summary)
}

/// What a logged training step looked like: the size of the update signal and where the
/// network's outputs sit (over the batch's frames with a label and a face). An output mean or
/// deviation drifting far from the labels' (valence/arousal lie in [−1, 1]) while the loss
/// stalls is the signature of a collapsing CCC-trained run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StepDiagnostics {
    /// L2 norm of the gradient over every trainable parameter (before the update).
    grad_norm: f64,
    /// Mean prediction (valence, arousal).
    pred_mean: [f64; 2],
    /// Standard deviation of the predictions (valence, arousal).
    pred_std: [f64; 2],
}

impl StepDiagnostics {
    fn measure(adam: &Adam, pred: &Tensor, t: &BatchTensors) -> Self {
        tch::no_grad(|| {
            let grad_norm = adam.gradient_norm();
            let m = t.mask.to_kind(pred.kind()).reshape([-1, 1]);
            let x = pred.reshape([-1, 2]);
            let n = m.sum(pred.kind()).clamp_min(1.0);
            let mean = (&x * &m).sum_dim_intlist(0, false, pred.kind()) / &n;
            let dev = (&x - &mean) * &m;
            let var = (&dev * &dev).sum_dim_intlist(0, false, pred.kind()) / &n;
            let pair = |t: &Tensor| [t.double_value(&[0]), t.double_value(&[1])];
            Self {
                grad_norm,
                pred_mean: pair(&mean),
                pred_std: pair(&var.sqrt()),
            }
        })
    }
}

fn progress_bar(show: bool, total: u64, position: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(position);
    bar
}
