//! `affect-train train`: trains a network on a dataset directory into a run directory, with a
//! progress bar, checkpoints (also on Ctrl-C) and `--resume`.
//!
//! Before reading data or building the network it estimates the run's peak memory
//! ([`affect_trainer::train::estimate`]) and, on the CPU, refuses (exit code 2) when that exceeds
//! the memory available; `--no-memory-check` skips the refusal. On the CPU the run directory
//! also gets `memory.json`: the estimate, what was available, and the resident-set growth the
//! training actually caused (`VmHWM` at the end minus `VmRSS` before the network was built).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use affect_trainer::data::Annotation;
use affect_trainer::train::config::TrainConfig;
use affect_trainer::train::estimate::{self, Available, MemoryEstimate};
use affect_trainer::train::{
    Outcome, RunDir, TrainError, TrainOptions, dataset, select_device, train,
};
use anyhow::Context;

use super::bad_input;

/// Flags of `affect-train train`.
#[derive(clap::Args)]
#[command(after_help = "Named configs (--config NAME):
  cpu         CPU, 2 cores: 1/16-width VGG-16 CNN-GRU with landmarks at 48 px; learns on a
              synthetic set (affect-train synth --size 64) in minutes, a few hundred MiB.
  paper-cuda  CUDA workstation: the paper's VGG-Face CNN-GRU at 224 px, 4 clips of 100
              frames (about 43 GiB estimated: too big for a CPU machine).
The defaults (no --config) are the paper's network: use them on a GPU, not on a laptop.
Before building the network, train estimates its peak memory and refuses (exit code 2) when
the CPU has not enough available; --no-memory-check overrides.")]
pub struct Args {
    /// Dataset directory (Aff-Wild or Aff-Wild2 layout, e.g. written by `affect-train synth`);
    /// recorded in the run as `data.root`. With `--resume`, defaults to the recorded one.
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// Train on this annotation: `mean` (the annotators' mean, the release's files) or one
    /// annotator's name (Aff-Wild layout with per-annotator files, e.g. `annotator-1`). Sets
    /// `data.annotation`; validation always scores against the mean.
    #[arg(long, value_name = "mean|NAME", conflicts_with = "resume")]
    annotation: Option<Annotation>,
    /// New run directory (config.toml, metrics.jsonl, checkpoint/, best/).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Training config: a TOML file, or a shipped config by name (`cpu`, `paper-cuda`; see
    /// below); unset keys keep their defaults.
    #[arg(long, conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set network.cell=lstm` (repeatable; with `--resume`,
    /// e.g. `--set schedule.steps=8000` to train longer).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,
    /// Train even when the estimated peak memory exceeds what the machine has available.
    #[arg(long)]
    no_memory_check: bool,
}

/// What `memory.json` in the run directory records.
#[derive(serde::Serialize)]
struct MemoryReport {
    estimate: MemoryEstimate,
    estimate_total: u64,
    /// The estimate without the input batches (already resident before the network is built).
    estimate_network: u64,
    available: Option<Available>,
    /// `VmRSS` before the network was built, bytes.
    resident_before: u64,
    /// `VmHWM` after training, bytes.
    resident_peak: u64,
    /// `resident_peak − resident_before`: what the network and its training added.
    measured_growth: u64,
}

/// Estimates the run's peak memory and compares it with what the device has; an error (bad
/// input, exit code 2) when it does not fit and `enforce` is set. Returns the estimate and, on
/// the CPU, what was available.
fn check_memory(
    config: &TrainConfig,
    enforce: bool,
) -> anyhow::Result<(MemoryEstimate, Option<Available>)> {
    let estimate = estimate::estimate(config);
    let device = select_device(config.device).map_err(bad_input)?;
    if device.is_cuda() {
        tracing::info!(
            "estimated peak memory {}; not checked: libtorch (tch) exposes no free-memory query \
             for CUDA devices",
            estimate::gib(estimate.total())
        );
        return Ok((estimate, None));
    }
    let available = estimate::available_cpu_memory()?;
    tracing::info!(
        "estimated peak memory {} of {} available",
        estimate::gib(estimate.total()),
        estimate::gib(available.bytes)
    );
    match estimate::check(config, estimate, available.clone()) {
        Err(shortage) if enforce => Err(bad_input(shortage)),
        Err(shortage) => {
            tracing::warn!("--no-memory-check: training anyway; {shortage}");
            Ok((estimate, Some(available)))
        }
        Ok(()) => Ok((estimate, Some(available))),
    }
}

/// Loads the data, trains, and reports the best validation score.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (run, config) = match &args.resume {
        Some(run) => {
            let saved = RunDir::new(run).config();
            let mut sets = Vec::new();
            let base = TrainConfig::read(&saved)
                .map_err(bad_input)
                .with_context(|| format!("reading {}", saved.display()))?;
            sets.extend(args.sets.iter().cloned());
            let config = if sets.is_empty() {
                base
            } else {
                TrainConfig::load(Some(&saved), &sets).map_err(bad_input)?
            };
            (run.clone(), config)
        }
        None => {
            let mut config =
                TrainConfig::load(args.config.as_deref(), &args.sets).map_err(bad_input)?;
            let data = args.data.as_deref().expect("clap requires --data");
            let absolute = std::fs::canonicalize(data)
                .map_err(|e| bad_input(anyhow::anyhow!("dataset {}: {e}", data.display())))?;
            config.data.root = Some(absolute);
            if let Some(annotation) = &args.annotation {
                config.data.annotation = annotation.clone();
            }
            (args.out.clone().expect("clap requires --out"), config)
        }
    };
    let (estimate, available) = check_memory(&config, !args.no_memory_check)?;
    let data = config
        .data
        .dataset_dir(args.data.as_deref())
        .map_err(bad_input)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    tracing::info!(
        "loading {} from {}",
        config.data.train_split,
        data.display()
    );
    let mut source = dataset::training_batches(&data, &config).map_err(bad_input)?;
    let validation = if config.data.validation_split.is_empty() {
        None
    } else {
        Some(
            dataset::videos(
                &data,
                &config.data.validation_split,
                &Annotation::Mean,
                &config,
            )
            .map_err(bad_input)?,
        )
    };
    let options = TrainOptions {
        resume: args.resume.is_some(),
        progress: true,
        stop,
    };
    let peak_reset = estimate::reset_peak();
    let before = estimate::resident();
    let summary = train(
        &config,
        &run,
        source.as_mut(),
        validation.as_deref(),
        &options,
    )
    .map_err(|e| match e {
        TrainError::Run { .. } | TrainError::Resume { .. } => bad_input(e),
        other => other.into(),
    })?;
    if let (Some(available), Some(before), Some(after)) = (available, before, estimate::resident())
    {
        // Without a reset the peak may predate the network (data loading); then it is a bound.
        let resident_before = if peak_reset { before.now } else { before.peak };
        let report = MemoryReport {
            estimate,
            estimate_total: estimate.total(),
            estimate_network: estimate.network(),
            available: Some(available),
            resident_before,
            resident_peak: after.peak,
            measured_growth: after.peak.saturating_sub(resident_before),
        };
        tracing::info!(
            "memory: estimated {} for the network, measured growth {}",
            estimate::gib(report.estimate_network),
            estimate::gib(report.measured_growth)
        );
        let path = RunDir::new(&run).root().join("memory.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match summary.outcome {
        Outcome::Finished => eprintln!(
            "finished {} steps in {}",
            config.schedule.steps,
            run.display()
        ),
        Outcome::Interrupted { step } => eprintln!(
            "interrupted at step {step}; checkpoint saved. Continue with: affect-train train --resume {}",
            run.display()
        ),
    }
    if let Some(collapse) = &summary.collapse {
        eprintln!(
            "WARNING: this run {collapse}\n(details under \"collapse\" in {})",
            RunDir::new(&run).metrics().display()
        );
    }
    if let Some(best) = summary.best {
        println!(
            "{}",
            serde_json::json!({
                "best_step": best.step,
                "mean_ccc": best.mean_ccc,
                "validation": best.validation,
                "collapsed": summary.collapse.is_some(),
            })
        );
    }
    Ok(())
}
