//! `affect-edge` as a binary: its output, exit codes (DESIGN.md § 6: 0 clean stop, 2 bad
//! configuration or model, 1 other failure) and signal handling.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

fn bundled_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/affect-synth.onnx")
}

fn affect_edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_affect-edge"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("start affect-edge")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One stdout report: its frame number and whether it is a track's final (`face-lost`) report.
#[derive(Debug, PartialEq)]
struct Line {
    frame: u64,
    face_lost: bool,
}

/// Parses one stdout report line and checks its keys, ranges and flags.
fn check_report(line: &str) -> Line {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
    for key in [
        "ts",
        "frame",
        "track",
        "valence",
        "arousal",
        "box",
        "score",
        "flags",
        "latency_ms",
    ] {
        assert!(v.get(key).is_some(), "{line}: no {key}");
    }
    // The runner measures every report's latency (the synthetic clip's timestamps may run
    // ahead of the clock: then 0); a minute would mean a wrong clock.
    let latency = v["latency_ms"].as_u64();
    assert!(latency.is_some_and(|ms| ms < 60_000), "{line}: latency");
    for key in ["valence", "arousal"] {
        let x = v[key].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&x), "{line}: {key} {x}");
    }
    let score = v["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score), "{line}: score {score}");
    let bbox = v["box"].as_array().unwrap();
    assert_eq!(bbox.len(), 4, "{line}");
    assert!(bbox.iter().all(|b| b.as_f64().unwrap() >= 0.0), "{line}");
    let flags: Vec<&str> = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let known = ["new-track", "smoothed", "low-confidence", "face-lost"];
    assert!(flags.iter().all(|f| known.contains(f)), "{line}");
    Line {
        frame: v["frame"].as_u64().unwrap(),
        face_lost: flags.contains(&"face-lost"),
    }
}

fn run_synthetic(extra: &[&str], frames: u64) -> Vec<Line> {
    let model = bundled_model();
    let n = frames.to_string();
    let mut args = vec![
        "run",
        "--source",
        "synthetic:3",
        "--max-frames",
        &n,
        "--model",
        model.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = affect_edge(&args);
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(check_report)
        .collect()
}

#[test]
fn run_without_a_detector_reports_one_face_per_frame_and_ends_the_track() {
    let lines = run_synthetic(&["--faces", "none"], 5);
    let line = |frame, face_lost| Line { frame, face_lost };
    let mut expected: Vec<Line> = (0..5).map(|f| line(f, false)).collect();
    // The run stops with the face still tracked: its track ends with one final report.
    expected.push(line(4, true));
    assert_eq!(lines, expected);
}

#[test]
fn run_with_the_bundled_detector_reports_at_most_the_requested_frames() {
    let lines = run_synthetic(&[], 4);
    assert!(!lines.is_empty(), "no face found in 4 synthetic frames");
    assert!(lines.iter().all(|l| l.frame < 4), "{lines:?}");
}

#[test]
fn info_prints_the_bundled_model_metadata() {
    let out = affect_edge(&["info", bundled_model().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let json_start = text.find('{').expect("metadata JSON");
    let metadata: serde_json::Value = serde_json::from_str(&text[json_start..]).unwrap();
    assert!(metadata.get("backbone").is_some(), "{text}");
    assert!(metadata.get("precision").is_some(), "{text}");
}

#[test]
fn bench_prints_stage_times_and_frame_rate() {
    let out = affect_edge(&[
        "bench",
        "--frames",
        "5",
        "--faces",
        "none",
        "--source",
        "synthetic:1",
        "--source",
        "synthetic:2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("stages (mean ms)"), "{text}");
    assert!(text.contains("frames/s"), "{text}");
    // The second source is compared with the first on every backend that ran.
    assert!(
        text.contains("tract: frame time synthetic:2 / synthetic:1: "),
        "{text}"
    );
    // Landmark tracking cannot detect on "every 0th" frame: refused by name.
    assert_bad_input(
        &[
            "bench",
            "--frames",
            "1",
            "--faces",
            "bundled",
            "--redetect-every",
            "0",
        ],
        "redetect_every",
    );
}

#[test]
fn bench_in_memory_decodes_the_files_once_and_loops_over_them() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [("a.png", 40), ("b.png", 200)] {
        image::RgbImage::from_pixel(96, 96, image::Rgb([value, 128, 90]))
            .save(dir.path().join(name))
            .unwrap();
    }
    let source = format!("images:{}", dir.path().display());
    let out = affect_edge(&[
        "bench",
        "--frames",
        "7",
        "--faces",
        "none",
        "--in-memory",
        "--source",
        &source,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "source {source} (decoded once, served from memory)"
        )),
        "{text}"
    );
    // Seven frames from two files: the loop went round, and each frame was stamped when handed
    // out, so capture-to-report latency is measured.
    assert!(text.contains("end to end: 7 frames at "), "{text}");
    assert!(text.contains("capture to report p50"), "{text}");
}

#[test]
fn bench_times_an_int8_model_on_onnx_runtime_only() {
    let int8 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/affect-synth.int8.onnx");
    let out = affect_edge(&[
        "bench",
        "--frames",
        "3",
        "--faces",
        "none",
        "--model",
        int8.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Tract: skipped (int8 model: ONNX Runtime only)"),
        "{err}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("backend tract"), "{text}");
    if cfg!(feature = "onnxruntime")
        && common::oracle_env("ORT_DYLIB_PATH", "the int8 bench on ONNX Runtime").is_some()
    {
        assert!(text.contains("backend onnxruntime/cpu"), "{text}{err}");
        assert!(text.contains("end to end: 3 frames at "), "{text}");
    }
}

/// Exit code 2 and a message on stderr that contains `names`.
fn assert_bad_input(args: &[&str], names: &str) {
    let out = affect_edge(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(names),
        "{args:?}: stderr does not name {names:?}: {err}"
    );
}

#[test]
fn bad_input_exits_2_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.onnx");
    let missing = missing.to_str().unwrap();
    assert_bad_input(
        &["run", "--source", "synthetic", "--model", missing],
        "missing.onnx",
    );
    assert_bad_input(&["info", missing], "missing.onnx");

    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"not a protobuf at all").unwrap();
    let corrupt = corrupt.to_str().unwrap();
    assert_bad_input(
        &["run", "--source", "synthetic", "--model", corrupt],
        "corrupt.onnx",
    );

    assert_bad_input(&["run", "--source", "webcam:0"], "webcam:0");
    assert_bad_input(
        &["run", "--source", "synthetic", "--backend", "cuda"],
        "cuda",
    );

    let config = dir.path().join("edge.toml");
    std::fs::write(&config, "source = \"synthetic\"\nmax_frames = \"ten\"\n").unwrap();
    let out = affect_edge(&["run", "--config", config.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("edge.toml"), "{err}");
    assert!(err.contains("max_frames"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn sigterm_mid_run_exits_0_with_reports_flushed() {
    let model = bundled_model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_affect-edge"))
        .args([
            "run",
            "--source",
            "synthetic:5",
            "--faces",
            "none",
            "--model",
        ])
        .arg(&model)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start affect-edge");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    check_report(first.trim_end());
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    // The rest of stdout up to EOF: whole lines only (nothing cut off by the stop).
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(
        rest.is_empty() || rest.ends_with('\n'),
        "unflushed: {rest:?}"
    );
    for line in rest.lines() {
        check_report(line);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "affect-edge did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
fn a_closed_stdout_ends_the_run_with_exit_code_1() {
    // The consumer of the JSON lines goes away (as `affect-edge run | head -1` does): the
    // runtime must stop with a runtime failure naming stdout, not keep running or panic.
    let model = bundled_model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_affect-edge"))
        .args([
            "run",
            "--source",
            "synthetic:5",
            "--faces",
            "none",
            "--model",
        ])
        .arg(&model)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start affect-edge");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    check_report(first.trim_end());
    drop(stdout);
    let mut errors = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{errors}");
    assert!(
        errors.contains("stdout") && errors.contains("Broken pipe"),
        "{errors}"
    );
    assert!(!errors.contains("panicked"), "{errors}");
}

/// The binary alone, copied into an empty directory with no models directory anywhere in
/// reach, runs the synthetic camera and an image directory on its embedded models.
#[test]
fn the_binary_alone_runs_on_its_embedded_models() {
    use affect_edge::source::{FrameSource, SyntheticCamera, SyntheticConfig};

    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("affect-edge");
    std::fs::copy(env!("CARGO_BIN_EXE_affect-edge"), &binary).unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let mut camera = SyntheticCamera::new(&SyntheticConfig {
        seed: 4,
        people: Some(1),
        fps: None,
        ..SyntheticConfig::default()
    })
    .unwrap();
    for i in 0..5 {
        let frame = camera.next_frame(Duration::ZERO).unwrap().unwrap();
        frame.image.save(frames.join(format!("{i}.png"))).unwrap();
    }
    let frames_arg = format!("images:{}", frames.display());
    for (args, model) in [
        (
            vec!["run", "--source", "synthetic:2", "--max-frames", "20"],
            "embedded:affect-synth.onnx",
        ),
        (
            vec!["run", "--source", frames_arg.as_str()],
            "embedded:expression-va.onnx",
        ),
    ] {
        let out = Command::new(&binary)
            .args(&args)
            .current_dir(dir.path())
            .env_remove("AFFECT_MODELS")
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let log = stderr(&out);
        assert!(out.status.success(), "{args:?}: {log}");
        assert!(log.contains(model), "{args:?} did not load {model}: {log}");
        let reports = String::from_utf8_lossy(&out.stdout);
        assert!(reports.lines().count() >= 1, "{args:?}: no reports; {log}");
        for line in reports.lines() {
            check_report(line);
        }
    }
    // A models directory still overrides the embedded copies, and a missing one is named.
    let out = Command::new(&binary)
        .args(["run", "--source", "synthetic:2", "--max-frames", "2"])
        .env("AFFECT_MODELS", dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nowhere/expression-va.onnx: no such model file"),
        "{}",
        stderr(&out)
    );
}
