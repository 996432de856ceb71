//! The memory check of `affect-train train`, through the binary: the default (paper) config is
//! refused in seconds with the estimate broken down and the keys that shrink it (unless this
//! machine really has the memory), the `cpu` config passes and trains, and the estimate is within
//! 0.5×–2× of the resident-set growth measured in real runs of two sizes.
#![cfg(feature = "torch")]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use affect_trainer::train::config::TrainConfig;
use affect_trainer::train::estimate;

fn affect_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_affect-train"))
        .args(args)
        .output()
        .unwrap()
}

fn synth(dir: &Path) -> String {
    let data = dir.join("data");
    let data = data.to_str().unwrap().to_owned();
    let out = affect_train(&[
        "synth",
        "--out",
        &data,
        "--videos",
        "4",
        "--frames",
        "64",
        "--size",
        "64",
        "--seed",
        "3",
        "--val-fraction",
        "0.25",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

#[test]
fn default_config_is_refused_in_seconds_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let run = dir.path().join("run");
    let started = Instant::now();
    let out = affect_train(&["train", "--data", &data, "--out", run.to_str().unwrap()]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let config = TrainConfig::default();
    let needed = estimate::estimate(&config).total();
    let available = estimate::available_cpu_memory().unwrap();
    if needed <= available.bytes {
        // A machine that really has the memory: the check must agree with the library.
        assert!(estimate::check(&config, estimate::estimate(&config), available).is_ok());
        assert!(stderr.contains("estimated peak memory"), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(took < Duration::from_secs(10), "refusal took {took:?}");
    for key in [
        "batch.sequences",
        "batch.sequence_length",
        "network.input_size",
        "network.width",
        "parameters",
        "Adam state",
        "activations",
        "available",
        "--no-memory-check",
    ] {
        assert!(stderr.contains(key), "`{key}` missing from: {stderr}");
    }
    assert!(!run.exists(), "nothing may be written before the refusal");
}

/// Trains `steps` steps of the `cpu` config with `sets` on top; returns `memory.json`.
fn train_cpu(data: &str, run: &Path, sets: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "train",
        "--config",
        "cpu",
        "--data",
        data,
        "--out",
        run.to_str().unwrap(),
        "--set",
        "schedule.steps=3",
        "--set",
        "data.validation_split=\"\"",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = affect_train(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("checkpoint").join("model.safetensors").exists());
    let text = std::fs::read_to_string(run.join("memory.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn cpu_config_passes_the_check_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let report = train_cpu(&data, &dir.path().join("run"), &[]);
    assert!(
        report["estimate_total"].as_u64().unwrap() < 1 << 30,
        "{report}"
    );
}

#[test]
fn estimate_is_within_a_factor_two_of_measured_growth() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path());
    let mib = |v: &serde_json::Value| v.as_u64().unwrap() as f64 / f64::from(1 << 20);
    for (name, sequences) in [("small", "2"), ("large", "4")] {
        let report = train_cpu(
            &data,
            &dir.path().join(name),
            &[
                "network.width=0.25",
                "network.input_size=112",
                &format!("batch.sequences={sequences}"),
                "batch.sequence_length=16",
            ],
        );
        let (estimated, measured) = (
            mib(&report["estimate_network"]),
            mib(&report["measured_growth"]),
        );
        let ratio = estimated / measured;
        println!(
            "{name} ({sequences} × 16 frames, 112 px, width 0.25): estimated {estimated:.0} MiB, \
             measured {measured:.0} MiB, ratio {ratio:.2}"
        );
        assert!((0.5..=2.0).contains(&ratio), "{report}");
    }
}
