//! `affect-train bench-train`: frames/s of our tch training step against the same network, batch
//! and thread count in PyTorch, measured in one run.

use std::path::PathBuf;

use affect_trainer::train::bench::bench_train;
use affect_trainer::train::config::TrainConfig;

use super::bad_input;

/// Flags of `affect-train bench-train`.
#[derive(clap::Args)]
pub struct Args {
    /// Training config (TOML); defaults otherwise. The bench uses its network and batch shape.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set network.width=0.25` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Timed steps on each side.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first (allocator and kernel warm-up).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Intra-op threads on both sides.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Python with PyTorch (default: `$AFFECT_PYTHON`).
    #[arg(long, env = "AFFECT_PYTHON")]
    python: PathBuf,
    /// The PyTorch twin script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/oracles/torch_bench_train.py"))]
    script: PathBuf,
}

/// Defaults of the bench when no config is given: the paper's CNN-GRU (VGG, landmarks, 2×128)
/// at a CPU-sized width and input.
const DEFAULT_SETS: [&str; 6] = [
    "network.backbone=\"vgg16\"",
    "network.width=0.25",
    "network.input_size=64",
    "batch.sequences=2",
    "batch.sequence_length=20",
    "device=\"cpu\"",
];

/// Runs both sides and prints frames/s of each and the ratio (also as a JSON line).
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut sets: Vec<String> = if args.config.is_none() {
        DEFAULT_SETS.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    };
    sets.extend(args.sets);
    let config = TrainConfig::load(args.config.as_deref(), &sets).map_err(bad_input)?;
    let work = tempfile::tempdir()?;
    let r = bench_train(
        &config,
        args.steps,
        args.warmup,
        args.threads,
        &args.python,
        &args.script,
        work.path(),
    )?;
    println!(
        "training step, {} frames/step, {} threads, {} timed steps",
        r.frames_per_step, r.threads, r.steps
    );
    println!(
        "  tch (affect-train): {:8.1} frames/s",
        r.tch_frames_per_second
    );
    println!(
        "  PyTorch:            {:8.1} frames/s",
        r.torch_frames_per_second
    );
    println!("  ratio tch/PyTorch:  {:8.3}", r.ratio);
    println!(
        "  first-step loss: tch {:.6}, PyTorch {:.6}",
        r.tch_first_loss, r.torch_first_loss
    );
    println!(
        "  last-step loss:  tch {:.6}, PyTorch {:.6}",
        r.tch_last_loss, r.torch_last_loss
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
