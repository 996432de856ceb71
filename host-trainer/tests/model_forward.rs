//! Network shapes, parameter names, streaming = whole sequence, save/load and config errors.
#![cfg(feature = "torch")]

use affect_shared::contract::LANDMARK_VALUES;
use affect_trainer::model::{
    Architecture, Backbone, Cell, Model, ModelError, NetworkConfig, Outputs,
};
use tch::{Device, Kind, Tensor};

fn tiny(backbone: Backbone, kind: Architecture, cell: Cell) -> NetworkConfig {
    NetworkConfig {
        backbone,
        kind,
        cell,
        landmarks: true,
        hidden: 8,
        layers: 2,
        width: 1.0 / 16.0,
        input_size: 32,
        dropout: 0.5,
        ..NetworkConfig::default()
    }
}

fn inputs(b: i64, t: i64) -> (Tensor, Tensor) {
    (
        Tensor::randn([b, t, 3, 32, 32], (Kind::Float, Device::Cpu)),
        Tensor::rand([b, t, LANDMARK_VALUES as i64], (Kind::Float, Device::Cpu)),
    )
}

fn streaming_equals_sequence(config: &NetworkConfig) {
    tch::manual_seed(1);
    let model = Model::new(config, Device::Cpu).unwrap();
    let (faces, landmarks) = inputs(2, 6);
    let (whole, last) = model
        .forward(&faces, Some(&landmarks), None, None, false)
        .unwrap();
    assert_eq!(whole.size(), [2, 6, 2]);
    let mut state = None;
    let mut steps = Vec::new();
    for t in 0..6 {
        let (y, s) = model
            .forward_step(
                &faces.select(1, t),
                Some(&landmarks.select(1, t)),
                state.as_ref(),
            )
            .unwrap();
        steps.push(y);
        state = s;
    }
    let streamed = Tensor::stack(&steps, 1);
    let diff = (&streamed - &whole).abs().max().double_value(&[]);
    // Tolerance: the frame-by-frame path runs the convolutions and projections on other batch
    // shapes, so BLAS/oneDNN may sum in another order (float32 rounding only).
    assert!(diff < 1e-4, "{config:?}: streaming differs by {diff:e}");
    match (last, state) {
        (Some(a), Some(b)) => {
            let d = (&a.h - &b.h).abs().max().double_value(&[]);
            assert!(d < 1e-4, "final states differ by {d:e}");
            assert_eq!(a.c.is_some(), config.cell == Cell::Lstm);
        }
        (None, None) => assert_eq!(config.kind, Architecture::Cnn),
        _ => panic!("state presence differs between streaming and sequence"),
    }
}

#[test]
fn streaming_one_frame_at_a_time_equals_the_whole_sequence() {
    for backbone in [Backbone::Vgg16, Backbone::Resnet50] {
        for cell in [Cell::Gru, Cell::Lstm] {
            streaming_equals_sequence(&tiny(backbone, Architecture::CnnRnn, cell));
        }
        streaming_equals_sequence(&tiny(backbone, Architecture::Cnn, Cell::Gru));
    }
    streaming_equals_sequence(&NetworkConfig {
        outputs: Outputs::PerDimension,
        ..tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Lstm)
    });
}

#[test]
fn a_carried_state_continues_the_sequence() {
    tch::manual_seed(2);
    let model = Model::new(
        &tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Gru),
        Device::Cpu,
    )
    .unwrap();
    let (faces, landmarks) = inputs(1, 8);
    let (whole, _) = model
        .forward(&faces, Some(&landmarks), None, None, false)
        .unwrap();
    let (_, mid) = model
        .forward(
            &faces.narrow(1, 0, 5),
            Some(&landmarks.narrow(1, 0, 5)),
            None,
            None,
            false,
        )
        .unwrap();
    let (rest, _) = model
        .forward(
            &faces.narrow(1, 5, 3),
            Some(&landmarks.narrow(1, 5, 3)),
            None,
            mid.as_ref(),
            false,
        )
        .unwrap();
    let diff = (rest - whole.narrow(1, 5, 3)).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "{diff:e}");
}

#[test]
fn parameter_names_follow_the_export_contract() {
    let model = Model::new(
        &NetworkConfig {
            landmarks: true,
            ..tiny(Backbone::Vgg16, Architecture::Cnn, Cell::Gru)
        },
        Device::Cpu,
    )
    .unwrap();
    let vars = model.var_store().variables();
    // VGG, scenario 2: fc1 4096, fc2 4096 (+136 landmark inputs), fc3 2622, out 2 (× width).
    assert_eq!(vars["features.0.weight"].size(), [4, 3, 3, 3]);
    assert_eq!(vars["features.28.bias"].size(), [32]);
    assert_eq!(vars["head.fc1.weight"].size(), [256, 32]);
    assert_eq!(
        vars["head.fc2.weight"].size(),
        [256, 256 + LANDMARK_VALUES as i64]
    );
    assert_eq!(vars["head.fc3.weight"].size(), [164, 256]);
    assert_eq!(vars["out.weight"].size(), [2, 164]);

    let model = Model::new(
        &tiny(Backbone::Resnet50, Architecture::CnnRnn, Cell::Lstm),
        Device::Cpu,
    )
    .unwrap();
    let vars = model.var_store().variables();
    for name in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_mean",
        "layer4.2.conv3.weight",
        "layer4.2.bn3.bias",
        "rnn.l1.peephole_o",
    ] {
        assert!(vars.contains_key(name), "missing {name}");
    }
    // CNN-RNN: fc1 4096·w, landmarks joined before the recurrent layers.
    assert_eq!(vars["head.fc1.weight"].size(), [256, 128]);
    assert_eq!(
        vars["rnn.l0.weight_ih"].size(),
        [4 * 8, 256 + LANDMARK_VALUES as i64]
    );
    assert_eq!(vars["rnn.l1.weight_hh"].size(), [4 * 8, 8]);
    assert_eq!(vars["out.weight"].size(), [2, 8]);
    assert!(!vars.contains_key("head.fc2.weight"));

    let per_dim = Model::new(
        &NetworkConfig {
            outputs: Outputs::PerDimension,
            ..tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Gru)
        },
        Device::Cpu,
    )
    .unwrap();
    let vars = per_dim.var_store().variables();
    assert_eq!(vars["valence.out.weight"].size(), [1, 8]);
    assert_eq!(vars["arousal.rnn.l0.bias_hh"].size(), [24]);
}

#[test]
fn saved_weights_reload_into_an_identical_network() {
    let config = tiny(Backbone::Resnet50, Architecture::CnnRnn, Cell::Gru);
    tch::manual_seed(3);
    let a = Model::new(&config, Device::Cpu).unwrap();
    tch::manual_seed(4);
    let mut b = Model::new(&config, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    a.save(&path).unwrap();
    b.load(&path).unwrap();
    let (faces, landmarks) = inputs(2, 3);
    let (ya, _) = a
        .forward(&faces, Some(&landmarks), None, None, false)
        .unwrap();
    let (yb, _) = b
        .forward(&faces, Some(&landmarks), None, None, false)
        .unwrap();
    assert!(ya.equal(&yb));
}

#[test]
fn frozen_conv_parts_are_not_trained() {
    let config = tiny(Backbone::Resnet50, Architecture::Cnn, Cell::Gru);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("init.safetensors");
    Model::new(&config, Device::Cpu)
        .unwrap()
        .save(&weights)
        .unwrap();
    let frozen = Model::new(
        &NetworkConfig {
            pretrained: Some(weights),
            freeze_conv: true,
            ..config
        },
        Device::Cpu,
    )
    .unwrap();
    let names: Vec<String> = frozen
        .trainable_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("head.") || n.starts_with("out."))
    );
    assert!(names.contains(&"head.fc1.weight".to_owned()));
}

#[test]
fn config_errors_name_the_key() {
    let bad = [
        (
            NetworkConfig {
                width: 0.0,
                ..NetworkConfig::default()
            },
            "network.width",
        ),
        (
            NetworkConfig {
                hidden: 0,
                ..NetworkConfig::default()
            },
            "network.hidden",
        ),
        (
            NetworkConfig {
                input_size: 64,
                pool: Some(3),
                ..NetworkConfig::default()
            },
            "network.pool",
        ),
        (
            NetworkConfig {
                freeze_conv: true,
                ..NetworkConfig::default()
            },
            "network.freeze_conv",
        ),
    ];
    for (config, key) in bad {
        let err = Model::new(&config, Device::Cpu).unwrap_err();
        assert!(
            matches!(&err, ModelError::Config(e) if e.key == key),
            "{key}: {err}"
        );
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn wrong_inputs_and_weights_are_errors_not_panics() {
    let config = tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Gru);
    let model = Model::new(&config, Device::Cpu).unwrap();
    let (faces, landmarks) = inputs(1, 2);
    let err = model.forward(&faces, None, None, None, false).unwrap_err();
    assert!(err.to_string().contains("landmarks"), "{err}");
    let wrong = Tensor::zeros([1, 2, 3, 40, 40], (Kind::Float, Device::Cpu));
    assert!(
        model
            .forward(&wrong, Some(&landmarks), None, None, false)
            .is_err()
    );

    // Full-width weights do not fit a width-scaled network: the error names the parameter.
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("wide.safetensors");
    Model::new(
        &NetworkConfig {
            width: 1.0 / 8.0,
            ..config.clone()
        },
        Device::Cpu,
    )
    .unwrap()
    .save(&weights)
    .unwrap();
    let err = Model::new(
        &NetworkConfig {
            pretrained: Some(weights),
            ..config
        },
        Device::Cpu,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`features.0.") && text.contains("network.width"),
        "{text}"
    );
}

/// Multiplies `head.fc1`'s weight and bias by `factor` (its ReLU output scales with them).
fn scale_head(model: &Model, factor: f64) {
    let vars = model.var_store().variables();
    tch::no_grad(|| {
        for name in ["head.fc1.weight", "head.fc1.bias"] {
            let mut t = vars[name].shallow_clone();
            let _ = t.g_mul_scalar_(factor);
        }
    });
}

#[test]
fn feature_norm_makes_the_recurrent_input_independent_of_the_feature_scale() {
    // The head's output is the last thing before the normalisation (landmarks join after it):
    // scaling it by 40 — the growth seen in stalled runs — leaves the predictions unchanged
    // with `feature_norm`, and changes them without (the GRU then reads 40× larger inputs).
    // One model per case, scaled in place: tests share libtorch's generator across threads, so
    // two models built after the same `manual_seed` need not have the same weights.
    let config = NetworkConfig {
        landmarks: true,
        ..tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Gru)
    };
    assert!(config.feature_norm, "the default normalises");
    let (faces, landmarks) = inputs(2, 4);
    let change_by_scaling = |feature_norm: bool| {
        let model = Model::new(
            &NetworkConfig {
                feature_norm,
                ..config.clone()
            },
            Device::Cpu,
        )
        .unwrap();
        let predict = || {
            model
                .forward(&faces, Some(&landmarks), None, None, false)
                .unwrap()
                .0
        };
        let before = predict();
        scale_head(&model, 40.0);
        (predict() - before).abs().max().double_value(&[])
    };
    let normalised = change_by_scaling(true);
    assert!(normalised < 1e-4, "normalised: differs by {normalised:e}");
    let raw = change_by_scaling(false);
    assert!(raw > 1e-3, "unnormalised: differs by only {raw:e}");
}
