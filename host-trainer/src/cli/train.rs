//! `affect-train train`: trains a network on a dataset directory into a run directory, with a
//! progress bar, checkpoints (also on Ctrl-C) and `--resume`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use affect_trainer::train::config::TrainConfig;
use affect_trainer::train::{Outcome, RunDir, TrainError, TrainOptions, dataset, train};
use anyhow::Context;

use super::bad_input;

/// Flags of `affect-train train`.
#[derive(clap::Args)]
pub struct Args {
    /// Dataset directory (Aff-Wild2 layout, e.g. written by `affect-train synth`); recorded in
    /// the run as `data.root`. With `--resume`, defaults to the recorded one.
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// New run directory (config.toml, metrics.jsonl, checkpoint/, best/).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Training config (TOML); unset keys keep their defaults.
    #[arg(long, conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set network.cell=lstm` (repeatable; with `--resume`,
    /// e.g. `--set schedule.steps=8000` to train longer).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,
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
            (args.out.clone().expect("clap requires --out"), config)
        }
    };
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
        Some(dataset::videos(&data, &config.data.validation_split, &config).map_err(bad_input)?)
    };
    let options = TrainOptions {
        resume: args.resume.is_some(),
        progress: true,
        stop,
    };
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
    if let Some(best) = summary.best {
        println!(
            "{}",
            serde_json::json!({"best_step": best.step, "mean_ccc": best.mean_ccc, "validation": best.validation})
        );
    }
    Ok(())
}
