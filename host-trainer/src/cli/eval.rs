//! `affect-train eval` (a trained run) and `affect-train baseline` (HOG + linear SVR): CCC/MSE
//! pooled and per video, `report.json`, per-video prediction CSVs and PNG plots.

use std::path::PathBuf;

use affect_trainer::baseline::{Baseline, BaselineConfig};
use affect_trainer::data::Annotation;
use affect_trainer::eval::{self, EvalReport};
use affect_trainer::train::{RunDir, dataset, load_run_model, select_device};

use super::bad_input;

/// Flags of `affect-train eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Run directory written by `affect-train train`.
    #[arg(long)]
    run: PathBuf,
    /// Dataset directory (default: the one the run trained on).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Split to evaluate.
    #[arg(long, default_value = "Validation_Set")]
    split: String,
    /// Score against this annotation: `mean` (the annotators' mean, the release's files) or one
    /// annotator's name (Aff-Wild layout with per-annotator files, e.g. `annotator-1`).
    #[arg(long, value_name = "mean|NAME", default_value = "mean")]
    annotation: Annotation,
    /// Output directory (default `RUN/eval/SPLIT`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Videos to draw prediction-vs-truth plots for.
    #[arg(long, default_value_t = 4)]
    plot_videos: usize,
}

fn print_report(report: &EvalReport, out: &std::path::Path) {
    println!("{}", report.markdown());
    println!(
        "pooled over {} frames: CCC valence {:.3}, arousal {:.3} (mean {:.3}); MSE {:.4} / {:.4}",
        report.pooled.frames,
        report.pooled.valence.ccc,
        report.pooled.arousal.ccc,
        report.mean_ccc,
        report.pooled.valence.mse,
        report.pooled.arousal.mse
    );
    println!("report, predictions and plots in {}", out.display());
}

/// Evaluates the run's best (else latest) weights on the split.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let run = RunDir::new(&args.run);
    let device = select_device(affect_trainer::train::config::DeviceChoice::Auto)?;
    let (config, model) = load_run_model(&run, device).map_err(bad_input)?;
    let data = config
        .data
        .dataset_dir(args.data.as_deref())
        .map_err(bad_input)?;
    let videos =
        dataset::videos(&data, &args.split, &args.annotation, &config).map_err(bad_input)?;
    let out = args
        .out
        .unwrap_or_else(|| run.root().join("eval").join(&args.split));
    let report = eval::evaluate(
        &model,
        videos.as_ref(),
        run.root(),
        &run.weights().map_err(bad_input)?,
        &args.split,
        &out,
        args.plot_videos,
    )?;
    print_report(&report, &out);
    Ok(())
}

/// Flags of `affect-train baseline`.
#[derive(clap::Args)]
pub struct BaselineArgs {
    /// Dataset directory.
    #[arg(long)]
    data: PathBuf,
    /// Output directory (report.json, predictions/, plots/).
    #[arg(long)]
    out: PathBuf,
    /// Split to fit on.
    #[arg(long, default_value = "Train_Set")]
    train_split: String,
    /// Split to evaluate.
    #[arg(long, default_value = "Validation_Set")]
    split: String,
    /// Crop side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// HOG cell side.
    #[arg(long, default_value_t = 8)]
    cell: usize,
    /// SVR penalty C.
    #[arg(long, default_value_t = 0.1)]
    c: f64,
    /// SVR insensitive-tube width.
    #[arg(long, default_value_t = 0.05)]
    epsilon: f64,
    /// Use HOG features only (no landmarks).
    #[arg(long)]
    no_landmarks: bool,
    /// Videos to draw prediction-vs-truth plots for.
    #[arg(long, default_value_t = 4)]
    plot_videos: usize,
}

/// Fits HOG + linear SVR on one split and reports on another.
pub fn run_baseline(args: BaselineArgs) -> anyhow::Result<()> {
    let mut sets = vec![
        format!("network.input_size={}", args.size),
        "network.backbone=\"vgg16\"".to_string(),
    ];
    if args.no_landmarks {
        sets.push("network.landmarks=false".into());
    }
    let config =
        affect_trainer::train::config::TrainConfig::load(None, &sets).map_err(bad_input)?;
    let mut baseline_config = BaselineConfig {
        landmarks: !args.no_landmarks,
        ..BaselineConfig::default()
    };
    baseline_config.hog.cell = args.cell;
    baseline_config.svr.c = args.c;
    baseline_config.svr.epsilon = args.epsilon;
    let mean = Annotation::Mean;
    let train =
        dataset::videos(&args.data, &args.train_split, &mean, &config).map_err(bad_input)?;
    let baseline = Baseline::fit(train.as_ref(), baseline_config)?;
    let videos = dataset::videos(&args.data, &args.split, &mean, &config).map_err(bad_input)?;
    let predictions = baseline.predict(videos.as_ref())?;
    let report = eval::build_report(
        &args.out,
        &args.split,
        std::path::Path::new("hog+svr"),
        &predictions,
    )?;
    eval::write_outputs(&report, &predictions, &args.out, args.plot_videos)?;
    print_report(&report, &args.out);
    Ok(())
}
