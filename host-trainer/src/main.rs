//! `affect-train`: datasets, training, evaluation, scoring and ONNX export for affect models.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Train and evaluate valence/arousal regressors (Kollias et al., CVPR-W 2017).
#[derive(Parser)]
#[command(name = "affect-train", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CCC and MSE of a prediction file against a ground-truth file.
    Score(cli::score::Args),
    /// Train a CNN / CNN-RNN on a dataset (progress bar, checkpoints, --resume).
    #[cfg(feature = "torch")]
    Train(cli::train::Args),
    /// Evaluate a trained run on a split: CCC/MSE table, report.json, CSVs, plots.
    #[cfg(feature = "torch")]
    Eval(cli::eval::EvalArgs),
    /// The hand-crafted baseline: HOG (+ landmarks) and linear SVR, reported like `eval`.
    #[cfg(feature = "torch")]
    Baseline(cli::eval::BaselineArgs),
    /// Frames/s of a training step: ours (tch) against the same network in PyTorch.
    #[cfg(feature = "torch")]
    BenchTrain(cli::bench::Args),
    /// The paper's comparisons (backbone, landmarks, CNN vs CNN-RNN, cells, units, loss).
    #[cfg(feature = "torch")]
    Ablate(cli::ablate::Args),
    /// Streaming ONNX (fp32, optionally int8) of a trained run, proven equal to the network.
    #[cfg(feature = "torch")]
    Export(cli::export::Args),
    /// Synthetic dataset in the Aff-Wild2 layout (face crops, labels, landmarks).
    Synth(cli::synth::Args),
    /// Dataset tools: inspect a dataset, benchmark the loader.
    #[command(subcommand)]
    Data(cli::data::Command),
}

fn main() -> ExitCode {
    cli::init_tracing();
    let result = match Cli::parse().command {
        Command::Score(args) => cli::score::run(args),
        #[cfg(feature = "torch")]
        Command::Train(args) => cli::train::run(args),
        #[cfg(feature = "torch")]
        Command::Eval(args) => cli::eval::run(args),
        #[cfg(feature = "torch")]
        Command::Baseline(args) => cli::eval::run_baseline(args),
        #[cfg(feature = "torch")]
        Command::BenchTrain(args) => cli::bench::run(args),
        #[cfg(feature = "torch")]
        Command::Ablate(args) => cli::ablate::run(args),
        #[cfg(feature = "torch")]
        Command::Export(args) => cli::export::run(args),
        Command::Synth(args) => cli::synth::run(args),
        Command::Data(command) => cli::data::run(command),
    };
    cli::exit_code(result)
}
