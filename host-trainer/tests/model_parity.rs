//! Our networks against PyTorch: the same weights give the same numbers.
//!
//! References come from `tests/oracles/torch_model_oracle.py`, run once per test binary with
//! `$AFFECT_PYTHON` (set by `tests/setup.sh`): torchvision VGG-16 / ResNet-50 with random init,
//! `nn.GRU`, and a hand-written peephole LSTM.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use affect_trainer::model::rnn::{Recurrent, RnnState};
use affect_trainer::model::{Architecture, Backbone, Cell, Model, NetworkConfig};
use tch::{Device, Tensor, nn};

/// Runs the oracle for every case once; returns the directory holding `<case>/*.safetensors`.
fn oracle() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let python = std::env::var("AFFECT_PYTHON")
            .expect("AFFECT_PYTHON is not set: source tests/setup.sh first");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/oracles/torch_model_oracle.py");
        let status = std::process::Command::new(python)
            .arg(&script)
            .arg(dir.path())
            .args(["gru", "lstm", "vgg16", "resnet50"])
            .status()
            .expect("running the PyTorch oracle");
        assert!(status.success(), "oracle failed: {status}");
        dir
    })
    .path()
}

fn read(case: &str, file: &str) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(oracle().join(case).join(file))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn recurrent_case(case: &str, cell: Cell) {
    let vs = nn::VarStore::new(Device::Cpu);
    let rnn = Recurrent::new(&vs.root().sub("rnn"), cell, 20, 16, 2);
    let mut vs = vs;
    vs.load(oracle().join(case).join("weights.safetensors"))
        .unwrap();
    let input = read(case, "input.safetensors");
    let expected = read(case, "expected.safetensors");
    let state = RnnState {
        h: input["h0"].shallow_clone(),
        c: input.get("c0").map(Tensor::shallow_clone),
    };
    let (y, last) = rnn.forward(&input["x"], None, Some(&state), 0.0, false);
    let dy = max_abs_diff(&y, &expected["y"]);
    let dh = max_abs_diff(&last.h, &expected["h_n"]);
    assert!(dy <= 1e-5 && dh <= 1e-5, "{case}: |Δy| {dy:e}, |Δh| {dh:e}");
    if let Some(c_n) = expected.get("c_n") {
        let dc = max_abs_diff(last.c.as_ref().unwrap(), c_n);
        assert!(dc <= 1e-5, "{case}: |Δc| {dc:e}");
    }
}

#[test]
fn gru_matches_pytorch_nn_gru() {
    recurrent_case("gru", Cell::Gru);
}

#[test]
fn peephole_lstm_matches_the_pytorch_reference() {
    recurrent_case("lstm", Cell::Lstm);
}

fn backbone_case(case: &str, backbone: Backbone, weights: &str, size: u32) {
    let config = NetworkConfig {
        backbone,
        kind: Architecture::Cnn,
        landmarks: false,
        input_size: size,
        pretrained: Some(oracle().join(case).join(weights)),
        ..NetworkConfig::default()
    };
    let model = Model::new(&config, Device::Cpu).unwrap();
    let x = &read(case, "input.safetensors")["x"];
    let expected = &read(case, "expected.safetensors")["features"];
    let got = model.backbone_features(x);
    let scale = expected.abs().max().double_value(&[]).max(1.0);
    let diff = max_abs_diff(&got, expected);
    assert!(
        diff <= 1e-4 * scale,
        "{case}: max |Δ| {diff:e} (max |ref| {scale})"
    );
}

#[test]
fn vgg16_features_equal_torchvision_from_a_pt_state_dict() {
    backbone_case("vgg16", Backbone::Vgg16, "weights.pt", 32);
}

#[test]
fn resnet50_features_equal_torchvision_from_safetensors_in_eval_mode() {
    backbone_case("resnet50", Backbone::Resnet50, "weights.safetensors", 64);
}
