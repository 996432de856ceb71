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
    /// Write a synthetic affect dataset in the Aff-Wild2 layout.
    Synth(cli::synth::Args),
    /// Inspect a dataset.
    #[command(subcommand)]
    Data(cli::data::Command),
    /// CCC and MSE of a prediction file against a ground-truth file.
    Score(cli::score::Args),
    /// Hand-crafted features + linear SVR baseline (the paper's first approach).
    Baseline(cli::baseline::Args),
    /// Train a CNN or CNN-RNN.
    #[cfg(feature = "torch")]
    Train(cli::train::Args),
    /// Evaluate a trained run: tables, report.json, plots.
    #[cfg(feature = "torch")]
    Eval(cli::eval::Args),
    /// Export a trained run to streaming ONNX (fp32 and int8).
    #[cfg(feature = "torch")]
    Export(cli::export::Args),
    /// The paper's comparisons as Markdown tables.
    #[cfg(feature = "torch")]
    Ablate(cli::ablate::Args),
    /// Throughput benchmarks: data loader vs training step, tch vs PyTorch.
    #[cfg(feature = "torch")]
    Bench(cli::bench::Args),
}

fn main() -> ExitCode {
    cli::init_tracing();
    let result = match Cli::parse().command {
        Command::Synth(args) => cli::synth::run(args),
        Command::Data(cmd) => cli::data::run(cmd),
        Command::Score(args) => cli::score::run(args),
        Command::Baseline(args) => cli::baseline::run(args),
        #[cfg(feature = "torch")]
        Command::Train(args) => cli::train::run(args),
        #[cfg(feature = "torch")]
        Command::Eval(args) => cli::eval::run(args),
        #[cfg(feature = "torch")]
        Command::Export(args) => cli::export::run(args),
        #[cfg(feature = "torch")]
        Command::Ablate(args) => cli::ablate::run(args),
        #[cfg(feature = "torch")]
        Command::Bench(args) => cli::bench::run(args),
    };
    cli::exit_code(result)
}
