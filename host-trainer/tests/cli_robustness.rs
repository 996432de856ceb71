//! The `affect-train` binary is robust to what happens around it: a resume that cannot load its
//! checkpoint leaves every file of the run as it was, and an exported model names the revision
//! the binary was built from, whatever repository it runs in.
#![cfg(feature = "torch")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

mod common;

fn affect_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_affect-train"))
        .args(args)
        .output()
        .unwrap()
}

fn affect_train_ok(args: &[&str]) -> Output {
    let output = affect_train(args);
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

/// SHA-256 of every file under `root`, by path relative to it.
fn hash_tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut hashes = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let p = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(p);
            } else {
                let digest = Sha256::digest(std::fs::read(&p).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                hashes.insert(p.strip_prefix(root).unwrap().to_owned(), hex);
            }
        }
    }
    hashes
}

/// A synthetic dataset and a tiny trained run in `dir`.
fn tiny_run(dir: &Path, steps: u32) -> PathBuf {
    let data = dir.join("data");
    let run = dir.join("run");
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
    let steps = format!("schedule.steps={steps}");
    affect_train_ok(&[
        "train",
        "--data",
        path(&data),
        "--out",
        path(&run),
        "--set",
        "device=\"cpu\"",
        "--set",
        "threads=1",
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
        "batch.sequence_length=4",
        "--set",
        &steps,
        "--set",
        "schedule.validate_every=2",
        "--set",
        "schedule.checkpoint_every=1",
        "--set",
        "schedule.log_every=1",
    ]);
    run
}

#[test]
fn failed_resume_leaves_the_run_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), 2);
    let before = hash_tree(&run);
    assert!(before.keys().any(|p| p.ends_with("metrics.jsonl")));

    let output = affect_train(&[
        "train",
        "--resume",
        path(&run),
        "--set",
        "network.hidden=8",
        "--set",
        "schedule.steps=4",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.contains("checkpoint") && stderr.contains("rnn"),
        "the message names the checkpoint and the mismatching tensor:\n{stderr}"
    );
    assert_eq!(hash_tree(&run), before, "the failed resume changed the run");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn exported_git_revision_is_the_build_revision() {
    assert!(
        std::env::var_os("AFFECT_PYTHON").is_some(),
        "AFFECT_PYTHON is not set: run `. tests/setup.sh` first (it creates the oracle venv)"
    );
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path(), 2);
    // Another repository, with a commit, as the working directory (and as git's environment).
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    git(&other, &["init", "-q"]);
    std::fs::write(other.join("file"), "x").unwrap();
    git(&other, &["add", "file"]);
    git(
        &other,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "other",
        ],
    );
    let model = dir.path().join("model/affect.onnx");
    let output = Command::new(env!("CARGO_BIN_EXE_affect-train"))
        .current_dir(&other)
        .env("GIT_DIR", other.join(".git"))
        .args(["export", "--run", path(&run), "--out", path(&model)])
        .args(["--proof-frames", "8"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "export failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = git(source, &["rev-parse", "HEAD"]);
    let dirty = !git(source, &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let expected = if dirty { format!("{head}-dirty") } else { head };
    assert_ne!(expected, git(&other, &["rev-parse", "HEAD"]));
    assert_eq!(common::exported_metadata(&model).git_revision, expected);
}
