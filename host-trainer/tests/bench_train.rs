//! `affect-train bench-train` compares like with like: the PyTorch twin
//! (`tests/oracles/torch_bench_train.py`) builds the network and loss of the configuration it is
//! given, proven by equal first-step losses, for every combination the defaults and the ablation
//! use; a twin that builds something else is refused instead of timed.
#![cfg(feature = "torch")]

use std::path::PathBuf;

use affect_trainer::train::bench::bench_train;
use affect_trainer::train::config::{TrainConfig, parse_set};

fn python() -> PathBuf {
    std::env::var_os("AFFECT_PYTHON")
        .expect(
            "AFFECT_PYTHON is not set: run `. tests/setup.sh` first (it creates the oracle venv)",
        )
        .into()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oracles/torch_bench_train.py")
}

/// A small CNN-GRU at 32 px, 2 sequences of 4 frames, plus `sets`.
fn config(sets: &[&str]) -> TrainConfig {
    let mut all: Vec<_> = [
        "device=\"cpu\"",
        "network.backbone=\"vgg16\"",
        "network.width=0.0625",
        "network.input_size=32",
        "batch.sequences=2",
        "batch.sequence_length=4",
    ]
    .iter()
    .chain(sets)
    .map(|s| parse_set(s).unwrap())
    .collect();
    all.push(parse_set("seed=3").unwrap());
    TrainConfig::from_overrides(&all).unwrap()
}

#[test]
fn the_pytorch_twin_starts_from_the_same_loss_for_every_network_and_loss() {
    let work = tempfile::tempdir().unwrap();
    for sets in [
        &[][..],
        &["network.landmarks=false"],
        &["network.feature_norm=false", "loss.anchor_weight=0.0"],
        &["network.kind=\"cnn\""],
        &["network.cell=\"lstm\""],
        &["loss.kind=\"mse\""],
        &["loss.kind=\"weighted\""],
    ] {
        let r = bench_train(&config(sets), 1, 0, 1, &python(), &script(), work.path())
            .unwrap_or_else(|e| panic!("{sets:?}: {e}"));
        assert!(
            (r.tch_first_loss - r.torch_first_loss).abs() < 1e-5,
            "{sets:?}: tch {} vs PyTorch {}",
            r.tch_first_loss,
            r.torch_first_loss
        );
        assert!(r.tch_frames_per_second > 0.0 && r.torch_frames_per_second > 0.0);
    }
}

#[test]
fn a_twin_that_builds_another_network_is_refused_not_timed() {
    let work = tempfile::tempdir().unwrap();
    // A twin that ignores the moment anchor, as it did before it learnt the loss options. (Not
    // the feature normalisation: with a degenerate random head its effect on the first loss can
    // vanish; the anchor's cannot — the random labels' sd is ≈ 0.58, a fresh network's output
    // sd is not.)
    let twin = work.path().join("stale_twin.py");
    let text = std::fs::read_to_string(script())
        .unwrap()
        .replace("if spec[\"anchor_weight\"] > 0:", "if False:");
    assert!(text.contains("if False:"), "the twin's anchor line moved");
    std::fs::write(&twin, text).unwrap();
    let err = bench_train(&config(&[]), 1, 0, 1, &python(), &twin, work.path())
        .expect_err("a different network must be refused");
    assert!(
        err.to_string()
            .contains("does not build the same network or loss"),
        "{err}"
    );
}
