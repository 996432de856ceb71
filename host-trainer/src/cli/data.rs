//! `affect-train data …`: inspect a dataset; benchmark the loader.

use std::path::PathBuf;
use std::sync::Arc;

use affect_shared::preprocess::Preprocess;
use affect_trainer::data::inspect::{InspectOptions, inspect, plot_histogram};
use affect_trainer::data::loader::{Loader, LoaderConfig};
use affect_trainer::data::{Annotation, DataError, Dataset, ReadOptions};

use super::bad_input;

/// Subcommands of `affect-train data`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Videos, frames, labels, faces, problems and the label histogram of a dataset.
    Inspect(InspectArgs),
    /// Measures the loader's frames/s (decode + preprocess + batching) and compares it with the
    /// training step's rate when given.
    BenchLoader(BenchArgs),
}

/// Flags of `affect-train data inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// Dataset root (Aff-Wild or Aff-Wild2 layout).
    dir: PathBuf,
    /// Inspect only this split (repeatable); default all.
    #[arg(long)]
    split: Vec<String>,
    /// Fail (exit 2) once more than this many problems are found.
    #[arg(long)]
    max_errors: Option<usize>,
    /// Write the 2-D valence-arousal histogram here (PNG); default `label-histogram.png` in the
    /// current directory (the dataset itself is never written to) unless --no-plot.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Do not write the histogram PNG.
    #[arg(long, conflicts_with = "plot")]
    no_plot: bool,
    /// Skip decoding every face image.
    #[arg(long)]
    no_image_check: bool,
    /// Read the labels of this annotation: `mean` (the annotators' mean, the release's files) or
    /// one annotator's name (Aff-Wild layout with per-annotator files, e.g. `annotator-1`).
    #[arg(long, value_name = "mean|NAME", default_value = "mean")]
    annotation: Annotation,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Histogram bins per axis.
    #[arg(long, default_value_t = 20)]
    bins: usize,
}

/// Flags of `affect-train data bench-loader`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Dataset root.
    #[arg(long)]
    data: PathBuf,
    /// Split to load.
    #[arg(long, default_value = "Train_Set")]
    split: String,
    /// Clips per batch.
    #[arg(long, default_value_t = 80)]
    batch: usize,
    /// Frames per clip (1: CNN batches; e.g. 100: CNN-RNN sequences).
    #[arg(long, default_value_t = 1)]
    steps: usize,
    /// Crop size.
    #[arg(long, default_value_t = 112)]
    size: u32,
    /// Worker threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Batches to time.
    #[arg(long, default_value_t = 30)]
    batches: usize,
    /// Crop cache directory (the second pass then measures cached loading).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The training step's frames/s, to print loader/train (the loader should be ≥ 2× faster);
    /// without it, the step is measured here: the default network (`--set` to change it) at
    /// `--size` on batches of `--batch` × `--steps` frames.
    #[arg(long, env = "AFFECT_TRAIN_FPS")]
    train_fps: Option<f64>,
    /// Override a training config key for the measured step, e.g. `--set network.width=0.25`.
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "train_fps")]
    sets: Vec<String>,
    /// Timed training steps.
    #[arg(long, default_value_t = 5)]
    train_steps: usize,
}

/// Runs a `data` subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inspect(args) => run_inspect(args),
        Command::BenchLoader(args) => run_bench(args),
    }
}

/// Missing datasets, bad layouts and too many problems are the user's input: exit code 2.
fn classify(err: DataError) -> anyhow::Error {
    match err {
        DataError::NotADataset { .. }
        | DataError::UnknownAnnotator { .. }
        | DataError::TooManyProblems { .. }
        | DataError::Config(_) => bad_input(err),
        other => other.into(),
    }
}

fn run_inspect(args: InspectArgs) -> anyhow::Result<()> {
    let options = InspectOptions {
        max_errors: args.max_errors,
        check_images: !args.no_image_check,
        bins: args.bins,
        splits: args.split,
        annotation: args.annotation,
    };
    let report = inspect(&args.dir, &options).map_err(classify)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if !args.no_plot {
        let path = args
            .plot
            .unwrap_or_else(|| PathBuf::from("label-histogram.png"));
        let title = format!("{} labels ({})", report.format.name(), args.dir.display());
        plot_histogram(&report.histogram(), &title, &path)?;
        eprintln!("histogram written to {}", path.display());
    }
    Ok(())
}

fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let dataset =
        Dataset::open(&args.data, &args.split, &ReadOptions::default()).map_err(classify)?;
    let defaults = LoaderConfig::default();
    let config = LoaderConfig {
        batch_size: args.batch,
        steps: args.steps,
        stride: args.steps,
        workers: args.workers.unwrap_or(defaults.workers),
        cache_dir: args.cache.clone(),
        ..defaults
    };
    let workers = config.workers;
    let loader = Loader::new(Arc::new(dataset), Preprocess::imagenet(args.size), config)
        .map_err(classify)?;
    let passes = if args.cache.is_some() { 2 } else { 1 };
    let mut fps = 0.0;
    for pass in 1..=passes {
        let t = loader.throughput(args.batches).map_err(classify)?;
        fps = t.frames_per_second;
        println!(
            "loader pass {pass}: {} batches, {} frames in {:.2} s = {:.0} frames/s \
             ({workers} workers, {}x{} crops, batch {}x{})",
            t.batches, t.frames, t.seconds, fps, args.size, args.size, args.batch, args.steps
        );
    }
    let stats = loader.stats();
    println!(
        "decoded {} images, {} cache hits, {} failed",
        stats.decoded, stats.cache_hits, stats.failed
    );
    let train = match args.train_fps {
        Some(train) => train,
        None => measure_training_step(&args, workers)?,
    };
    let ratio = fps / train;
    println!(
        "loader/train ratio: {ratio:.2} ({fps:.0} / {train:.0} frames/s; target >= 2: {})",
        if ratio >= 2.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Frames/s of the training step that would consume these batches (same crop size and batch
/// shape, the default network unless `--set` changes it), on as many threads as the loader had.
#[cfg(feature = "torch")]
fn measure_training_step(args: &BenchArgs, threads: usize) -> anyhow::Result<f64> {
    use affect_trainer::train::bench::training_step_rate;
    use affect_trainer::train::config::TrainConfig;

    let (kind, shape) = if args.steps > 1 {
        (
            "cnn_rnn",
            vec![
                format!("batch.sequences={}", args.batch),
                format!("batch.sequence_length={}", args.steps),
            ],
        )
    } else {
        ("cnn", vec![format!("batch.frames={}", args.batch)])
    };
    let mut sets = vec![
        "device=\"cpu\"".to_owned(),
        format!("network.kind=\"{kind}\""),
        format!("network.input_size={}", args.size),
    ];
    sets.extend(shape);
    sets.extend(args.sets.iter().cloned());
    let config = TrainConfig::load(None, &sets).map_err(super::bad_input)?;
    let rate = training_step_rate(&config, args.train_steps, 1, threads as u32)?;
    println!(
        "training step: {:.1} frames/s ({} network at {}x{}, {} threads)",
        rate.frames_per_second,
        config.network.backbone.name(),
        args.size,
        args.size,
        threads
    );
    Ok(rate.frames_per_second)
}

/// Without libtorch the step cannot be measured here.
#[cfg(not(feature = "torch"))]
fn measure_training_step(_: &BenchArgs, _: usize) -> anyhow::Result<f64> {
    Err(super::bad_input(anyhow::anyhow!(
        "this build has no libtorch (feature `torch`): pass --train-fps"
    )))
}
