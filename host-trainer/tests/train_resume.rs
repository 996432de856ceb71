//! Training runs end to end on a tiny in-memory dataset: metrics and checkpoints are written, an
//! interrupted and resumed run ends with exactly the metrics of an uninterrupted one, and config
//! errors name the key.
#![cfg(feature = "torch")]

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use affect_trainer::train::config::TrainConfig;
use affect_trainer::train::memory::{MemoryBatches, MemoryDataset, MemoryVideo};
use affect_trainer::train::{Outcome, TrainOptions, train};
use common::StopAfter;
use rand::{Rng, SeedableRng, rngs::StdRng};

const SIZE: usize = 32;

/// Videos whose crops show a bright square placed by (valence, arousal), with noise.
fn toy_dataset(videos: usize, frames: usize, seed: u64) -> MemoryDataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let videos = (0..videos)
        .map(|v| {
            let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
            let mut video = MemoryVideo {
                name: format!("video{v}"),
                faces: Vec::new(),
                landmarks: Vec::new(),
                labels: Vec::new(),
                mask: Vec::new(),
                present: Vec::new(),
            };
            for t in 0..frames {
                let a = phase + t as f32 / 9.0;
                let (val, aro) = (0.7 * a.sin(), 0.6 * (0.7 * a).cos());
                let (cx, cy) = (
                    ((val + 1.0) / 2.0 * (SIZE - 8) as f32) as usize,
                    ((aro + 1.0) / 2.0 * (SIZE - 8) as f32) as usize,
                );
                for c in 0..3 {
                    for y in 0..SIZE {
                        for x in 0..SIZE {
                            let inside = (cx..cx + 8).contains(&x) && (cy..cy + 8).contains(&y);
                            let base = if inside { 1.5 } else { -0.5 };
                            video
                                .faces
                                .push(base + 0.2 * c as f32 + rng.random_range(-0.3..0.3));
                        }
                    }
                }
                // A fixed outline (points 0..34) and a small "mouth" circle (34..68) shifted
                // by valence and sized by arousal: a few hundredths of the crop, which the
                // network's landmark standardisation brings to unit scale.
                for k in 0..68 {
                    let theta = (k % 34) as f32 / 34.0 * std::f32::consts::TAU;
                    let (cx, cy, r) = if k < 34 {
                        (0.5, 0.5, 0.3)
                    } else {
                        (0.5 + 0.1 * val, 0.65, 0.05 * (1.5 + aro))
                    };
                    video
                        .landmarks
                        .push(cx + r * theta.cos() + rng.random_range(-0.003..0.003));
                    video
                        .landmarks
                        .push(cy + r * theta.sin() + rng.random_range(-0.003..0.003));
                }
                video.labels.extend([val, aro]);
                video.mask.push(if t % 17 == 5 { 0.0 } else { 1.0 });
                video.present.push(1.0);
            }
            video
        })
        .collect();
    MemoryDataset { size: SIZE, videos }
}

fn tiny_config(extra: &[&str]) -> TrainConfig {
    let mut sets: Vec<String> = [
        "device=\"cpu\"",
        "threads=1",
        "seed=7",
        "network.backbone=\"resnet50\"",
        "network.width=0.0625",
        "network.input_size=32",
        "network.hidden=8",
        "network.layers=1",
        "batch.sequences=3",
        "batch.sequence_length=6",
        "batch.frames=8",
        "schedule.steps=6",
        "schedule.validate_every=3",
        "schedule.checkpoint_every=2",
        "schedule.log_every=1",
        "optim.decay_steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::load(None, &sets).unwrap()
}

fn metrics_without_time(run: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// libtorch's random generator is process-global and `train` seeds it per step: runs in one
/// process must not overlap (cargo runs tests on parallel threads).
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn resume_case(config: &TrainConfig, stop_after: u64) {
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let train_set = Arc::new(toy_dataset(3, 40, 1));
    let val_set = toy_dataset(2, 30, 2);
    let (b, t) = config.batch_shape();
    let dir = tempfile::tempdir().unwrap();

    let straight = dir.path().join("straight");
    let mut source = MemoryBatches::new(train_set.clone(), 11, b, t).unwrap();
    let summary = train(
        config,
        &straight,
        &mut source,
        Some(&val_set),
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(summary.outcome, Outcome::Finished);
    for file in [
        "config.toml",
        "checkpoint/model.safetensors",
        "checkpoint/optimizer.safetensors",
        "checkpoint/state.json",
        "best/model.safetensors",
        "best/score.json",
    ] {
        assert!(straight.join(file).exists(), "missing {file}");
    }

    let resumed = dir.path().join("resumed");
    let stop = Arc::new(AtomicBool::new(false));
    let mut interrupted_source = StopAfter {
        inner: Box::new(MemoryBatches::new(train_set.clone(), 11, b, t).unwrap()),
        after: stop_after,
        stop: stop.clone(),
    };
    let options = TrainOptions {
        stop: stop.clone(),
        ..TrainOptions::default()
    };
    let first = train(
        config,
        &resumed,
        &mut interrupted_source,
        Some(&val_set),
        &options,
    )
    .unwrap();
    assert_eq!(first.outcome, Outcome::Interrupted { step: stop_after });

    // A fresh process: new source object, config read back from the run.
    let saved = TrainConfig::read(&resumed.join("config.toml")).unwrap();
    assert_eq!(&saved, config);
    let mut fresh_source = MemoryBatches::new(train_set, 11, b, t).unwrap();
    let second = train(
        &saved,
        &resumed,
        &mut fresh_source,
        Some(&val_set),
        &TrainOptions {
            resume: true,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(second.outcome, Outcome::Finished);
    assert_eq!(second.last_loss, summary.last_loss);
    assert_eq!(second.last_validation, summary.last_validation);
    assert_eq!(second.best, summary.best);
    assert_eq!(
        metrics_without_time(&resumed),
        metrics_without_time(&straight)
    );
}

#[test]
fn an_interrupted_cnn_rnn_run_resumes_bit_exactly() {
    // Stops after step 3: between checkpoints (2, 4), so the stop flag's checkpoint is used.
    resume_case(&tiny_config(&["network.kind=\"cnn_rnn\""]), 3);
}

#[test]
fn an_interrupted_cnn_run_with_weighted_loss_resumes_bit_exactly() {
    resume_case(
        &tiny_config(&[
            "network.kind=\"cnn\"",
            "network.backbone=\"vgg16\"",
            "loss.kind=\"weighted\"",
        ]),
        4,
    );
}

#[test]
fn a_used_run_directory_is_not_overwritten() {
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = tiny_config(&["network.kind=\"cnn\"", "schedule.steps=1"]);
    let data = Arc::new(toy_dataset(1, 20, 3));
    let dir = tempfile::tempdir().unwrap();
    let mut source = MemoryBatches::new(data.clone(), 1, 8, 1).unwrap();
    train(
        &config,
        dir.path(),
        &mut source,
        None,
        &TrainOptions::default(),
    )
    .unwrap();
    let err = train(
        &config,
        dir.path(),
        &mut source,
        None,
        &TrainOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        ("network.widht=0.5", "network"),
        ("network.width=\"wide\"", "network.width"),
        ("network.cell=\"rnn\"", "network.cell"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.decay=1.5", "optim.decay"),
        ("network.input_size=48", "data.preprocess.size"),
        ("batch.sequence_length=1", "batch.sequence_length"),
        ("no_equals_sign", "no_equals_sign"),
    ];
    for (set, key) in cases {
        let sets = if key == "data.preprocess.size" {
            vec![
                set.to_string(),
                "data.preprocess={size=32, colour=\"rgb\", scale=1.0, mean=[0.0,0.0,0.0], std=[1.0,1.0,1.0], margin=0.2, alignment={kind=\"none\"}, landmarks=true}".to_string(),
            ]
        } else {
            vec![set.to_string()]
        };
        let err = TrainConfig::load(None, &sets).unwrap_err();
        assert!(
            err.key == key || err.key.starts_with(key),
            "{set}: got key {} ({err})",
            err.key
        );
        assert!(err.to_string().contains(&err.key));
    }
    // A file: the key inside it is named, not just the file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[optim]\nlr = 0.01\n[network]\nhidden = \"many\"\n").unwrap();
    let err = TrainConfig::load(Some(&file), &[]).unwrap_err();
    assert_eq!(err.key, "network.hidden", "{err}");
    // Sets override the file, which overrides the defaults.
    std::fs::write(&file, "[optim]\nlr = 0.01\n[network]\nhidden = 100\n").unwrap();
    let config = TrainConfig::load(Some(&file), &["network.hidden=150".into()]).unwrap();
    assert_eq!((config.optim.lr, config.network.hidden), (0.01, 150));
}

#[test]
fn training_learns_the_toy_task() {
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = tiny_config(&[
        "network.kind=\"cnn\"",
        "loss.kind=\"weighted\"",
        "schedule.steps=60",
        "schedule.validate_every=20",
        "optim.lr=0.003",
        "optim.decay_steps=100",
        "network.dropout=0.0",
        // The toy label is the square's position: shifting or mirroring the crop would change
        // it, so this task cannot be augmented (the other tests here keep the default on).
        "augment.shift=0.0",
        "augment.scale=0.0",
        "augment.rotation_degrees=0.0",
        "augment.mirror=false",
    ]);
    let train_set = Arc::new(toy_dataset(6, 60, 4));
    let val_set = toy_dataset(2, 60, 5);
    let dir = tempfile::tempdir().unwrap();
    let mut source = MemoryBatches::new(train_set, 3, 3, 6).unwrap();
    let summary = train(
        &config,
        dir.path(),
        &mut source,
        Some(&val_set),
        &TrainOptions::default(),
    )
    .unwrap();
    let best = summary.best.unwrap().validation;
    assert!(best.valence.ccc > 0.5 && best.arousal.ccc > 0.5, "{best:?}");
}

fn train_toy(config: &TrainConfig, run: &std::path::Path) -> affect_trainer::train::TrainSummary {
    let _guard = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let train_set = Arc::new(toy_dataset(6, 60, 4));
    let val_set = toy_dataset(2, 60, 5);
    let (b, t) = config.batch_shape();
    let mut source = MemoryBatches::new(train_set, 3, b, t).unwrap();
    train(
        config,
        run,
        &mut source,
        Some(&val_set),
        &TrainOptions::default(),
    )
    .unwrap()
}

#[test]
fn a_broken_learning_rate_is_flagged_as_a_collapse_in_the_metrics_and_the_summary() {
    let config = tiny_config(&[
        "network.kind=\"cnn\"",
        "optim.lr=10.0",
        "schedule.steps=20",
        "schedule.validate_every=5",
        "schedule.collapse_after=5",
        "network.dropout=0.0",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let summary = train_toy(&config, dir.path());
    let collapse = summary.collapse.expect("lr 10 must be flagged");
    assert_eq!(collapse.step, 20, "the last validation is the one reported");
    assert!(!collapse.dimensions.is_empty());
    assert!(
        collapse.causes[0].contains("optim.lr = 10"),
        "the learning rate is named first: {:?}",
        collapse.causes
    );
    let text = collapse.to_string();
    assert!(text.starts_with("COLLAPSED at step 20"), "{text}");
    let metrics = metrics_without_time(dir.path());
    let flagged: Vec<u64> = metrics
        .iter()
        .filter(|m| m.get("collapse").is_some())
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert!(
        flagged.contains(&20),
        "metrics.jsonl flags the collapse: {flagged:?}"
    );
    assert!(flagged.iter().all(|&s| s >= 5), "not before collapse_after");
    let c = &metrics
        .iter()
        .find(|m| m.get("collapse").is_some())
        .unwrap()["collapse"];
    assert!(c["causes"].as_array().is_some_and(|a| !a.is_empty()));
    assert!(c["spread"]["label_std"][0].as_f64().unwrap() > 0.1);
}

#[test]
fn a_healthy_run_is_not_flagged_and_logs_its_output_scale_and_gradient_norm() {
    let config = tiny_config(&[
        "network.kind=\"cnn\"",
        "schedule.steps=60",
        "schedule.validate_every=20",
        "schedule.log_every=10",
        "optim.lr=0.003",
        "optim.decay_steps=100",
        "network.dropout=0.0",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let summary = train_toy(&config, dir.path());
    assert_eq!(summary.collapse, None, "{:?}", summary.last_validation);
    let metrics = metrics_without_time(dir.path());
    assert!(metrics.iter().all(|m| m.get("collapse").is_none()));
    let logged: Vec<&serde_json::Value> =
        metrics.iter().filter(|m| m.get("loss").is_some()).collect();
    assert_eq!(logged.len(), 6);
    for m in logged {
        assert!(m["grad_norm"].as_f64().unwrap() > 0.0, "{m}");
        let std = m["pred_std"].as_array().unwrap();
        assert!(std.iter().all(|s| s.as_f64().unwrap() >= 0.0), "{m}");
        assert_eq!(m["pred_mean"].as_array().unwrap().len(), 2);
    }
}
