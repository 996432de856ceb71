//! Redeploying models to a running device through ordinary MQTT infrastructure: a site broker
//! (mosquitto) that the device talks to, bridged to a central broker (another mosquitto) where
//! the workstation and the monitoring subscriber connect. While the synthetic camera streams:
//! `affect-edge deploy` through the central broker makes the bundled int8 model active within
//! 5 s without losing or repeating a frame; a wrong checksum, a model without `affect`
//! metadata and a model that outputs NaN are each rejected with the reason in the status while
//! the previous model keeps serving; a model moved into the drop directory is deployed too; and
//! after a restart the last deployed model is active.

// The device serves the int8 model, which only the ONNX Runtime backend runs.
#![cfg(feature = "onnxruntime")]

mod common;
#[path = "common/mqtt.rs"]
mod mqtt_peers;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use affect_edge::backend::sha256_hex;
use affect_shared::deploy::{DeployResult, encode_deploy};
use affect_shared::status::{DeviceState, DeviceStatus};
use common::{KillOnDrop, oracle_env, terminate, wait_for_clean_exit};
use mqtt_peers::{Broker, Subscriber, free_port, wait_until};
use prost::Message;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

const BASE: &str = "affect/site-a/kiosk-1";
const STATUS: &str = "affect/site-a/kiosk-1/status";

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The bundled fp32 model with `edit` applied.
fn edited(out: &Path, edit: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let bytes = std::fs::read(models().join("affect-synth.onnx")).unwrap();
    let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
    edit(&mut proto);
    let bytes = proto.encode_to_vec();
    std::fs::write(out, &bytes).unwrap();
    bytes
}

/// The model's (valence, arousal) output multiplied by NaN: a valid model with metadata whose
/// every output is non-finite.
fn nan_output(proto: &mut ModelProto) {
    let graph = proto.graph.as_mut().unwrap();
    let va = affect_shared::contract::VA;
    for node in &mut graph.node {
        for output in &mut node.output {
            if output == va {
                *output = "va_before_nan".into();
            }
        }
    }
    graph.initializer.push(TensorProto {
        name: "nan".into(),
        data_type: 1, // FLOAT
        dims: vec![1],
        float_data: vec![f32::NAN],
        ..TensorProto::default()
    });
    graph.node.push(NodeProto {
        op_type: "Mul".into(),
        name: "poison".into(),
        input: vec!["va_before_nan".into(), "nan".into()],
        output: vec![va.into()],
        ..NodeProto::default()
    });
}

/// The device: synthetic camera at 30 frames/s, ONNX Runtime, fleet id site-a/kiosk-1,
/// reporting to the site broker.
fn start_device(dir: &Path, site_port: u16, log: &Path) -> KillOnDrop {
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "source = \"synthetic:4\"\n\
             fps = 30.0\n\
             backend = \"onnxruntime\"\n\
             report = [\"mqtt://127.0.0.1:{site_port}\"]\n\
             status_interval_s = 1.0\n\
             [fleet]\nsite = \"site-a\"\ndevice = \"kiosk-1\"\n\
             [deploy]\ntrial_frames = 10\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_affect-edge"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start affect-edge");
    KillOnDrop(child)
}

/// The statuses seen on the central broker so far.
fn statuses(central: &Subscriber) -> Vec<DeviceStatus> {
    central
        .payloads(STATUS)
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("{e}: {p}")))
        .collect()
}

/// Waits for the status carrying the outcome of deploy `id`.
fn outcome_of(central: &Subscriber, id: &str, log: &Path) -> DeviceStatus {
    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.is_none() {
        found = statuses(central)
            .into_iter()
            .find(|s| s.deploy.as_ref().is_some_and(|d| d.id == id));
        assert!(
            Instant::now() < deadline,
            "no outcome of {id} in the status:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    found.unwrap()
}

/// Publishes a deploy message on the central broker.
fn publish_deploy(port: u16, dir: &Path, id: &str, claimed_sha: &str, model: &[u8]) {
    let file = dir.join(format!("{id}.msg"));
    std::fs::write(&file, encode_deploy(id, claimed_sha, model)).unwrap();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("{BASE}/cmd"), "-f"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Frame numbers of the estimates (not the end-of-track repeats) among report payloads.
fn estimate_frames(payloads: &[String]) -> Vec<u64> {
    payloads
        .iter()
        .map(|p| serde_json::from_str::<serde_json::Value>(p).unwrap())
        .filter(|r| {
            !r["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "face-lost")
        })
        .map(|r| r["frame"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_device_behind_a_bridged_site_broker_takes_verified_deploys_and_keeps_the_last_one() {
    if oracle_env(
        "ORT_DYLIB_PATH",
        "the deploy test (int8 models need ONNX Runtime)",
    )
    .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (central_dir, site_dir) = (dir.path().join("central"), dir.path().join("site"));
    std::fs::create_dir_all(&central_dir).unwrap();
    std::fs::create_dir_all(&site_dir).unwrap();
    let central = Broker::start(&central_dir, free_port(), "allow_anonymous true");
    // The bridge as docs/fleet.md describes it: the site's subtree both ways, QoS 1, a
    // persistent bridge session, bounded queues.
    let bridge = format!(
        "allow_anonymous true\n\
         connection site-a-central\n\
         address 127.0.0.1:{}\n\
         topic affect/site-a/# both 1\n\
         cleansession false\n\
         remote_clientid bridge-site-a\n\
         bridge_protocol_version mqttv311\n\
         try_private true\n\
         notifications false\n\
         max_queued_messages 100000\n",
        central.port
    );
    let site = Broker::start(&site_dir, free_port(), &bridge);
    let watcher = Subscriber::start(
        central.port,
        &["affect/site-a/+", "affect/site-a/+/status"],
        None,
        &[],
    );

    let log = dir.path().join("device.log");
    let mut device = start_device(dir.path(), site.port, &log);
    // The first status after a connect may precede the frame loop's (which names the model).
    let serving = |s: &DeviceStatus| s.state == DeviceState::Online && s.model.is_some();
    wait_until(
        "the device's status on the central broker",
        Duration::from_secs(30),
        || statuses(&watcher).iter().any(serving),
    );
    wait_until(
        "reports on the central broker",
        Duration::from_secs(30),
        || watcher.payloads(BASE).len() >= 20,
    );
    let bundled = statuses(&watcher)
        .into_iter()
        .find(|s| serving(s))
        .and_then(|s| s.model)
        .unwrap();
    assert_eq!(
        bundled.sha256,
        sha256_hex(&std::fs::read(models().join("affect-synth.onnx")).unwrap())
    );

    // 1. The int8 model through the central broker, addressed as a fleet.
    let int8 = models().join("affect-synth.int8.onnx");
    let int8_sha = sha256_hex(&std::fs::read(&int8).unwrap());
    let started = Instant::now();
    let deploy = Command::new(env!("CARGO_BIN_EXE_affect-edge"))
        .args(["deploy", "--id", "int8-1", "--timeout", "30", "--to"])
        .arg(format!("mqtt://127.0.0.1:{}/affect/site-a/+", central.port))
        .arg(&int8)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&deploy.stdout).into_owned();
    assert!(
        deploy.status.success(),
        "{table}\n{}\n{}",
        String::from_utf8_lossy(&deploy.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(BASE))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains(" active ") && row.contains(&int8_sha[..12]),
        "{table}"
    );
    let active = outcome_of(&watcher, "int8-1", &log);
    let took = started.elapsed();
    assert_eq!(active.model.as_ref().unwrap().sha256, int8_sha);
    assert_eq!(active.deploy.as_ref().unwrap().result, DeployResult::Active);
    assert!(took < Duration::from_secs(5), "active after {took:?}");
    eprintln!("int8 deploy active after {took:?} (through the bridge, with the fleet discovery)");

    // 2. Bad candidates, each rejected with its reason; the int8 model keeps serving.
    let fp32 = std::fs::read(models().join("affect-synth.onnx")).unwrap();
    let no_metadata = edited(&dir.path().join("plain.onnx"), |p| p.metadata_props.clear());
    let nan = edited(&dir.path().join("nan.onnx"), nan_output);
    for (id, claimed, model, reason) in [
        ("wrong-sha", "0".repeat(64), &fp32, "SHA-256 mismatch"),
        (
            "no-metadata",
            sha256_hex(&no_metadata),
            &no_metadata,
            "no `affect` entry",
        ),
        ("nan", sha256_hex(&nan), &nan, "non-finite"),
    ] {
        publish_deploy(central.port, dir.path(), id, &claimed, model);
        let status = outcome_of(&watcher, id, &log);
        let outcome = status.deploy.unwrap();
        assert_eq!(outcome.result, DeployResult::Rejected, "{id}: {outcome:?}");
        assert!(
            outcome.reason.as_deref().unwrap_or("").contains(reason),
            "{id}: {outcome:?}"
        );
        assert_eq!(
            status.model.unwrap().sha256,
            int8_sha,
            "{id}: the int8 model serves"
        );
    }

    // 3. The drop directory: moved into place atomically.
    let incoming = dir.path().join("state/models/incoming");
    std::fs::write(incoming.join(".fp32.onnx.tmp"), &fp32).unwrap();
    std::fs::rename(incoming.join(".fp32.onnx.tmp"), incoming.join("fp32.onnx")).unwrap();
    let dropped = outcome_of(&watcher, "fp32.onnx", &log);
    assert_eq!(dropped.deploy.unwrap().result, DeployResult::Active);
    assert_eq!(dropped.model.as_ref().unwrap().sha256, bundled.sha256);
    let since = dropped.model.unwrap().since_unix_s;

    // The stream went on through all of it: every frame reported once, in order.
    let before_stop = watcher.payloads(BASE).len();
    wait_until("reports after the deploys", Duration::from_secs(30), || {
        watcher.payloads(BASE).len() >= before_stop + 15
    });
    terminate(&mut device);
    let text = wait_for_clean_exit(&mut device, Duration::from_secs(15), &log);
    let frames = estimate_frames(&watcher.payloads(BASE));
    let unique: BTreeSet<u64> = frames.iter().copied().collect();
    assert_eq!(unique.len(), frames.len(), "a frame reported twice");
    let (first, last) = (frames[0], *frames.last().unwrap());
    assert_eq!(
        frames,
        (first..=last).collect::<Vec<_>>(),
        "frames lost or out of order:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    // 4. After a restart the deployed model is active, and the last outcome is remembered.
    let seen = statuses(&watcher).len();
    let log2 = dir.path().join("device2.log");
    let mut device = start_device(dir.path(), site.port, &log2);
    wait_until(
        "the restarted device's status",
        Duration::from_secs(30),
        || statuses(&watcher)[seen..].iter().any(serving),
    );
    let restarted = statuses(&watcher)[seen..]
        .iter()
        .find(|s| serving(s))
        .cloned()
        .unwrap();
    let model = restarted.model.unwrap();
    assert_eq!(model.sha256, bundled.sha256);
    assert_eq!(
        model.since_unix_s, since,
        "active since the deploy, not the restart"
    );
    assert_eq!(restarted.deploy.unwrap().id, "fp32.onnx");
    terminate(&mut device);
    wait_for_clean_exit(&mut device, Duration::from_secs(15), &log2);
}
