//! A training run SIGKILLed at any instant leaves a complete checkpoint to resume from and a
//! loadable model to evaluate: the run is killed again and again at seeded, varying moments
//! (checkpoints and best weights are written every step), each time the run must load, and the
//! next `train --resume` must carry on; at the end it finishes and `eval` reads its model.
#![cfg(feature = "torch")]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use affect_trainer::train::{RunDir, load_run_model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Device;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn affect_train_ok(args: &[&str]) -> Output {
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

/// `--set` flags of a tiny network that checkpoints, validates and logs every step.
const TINY: [&str; 12] = [
    "device=\"cpu\"",
    "threads=1",
    "network.backbone=\"vgg16\"",
    "network.width=0.0625",
    "network.input_size=32",
    "network.hidden=16",
    "network.layers=1",
    "batch.sequences=2",
    "batch.sequence_length=4",
    "schedule.validate_every=1",
    "schedule.checkpoint_every=1",
    "schedule.log_every=1",
];

fn spawn_train(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_affect-train"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Highest step logged in `metrics.jsonl` (a line being written is skipped).
fn logged_step(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("step").and_then(serde_json::Value::as_u64))
        .max()
        .unwrap_or(0)
}

/// Waits until `child` has logged a step beyond `beyond`, failing if it exits first.
fn wait_for_progress(child: &mut Child, run: &Path, beyond: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while logged_step(run) <= beyond {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("training exited ({status}) before logging step {beyond} + 1:\n{stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "no progress beyond step {beyond}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_run_killed_at_any_moment_resumes_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    affect_train_ok(&[
        "synth",
        "--out",
        path(&data),
        "--videos",
        "3",
        "--frames",
        "32",
        "--size",
        "32",
        "--val-fraction",
        "0.34",
        "--seed",
        "5",
    ]);
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let sets = |steps: u64| -> Vec<String> {
        TINY.iter()
            .map(|s| s.to_string())
            .chain([format!("schedule.steps={steps}")])
            .flat_map(|s| ["--set".to_string(), s])
            .collect()
    };
    let kills = 30;
    for round in 0..kills {
        let mut args: Vec<String> = if round == 0 {
            ["train", "--data", path(&data), "--out", path(&run)]
                .map(str::to_owned)
                .into()
        } else {
            ["train", "--resume", path(&run)].map(str::to_owned).into()
        };
        args.extend(sets(100_000));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The first run logs step 2 after checkpointing step 1; resumed runs have a checkpoint.
        let before = logged_step(&run).max(1);
        let mut child = spawn_train(&args);
        wait_for_progress(&mut child, &run, before);
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        let run_dir = RunDir::new(&run);
        // Validation runs every step, so a best copy exists from step 1 on.
        assert!(
            run_dir.best().current().is_some(),
            "after kill {round}: no complete best/ in {:#?}",
            walk(&run)
        );
        if let Err(e) = load_run_model(&run_dir, Device::Cpu) {
            let listing: Vec<_> = walk(&run);
            panic!("after kill {round}: no loadable model: {e}\nrun holds {listing:#?}");
        }
    }
    let last = logged_step(&run);
    let mut args = vec!["train".to_string(), "--resume".into(), path(&run).into()];
    args.extend(sets(last + 2));
    affect_train_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    affect_train_ok(&["eval", "--run", path(&run)]);
}

/// Every path under `root`, relative to it.
fn walk(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            found.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                pending.push(p);
            }
        }
    }
    found.sort();
    found
}
