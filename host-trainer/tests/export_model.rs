//! Trained-network export end to end on tiny networks of every architecture: the streaming ONNX
//! graph (batch norm folded, dropout gone, landmarks joined where the network joins them, GRU /
//! peephole LSTM state carried) must equal the tch network frame by frame in tract and ONNX
//! Runtime, pass `onnx.checker` (full check), carry readable metadata, and the int8 QDQ model must
//! run on integer kernels in ONNX Runtime. Broken graphs and bad checkpoints are refused.
#![cfg(feature = "torch")]

mod common;

use affect_shared::contract::LANDMARK_VALUES;
use std::path::Path;

use affect_shared::metadata::Precision;
use affect_trainer::export::calibrate::{CalibrationClip, RangeMethod, calibrate};
use affect_trainer::export::network::{NetworkExportError, Parameters, streaming_graph};
use affect_trainer::export::onnx::encode;
use affect_trainer::export::ort_oracle::OrtOracle;
use affect_trainer::export::pipeline::{ExportOptions, Provenance, export};
use affect_trainer::export::proof::{Bounds, ExportedFiles, LabelledClip, prove};
use affect_trainer::export::quantize::quantize_qdq;
use affect_trainer::export::runner::TractStreaming;
use affect_trainer::model::{Architecture, Backbone, Cell, Model, NetworkConfig, Outputs};
use affect_trainer::train::config::TrainConfig;
use affect_trainer::train::memory::{MemoryDataset, MemoryVideo};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tch::{Device, Kind, Tensor};
use tract_onnx::pb;

const SIZE: usize = 32;

fn tiny(backbone: Backbone, kind: Architecture, cell: Cell, landmarks: bool) -> NetworkConfig {
    NetworkConfig {
        backbone,
        kind,
        cell,
        landmarks,
        hidden: 8,
        layers: 2,
        width: 1.0 / 16.0,
        input_size: SIZE as u32,
        dropout: 0.5,
        ..NetworkConfig::default()
    }
}

/// A model with random weights and random batch-norm statistics (so folding is exercised),
/// its output layer scaled so predictions lie in [-1, 1] like a trained network's (random
/// statistics through 16 residual blocks otherwise give outputs in the tens, where float32
/// rounding alone exceeds the absolute 1e-4 bound).
fn model(config: &NetworkConfig, seed: i64) -> Model {
    tch::manual_seed(seed);
    let model = Model::new(config, Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in model.var_store().variables() {
            let shape = t.size();
            let opts = (Kind::Float, Device::Cpu);
            if name.ends_with("running_var")
                || (name.contains("bn") && name.ends_with("weight"))
                || (name.contains("downsample.1") && name.ends_with("weight"))
            {
                t.copy_(&(Tensor::rand(&shape, opts) + 0.5));
            } else if name.ends_with("running_mean")
                || (name.contains("bn") && name.ends_with("bias"))
                || (name.contains("downsample.1") && name.ends_with("bias"))
            {
                t.copy_(&((Tensor::rand(&shape, opts) - 0.5) * 0.4));
            }
        }
        let size = config.input_size as i64;
        let faces = Tensor::randn([1, 8, 3, size, size], (Kind::Float, Device::Cpu));
        let landmarks = Tensor::rand([1, 8, LANDMARK_VALUES as i64], (Kind::Float, Device::Cpu));
        let (y, _) = model
            .forward(
                &faces,
                config.landmarks.then_some(&landmarks),
                None,
                None,
                false,
            )
            .unwrap();
        let peak = y.abs().max().double_value(&[]);
        if peak > 1.0 {
            for (name, mut t) in model.var_store().variables() {
                if name.ends_with("out.weight") || name.ends_with("out.bias") {
                    let scaled = &t / peak;
                    t.copy_(&scaled);
                }
            }
        }
    });
    model
}

/// Smoothly drifting faces and landmarks; labels are the network's own outputs plus noise, so
/// CCC is high and any deviation of an engine shows.
fn video(model: &Model, name: &str, frames: usize, seed: u64) -> MemoryVideo {
    let mut rng = StdRng::seed_from_u64(seed);
    let px = 3 * SIZE * SIZE;
    let a: Vec<f32> = (0..px).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..px).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut faces = Vec::with_capacity(frames * px);
    let mut landmarks = Vec::with_capacity(frames * LANDMARK_VALUES);
    for t in 0..frames {
        let phase = t as f32 * 0.15;
        faces.extend(
            a.iter()
                .zip(&b)
                .map(|(x, y)| x * phase.sin() + y * phase.cos() + rng.random_range(-0.1..0.1)),
        );
        landmarks.extend((0..LANDMARK_VALUES).map(|k| 0.5 + 0.3 * (phase + k as f32).sin()));
    }
    let f = Tensor::from_slice(&faces).reshape([1, frames as i64, 3, SIZE as i64, SIZE as i64]);
    let l = Tensor::from_slice(&landmarks).reshape([1, frames as i64, LANDMARK_VALUES as i64]);
    let (y, _) = tch::no_grad(|| {
        model
            .forward(
                &f,
                model.config().landmarks.then_some(&l),
                None,
                None,
                false,
            )
            .unwrap()
    });
    let y = Vec::<f32>::try_from(&y.flatten(0, -1)).unwrap();
    // Noise scaled per output (valence, arousal interleaved): their spreads can differ by orders
    // of magnitude with the near-zero output initialisation.
    let spread = |d: usize| {
        let vals: Vec<f32> = y.iter().skip(d).step_by(2).copied().collect();
        let mean = vals.iter().sum::<f32>() / vals.len() as f32;
        (vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / vals.len() as f32).sqrt()
    };
    let std = [spread(0), spread(1)];
    let labels = y
        .iter()
        .enumerate()
        .map(|(i, v)| v + 0.2 * std[i % 2] * rng.random_range(-1.0..1.0))
        .collect();
    let mut mask = vec![1.0; frames];
    mask[frames / 3] = 0.0;
    MemoryVideo {
        name: name.into(),
        faces,
        landmarks,
        labels,
        mask,
        present: vec![1.0; frames],
    }
}

fn clip(v: &MemoryVideo) -> LabelledClip {
    LabelledClip {
        video: v.name.clone(),
        frames: v.frames(),
        size: SIZE,
        faces: v.faces.clone(),
        landmarks: v.landmarks.clone(),
        labels: v.labels.clone(),
        mask: v.mask.clone(),
        present: v.present.clone(),
    }
}

fn oracle() -> OrtOracle {
    OrtOracle::from_env().unwrap_or_else(|why| panic!("the ONNX Runtime oracle is needed: {why}"))
}

fn save(model: &pb::ModelProto, path: &Path) {
    std::fs::write(path, encode(model)).unwrap();
}

fn metadata_json(config: &NetworkConfig, precision: Precision) -> String {
    let train = TrainConfig {
        network: config.clone(),
        ..TrainConfig::default()
    };
    affect_trainer::export::pipeline::metadata(
        &train,
        &Provenance {
            dataset_fingerprint: "test".into(),
            validation: None,
            git_revision: "test".into(),
        },
        precision,
    )
    .unwrap()
    .to_json()
    .unwrap()
}

fn fp32_proof(config: NetworkConfig, seed: i64) {
    let model = model(&config, seed);
    let v = video(&model, "clip", 12, seed as u64);
    let graph = streaming_graph(
        &config,
        &Parameters::from_model(&model).unwrap(),
        &metadata_json(&config, Precision::Fp32),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    save(&graph, &path);
    let oracle = oracle();
    let report = prove(
        &model,
        ExportedFiles {
            fp32: (&graph, &path),
            int8: None,
        },
        &clip(&v),
        Ok(&oracle),
        Bounds::default(),
    )
    .unwrap();
    assert!(report.failures.is_empty(), "{config:?}: {:#?}", report);
    let ort = report.onnxruntime.as_ref().unwrap();
    assert!(ort.max_abs_diff <= 1e-4 && report.tract.max_abs_diff <= 1e-4);
    assert_eq!(report.onnx_checker.values().next().unwrap(), "ok");
    assert!(report.torch.valence.ccc.unwrap() > 0.5, "{report:#?}");

    // The metadata the runtime reads.
    let metadata = common::exported_metadata(&path);
    assert_eq!(metadata.precision, Precision::Fp32);
    assert_eq!(
        metadata.recurrent.is_some(),
        config.kind == Architecture::CnnRnn
    );
}

#[test]
fn vgg_gru_with_landmarks_equals_tch_in_tract_and_onnxruntime() {
    fp32_proof(
        tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Gru, true),
        1,
    );
}

#[test]
fn resnet_peephole_lstm_equals_tch_in_tract_and_onnxruntime() {
    fp32_proof(
        tiny(Backbone::Resnet50, Architecture::CnnRnn, Cell::Lstm, false),
        2,
    );
}

#[test]
fn cnn_heads_equal_tch_in_tract_and_onnxruntime() {
    fp32_proof(
        tiny(Backbone::VggFace, Architecture::Cnn, Cell::Gru, true),
        3,
    );
    fp32_proof(
        tiny(Backbone::Resnet50, Architecture::Cnn, Cell::Gru, true),
        4,
    );
}

#[test]
fn per_dimension_networks_export_side_by_side() {
    fp32_proof(
        NetworkConfig {
            outputs: Outputs::PerDimension,
            ..tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Lstm, true)
        },
        5,
    );
}

/// The whole pipeline on an in-memory dataset: fp32 + int8 files, the report beside them, int8
/// on integer kernels in ONNX Runtime, metadata saying int8.
#[test]
fn pipeline_writes_proven_fp32_and_int8_models() {
    let network = NetworkConfig {
        width: 0.25,
        ..tiny(Backbone::Vgg16, Architecture::Cnn, Cell::Gru, true)
    };
    let config = TrainConfig {
        network: network.clone(),
        ..TrainConfig::default()
    };
    let model = model(&network, 6);
    let dataset = MemoryDataset {
        size: SIZE,
        videos: (0..3)
            .map(|k| video(&model, &format!("v{k}"), 40, 10 + k))
            .collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let options = ExportOptions {
        out: dir.path().join("model.onnx"),
        int8: true,
        calibration_frames: 60,
        range: RangeMethod::MinMax,
        proof_frames: 40,
        bounds: Bounds {
            // Random weights spread their outputs over a tiny range, so the CCC of a random
            // network is far more fragile than a trained one's; the size bound holds as is.
            int8_ccc_drop: 0.05,
            ..Bounds::default()
        },
    };
    let provenance = Provenance {
        dataset_fingerprint: "f".into(),
        validation: None,
        git_revision: "r".into(),
    };
    let (paths, report) =
        export(&config, &model, &provenance, &dataset, &dataset, &options).unwrap();
    assert!(report.failures.is_empty(), "{report:#?}");
    let int8 = report.int8.as_ref().unwrap();
    let ops = int8.onnxruntime_ops.as_ref().unwrap();
    assert_eq!(ops.get("QLinearConv"), Some(&13), "{ops:?}");
    assert!(
        !ops.contains_key("Conv") && !ops.contains_key("Gemm"),
        "{ops:?}"
    );
    assert!(ops.contains_key("QGemm"), "{ops:?}");
    assert!(int8.size_ratio <= 0.3, "{int8:?}");
    assert!(
        int8.weights_ratio <= 0.3 && int8.quantizable_share > 0.9,
        "{int8:?}"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&paths.report).unwrap()).unwrap();
    assert_eq!(written["failures"], serde_json::json!([]));
    assert_eq!(
        common::exported_metadata(&paths.int8).precision,
        Precision::Int8
    );
}

/// A graph that does not compute the trained network is caught, not shipped.
#[test]
fn proof_reports_a_graph_that_differs_from_the_network() {
    let config = tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Gru, true);
    let model = model(&config, 7);
    let v = video(&model, "clip", 8, 7);
    let mut graph = streaming_graph(
        &config,
        &Parameters::from_model(&model).unwrap(),
        &metadata_json(&config, Precision::Fp32),
    )
    .unwrap();
    let bias = graph
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == "out.bias")
        .unwrap();
    bias.raw_data[..4].copy_from_slice(&1.0f32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    save(&graph, &path);
    let report = prove(
        &model,
        ExportedFiles {
            fp32: (&graph, &path),
            int8: None,
        },
        &clip(&v),
        Err("not needed".into()),
        Bounds::default(),
    )
    .unwrap();
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.contains("tract fp32 differs")),
        "{:?}",
        report.failures
    );
    assert_eq!(report.onnxruntime_skipped.as_deref(), Some("not needed"));
}

#[test]
fn refuses_checkpoints_that_do_not_match_or_diverged() {
    let config = tiny(Backbone::Vgg16, Architecture::Cnn, Cell::Gru, false);
    let model = model(&config, 8);
    let params = Parameters::from_model(&model).unwrap();
    // The run's config says landmarks, the checkpoint was trained without.
    let other = NetworkConfig {
        landmarks: true,
        ..config.clone()
    };
    let err = streaming_graph(&other, &params, "{}").unwrap_err();
    assert!(
        matches!(&err, NetworkExportError::MissingParameter(name) if name == "landmarks.mean"),
        "{err}"
    );
    let rnn = NetworkConfig {
        kind: Architecture::CnnRnn,
        ..config.clone()
    };
    let err = streaming_graph(&rnn, &params, "{}")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no parameter `head.fc1.weight`") || err.contains("rnn.l0"),
        "{err}"
    );

    tch::no_grad(|| {
        let mut vars = model.var_store().variables();
        let _ = vars.get_mut("out.bias").unwrap().fill_(f64::NAN);
    });
    let err = Parameters::from_model(&model).unwrap_err().to_string();
    assert!(
        err.contains("out.bias") && err.contains("non-finite"),
        "{err}"
    );
}

/// Calibration clips carry state within a clip; percentile ranges are never wider than min/max.
#[test]
fn percentile_ranges_lie_inside_min_max() {
    let config = tiny(Backbone::Resnet50, Architecture::CnnRnn, Cell::Gru, true);
    let model = model(&config, 9);
    let graph = streaming_graph(
        &config,
        &Parameters::from_model(&model).unwrap(),
        &metadata_json(&config, Precision::Fp32),
    )
    .unwrap();
    let v = video(&model, "c", 10, 9);
    let clips = [CalibrationClip {
        faces: v.faces.clone(),
        landmarks: Some(v.landmarks.clone()),
        frames: v.frames(),
        present: v.present.clone(),
    }];
    let min_max = calibrate(&graph, &clips, RangeMethod::MinMax).unwrap();
    let central = calibrate(&graph, &clips, RangeMethod::Percentile(99.0)).unwrap();
    for (name, r) in &min_max {
        let p = central[name];
        assert!(
            p.min >= r.min && p.max <= r.max && p.min <= p.max,
            "{name}: {p:?} vs {r:?}"
        );
    }
    let int8 = quantize_qdq(&graph, &central).unwrap();
    let ops = common::op_types(&int8);
    assert!(
        ops.contains(&"GRU") && ops.iter().filter(|o| **o == "Conv").count() == 53,
        "{ops:?}"
    );
}

/// The rule of `affect_shared::contract` for frames without a face, on both sides of the
/// export: the tch whole-sequence forward with the face-presence mask equals, at every frame with
/// a face, the exported ONNX model (tract) stepped frame by frame on the frames with a face only
/// (what the edge runtime does when a track's face is missed).
fn faceless_gap_parity(config: NetworkConfig, seed: i64) {
    let model = model(&config, seed);
    let frames = 12;
    let v = video(&model, "gap", frames, seed as u64);
    let px = 3 * SIZE * SIZE;
    // Frames 4..8 have no face: zero pixels and landmarks, as the loader fills them.
    let present: Vec<f32> = (0..frames)
        .map(|t| if (4..8).contains(&t) { 0.0 } else { 1.0 })
        .collect();
    let mut faces = v.faces.clone();
    let mut landmarks = v.landmarks.clone();
    for t in (0..frames).filter(|&t| present[t] == 0.0) {
        faces[t * px..(t + 1) * px].fill(0.0);
        landmarks[t * LANDMARK_VALUES..(t + 1) * LANDMARK_VALUES].fill(0.0);
    }
    let f = Tensor::from_slice(&faces).reshape([1, frames as i64, 3, SIZE as i64, SIZE as i64]);
    let l = Tensor::from_slice(&landmarks).reshape([1, frames as i64, LANDMARK_VALUES as i64]);
    let p = Tensor::from_slice(&present).reshape([1, frames as i64]);
    let (y, _) = tch::no_grad(|| {
        model
            .forward(&f, config.landmarks.then_some(&l), Some(&p), None, false)
            .unwrap()
    });
    let tch_va = Vec::<f32>::try_from(&y.flatten(0, -1)).unwrap();

    let graph = streaming_graph(
        &config,
        &Parameters::from_model(&model).unwrap(),
        &metadata_json(&config, Precision::Fp32),
    )
    .unwrap();
    let mut runner = TractStreaming::new(&graph, 1, &[]).unwrap();
    let mut compared = 0;
    for t in (0..frames).filter(|&t| present[t] == 1.0) {
        let lm = &landmarks[t * LANDMARK_VALUES..(t + 1) * LANDMARK_VALUES];
        let step = runner
            .step(&faces[t * px..(t + 1) * px], config.landmarks.then_some(lm))
            .unwrap();
        for d in 0..2 {
            let diff = (step.va[d] - tch_va[2 * t + d]).abs();
            assert!(
                diff <= 1e-5,
                "{config:?}: frame {t}, output {d}: differs by {diff:e}"
            );
        }
        compared += 1;
    }
    assert_eq!(compared, 8);
}

#[test]
fn gru_state_is_kept_over_frames_without_a_face_in_tch_and_onnx() {
    faceless_gap_parity(
        tiny(Backbone::Vgg16, Architecture::CnnRnn, Cell::Gru, true),
        7,
    );
}

#[test]
fn lstm_state_is_kept_over_frames_without_a_face_in_tch_and_onnx() {
    faceless_gap_parity(
        tiny(Backbone::Resnet50, Architecture::CnnRnn, Cell::Lstm, false),
        8,
    );
}
