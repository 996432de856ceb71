//! The engineer's workflow through the `affect-train` binary: `synth` → `train` → `eval` →
//! `export`, the dataset found from the run after `train`. The exported model, run frame by
//! frame by ONNX Runtime (the proof's independent Python process), gives the trainer's own
//! evaluation outputs within 1e-4, and its metadata names the run's input size and
//! normalisation.
#![cfg(feature = "torch")]

use std::path::Path;
use std::process::Command;

mod common;

use affect_trainer::train::config::TrainConfig;

fn affect_train(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_affect-train"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "affect-train {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_csv(path: &Path) -> Vec<[f32; 2]> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let (v, a) = line.split_once(',').unwrap();
            [v.parse().unwrap(), a.parse().unwrap()]
        })
        .collect()
}

#[test]
fn synth_train_eval_export_agree_with_onnxruntime() {
    assert!(
        std::env::var_os("AFFECT_PYTHON").is_some(),
        "AFFECT_PYTHON is not set: run `. tests/setup.sh` first (it creates the oracle venv)"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    let model = dir.path().join("model").join("affect.onnx");
    affect_train(&[
        "synth",
        "--out",
        path(&data),
        "--videos",
        "4",
        "--frames",
        "48",
        "--size",
        "48",
        "--val-fraction",
        "0.25",
        "--seed",
        "3",
    ]);
    affect_train(&[
        "train",
        "--data",
        path(&data),
        "--out",
        path(&run),
        "--set",
        "device=\"cpu\"",
        "--set",
        "network.backbone=\"vgg16\"",
        "--set",
        "network.width=0.0625",
        "--set",
        "network.input_size=32",
        "--set",
        "network.hidden=16",
        "--set",
        "network.layers=1",
        "--set",
        "batch.sequences=2",
        "--set",
        "batch.sequence_length=8",
        "--set",
        "schedule.steps=8",
        "--set",
        "schedule.validate_every=4",
    ]);
    let config = TrainConfig::read(&run.join("config.toml")).unwrap();
    assert_eq!(
        config.data.root.as_deref(),
        Some(std::fs::canonicalize(&data).unwrap().as_path()),
        "the run records its dataset"
    );

    // Neither eval nor export is told where the data is.
    affect_train(&["eval", "--run", path(&run)]);
    affect_train(&[
        "export",
        "--run",
        path(&run),
        "--out",
        path(&model),
        "--proof-frames",
        "48",
    ]);

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.with_file_name("affect.export.json")).unwrap())
            .unwrap();
    assert_eq!(report["failures"], serde_json::json!([]), "{report:#}");
    let video = report["video"].as_str().unwrap();
    let onnxruntime: Vec<[f32; 2]> =
        serde_json::from_value(report["onnxruntime"]["outputs"].clone()).unwrap();
    let evaluated = read_csv(
        &run.join("eval/Validation_Set/predictions")
            .join(format!("{video}.csv")),
    );
    assert_eq!(onnxruntime.len(), 48);
    assert!(evaluated.len() >= onnxruntime.len());
    let max_diff = onnxruntime
        .iter()
        .zip(&evaluated)
        .flat_map(|(a, b)| [(a[0] - b[0]).abs(), (a[1] - b[1]).abs()])
        .fold(0.0f32, f32::max);
    assert!(
        max_diff <= 1e-4,
        "ONNX Runtime differs from `affect-train eval` by {max_diff}"
    );

    let metadata = common::exported_metadata(&model);
    assert_eq!(metadata.preprocess, config.preprocess());
    assert_eq!(metadata.preprocess.size, 32);
    assert!(metadata.preprocess.landmarks);
}
