//! Loader throughput at 112×112: `cargo bench -p affect-host-trainer --bench loader`.
//!
//! Renders a synthetic dataset into a temporary directory (timing the renderer on one thread and
//! on all), then times the loader (JPEG decode + crop + normalise + batching) with one worker,
//! with all cores, and from the crop cache, and prints each rate against its peer. When the
//! training step's rate is known (`AFFECT_TRAIN_FPS=<frames/s>` or `--train-fps <frames/s>`), it
//! prints loader/train; the loader should be at least twice as fast as training.

use std::sync::Arc;
use std::time::Instant;

use affect_shared::preprocess::Preprocess;
use affect_shared::synth::{SynthConfig, SyntheticVideo};
use affect_trainer::data::synth::{SynthDatasetConfig, SynthLayout, write_dataset};
use affect_trainer::data::{Dataset, Loader, LoaderConfig, ReadOptions};

fn train_fps() -> Option<f64> {
    let args: Vec<String> = std::env::args().collect();
    let flag = args
        .iter()
        .position(|a| a == "--train-fps")
        .and_then(|i| args.get(i + 1))
        .cloned();
    flag.or_else(|| std::env::var("AFFECT_TRAIN_FPS").ok())
        .and_then(|v| v.parse().ok())
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let render = SynthConfig {
        size: 112,
        frames: 150,
        ..SynthConfig::default()
    };

    // Renderer alone (no JPEG, no disk), one thread.
    let start = Instant::now();
    let rendered: usize = (0..4)
        .map(|i| SyntheticVideo::new(&render, 1, i).count())
        .sum();
    let render_fps = rendered as f64 / start.elapsed().as_secs_f64();
    println!("render 112x112, 1 thread:            {render_fps:>8.0} frames/s");

    let tmp = tempfile::tempdir().expect("temporary directory");
    let root = tmp.path().join("synth");
    let config = SynthDatasetConfig {
        layout: SynthLayout::AffWild2,
        videos: 16,
        val_fraction: 0.0,
        seed: 1,
        jpeg_quality: 90,
        render,
    };
    let start = Instant::now();
    let summary = write_dataset(&root, &config).expect("synthetic dataset");
    let write_fps = summary.frames as f64 / start.elapsed().as_secs_f64();
    println!("synth (render + JPEG + files), {cores} thr: {write_fps:>8.0} frames/s");

    let dataset =
        Arc::new(Dataset::open(&root, "Train_Set", &ReadOptions::default()).expect("read back"));
    let cache = tmp.path().join("cache");
    let measure = |workers: usize, cached: bool| {
        let loader = Loader::new(
            Arc::clone(&dataset),
            Preprocess::imagenet(112),
            LoaderConfig {
                batch_size: 80,
                workers,
                cache_dir: cached.then(|| cache.clone()),
                ..LoaderConfig::default()
            },
        )
        .expect("loader");
        loader
            .throughput(usize::MAX)
            .expect("epoch")
            .frames_per_second
    };
    let one = measure(1, false);
    let all = measure(cores, false);
    measure(cores, true); // fills the cache
    let cached = measure(cores, true);
    println!("loader, 1 worker:                    {one:>8.0} frames/s");
    println!(
        "loader, {cores} workers:                   {all:>8.0} frames/s  ({:.2}x one worker)",
        all / one
    );
    println!(
        "loader, {cores} workers, crop cache:       {cached:>8.0} frames/s  ({:.2}x uncached)",
        cached / all
    );
    match train_fps() {
        Some(train) => println!(
            "loader/train ratio: {:.2} ({all:.0} / {train:.0} frames/s; target >= 2: {})",
            all / train,
            if all / train >= 2.0 { "met" } else { "NOT met" }
        ),
        None => {
            println!("set AFFECT_TRAIN_FPS (or pass --train-fps) to print the loader/train ratio")
        }
    }
}
