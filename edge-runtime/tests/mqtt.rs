//! The MQTT reporter against a real broker (`mosquitto` on a free loopback port) and a real
//! subscriber (`mosquitto_sub`): every report arrives and parses, the retained status follows
//! the device, a broker restart loses nothing within the queue bound and keeps the order, and
//! beyond the bound the oldest reports are dropped and counted; the real binary's queue on disk
//! survives `kill -9` and goes out first, in order, on the next run.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt_peers;

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use affect_edge::backoff::BackoffConfig;
use affect_edge::report::{MqttConfig, MqttReporter, MqttTlsConfig, Report, Reporter};
use affect_shared::status::{DeviceState, DeviceStatus, ModelIdentity};
use affect_shared::wire::StatusFlags;
use mqtt_peers::{Broker, Subscriber, free_port, make_certificates, wait_until};

fn report(frame: u32) -> Report {
    Report {
        timestamp_ms: 1_764_000_000_000 + u64::from(frame) * 40,
        frame,
        track: (frame % 2) as u16,
        valence: (frame as f32 * 0.01) - 0.5,
        arousal: 0.25,
        bbox: [10.0, 20.0, 64.0, 64.0],
        score: 0.9,
        flags: StatusFlags(0),
        latency_ms: (!frame.is_multiple_of(5)).then_some(frame * 7),
    }
}

fn config(port: u16, topic: &str, queue: usize) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port,
        topic: topic.into(),
        queue,
        keep_alive_s: 5,
        connect_timeout_s: 2,
        backoff: BackoffConfig {
            initial_ms: 50,
            max_ms: 300,
            factor: 2.0,
        },
        ..MqttConfig::default()
    }
}

/// Frame numbers of the JSON reports, duplicates (QoS 1 redelivery) removed, first kept.
fn frames_in_order(payloads: &[String]) -> Vec<u32> {
    let mut seen = HashSet::new();
    payloads
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_str(p).unwrap();
            v["frame"].as_u64().unwrap() as u32
        })
        .filter(|f| seen.insert(*f))
        .collect()
}

#[test]
fn every_report_arrives_as_json_and_the_status_follows_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_port(), "allow_anonymous true");
    let topic = "lab/affect";
    let sub = Subscriber::start(broker.port, &[topic, "lab/affect/status"], None, &[]);
    let mut reporter = MqttReporter::new(&config(broker.port, topic, 1_000)).unwrap();
    assert!(reporter.wait_connected(Duration::from_secs(5)));
    let sent: Vec<Report> = (0..200).map(report).collect();
    for r in &sent {
        reporter.report(r).unwrap();
    }
    reporter.drain(Duration::from_secs(10)).unwrap();
    wait_until("200 reports", Duration::from_secs(10), || {
        sub.payloads(topic).len() >= 200
    });
    let payloads = sub.payloads(topic);
    assert_eq!(payloads.len(), 200);
    for (payload, sent) in payloads.iter().zip(&sent) {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "arousal",
                "box",
                "flags",
                "frame",
                "latency_ms",
                "score",
                "track",
                "ts",
                "valence"
            ]
        );
        assert_eq!(v["frame"], sent.frame);
        assert_eq!(v["latency_ms"].as_u64(), sent.latency_ms.map(u64::from));
        assert_eq!(v["track"], sent.track);
        assert!((v["valence"].as_f64().unwrap() - f64::from(sent.valence)).abs() < 1e-6);
        assert_eq!(v["ts"].as_f64().unwrap(), sent.timestamp_ms as f64 / 1000.0);
    }
    let stats = reporter.stats();
    assert_eq!((stats.delivered, stats.dropped, stats.queued), (200, 0, 0));
    let status = "lab/affect/status";
    assert_eq!(states(&sub, status), ["online"]);
    let first: DeviceStatus = serde_json::from_str(&sub.payloads(status)[0]).unwrap();
    assert_eq!(first.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));

    // The runtime refreshes the status with the model and the frame rate.
    let refreshed = DeviceStatus {
        state: DeviceState::Online,
        model: Some(ModelIdentity {
            sha256: "cd".repeat(32),
            version: "2026-12-01T00:00:00Z".into(),
            backbone: "vgg16".into(),
            since_unix_s: Some(1_764_000_000),
        }),
        fps: Some(29.9),
        uptime_s: Some(42),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        deploy: None,
    };
    reporter.publish_status(&refreshed);
    wait_until("the refreshed status", Duration::from_secs(5), || {
        sub.payloads(status).len() >= 2
    });
    let second: DeviceStatus = serde_json::from_str(&sub.payloads(status)[1]).unwrap();
    assert_eq!(second, refreshed);

    reporter.close(Duration::from_secs(2)).unwrap();
    wait_until("the offline status", Duration::from_secs(5), || {
        sub.payloads(status).len() >= 3
    });
    assert_eq!(sub.payloads(status)[2], r#"{"state":"offline"}"#);
    // Retained: a late subscriber learns the device is offline.
    let late = Subscriber::start(broker.port, &[status], None, &[]);
    wait_until("the retained status", Duration::from_secs(5), || {
        !late.payloads(status).is_empty()
    });
    assert_eq!(late.payloads(status), [r#"{"state":"offline"}"#]);
}

/// The `state` of every status message received on `topic`, in order.
fn states(sub: &Subscriber, topic: &str) -> Vec<String> {
    sub.payloads(topic)
        .iter()
        .map(|p| {
            let status: DeviceStatus =
                serde_json::from_str(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            serde_json::to_value(status.state)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn a_broker_restart_loses_nothing_within_the_bound_and_keeps_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "restart/affect";
    let broker = Broker::start(dir.path(), free_port(), "allow_anonymous true");
    // A persistent subscriber session: the broker keeps its messages across the restart.
    let first = Subscriber::start(broker.port, &[topic], Some("restart-test-sub"), &[]);
    let mut reporter = MqttReporter::new(&config(broker.port, topic, 100)).unwrap();
    assert!(reporter.wait_connected(Duration::from_secs(5)));
    for frame in 0..50 {
        reporter.report(&report(frame)).unwrap();
    }
    reporter.drain(Duration::from_secs(10)).unwrap();
    wait_until("the first 50", Duration::from_secs(10), || {
        first.payloads(topic).len() >= 50
    });

    // The broker goes away mid-run; the device keeps reporting.
    let (dir_path, port, extra) = broker.stop();
    let before = frames_in_order(&first.payloads(topic));
    drop(first);
    for frame in 50..90 {
        reporter.report(&report(frame)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_until("the reporter to notice", Duration::from_secs(10), || {
        !reporter.stats().connected
    });
    assert!(reporter.stats().queued > 0);

    let _broker = Broker::start(&dir_path, port, &extra);
    wait_until("the reconnect", Duration::from_secs(10), || {
        reporter.stats().connects >= 2
    });
    for frame in 90..100 {
        reporter.report(&report(frame)).unwrap();
    }
    reporter.drain(Duration::from_secs(10)).unwrap();
    let stats = reporter.stats();
    assert_eq!((stats.dropped, stats.queued), (0, 0));

    // The same subscriber session collects what the broker kept for it meanwhile.
    let second = Subscriber::start(port, &[topic], Some("restart-test-sub"), &[]);
    let after_restart = || -> Vec<u32> {
        frames_in_order(&second.payloads(topic))
            .into_iter()
            .filter(|f| *f >= 50)
            .collect()
    };
    wait_until("reports 50..100", Duration::from_secs(10), || {
        after_restart().len() >= 50
    });
    assert_eq!(before, (0..50).collect::<Vec<u32>>());
    assert_eq!(after_restart(), (50..100).collect::<Vec<u32>>());
}

#[test]
fn beyond_the_bound_the_oldest_reports_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();
    let topic = "bound/affect";
    // No broker reachable yet: the device starts reporting into the void. The relay stays closed
    // until the subscriber holds its subscription, so no report can reach the broker before
    // someone listens (the reporter retries every 50–300 ms).
    let relay = Relay::start(broker_port, false);
    let mut reporter = MqttReporter::new(&config(relay.port, topic, 10)).unwrap();
    for frame in 0..25 {
        reporter.report(&report(frame)).unwrap();
    }
    let stats = reporter.stats();
    assert_eq!(
        (stats.queued, stats.dropped, stats.connected),
        (10, 15, false)
    );
    let err = reporter.drain(Duration::from_millis(100)).unwrap_err();
    assert!(
        err.to_string().contains("10 report(s) still queued"),
        "{err}"
    );

    let broker = Broker::start(dir.path(), broker_port, "allow_anonymous true");
    let sub = Subscriber::start(broker.port, &[topic], None, &[]);
    relay.open();
    reporter.drain(Duration::from_secs(10)).unwrap();
    wait_until("the 10 kept reports", Duration::from_secs(10), || {
        sub.payloads(topic).len() >= 10
    });
    assert_eq!(
        frames_in_order(&sub.payloads(topic)),
        (15..25).collect::<Vec<u32>>()
    );
    assert_eq!(reporter.stats().delivered, 10);
}

#[test]
fn a_login_is_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let status = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["edge", "s3cret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(status.success());
    let broker = Broker::start(
        dir.path(),
        free_port(),
        &format!(
            "allow_anonymous false\npassword_file {}",
            passwords.display()
        ),
    );
    let topic = "login/affect";
    let sub = Subscriber::start(broker.port, &[topic], None, &["-u", "edge", "-P", "s3cret"]);

    let wrong = MqttConfig {
        username: Some("edge".into()),
        password: Some("wrong".into()),
        ..config(broker.port, topic, 10)
    };
    let refused = MqttReporter::new(&wrong).unwrap();
    assert!(!refused.wait_connected(Duration::from_millis(500)));
    let error = refused.stats().last_error.unwrap_or_default();
    assert!(error.contains("refused"), "{error}");

    let right = MqttConfig {
        password: Some("s3cret".into()),
        ..wrong
    };
    let mut reporter = MqttReporter::new(&right).unwrap();
    reporter.report(&report(7)).unwrap();
    reporter.drain(Duration::from_secs(5)).unwrap();
    wait_until("the report", Duration::from_secs(5), || {
        !sub.payloads(topic).is_empty()
    });
    assert_eq!(frames_in_order(&sub.payloads(topic)), [7]);
}

#[test]
fn tls_with_a_ca_file_connects_and_delivers() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let d = dir.path().display();
    let broker = Broker::start(
        dir.path(),
        free_port(),
        &format!(
            "allow_anonymous true\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key"
        ),
    );
    let topic = "tls/affect";
    let ca = dir.path().join("ca.pem");
    let sub = Subscriber::start(
        broker.port,
        &[topic],
        None,
        &["--cafile", ca.to_str().unwrap()],
    );
    let mut reporter = MqttReporter::new(&MqttConfig {
        host: "localhost".into(),
        tls: Some(MqttTlsConfig {
            ca_file: ca.clone(),
            client_cert: None,
            client_key: None,
        }),
        ..config(broker.port, topic, 10)
    })
    .unwrap();
    for frame in 0..5 {
        reporter.report(&report(frame)).unwrap();
    }
    reporter.drain(Duration::from_secs(5)).unwrap();
    wait_until("the TLS reports", Duration::from_secs(5), || {
        sub.payloads(topic).len() >= 5
    });
    assert_eq!(frames_in_order(&sub.payloads(topic)), [0, 1, 2, 3, 4]);
}

/// A TCP relay between the reporter and the broker that the test can close and open, and whose
/// connections it can cut, as a network failure or a device losing power would (no MQTT
/// DISCONNECT reaches the broker). While closed it accepts and drops every connection at once,
/// as an unreachable network would fail them.
struct Relay {
    port: u16,
    open: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: u16, open: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(open));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (registry, gate) = (live.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if !gate.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut list = registry.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, open, live }
    }

    /// Lets new connections through to the broker.
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Cuts every connection through the relay.
    fn cut(&self) {
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_lost_connection_publishes_the_last_will_and_a_reconnect_announces_online() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), free_port(), "allow_anonymous true");
    let relay = Relay::start(broker.port, true);
    let status = "will/affect/status";
    let sub = Subscriber::start(broker.port, &[status], None, &[]);
    let reporter = MqttReporter::new(&config(relay.port, "will/affect", 10)).unwrap();
    assert!(reporter.wait_connected(Duration::from_secs(5)));
    wait_until("online", Duration::from_secs(5), || {
        states(&sub, status) == ["online"]
    });
    relay.cut();
    wait_until("the last will", Duration::from_secs(5), || {
        sub.payloads(status).len() >= 2
    });
    assert_eq!(sub.payloads(status)[1], r#"{"state":"offline"}"#);
    wait_until("online again", Duration::from_secs(10), || {
        sub.payloads(status).len() >= 3
    });
    assert_eq!(states(&sub, status), ["online", "offline", "online"]);
    assert!(reporter.stats().connects >= 2);
}

/// The JSON reports in the queue on disk (`common::queued_on_disk`).
fn queued_on_disk(queue: &Path) -> Vec<String> {
    common::queued_on_disk(queue)
        .into_iter()
        .map(|p| String::from_utf8(p).unwrap())
        .collect()
}

/// The `ts` field of a JSON report.
fn ts(payload: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap();
    v["ts"].as_f64().unwrap()
}

#[test]
fn reports_queued_on_disk_survive_kill_9_and_go_out_first_in_order_on_the_next_run() {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let topic = "durable/affect";
    let url = format!("mqtt://127.0.0.1:{port}/{topic}");
    let queue = affect_edge::report::queue_dir(&state, &MqttConfig::from_url(&url).unwrap());

    // No broker: every report waits in the queue on disk until the process is killed.
    let log1 = dir.path().join("run1.log");
    let mut first = common::start_queueing_device(&url, &state, &[], &log1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while queued_on_disk(&queue).len() < 40 {
        if let Ok(Some(status)) = first.try_wait() {
            panic!(
                "the first run exited ({status}):\n{}",
                std::fs::read_to_string(&log1).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "40 reports never reached the queue on disk:\n{}",
            std::fs::read_to_string(&log1).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = first.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    let log = std::fs::read_to_string(&log1).unwrap();
    assert!(log.contains("report queue on disk in"), "{log}");
    let before = queued_on_disk(&queue);
    assert!(before.len() >= 40, "{}", before.len());

    // The broker is back; the next run (5 frames, then a clean stop) sends the old reports
    // first, in order, then its own.
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir(&broker_dir).unwrap();
    let broker = Broker::start(&broker_dir, port, "allow_anonymous true");
    let sub = Subscriber::start(broker.port, &[topic], None, &[]);
    let log2 = dir.path().join("run2.log");
    let mut second = common::start_queueing_device(&url, &state, &["--max-frames", "5"], &log2);
    let log = common::wait_for_clean_exit(&mut second, Duration::from_secs(60), &log2);
    assert!(
        log.contains(&format!("{} report(s) from before", before.len())),
        "{log}"
    );
    // Duplicates are allowed (at least once); the first copy of each report counts.
    let distinct = || {
        let mut seen = HashSet::new();
        sub.payloads(topic)
            .into_iter()
            .filter(|p| seen.insert(p.clone()))
            .collect::<Vec<String>>()
    };
    wait_until(
        "the queued reports and the new run's",
        Duration::from_secs(10),
        || distinct().len() >= before.len() + 5,
    );
    let got = distinct();
    assert_eq!(got[..before.len()], before[..], "the old reports, in order");
    let last_old = before.iter().map(|p| ts(p)).fold(f64::MIN, f64::max);
    let new = &got[before.len()..];
    assert!(
        new.iter().all(|p| ts(p) > last_old),
        "only the new run's reports come after the old ones: {new:?}"
    );
    // Everything was acknowledged: the cursor on disk is past every report.
    let cursor = std::fs::read(queue.join("acked")).unwrap();
    let acked = u64::from_le_bytes(cursor[..8].try_into().unwrap());
    assert!(acked as usize >= before.len() + 5, "{acked}");
}
