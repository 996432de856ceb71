//! The runtime as a systemd service: the shipped unit passes `systemd-analyze verify`, and the
//! real binary speaks the notify protocol on a socket the test plays systemd with: READY=1
//! once the pipeline is up, WATCHDOG=1 pings while frames flow, STOPPING=1 at the end.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/affect-edge.service");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn the_unit_verifies_and_is_watched_and_hardened() {
    let unit = unit();
    for line in [
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "StartLimitBurst=5",
        "User=affect",
        "SupplementaryGroups=video dialout",
        "StateDirectory=affect",
        "CacheDirectory=affect",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-ttyUSB rw",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing in the unit"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("affect-edge.service");
    // verify insists that ExecStart's program exists: point it at the binary under test.
    std::fs::write(
        &path,
        unit.replace("/usr/bin/affect-edge", env!("CARGO_BIN_EXE_affect-edge")),
    )
    .unwrap();
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            let reason = format!("systemd-analyze cannot run ({e})");
            assert!(!common::in_ci(), "{reason}; CI must verify the unit");
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
}

/// Starts `affect-edge run ARGS` the way systemd starts the service: `NOTIFY_SOCKET` at a
/// socket the test binds (returned) and a watchdog of `watchdog_usec`; stderr piped.
fn start_watched(
    dir: &Path,
    run_args: &str,
    watchdog_usec: u32,
) -> (std::process::Child, UnixDatagram) {
    let socket_path = dir.join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the shell's.
    let child = Command::new("sh")
        .args([
            "-c",
            &format!("WATCHDOG_PID=$$ exec \"$0\" run {run_args}"),
            env!("CARGO_BIN_EXE_affect-edge"),
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", watchdog_usec.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, socket)
}

#[test]
fn the_binary_tells_systemd_it_is_ready_and_pings_the_watchdog_while_frames_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, socket) = start_watched(
        dir.path(),
        "--source synthetic:3 --fps 30 --max-frames 150",
        400_000,
    );
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut messages: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while !messages.iter().any(|m| m.contains("STOPPING=1")) {
        assert!(
            Instant::now() < deadline,
            "no STOPPING=1 within 60 s: {messages:?}"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        messages[0].starts_with("READY=1\nSTATUS=synthetic:3"),
        "{messages:?}"
    );
    // 150 frames at 30 frames/s take 5 s; pings every 100 ms while the loop beats.
    let pings = messages.iter().filter(|m| *m == "WATCHDOG=1\n").count();
    assert!(pings >= 20, "{pings} watchdog pings in 5 s: {messages:?}");
    let ready = messages
        .iter()
        .position(|m| m.starts_with("READY=1"))
        .unwrap();
    let first_ping = messages.iter().position(|m| m == "WATCHDOG=1\n").unwrap();
    assert!(ready < first_ping, "{messages:?}");
}

/// Every key of the configuration, as `table.key` paths, from a serialised configuration.
fn key_paths(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(table) = value {
        for (key, v) in table {
            let path = format!("{prefix}{key}");
            out.push(path.clone());
            key_paths(v, &format!("{path}."), out);
        }
    }
}

/// `key = value` with a bare lowercase key (prose in comments is not).
fn is_assignment(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

#[test]
fn the_packaged_configuration_parses_and_documents_every_key() {
    use affect_edge::config::EdgeConfig;

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/edge.toml");
    let config = EdgeConfig::from_toml_file(&path).unwrap();
    config.validate().unwrap();
    assert_eq!(
        config.http.listen.map(|a| a.ip().is_loopback()),
        Some(true),
        "the package serves HTTP on loopback only"
    );
    // The same file with every commented key switched on is still a valid configuration, and
    // together they name every key a configuration can have.
    let text = std::fs::read_to_string(&path).unwrap();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || is_assignment(rest) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let everything = EdgeConfig::from_toml(&uncommented, "edge.toml, uncommented").unwrap();
    everything.validate().unwrap();
    let optional_keys_shown = [
        ("model", everything.model.is_some()),
        ("models_dir", everything.models_dir.is_some()),
        ("faces", everything.faces.is_some()),
        ("synthetic.people", everything.synthetic.people.is_some()),
        ("synthetic.frames", everything.synthetic.frames.is_some()),
        ("source_outages", everything.source_outages.is_some()),
        (
            "face_models.detector.tiling",
            everything.face_models.detector.tiling.is_some(),
        ),
        ("mqtt.client_id", everything.mqtt.client_id.is_some()),
        ("mqtt.username", everything.mqtt.username.is_some()),
        ("mqtt.password", everything.mqtt.password.is_some()),
        ("mqtt.tls", everything.mqtt.tls.is_some()),
        ("smoothing", everything.smoothing.is_some()),
        ("rate_limit", everything.rate_limit.is_some()),
    ];
    for (key, shown) in optional_keys_shown {
        assert!(shown, "{key} is not shown (commented) in debian/edge.toml");
    }
    // Every key the configuration serialises (all optional ones set, above) is in the file.
    let (mut want, mut have) = (Vec::new(), Vec::new());
    key_paths(&toml::Value::try_from(&everything).unwrap(), "", &mut want);
    key_paths(
        &uncommented.parse::<toml::Table>().unwrap().into(),
        "",
        &mut have,
    );
    want.retain(|k| !have.contains(k));
    assert!(
        want.is_empty(),
        "keys missing in debian/edge.toml: {want:?}"
    );
}

#[test]
fn the_watchdog_pings_stop_when_the_source_stalls() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    // A frame every 2 s against a 1 s watchdog: the source blocks longer than half of it.
    let (mut child, socket) =
        start_watched(dir.path(), "--source synthetic:3 --fps 0.5", 1_000_000);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let stalled = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("no more watchdog pings") => break Some(line),
            Ok(line) => log.push(line),
            Err(_) => break None,
        }
    };
    common::terminate(&mut child);
    let stalled = stalled.unwrap_or_else(|| panic!("the pings never stopped: {log:?}"));
    assert!(stalled.contains("made no progress"), "{stalled}");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let first = socket.recv(&mut buf).map(|n| buf[..n].to_vec());
    assert!(
        first.is_ok_and(|m| m.starts_with(b"READY=1")),
        "READY=1 must come before the stall"
    );
}
