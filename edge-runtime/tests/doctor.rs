//! `affect-edge doctor` as a technician runs it, against real parts: mosquitto (password login,
//! TLS, a wrong password), a socat pty as the serial adapter, a camera that is not there, a
//! corrupt and a truncated model, and ONNX Runtime from `ORT_DYLIB_PATH`.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt_peers;
#[path = "common/serial.rs"]
mod serial_peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mqtt_peers::{Broker, free_port, make_certificates};
use serial_peers::PtyPair;

const USER: &str = "edge";
const PASSWORD: &str = "s3cret";

/// The binary with a clean environment for what doctor reads, plus `env`.
fn doctor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_affect-edge"));
    cmd.arg("doctor")
        .args(args)
        .env_remove("AFFECT_MQTT_PASSWORD")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CACHE_DIRECTORY")
        .env_remove("AFFECT_MODELS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of check `name` whose detail contains `needle`; fails showing the whole output.
/// Lines are `LABEL   NAME  DETAIL[ — fix: FIX]`, the label padded to 7 characters.
fn line<'a>(text: &'a str, name: &str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.get(8..).is_some_and(|rest| {
                rest.strip_prefix(name)
                    .is_some_and(|after| after.starts_with(' '))
            }) && l.contains(needle)
        })
        .unwrap_or_else(|| panic!("no `{name}` line with {needle:?} in:\n{text}"))
}

/// A mosquitto password file with [`USER`]/[`PASSWORD`].
fn password_file(dir: &Path) -> PathBuf {
    let passwords = dir.join("passwords");
    let status = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args([USER, PASSWORD])
        .status()
        .expect("mosquitto_passwd not found: run tests/setup.sh (Debian package mosquitto)");
    assert!(status.success());
    mqtt_peers::make_accessible(&passwords, 0o644);
    passwords
}

/// A broker that wants the login, plain TCP.
fn login_broker(dir: &Path) -> Broker {
    let passwords = password_file(dir);
    Broker::start(
        dir,
        free_port(),
        &format!(
            "allow_anonymous false\npassword_file {}",
            passwords.display()
        ),
    )
}

#[test]
fn an_all_ok_configuration_passes_every_check_and_exits_0() {
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = login_broker(plain_dir.path());
    let tls_dir = tempfile::tempdir().unwrap();
    make_certificates(tls_dir.path());
    let passwords = password_file(tls_dir.path());
    let d = tls_dir.path().display();
    let tls = Broker::start(
        tls_dir.path(),
        free_port(),
        &format!(
            "allow_anonymous false\npassword_file {}\ncafile {d}/ca.pem\ncertfile {d}/server.pem\n\
             keyfile {d}/server.key",
            passwords.display()
        ),
    );
    let work = tempfile::tempdir().unwrap();
    let serial = PtyPair::start(work.path());
    let state = work.path().join("state");
    let cache = work.path().join("cache");
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(&cache).unwrap();
    let config = work.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "source = \"synthetic:3\"\nfaces = \"bundled\"\n\
             report = [\"stdout\", \"serial:{dev}@115200\", \"mqtt://127.0.0.1:{plain}/affect\", \
             \"mqtts://localhost:{tls}/affect?ca={d}/ca.pem\"]\n\
             state_dir = \"{state}\"\ncache_dir = \"{cache}\"\n\
             [mqtt]\nusername = \"{USER}\"\n",
            dev = serial.dev.display(),
            plain = plain.port,
            tls = tls.port,
            state = state.display(),
            cache = cache.display(),
        ),
    )
    .unwrap();
    let out = doctor(
        &["--config", config.to_str().unwrap()],
        &[("AFFECT_MQTT_PASSWORD", PASSWORD)],
    );
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("FAIL "), "{text}");
    line(&text, "config", config.to_str().unwrap());
    // The default backend is auto: the engine it picked is named.
    line(&text, "backend", "auto → ");
    let model = line(&text, "model", "embedded:affect-synth.onnx");
    let sha = model.split("sha256 ").nth(1).unwrap();
    assert!(sha[..64].chars().all(|c| c.is_ascii_hexdigit()), "{model}");
    line(&text, "model", "test inference: valence");
    line(&text, "faces", "BlazeFace + 68 landmarks");
    line(&text, "source", "synthetic:3");
    line(&text, "serial", "opens");
    line(
        &text,
        "mqtt",
        &format!(
            "mqtt://127.0.0.1:{}/affect: connected, login as edge accepted",
            plain.port
        ),
    );
    line(
        &text,
        "mqtt",
        &format!(
            "mqtts://localhost:{}/affect: connected, TLS handshake ok, login as edge accepted",
            tls.port
        ),
    );
    line(&text, "state dir", "writable");
    line(&text, "cache dir", "writable");
    line(&text, "clock", "UTC");
    // Only the GPU line may be skipped: nothing selects CUDA/TensorRT.
    for l in text.lines().filter(|l| l.starts_with("skipped")) {
        assert!(l.contains(" gpu "), "unexpected skip: {l}\n{text}");
    }
    assert!(text.lines().last().unwrap().contains(" 0 FAIL"), "{text}");
}

#[test]
fn a_wrong_broker_password_fails_the_mqtt_login_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let broker = login_broker(dir.path());
    let target = format!("mqtt://{USER}@127.0.0.1:{}/affect", broker.port);
    let out = doctor(
        &["--source", "synthetic", "--report", &target],
        &[("AFFECT_MQTT_PASSWORD", "wrong")],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = line(&text, "mqtt", "MQTT login refused");
    assert!(fail.starts_with("FAIL"), "{fail}");
    assert!(fail.contains("fix: check [mqtt] username"), "{fail}");
    assert!(fail.contains("$AFFECT_MQTT_PASSWORD"), "{fail}");
    // The password never appears; the parts that work still say ok.
    assert!(!text.contains("wrong"), "{text}");
    assert!(line(&text, "model", "sha256").starts_with("ok"));

    // The right password on the same flags passes.
    let out = doctor(
        &["--source", "synthetic", "--report", &target],
        &[("AFFECT_MQTT_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_missing_camera_fails_with_the_fix() {
    let out = doctor(&["--source", "camera:/dev/video-missing"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = line(&text, "camera", "/dev/video-missing");
    assert!(fail.starts_with("FAIL"), "{fail}");
    assert!(
        fail.contains("fix: no /dev/video-missing: plug the camera in"),
        "{fail}"
    );
    assert!(fail.contains("source = \"camera:/dev/videoN\""), "{fail}");
}

#[test]
fn a_corrupt_or_truncated_model_fails_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let random = dir.path().join("random.onnx");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/affect-synth.onnx");
    let bytes = std::fs::read(bundled).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for model in [&random, &truncated] {
        let out = doctor(
            &["--source", "synthetic", "--model", model.to_str().unwrap()],
            &[],
        );
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let fail = line(&text, "model", model.to_str().unwrap());
        assert!(fail.starts_with("FAIL"), "{fail}");
        assert!(fail.contains("fix: the model file is not ONNX"), "{fail}");
        assert!(fail.contains("affect-train export"), "{fail}");
    }
    let out = doctor(
        &[
            "--source",
            "synthetic",
            "--model",
            "/nonexistent/affect.onnx",
        ],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(line(&text, "model", "no such model file").contains("embedded default"));
}

#[test]
fn an_unreadable_configuration_fails_and_only_the_clock_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, "source = \"synthetic\"\nrepport = [\"stdout\"]\n").unwrap();
    let out = doctor(&["--config", config.to_str().unwrap()], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = line(&text, "config", "repport");
    assert!(fail.contains("line 2"), "{fail}");
    assert!(fail.contains("fix: correct the line and key"), "{fail}");
    assert!(line(&text, "mqtt", "did not load").starts_with("skipped"));
    assert!(line(&text, "clock", "UTC").starts_with("ok"));
}

#[test]
fn json_output_carries_every_check_and_skips_what_is_not_configured() {
    let out = doctor(
        &["--json", "--source", "synthetic", "--report", "stdout"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["ok"], true);
    let checks = v["checks"].as_array().unwrap();
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v}"))
    };
    assert_eq!(find("model")["outcome"], "ok");
    for name in ["serial", "mqtt", "state dir", "cache dir"] {
        let c = find(name);
        assert_eq!(c["outcome"], "skipped", "{c}");
        assert!(c["fix"].is_null(), "{c}");
    }
    assert!(
        find("state dir")["detail"]
            .as_str()
            .unwrap()
            .contains("$STATE_DIRECTORY is unset")
    );
}

#[cfg(feature = "onnxruntime")]
#[test]
fn onnxruntime_prints_its_version_and_a_missing_library_names_ort_dylib_path() {
    let Some(library) = common::oracle_env("ORT_DYLIB_PATH", "doctor's ONNX Runtime check") else {
        return;
    };
    let library = library.to_str().unwrap().to_owned();
    let out = doctor(
        &["--source", "synthetic", "--backend", "onnxruntime"],
        &[("ORT_DYLIB_PATH", &library)],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let ok = line(&text, "backend", "ONNX Runtime 1.");
    let resolved = std::fs::canonicalize(&library).unwrap();
    assert!(
        ok.starts_with("ok") && ok.ends_with(&format!("from {}", resolved.display())),
        "{ok}"
    );
    assert!(line(&text, "model", "test inference: valence").starts_with("ok"));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_affect-edge"));
    let out = cmd
        .args([
            "doctor",
            "--source",
            "synthetic",
            "--backend",
            "onnxruntime",
        ])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = line(&text, "backend", "ORT_DYLIB_PATH");
    assert!(
        fail.contains("fix: set ORT_DYLIB_PATH to libonnxruntime.so"),
        "{fail}"
    );
    assert!(line(&text, "model", "test inference not run").starts_with("ok"));
}
