//! `affect-train synth`: a synthetic dataset in the Aff-Wild2 layout (crops, labels, landmarks),
//! or in the Aff-Wild layout with several simulated annotators' traces beside their mean.

use std::path::PathBuf;
use std::time::Instant;

use affect_shared::synth::SynthConfig;
use affect_trainer::data::DataError;
use affect_trainer::data::synth::{SynthDatasetConfig, SynthLayout, write_dataset};

use super::bad_input;

/// Flags of `affect-train synth`.
#[derive(clap::Args)]
pub struct Args {
    /// Output directory (created; must be empty or absent).
    #[arg(long)]
    out: PathBuf,
    /// Number of videos (one person each).
    #[arg(long, default_value_t = 40)]
    videos: usize,
    /// Frames per video.
    #[arg(long, default_value_t = 300)]
    frames: usize,
    /// Crop side length in pixels.
    #[arg(long, default_value_t = 112)]
    size: u32,
    /// Random seed: the same seed writes a byte-identical tree.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of videos in Validation_Set.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// JPEG quality of the crops (1-100).
    #[arg(long, default_value_t = 90)]
    jpeg_quality: u8,
    /// Directory layout: `affwild2` (aligned crops, `valence,arousal` files) or `affwild`
    /// (frames, boxes and landmarks as `.pts`, per-dimension files, per-annotator files).
    #[arg(long, default_value = "affwild2")]
    layout: SynthLayout,
    /// Simulated annotators per video (needs `--layout affwild`): each writes the true affect
    /// with their own lag, bias, scale and smooth noise under
    /// `annotations/<split>/annotators/annotator-<k>/`, and the annotation files hold their
    /// per-frame mean. 0: one noisy annotation per frame, as before.
    #[arg(long, default_value_t = 0)]
    annotators: usize,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    jobs: Option<usize>,
}

/// Writes the dataset and prints what was written, with the rendering rate.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = SynthDatasetConfig {
        layout: args.layout,
        videos: args.videos,
        val_fraction: args.val_fraction,
        seed: args.seed,
        jpeg_quality: args.jpeg_quality,
        render: SynthConfig {
            size: args.size,
            frames: args.frames,
            annotators: args.annotators,
            ..SynthConfig::default()
        },
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs.unwrap_or(0))
        .build()?;
    let start = Instant::now();
    let summary = pool
        .install(|| write_dataset(&args.out, &config))
        .map_err(|err| match err {
            DataError::Config(_) => bad_input(err),
            other => other.into(),
        })?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "wrote {}: {} train + {} validation videos, {} frames ({} with a face, {} unlabelled) \
         in {seconds:.1} s ({:.0} frames/s on {} threads)",
        args.out.display(),
        summary.train_videos,
        summary.validation_videos,
        summary.frames,
        summary.faces,
        summary.unlabelled,
        summary.frames as f64 / seconds,
        pool.current_num_threads(),
    );
    Ok(())
}
