//! Backends against the streaming contract: tiny models written by an independent Python script
//! (`tests/oracles/stream_model.py`), run frame by frame with state carried, compared with ONNX
//! Runtime in Python; malformed models are refused with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use affect_edge::backend::{AffectBackend, BackendError, TrackState, TractBackend};
use affect_shared::preprocess::FaceInput;
use prost::Message;
use tract_onnx::pb::ModelProto;

mod common;

const SIZE: usize = 16;
const FRAMES: usize = 12;

fn python() -> Option<String> {
    common::oracle_env("AFFECT_PYTHON", "the ONNX Runtime oracle")
        .map(|p| p.to_string_lossy().into_owned())
}

fn oracle_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracles/stream_model.py")
}

fn make_model(py: &str, dir: &Path, cell: &str, landmarks: bool) -> PathBuf {
    let path = dir.join(format!("{cell}-{landmarks}.onnx"));
    let mut cmd = Command::new(py);
    cmd.arg(oracle_script())
        .arg("make")
        .arg(&path)
        .args(["--cell", cell]);
    cmd.args(["--size", &SIZE.to_string()]);
    if landmarks {
        cmd.arg("--landmarks");
    }
    let status = cmd.status().expect("run stream_model.py");
    assert!(status.success(), "stream_model.py make failed");
    path
}

/// Deterministic pseudo-random inputs (no RNG crate needed: a small LCG).
fn clip(landmarks: bool) -> Vec<FaceInput> {
    let mut x: u32 = 12345;
    let mut next = move || {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    };
    (0..FRAMES)
        .map(|_| FaceInput {
            pixels: (0..3 * SIZE * SIZE).map(|_| next()).collect(),
            landmarks: landmarks.then(|| std::array::from_fn(|_| next() * 0.5 + 0.5)),
        })
        .collect()
}

fn reference(py: &str, model: &Path, clip: &[FaceInput], dir: &Path) -> Vec<[f32; 2]> {
    let inputs = serde_json::json!({
        "faces": clip.iter().map(|f| f.pixels.clone()).collect::<Vec<_>>(),
        "landmarks": clip.iter().map(|f| f.landmarks.map(|l| l.to_vec()).unwrap_or_default()).collect::<Vec<_>>(),
    });
    let path = dir.join("inputs.json");
    std::fs::write(&path, inputs.to_string()).unwrap();
    let out = Command::new(py)
        .arg(oracle_script())
        .arg("run")
        .arg(model)
        .arg(&path)
        .output()
        .expect("run stream_model.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["va"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| [p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32])
        .collect()
}

/// One track through `clip`, one face per model call.
fn stream(backend: &mut dyn AffectBackend, clip: &[FaceInput]) -> Vec<[f32; 2]> {
    let mut state = [TrackState::zeros(&backend.contract().state)];
    clip.iter()
        .map(|f| {
            backend
                .step_batch(std::slice::from_ref(f), &mut state)
                .unwrap()[0]
        })
        .collect()
}

fn max_diff(a: &[[f32; 2]], b: &[[f32; 2]]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| [(x[0] - y[0]).abs(), (x[1] - y[1]).abs()])
        .fold(0.0, f32::max)
}

#[test]
fn tract_streams_like_onnx_runtime_for_every_cell() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (cell, landmarks) in [
        ("gru", true),
        ("lstm", true),
        ("none", false),
        ("gru", false),
    ] {
        let model = make_model(&py, dir.path(), cell, landmarks);
        let clip = clip(landmarks);
        let want = reference(&py, &model, &clip, dir.path());
        let mut tract = TractBackend::load(&model).unwrap();
        assert_eq!(tract.contract().landmarks, landmarks);
        let got = stream(&mut tract, &clip);
        let diff = max_diff(&got, &want);
        assert!(diff <= 1e-5, "{cell}/{landmarks}: tract vs ORT {diff}");
        // The state matters: outputs change over a constant input for recurrent models.
        if cell != "none" {
            let same = vec![clip[0].clone(); 4];
            let out = stream(&mut tract, &same);
            assert!(
                (out[0][0] - out[3][0]).abs() > 1e-6,
                "{cell}: state not carried"
            );
        }

        #[cfg(feature = "onnxruntime")]
        if common::oracle_env("ORT_DYLIB_PATH", "the Rust ONNX Runtime backend check").is_some() {
            use affect_edge::backend::{OnnxRuntimeBackend, OnnxRuntimeConfig};
            let mut ort =
                OnnxRuntimeBackend::load(&model, &OnnxRuntimeConfig::default(), 1).unwrap();
            let got = stream(&mut ort, &clip);
            let diff = max_diff(&got, &want);
            assert!(diff <= 1e-5, "{cell}: Rust ORT vs Python ORT {diff}");
        }
    }
}

fn rewrite(model: &Path, out: &Path, edit: impl FnOnce(&mut ModelProto)) -> PathBuf {
    let mut proto = ModelProto::decode(std::fs::read(model).unwrap().as_slice()).unwrap();
    edit(&mut proto);
    std::fs::write(out, proto.encode_to_vec()).unwrap();
    out.to_path_buf()
}

fn refusal(path: &Path) -> String {
    match TractBackend::load(path) {
        Err(e @ (BackendError::Unsupported { .. } | BackendError::Load { .. })) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("{} was accepted", path.display()),
    }
}

#[test]
fn models_the_runtime_cannot_serve_are_refused_with_the_reason() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = make_model(&py, dir.path(), "gru", true);

    let no_meta = rewrite(&model, &dir.path().join("a.onnx"), |p| {
        p.metadata_props.clear()
    });
    assert!(refusal(&no_meta).contains("no `affect` entry"));

    let set_meta = |p: &mut ModelProto, f: &dyn Fn(&mut serde_json::Value)| {
        let entry = &mut p.metadata_props[0];
        let mut v: serde_json::Value = serde_json::from_str(&entry.value).unwrap();
        f(&mut v);
        entry.value = v.to_string();
    };
    let future = rewrite(&model, &dir.path().join("b.onnx"), |p| {
        set_meta(p, &|v| v["schema"] = "2.0".into())
    });
    assert!(refusal(&future).contains("schema 2.0 is not supported"));

    let no_landmarks = rewrite(&model, &dir.path().join("c.onnx"), |p| {
        set_meta(p, &|v| v["preprocess"]["landmarks"] = false.into())
    });
    assert!(refusal(&no_landmarks).contains("landmarks"));

    let wrong_size = rewrite(&model, &dir.path().join("d.onnx"), |p| {
        set_meta(p, &|v| v["preprocess"]["size"] = 32.into())
    });
    assert!(
        refusal(&wrong_size).contains("input `face` has shape [?,3,16,16], expected [?,3,32,32]"),
        "{}",
        refusal(&wrong_size)
    );

    let wrong_state = rewrite(&model, &dir.path().join("e.onnx"), |p| {
        set_meta(p, &|v| v["recurrent"]["hidden"] = 128.into())
    });
    assert!(refusal(&wrong_state).contains("h_in"));

    let int8 = rewrite(&model, &dir.path().join("f.onnx"), |p| {
        set_meta(p, &|v| v["precision"] = "int8".into())
    });
    assert!(refusal(&int8).contains("onnxruntime"));

    let garbage = dir.path().join("g.onnx");
    std::fs::write(&garbage, b"not a model").unwrap();
    assert!(refusal(&garbage).contains("g.onnx"));
    assert!(refusal(&dir.path().join("missing.onnx")).contains("no such model file"));
}

/// Deterministic pseudo-random face inputs of `backend`'s size: `[track][frame]`.
fn faces_of(backend: &dyn AffectBackend, tracks: usize, frames: usize) -> Vec<Vec<FaceInput>> {
    let contract = backend.contract();
    let pixels = 3 * contract.face_size * contract.face_size;
    let mut x: u32 = 987_654_321;
    let mut next = move || {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    };
    (0..tracks)
        .map(|_| {
            (0..frames)
                .map(|_| FaceInput {
                    pixels: (0..pixels).map(|_| next()).collect(),
                    landmarks: contract
                        .landmarks
                        .then(|| std::array::from_fn(|_| next() * 0.5 + 0.5)),
                })
                .collect()
        })
        .collect()
}

/// Whether `track` has a face on `frame`: every track misses some frames, so each frame's
/// batch is a different subset (and a different size) of the tracks.
fn present(track: usize, frame: usize) -> bool {
    (frame + 2 * track) % 5 != 4
}

/// Largest difference between stepping several tracks frame by frame in one batched call per
/// frame and stepping each track alone (one face per call), state carried across frames.
fn batched_vs_alone(backend: &mut dyn AffectBackend, tracks: usize, frames: usize) -> f32 {
    let faces = faces_of(backend, tracks, frames);
    let zeros = TrackState::zeros(&backend.contract().state);
    let mut alone = vec![vec![None; frames]; tracks];
    for (t, clip) in faces.iter().enumerate() {
        let mut state = [zeros.clone()];
        for (f, face) in clip.iter().enumerate() {
            if present(t, f) {
                let va = backend.step_batch(std::slice::from_ref(face), &mut state);
                alone[t][f] = Some(va.unwrap()[0]);
            }
        }
    }
    let mut states = vec![zeros; tracks];
    let mut worst: f32 = 0.0;
    let mut compared = 0;
    for f in 0..frames {
        let stepped: Vec<usize> = (0..tracks).filter(|&t| present(t, f)).collect();
        let batch: Vec<FaceInput> = stepped.iter().map(|&t| faces[t][f].clone()).collect();
        let mut batch_states: Vec<TrackState> = stepped
            .iter()
            .map(|&t| std::mem::replace(&mut states[t], TrackState { h: vec![], c: None }))
            .collect();
        let va = backend.step_batch(&batch, &mut batch_states).unwrap();
        assert_eq!(va.len(), stepped.len());
        for ((&t, state), got) in stepped.iter().zip(batch_states).zip(va) {
            states[t] = state;
            let want = alone[t][f].expect("stepped alone too");
            worst = worst.max(max_diff(&[got], &[want]));
            compared += 1;
        }
    }
    assert!(compared > tracks * frames / 2, "{compared} comparisons");
    worst
}

#[test]
fn a_batch_of_tracks_equals_stepping_each_track_alone() {
    const TRACKS: usize = 6;
    const FRAMES: usize = 7;
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let dir = tempfile::tempdir().unwrap();
    let mut models = vec![
        bundled.join("affect-synth.onnx"),
        bundled.join("expression-va.onnx"),
    ];
    if let Some(py) = python() {
        models.push(make_model(&py, dir.path(), "lstm", true));
        models.push(make_model(&py, dir.path(), "gru", true));
    }
    // One thread runs the batch in one call (ONNX Runtime) or row by row (tract); three split
    // the six tracks into parts of two, each part on its own thread.
    for model in &models {
        for threads in [1, 3] {
            let mut tract = TractBackend::load(model).unwrap().with_threads(threads);
            let diff = batched_vs_alone(&mut tract, TRACKS, FRAMES);
            eprintln!(
                "{}: tract on {threads} threads, batched vs alone {diff:.2e}",
                model.display()
            );
            assert!(diff <= 1e-5, "{}: tract {threads} {diff}", model.display());

            #[cfg(feature = "onnxruntime")]
            if common::oracle_env("ORT_DYLIB_PATH", "the Rust ONNX Runtime backend check").is_some()
            {
                use affect_edge::backend::{OnnxRuntimeBackend, OnnxRuntimeConfig};
                let mut ort =
                    OnnxRuntimeBackend::load(model, &OnnxRuntimeConfig::default(), threads)
                        .unwrap();
                let diff = batched_vs_alone(&mut ort, TRACKS, FRAMES);
                eprintln!(
                    "{}: onnxruntime on {threads} threads, batched vs alone {diff:.2e}",
                    model.display()
                );
                assert!(
                    diff <= 1e-5,
                    "{}: onnxruntime {threads} {diff}",
                    model.display()
                );
            }
        }
    }
}

#[test]
fn a_batch_whose_faces_and_states_differ_in_number_is_refused() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/affect-synth.onnx");
    let mut tract = TractBackend::load(&model).unwrap();
    let face = faces_of(&tract, 1, 1).remove(0).remove(0);
    let mut states = vec![TrackState::zeros(&tract.contract().state); 2];
    let before = states.clone();
    let err = tract.step_batch(&[face], &mut states).unwrap_err();
    assert!(
        err.to_string().contains("1 faces but 2 track states"),
        "{err}"
    );
    assert_eq!(states, before);
}
