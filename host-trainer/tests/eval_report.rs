//! Evaluation of a trained run and of the HOG + SVR baseline on rendered synthetic videos:
//! report, per-video CSVs that `affect-train score` agrees with, and plots.
#![cfg(feature = "torch")]

use std::sync::Arc;

use affect_shared::preprocess::Preprocess;
use affect_shared::synth::SynthConfig;
use affect_trainer::baseline::{Baseline, BaselineConfig};
use affect_trainer::eval;
use affect_trainer::score::score_files;
use affect_trainer::train::config::TrainConfig;
use affect_trainer::train::memory::{MemoryBatches, MemoryDataset, render_synthetic};
use affect_trainer::train::{RunDir, TrainOptions, load_run_model, train};
use tch::Device;

fn synthetic(videos: std::ops::Range<u64>, frames: usize, gaps: f32) -> MemoryDataset {
    let synth = SynthConfig {
        size: 40,
        frames,
        no_face_rate: gaps,
        invalid_label_rate: gaps,
        ..SynthConfig::default()
    };
    let preprocess = Preprocess {
        landmarks: true,
        ..Preprocess::imagenet(32)
    };
    render_synthetic(&synth, 9, videos, &preprocess).unwrap()
}

/// Writes the truth of one video as a `valence,arousal` file, `-5` on unscored frames.
fn truth_csv(data: &MemoryDataset, video: usize, path: &std::path::Path) {
    let v = &data.videos[video];
    let mut text = String::from("valence,arousal\n");
    for (i, m) in v.mask.iter().enumerate() {
        if *m > 0.5 {
            text += &format!("{},{}\n", v.labels[2 * i], v.labels[2 * i + 1]);
        } else {
            text += "-5,-5\n";
        }
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn eval_writes_a_report_csvs_that_score_agrees_with_and_plots() {
    // Enough gaps that unscored frames are exercised.
    let train_set = Arc::new(synthetic(0..2, 40, 0.05));
    let validation = synthetic(2..4, 40, 0.05);
    let sets: Vec<String> = [
        "device=\"cpu\"",
        "network.backbone=\"vgg16\"",
        "network.width=0.0625",
        "network.input_size=32",
        "network.hidden=8",
        "network.layers=1",
        "batch.sequences=2",
        "batch.sequence_length=10",
        "schedule.steps=2",
        "data.preprocess={size=32, colour=\"rgb\", scale=1.0, mean=[0.485,0.456,0.406], std=[0.229,0.224,0.225], margin=0.2, alignment={kind=\"none\"}, landmarks=true}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config = TrainConfig::load(None, &sets).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut source = MemoryBatches::new(train_set, 0, 2, 10).unwrap();
    train(
        &config,
        &run,
        &mut source,
        Some(&validation),
        &TrainOptions::default(),
    )
    .unwrap();

    let run = RunDir::new(&run);
    let (loaded, model) = load_run_model(&run, Device::Cpu).unwrap();
    assert_eq!(loaded, config);
    let out = dir.path().join("eval");
    let report = eval::evaluate(
        &model,
        &validation,
        run.root(),
        &run.weights().unwrap(),
        "Validation_Set",
        &out,
        1,
    )
    .unwrap();
    assert_eq!(report.videos.len(), 2);
    let scored: usize = validation
        .videos
        .iter()
        .map(|v| v.mask.iter().filter(|m| **m > 0.5).count())
        .sum();
    assert_eq!(report.pooled.frames as usize, scored);
    assert!(report.markdown().contains("**pooled**"));
    for file in [
        "report.json",
        "plots/histograms.png",
        "plots/va_plane.png",
        "plots/timeline_synthetic-0002.png",
    ] {
        let path = out.join(file);
        assert!(
            std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "missing {file}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(json["pooled"]["valence"]["ccc"].is_number());

    // The per-video CSV scored by `affect-train score` gives the report's per-video numbers.
    for (i, video) in report.videos.iter().enumerate() {
        let truth = dir.path().join(format!("truth{i}.csv"));
        truth_csv(&validation, i, &truth);
        let pred = out.join("predictions").join(format!("{}.csv", video.video));
        let from_files = score_files(&pred, &truth).unwrap();
        let from_report = video.score.unwrap();
        assert_eq!(from_files.frames as u64, from_report.frames);
        assert!((from_files.valence.ccc - from_report.valence.ccc).abs() < 1e-6);
        assert!((from_files.arousal.mse - from_report.arousal.mse).abs() < 1e-6);
    }
}

#[test]
fn the_hog_svr_baseline_learns_something_and_reports_like_the_networks() {
    let train_set = synthetic(0..12, 80, 0.003);
    let validation = synthetic(12..15, 80, 0.003);
    let baseline = Baseline::fit(&train_set, BaselineConfig::default()).unwrap();
    let predictions = baseline.predict(&validation).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = eval::build_report(
        dir.path(),
        "Validation_Set",
        std::path::Path::new("hog+svr"),
        &predictions,
    )
    .unwrap();
    eval::write_outputs(&report, &predictions, dir.path(), 0).unwrap();
    assert!(dir.path().join("report.json").exists());
    // Landmarks carry the expression: a linear model on them must clearly beat a constant
    // guess (CCC 0); 12 short videos are too few for more (the paper's baseline was weak too).
    assert!(report.mean_ccc > 0.15, "{:?}", report.pooled);
}
