//! The ONNX graph builder and the QDQ pass on a small network with random weights (conv + batch
//! norm, residual add, pools, landmarks concat, GRU / peephole LSTM): the graph must pass
//! `onnx.checker` (full check), and tract and ONNX Runtime must agree with an independent PyTorch
//! computation from the PyTorch-layout weights (`tests/oracles/onnx_reference_net.py`), step by
//! step with carried state and over the whole sequence. The int8 graph must run in ONNX Runtime
//! on integer kernels and stay close to fp32.

mod common;

use affect_shared::contract::{C_IN, C_OUT, FACE, H_IN, H_OUT, LANDMARK_VALUES, LANDMARKS, VA};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use affect_trainer::export::calibrate::{CalibrationClip, RangeMethod, calibrate};
use affect_trainer::export::onnx::{
    BatchNorm, ConvSpec, Dim, FloatTensor, GraphBuilder, OnnxError, PoolSpec, RecurrentCell,
    RecurrentLayer, encode, fold_batch_norm,
};
use affect_trainer::export::quantize::{calibration_targets, quantize_qdq};
use affect_trainer::export::runner::TractStreaming;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

const SIZE: usize = 16;
const C1: usize = 4;
const C2: usize = 6;
const FC1: usize = 8;
const EPS: f64 = 1e-5;

#[derive(Clone, Copy)]
struct Net {
    landmarks: bool,
    cell: Option<RecurrentCell>,
    layers: usize,
    hidden: usize,
}

/// PyTorch-layout weights by parameter name.
struct Weights {
    rng: StdRng,
    tensors: BTreeMap<String, FloatTensor>,
}

impl Weights {
    fn uniform(&mut self, name: &str, dims: &[usize], low: f32, high: f32) -> FloatTensor {
        let n = dims.iter().product();
        let data = (0..n).map(|_| self.rng.random_range(low..high)).collect();
        let t = FloatTensor::new(name, dims.to_vec(), data).unwrap();
        self.tensors.insert(name.to_owned(), t.clone());
        t
    }

    fn kaiming(&mut self, name: &str, dims: &[usize]) -> FloatTensor {
        let fan_in: usize = dims[1..].iter().product();
        let bound = (3.0 / fan_in as f32).sqrt();
        self.uniform(name, dims, -bound, bound)
    }

    fn bn(&mut self, name: &str, c: usize) -> BatchNorm {
        BatchNorm {
            weight: self.uniform(&format!("{name}.weight"), &[c], 0.5, 1.5).data,
            bias: self.uniform(&format!("{name}.bias"), &[c], -0.2, 0.2).data,
            running_mean: self
                .uniform(&format!("{name}.running_mean"), &[c], -0.2, 0.2)
                .data,
            running_var: self
                .uniform(&format!("{name}.running_var"), &[c], 0.5, 1.5)
                .data,
            eps: EPS,
        }
    }
}

/// Builds the test network (see the oracle's doc) and returns the model and its weights.
fn build(net: Net, seed: u64) -> (pb::ModelProto, BTreeMap<String, FloatTensor>) {
    let mut w = Weights {
        rng: StdRng::seed_from_u64(seed),
        tensors: BTreeMap::new(),
    };
    let mut g = GraphBuilder::new();
    let face = g
        .input(
            FACE,
            &[
                Dim::Batch,
                Dim::Fixed(3),
                Dim::Fixed(SIZE),
                Dim::Fixed(SIZE),
            ],
        )
        .unwrap();
    let landmarks = net.landmarks.then(|| {
        g.input(LANDMARKS, &[Dim::Batch, Dim::Fixed(LANDMARK_VALUES)])
            .unwrap()
    });
    let state_dims = [Dim::Fixed(net.layers), Dim::Batch, Dim::Fixed(net.hidden)];
    let h_in = net.cell.map(|_| g.input(H_IN, &state_dims).unwrap());
    let c_in = (net.cell == Some(RecurrentCell::Lstm)).then(|| g.input(C_IN, &state_dims).unwrap());

    let same = ConvSpec::new(1, 1);
    let conv1 = w.kaiming("conv1.weight", &[C1, 3, 3, 3]);
    let bn1 = w.bn("bn1", C1);
    let x = g
        .conv_bn("conv1", &face, &conv1, None, &bn1, &same)
        .unwrap();
    let x = g.relu("relu1", &x).unwrap();
    let x = g.max_pool("pool1", &x, &PoolSpec::new(2, 2, 0)).unwrap();
    let conv2 = w.kaiming("conv2.weight", &[C1, C1, 3, 3]);
    let bn2 = w.bn("bn2", C1);
    let y = g.conv_bn("conv2", &x, &conv2, None, &bn2, &same).unwrap();
    let y = g.relu("relu2", &y).unwrap();
    let conv3 = w.kaiming("conv3.weight", &[C1, C1, 3, 3]);
    let bn3 = w.bn("bn3", C1);
    let y = g.conv_bn("conv3", &y, &conv3, None, &bn3, &same).unwrap();
    let x = g.add("residual", &x, &y).unwrap();
    let x = g.relu("relu3", &x).unwrap();
    let conv4 = w.kaiming("conv4.weight", &[C2, C1, 3, 3]);
    let conv4_bias = w.uniform("conv4.bias", &[C2], -0.1, 0.1);
    let x = g
        .conv("conv4", &x, &conv4, Some(&conv4_bias), &ConvSpec::new(2, 1))
        .unwrap();
    let x = g.relu("relu4", &x).unwrap();
    let pooled = g
        .average_pool("avgpool", &x, &PoolSpec::new(2, 2, 0), true)
        .unwrap();
    let pooled = g.flatten("avgpool.flat", &pooled, 1).unwrap();
    let global = g.global_average_pool("gap", &x).unwrap();
    let global = g.flatten("gap.flat", &global, 1).unwrap();
    let mut parts = vec![&pooled, &global];
    if let Some(l) = &landmarks {
        parts.push(l);
    }
    let f = g.concat("features", &parts, 1).unwrap();
    let features = C2 * 4 + C2 + if net.landmarks { LANDMARK_VALUES } else { 0 };
    let fc1 = w.kaiming("fc1.weight", &[FC1, features]);
    let fc1_bias = w.uniform("fc1.bias", &[FC1], -0.1, 0.1);
    let f = g.gemm("fc1", &f, &fc1, &fc1_bias).unwrap();
    let mut f = g.relu("fc1.relu", &f).unwrap();
    let mut state_out = None;
    if let Some(cell) = net.cell {
        let gates = if cell == RecurrentCell::Gru { 3 } else { 4 };
        let bound = 1.0 / (net.hidden as f32).sqrt();
        let layers: Vec<RecurrentLayer> = (0..net.layers)
            .map(|k| {
                let p = format!("rnn.l{k}");
                let inputs = if k == 0 { FC1 } else { net.hidden };
                let gh = gates * net.hidden;
                RecurrentLayer {
                    weight_ih: w.uniform(&format!("{p}.weight_ih"), &[gh, inputs], -bound, bound),
                    weight_hh: w.uniform(
                        &format!("{p}.weight_hh"),
                        &[gh, net.hidden],
                        -bound,
                        bound,
                    ),
                    bias_ih: w.uniform(&format!("{p}.bias_ih"), &[gh], -bound, bound),
                    bias_hh: w.uniform(&format!("{p}.bias_hh"), &[gh], -bound, bound),
                    peepholes: (cell == RecurrentCell::Lstm).then(|| {
                        ["i", "f", "o"].map(|gate| {
                            w.uniform(&format!("{p}.peephole_{gate}"), &[net.hidden], -0.5, 0.5)
                        })
                    }),
                }
            })
            .collect();
        let out = g
            .recurrent(
                "rnn",
                cell,
                &f,
                h_in.as_ref().unwrap(),
                c_in.as_ref(),
                0,
                &layers,
            )
            .unwrap();
        f = out.y.clone();
        state_out = Some(out);
    }
    let in_features = if net.cell.is_some() { net.hidden } else { FC1 };
    let out_w = w.kaiming("out.weight", &[2, in_features]);
    let out_b = w.uniform("out.bias", &[2], -0.1, 0.1);
    let va = g.gemm("out", &f, &out_w, &out_b).unwrap();
    g.output(VA, &va, &[Dim::Batch, Dim::Fixed(2)]).unwrap();
    if let Some(out) = state_out {
        g.output(H_OUT, &out.h, &state_dims).unwrap();
        if let Some(c) = &out.c {
            g.output(C_OUT, c, &state_dims).unwrap();
        }
    }
    let model = g.finish(
        "test_net",
        &[("affect".to_owned(), "{\"test\":true}".to_owned())],
    );
    (model, w.tensors)
}

struct Clip {
    steps: usize,
    batch: usize,
    faces: Vec<f32>,
    landmarks: Vec<f32>,
}

fn clip(steps: usize, batch: usize, seed: u64) -> Clip {
    let mut rng = StdRng::seed_from_u64(seed);
    // A slowly drifting image plus noise, so consecutive frames are related like video.
    let base: Vec<f32> = (0..3 * SIZE * SIZE)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut faces = Vec::new();
    let mut landmarks = Vec::new();
    for t in 0..steps {
        for b in 0..batch {
            let drift = (t as f32 * 0.3 + b as f32).sin();
            faces.extend(base.iter().map(|v| v * drift + rng.random_range(-0.3..0.3)));
            landmarks.extend((0..LANDMARK_VALUES).map(|_| rng.random_range(0.0..1.0f32)));
        }
    }
    Clip {
        steps,
        batch,
        faces,
        landmarks,
    }
}

fn python() -> String {
    std::env::var("AFFECT_PYTHON").expect(
        "AFFECT_PYTHON is not set: run `. tests/setup.sh` first (it creates the oracle venv)",
    )
}

fn oracle(script: &str, args: &[&Path]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/oracles")
        .join(script);
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

struct Files {
    _dir: tempfile::TempDir,
    faces: PathBuf,
    landmarks: PathBuf,
    root: PathBuf,
}

fn files(clip: &Clip) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let faces = root.join("faces.f32");
    let landmarks = root.join("landmarks.f32");
    write_f32(&faces, &clip.faces);
    write_f32(&landmarks, &clip.landmarks);
    Files {
        _dir: dir,
        faces,
        landmarks,
        root,
    }
}

fn save(model: &pb::ModelProto, path: &Path) {
    std::fs::write(path, encode(model)).unwrap();
}

fn tract_steps(model: &pb::ModelProto, clip: &Clip, net: Net) -> Vec<Vec<f32>> {
    let mut runner = TractStreaming::new(model, clip.batch, &[]).unwrap();
    let face_len = clip.batch * 3 * SIZE * SIZE;
    let lm_len = clip.batch * LANDMARK_VALUES;
    (0..clip.steps)
        .map(|t| {
            let lm = &clip.landmarks[t * lm_len..(t + 1) * lm_len];
            runner
                .step(
                    &clip.faces[t * face_len..(t + 1) * face_len],
                    net.landmarks.then_some(lm),
                )
                .unwrap()
                .va
        })
        .collect()
}

fn ort_steps(model: &Path, f: &Files, clip: &Clip, net: Net, int8_ops: bool) -> serde_json::Value {
    let steps = clip.steps.to_string();
    let batch = clip.batch.to_string();
    let landmarks = if net.landmarks {
        f.landmarks.as_path()
    } else {
        Path::new("-")
    };
    let mut args = vec![
        Path::new("run"),
        model,
        &f.faces,
        landmarks,
        Path::new(&steps),
        Path::new(&batch),
    ];
    if int8_ops {
        args.push(Path::new("--int8-ops"));
    }
    oracle("onnx_ort.py", &args)
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn reference(
    net: Net,
    weights: &BTreeMap<String, FloatTensor>,
    clip: &Clip,
    f: &Files,
) -> serde_json::Value {
    let spec = serde_json::json!({
        "size": SIZE, "batch": clip.batch, "steps": clip.steps, "landmarks": net.landmarks,
        "cell": net.cell.map(|c| if c == RecurrentCell::Gru { "gru" } else { "lstm" }),
        "layers": net.layers, "hidden": net.hidden, "eps": EPS,
        "weights": weights.iter().map(|(k, t)| (k.clone(), serde_json::json!({"shape": t.dims, "data": t.data}))).collect::<serde_json::Map<_, _>>(),
    });
    let spec_path = f.root.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let landmarks = if net.landmarks {
        f.landmarks.as_path()
    } else {
        Path::new("-")
    };
    oracle("onnx_reference_net.py", &[&spec_path, &f.faces, landmarks])
}

fn check_full(models: &[&Path]) {
    let mut args = vec![Path::new("check")];
    args.extend_from_slice(models);
    let report = oracle("onnx_ort.py", &args);
    for m in models {
        assert_eq!(report[m.to_str().unwrap()], "ok", "{report}");
    }
}

/// fp32: tract and ONNX Runtime, frame by frame with carried state, equal the PyTorch reference
/// run frame by frame and over the whole sequence.
fn fp32_parity(net: Net, seed: u64) {
    let (model, weights) = build(net, seed);
    let clip = clip(6, 3, seed + 1);
    let f = files(&clip);
    let path = f.root.join("model.onnx");
    save(&model, &path);
    check_full(&[&path]);
    let reference = reference(net, &weights, &clip, &f);
    let (torch_step, torch_sequence) = (matrix(&reference["step"]), matrix(&reference["sequence"]));
    let tract = tract_steps(&model, &clip, net);
    let ort = matrix(&ort_steps(&path, &f, &clip, net, false)[VA]);
    let scale = torch_step
        .iter()
        .flatten()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.05, "degenerate test outputs (max |va| = {scale})");
    for (name, got) in [("tract", &tract), ("onnxruntime", &ort)] {
        let step = max_abs_diff(got, &torch_step);
        let sequence = max_abs_diff(got, &torch_sequence);
        assert!(
            step <= 1e-5,
            "{name} vs PyTorch frame by frame: max abs diff {step}"
        );
        assert!(
            sequence <= 1e-5,
            "{name} vs PyTorch whole sequence: max abs diff {sequence}"
        );
    }
}

#[test]
fn gru_with_landmarks_matches_pytorch_in_tract_and_onnxruntime() {
    fp32_parity(
        Net {
            landmarks: true,
            cell: Some(RecurrentCell::Gru),
            layers: 2,
            hidden: 5,
        },
        11,
    );
}

#[test]
fn peephole_lstm_matches_pytorch_in_tract_and_onnxruntime() {
    fp32_parity(
        Net {
            landmarks: false,
            cell: Some(RecurrentCell::Lstm),
            layers: 2,
            hidden: 4,
        },
        21,
    );
}

#[test]
fn cnn_only_matches_pytorch_in_tract_and_onnxruntime() {
    fp32_parity(
        Net {
            landmarks: true,
            cell: None,
            layers: 0,
            hidden: 0,
        },
        31,
    );
}

/// int8: passes the full check, runs in ONNX Runtime as integer convolutions and GEMMs, keeps
/// the recurrent layer float, and stays close to fp32 in both runtimes.
#[test]
fn int8_qdq_runs_on_integer_kernels_and_tracks_fp32() {
    let net = Net {
        landmarks: true,
        cell: Some(RecurrentCell::Gru),
        layers: 1,
        hidden: 6,
    };
    let (model, _) = build(net, 41);
    let calibration: Vec<CalibrationClip> = (0..4)
        .map(|k| {
            let c = clip(8, 1, 100 + k);
            CalibrationClip {
                faces: c.faces,
                landmarks: Some(c.landmarks),
                frames: c.steps,
                present: vec![1.0; c.steps],
            }
        })
        .collect();
    let ranges = calibrate(&model, &calibration, RangeMethod::MinMax).unwrap();
    assert_eq!(ranges.len(), calibration_targets(&model).unwrap().len());
    let int8 = quantize_qdq(&model, &ranges).unwrap();
    let ops = common::op_types(&int8);
    assert!(
        ops.contains(&"GRU") && ops.contains(&"QuantizeLinear"),
        "{ops:?}"
    );

    let clip = clip(6, 2, 42);
    let f = files(&clip);
    let (fp32_path, int8_path) = (f.root.join("fp32.onnx"), f.root.join("int8.onnx"));
    save(&model, &fp32_path);
    save(&int8, &int8_path);
    check_full(&[&fp32_path, &int8_path]);
    assert!(
        std::fs::metadata(&int8_path).unwrap().len() < std::fs::metadata(&fp32_path).unwrap().len()
    );

    let fp32 = tract_steps(&model, &clip, net);
    let tract_int8 = tract_steps(&int8, &clip, net);
    let ort = ort_steps(&int8_path, &f, &clip, net, true);
    let ort_int8 = matrix(&ort[VA]);
    let runtime_ops = ort["ops"].as_object().unwrap();
    let count = |op: &str| runtime_ops.get(op).and_then(|v| v.as_u64()).unwrap_or(0);
    assert_eq!(count("QLinearConv"), 4, "ONNX Runtime ran {runtime_ops:?}");
    assert!(
        count("Conv") == 0,
        "float convolutions left: {runtime_ops:?}"
    );
    assert!(count("GRU") == 1, "{runtime_ops:?}");

    let scale = fp32.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
    let quantization_error = max_abs_diff(&ort_int8, &fp32);
    assert!(
        quantization_error <= 0.1 * scale,
        "int8 drifts from fp32 by {quantization_error} (outputs up to {scale})"
    );
    // Both runtimes compute the same quantized function; they differ only by rounding of
    // intermediate requantization.
    let between = max_abs_diff(&ort_int8, &tract_int8);
    assert!(
        between <= 0.05 * scale,
        "ORT int8 vs tract QDQ: {between} (outputs up to {scale})"
    );
}

#[test]
fn metadata_round_trips_through_tract() {
    let net = Net {
        landmarks: false,
        cell: None,
        layers: 0,
        hidden: 0,
    };
    let (model, _) = build(net, 51);
    let bytes = encode(&model);
    let loaded = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap();
    let value = &loaded.properties["onnx.metadata_props.affect"];
    assert_eq!(
        value
            .to_plain_array_view::<String>()
            .unwrap()
            .iter()
            .next()
            .unwrap(),
        "{\"test\":true}"
    );
}

#[test]
fn builder_refuses_inconsistent_weights_by_name() {
    let t = |dims: &[usize]| {
        FloatTensor::new("t", dims.to_vec(), vec![0.0; dims.iter().product()]).unwrap()
    };
    assert!(matches!(
        FloatTensor::new("fc.weight", vec![2, 3], vec![0.0; 5]),
        Err(OnnxError::ShapeMismatch { ref name, expected: 6, found: 5, .. }) if name == "fc.weight"
    ));
    let mut g = GraphBuilder::new();
    let x = g.input("x", &[Dim::Batch, Dim::Fixed(3)]).unwrap();
    assert_eq!(
        g.input("x", &[Dim::Batch]),
        Err(OnnxError::DuplicateName("x".into()))
    );
    let err = g
        .gemm("fc", &x, &t(&[2, 3]), &t(&[3]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc") && err.contains("bias"), "{err}");
    let h = g
        .input("h", &[Dim::Fixed(1), Dim::Batch, Dim::Fixed(4)])
        .unwrap();
    let layer = RecurrentLayer {
        weight_ih: t(&[12, 3]),
        weight_hh: t(&[12, 5]),
        bias_ih: t(&[12]),
        bias_hh: t(&[12]),
        peepholes: None,
    };
    let err = g
        .recurrent("rnn", RecurrentCell::Gru, &x, &h, None, 0, &[layer])
        .unwrap_err()
        .to_string();
    assert!(err.contains("rnn.l0") && err.contains("weight_hh"), "{err}");
    let bn = BatchNorm {
        weight: vec![1.0; 3],
        bias: vec![0.0; 3],
        running_mean: vec![0.0; 3],
        running_var: vec![1.0; 3],
        eps: 1e-5,
    };
    let err = fold_batch_norm("conv1", &t(&[4, 3, 3, 3]), None, &bn)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv1") && err.contains("4 output channels"),
        "{err}"
    );
}
