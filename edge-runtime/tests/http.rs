//! `affect-edge run --http`: the real binary serving `/healthz`, `/metrics` and `/status`,
//! read over real sockets. The metrics are parsed by Prometheus's own OpenMetrics parser
//! (Python `prometheus_client`, from `$AFFECT_PYTHON`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A running `affect-edge run` with its HTTP address (read from its log, not guessed).
struct Device {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Device {
    fn drop(&mut self) {
        common::terminate(&mut self.child);
    }
}

/// Starts the binary with `config` (TOML; `[http] listen` on port 0 is added) and waits for
/// the line announcing the HTTP address.
fn start(config: &str) -> Device {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        format!("{config}\n[http]\nlisten = \"127.0.0.1:0\"\nstale_after_s = 3.0\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_affect-edge"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start affect-edge");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(at) = line.find("on http://") {
                    break line[at + "on http://".len()..].trim().parse().unwrap();
                }
                seen.push(line);
            }
            Err(_) => {
                common::terminate(&mut child);
                panic!(
                    "no HTTP address announced; stderr so far:\n{}",
                    seen.join("\n")
                );
            }
        }
    };
    // Keep draining stderr so the process never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Device {
        child,
        addr,
        _dir: dir,
    }
}

/// Polls `/healthz` until it answers `want` with a body that names `problem` (any body for
/// ""), at most `timeout`; returns that body.
fn wait_health(addr: SocketAddr, want: u16, problem: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, _, body) = common::get(addr, "/healthz");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        if code == want && json["problems"].to_string().contains(problem) {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still {code}, want {want} naming {problem:?}: {json}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bundled(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
}

#[test]
fn a_running_device_is_healthy_and_its_metrics_parse_as_openmetrics() {
    let device = start("source = \"synthetic:3\"\nfps = 30.0\nreport = [\"stdout\"]\n");
    let health = wait_health(device.addr, 200, "", Duration::from_secs(60));
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["reporters"][0]["name"], "stdout", "{health}");

    // Wait for a frame-rate sample (the refresh runs once a second).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (code, head, body) = common::get(device.addr, "/status");
        assert_eq!(code, 200);
        assert!(head.contains("application/json"), "{head}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status["device"]["fps"].is_number() {
            break status;
        }
        assert!(Instant::now() < deadline, "no fps in {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let device_status = &status["device"];
    assert_eq!(device_status["state"], "online");
    let model_bytes = std::fs::read(bundled("affect-synth.onnx")).unwrap();
    let sha: String = Sha256::digest(&model_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(device_status["model"]["sha256"], sha.as_str(), "{status}");
    assert_eq!(device_status["version"], env!("CARGO_PKG_VERSION"));

    let (code, head, metrics) = common::get(device.addr, "/metrics");
    assert_eq!(code, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let Some(python) = common::oracle_env("AFFECT_PYTHON", "Prometheus's OpenMetrics parser")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        out.setdefault(family.name + "|" + family.type, []).append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let parsed = Command::new(python)
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{metrics}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let families: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&parsed.stdout).unwrap();
    for family in [
        "affect_frames|counter",
        "affect_reports|counter",
        "affect_frames_skipped|counter",
        "affect_stage_seconds|histogram",
        "affect_faces|gauge",
        "affect_face_detections|counter",
        "affect_tracks|gauge",
        "affect_frames_per_second|gauge",
        "affect_reporter_delivered|counter",
        "affect_reporter_queued|gauge",
        "affect_reporter_dropped|counter",
        "affect_reporter_reconnects|counter",
        "affect_model|info",
        "affect_uptime_seconds|gauge",
        "affect_process_resident_memory_bytes|gauge",
        "affect_process_open_fds|gauge",
    ] {
        assert!(
            families.contains_key(family),
            "{family} missing in\n{metrics}"
        );
    }
    let value = |family: &str, sample: &str| -> f64 {
        families[family]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s[0] == sample)
            .and_then(|s| s[2].as_f64())
            .unwrap_or_else(|| panic!("{sample} missing in\n{metrics}"))
    };
    assert!(value("affect_frames|counter", "affect_frames_total") >= 1.0);
    assert_eq!(value("affect_faces|gauge", "affect_faces"), 1.0);
    let mut stages: Vec<&str> = families["affect_stage_seconds|histogram"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == "affect_stage_seconds_count")
        .map(|s| s[1]["stage"].as_str().unwrap())
        .collect();
    stages.sort_unstable();
    assert_eq!(
        stages,
        ["faces", "model", "preprocess", "report", "source"].map(String::from),
        "{metrics}"
    );
    let model = &families["affect_model|info"][0];
    assert_eq!(model[1]["sha256"], sha.as_str());
    // The default backend is auto: ONNX Runtime when its library loads, else tract.
    let backend = model[1]["backend"].as_str().unwrap();
    assert!(["tract", "onnxruntime/cpu"].contains(&backend), "{backend}");
    assert!(
        value(
            "affect_process_resident_memory_bytes|gauge",
            "affect_process_resident_memory_bytes"
        ) > 1e6
    );
}

#[test]
fn healthz_fails_naming_the_reporter_whose_queue_overflows() {
    // A port nobody listens on: the broker is down from the start.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let device = start(&format!(
        "source = \"synthetic:3\"\nfps = 30.0\nreport = [\"mqtt://127.0.0.1:{port}/lab/affect\"]\n\
         [mqtt]\nqueue = 20\n"
    ));
    let health = wait_health(device.addr, 503, "queue is full", Duration::from_secs(60));
    let problems = health["problems"].to_string();
    assert!(
        problems.contains(&format!("mqtt://127.0.0.1:{port}/lab/affect"))
            && problems.contains("queue is full"),
        "{health}"
    );
    let reporter = &health["reporters"][0];
    assert_eq!(reporter["connected"], false, "{health}");
    assert_eq!(reporter["queued"], 20, "{health}");
    assert!(reporter["last_error"].is_string(), "{health}");
}

#[test]
fn healthz_fails_when_frames_stop_flowing() {
    // 0.2 frames/s leaves 5 s between frames, longer than the 3 s staleness limit.
    let device = start("source = \"synthetic:3\"\nfps = 0.2\nreport = [\"stdout\"]\n");
    let healthy = wait_health(device.addr, 200, "", Duration::from_secs(60));
    assert_eq!(healthy["frames"], 1, "{healthy}");
    let stalled = wait_health(device.addr, 503, "stalled", Duration::from_secs(10));
    assert!(
        stalled["problems"][0]
            .as_str()
            .unwrap()
            .contains("the source or the pipeline is stalled"),
        "{stalled}"
    );
}

/// The browser check's tools: Node with `playwright-core` (`tests/browser`, installed by
/// `tests/setup.sh`) and Debian's Chromium. Missing: a failure in CI, a loud skip elsewhere.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser");
    let chromium = std::env::var_os("CHROMIUM").map_or("/usr/bin/chromium".into(), PathBuf::from);
    let missing = if !dir.join("node_modules/playwright-core").is_dir() {
        Some("tests/browser/node_modules (npm ci)")
    } else if !chromium.is_file() {
        Some("Chromium")
    } else {
        None
    };
    if let Some(what) = missing {
        let reason =
            format!("{what} is missing (run `. tests/setup.sh`): the browser check cannot run");
        assert!(!common::in_ci(), "{reason}; CI must run it");
        eprintln!("SKIPPED: {reason}");
        return None;
    }
    Some((dir.join("status_page.mjs"), chromium))
}

#[test]
fn the_status_page_plots_live_tracks_in_a_real_browser() {
    let Some((script, chromium)) = browser_tools() else {
        return;
    };
    let device = start(
        "source = \"synthetic:5\"\nfaces = \"bundled\"\nfps = 15.0\nreport = [\"stdout\"]\n\
         [synthetic]\npeople = 3\n",
    );
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let out = Command::new("node")
        .arg(&script)
        .arg(format!("http://{}/", device.addr))
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("start node");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status page check failed: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let measured: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert!(
        measured["second"]["tracks"].as_u64().unwrap() >= 2,
        "{measured}"
    );
    assert!(
        measured["second"]["newest"].as_f64() > measured["first"]["newest"].as_f64(),
        "{measured}"
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    eprintln!("status page screenshot: {}", screenshot.display());
}
