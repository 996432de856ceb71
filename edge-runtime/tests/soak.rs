//! Soak test with injected faults: the real `affect-edge run` on the synthetic camera (two
//! people, faces found by the bundled detector) reporting to stdout, a serial line (a `socat`
//! pty pair) and MQTT (a real mosquitto) at once, while the harness stops and restarts the
//! broker, unplugs and replugs the serial line and keeps one slow subscriber connected, and the
//! runtime's own rehearsed source outages (`[source_outages]`) take the camera away on a schedule.
//!
//! Afterwards it checks, against the runtime's own `/metrics`: every report MQTT counted as
//! acknowledged arrived at the subscriber (QoS 1, duplicates allowed) and the rest were counted
//! as dropped beyond the queue bound, only while the broker was down; the same on the serial
//! line (decoded by the independent wire oracle); `/healthz` went 503 naming each outage and came
//! back to 200; resident memory grew < 5 % from the end of the first round of faults (once every
//! fault path has made its one-time allocations) and open file descriptors stayed flat.
//! Stdout is the ledger: one JSON line per report, so the harness knows every report made.
//!
//! `cargo test --test soak` runs the CI form: two rounds of faults, about two minutes,
//! the camera paced at 30 frames/s (a real camera's rate; unpaced, the detector would take a
//! whole core from the other tests on a 2-core CI machine). The long form repeats the round for
//! `AFFECT_SOAK_MINUTES` minutes, unpaced unless `AFFECT_SOAK_FPS` says otherwise:
//! `AFFECT_SOAK_MINUTES=60 cargo test --release -p affect-edge-runtime --all-features --test
//! soak -- --ignored --nocapture`.

mod common;
#[path = "common/mqtt.rs"]
mod mqtt_peers;
#[path = "common/serial.rs"]
mod serial_peers;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mqtt_peers::{Broker, Subscriber, free_port, wait_until};
use serial_peers::{PtyPair, Reader, oracle_decode_lenient};

const TOPIC: &str = "soak/affect";
/// Session of the subscriber whose deliveries are checked; kept by the broker across restarts.
const FAST_SESSION: &str = "soak-fast";
/// What mosquitto logs: not every message (a long run would fill the disk), but subscriptions,
/// which tell when the slow subscriber is in.
const BROKER_LOG: &str = "error warning notice subscribe";
/// MQTT queue bound of the runtime: at 60 reports/s a broker outage fills it in 5 s.
const MQTT_QUEUE: usize = 300;
/// Serial queue bound of the runtime: an unplugged line fills it in about a second.
const SERIAL_QUEUE: usize = 64;
/// Reports of the runtime's MQTT window (its `inflight`): dropped first when the broker goes.
const INFLIGHT: u64 = 32;
/// Reports an unplug may lose after the runtime wrote them: bytes inside the kernel's pty buffers
/// and socat when socat is killed (a real adapter pulled out loses its buffer too).
const SERIAL_LOSS_PER_UNPLUG: usize = 64;
/// Longest wait for any observable event of the harness: a safety net, not a pace.
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

/// How long and how fast a soak runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Rounds of faults (each: broker outage, serial unplug, broker outage).
    rounds: Option<u32>,
    /// Stop starting rounds after this long (the long form).
    minutes: Option<f64>,
    /// Camera pacing, frames/s; 0: as fast as the pipeline runs.
    fps: f64,
    /// Steady running before the first round of faults, and between faults.
    warm_up: Duration,
    steady: Duration,
    /// Rehearsed source outages: up for this long, then down for `source_down_s`.
    source_up_s: f64,
    source_down_s: f64,
    /// Resident memory and descriptors sampled this often.
    sample_every: Duration,
}

impl Plan {
    fn ci() -> Self {
        Self {
            rounds: Some(2),
            minutes: None,
            fps: 30.0,
            warm_up: Duration::from_secs(20),
            steady: Duration::from_secs(8),
            source_up_s: 40.0,
            source_down_s: 4.0,
            sample_every: Duration::from_secs(2),
        }
    }

    fn long(minutes: f64, fps: f64) -> Self {
        Self {
            rounds: None,
            minutes: Some(minutes),
            fps,
            warm_up: Duration::from_secs(60),
            steady: Duration::from_secs(30),
            source_up_s: 120.0,
            source_down_s: 4.0,
            sample_every: Duration::from_secs(10),
        }
    }
}

/// One OpenMetrics exposition as `series → value` (`series` is the name with its labels).
#[derive(Debug, Clone, Default)]
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(f64::NAN)
    }

    /// `metric` of the reporter whose name starts with `reporter`.
    fn reporter(&self, metric: &str, reporter: &str) -> f64 {
        let prefix = format!("{metric}{{reporter=\"{reporter}");
        self.0
            .iter()
            .find(|(k, _)| k.starts_with(&prefix))
            .map_or(f64::NAN, |(_, v)| *v)
    }

    fn count(&self, metric: &str, reporter: &str) -> u64 {
        self.reporter(metric, reporter) as u64
    }
}

/// A resident-memory / descriptor sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    frames: u64,
    rss: f64,
    fds: f64,
}

/// What the monitor has seen of the device.
#[derive(Default)]
struct Observed {
    /// Latest `/healthz` code and its problems, reduced to kinds ("stalled", "queue full: …").
    health: (u16, Vec<String>),
    /// Every change of that, with the time since the monitor started.
    transitions: Vec<(Duration, u16, Vec<String>)>,
    metrics: Metrics,
    samples: Vec<Sample>,
}

/// Polls `/healthz` and `/metrics` on a thread.
struct Monitor {
    observed: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn problem_kind(problem: &str) -> String {
    if problem.contains("stalled") {
        "source stalled".into()
    } else if problem.contains("queue is full") {
        let who = problem.split(" is down").next().unwrap_or(problem);
        format!("queue full: {}", who.trim_start_matches("reporter "))
    } else {
        problem.into()
    }
}

impl Monitor {
    fn start(addr: SocketAddr, sample_every: Duration) -> Self {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (observed, stop) = (observed.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut next_sample = started;
                while !stop.load(Ordering::Relaxed) {
                    let (code, _, body) = common::get(addr, "/healthz");
                    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let mut kinds: Vec<String> = json["problems"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str().map(problem_kind))
                        .collect();
                    kinds.sort();
                    let metrics = Metrics::parse(&common::get(addr, "/metrics").2);
                    let now = Instant::now();
                    let mut o = observed.lock().unwrap();
                    if o.health != (code, kinds.clone()) {
                        o.transitions.push((now - started, code, kinds.clone()));
                        o.health = (code, kinds);
                    }
                    if now >= next_sample {
                        o.samples.push(Sample {
                            at: now - started,
                            frames: metrics.get("affect_frames_total") as u64,
                            rss: metrics.get("affect_process_resident_memory_bytes"),
                            fds: metrics.get("affect_process_open_fds"),
                        });
                        next_sample = now + sample_every;
                    }
                    o.metrics = metrics;
                    drop(o);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            observed,
            stop,
            thread: Some(thread),
        }
    }

    fn metrics(&self) -> Metrics {
        self.observed.lock().unwrap().metrics.clone()
    }

    fn health(&self) -> (u16, Vec<String>) {
        self.observed.lock().unwrap().health.clone()
    }

    /// Waits until `/healthz` answers `code` with a problem containing `problem` ("" with 200:
    /// healthy).
    fn wait_health(&self, code: u16, problem: &str) {
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            let (c, kinds) = self.health();
            if c == code && (problem.is_empty() || kinds.iter().any(|k| k.contains(problem))) {
                return;
            }
            if Instant::now() > deadline {
                let o = self.observed.lock().unwrap();
                let reporters: Vec<_> = o
                    .metrics
                    .0
                    .iter()
                    .filter(|(k, _)| k.starts_with("affect_reporter"))
                    .collect();
                panic!(
                    "timed out waiting for /healthz {code} {problem:?}; transitions {:?}; \
                     reporters {reporters:?}",
                    o.transitions
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(mut self) -> Observed {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.observed.lock().unwrap())
    }
}

/// Identity of one report: frame number and track.
fn key(json: &serde_json::Value) -> Option<u64> {
    Some((json["frame"].as_u64()? << 16) | json["track"].as_u64()?)
}

/// The running device, its stdout read into the ledger of reports.
struct Device {
    child: Child,
    addr: SocketAddr,
    /// Report identities in the order the device wrote them.
    ledger: Arc<Mutex<Vec<u64>>>,
    stdout: Option<JoinHandle<()>>,
    /// The last lines of its log, for failure messages.
    log: Arc<Mutex<std::collections::VecDeque<String>>>,
}

impl Device {
    fn start(config: &str, dir: &Path) -> Self {
        let path = dir.join("edge.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_affect-edge"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start affect-edge");
        let ledger = Arc::new(Mutex::new(Vec::new()));
        let stdout = {
            let ledger = ledger.clone();
            let out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let json: serde_json::Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("stdout line {line:?}: {e}"));
                    ledger.lock().unwrap().push(key(&json).unwrap());
                }
            })
        };
        let log = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            let err = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut announced = false;
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if !announced && let Some(at) = line.find("on http://") {
                        let _ = tx.send(line[at + "on http://".len()..].trim().to_owned());
                        announced = true;
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() == 200 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let addr = match rx.recv_timeout(EVENT_DEADLINE) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                common::terminate(&mut child);
                panic!("no HTTP address announced:\n{}", Self::tail(&log));
            }
        };
        Self {
            child,
            addr,
            ledger,
            stdout: Some(stdout),
            log,
        }
    }

    fn tail(log: &Mutex<std::collections::VecDeque<String>>) -> String {
        let log = log.lock().unwrap();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn ledger_len(&self) -> usize {
        self.ledger.lock().unwrap().len()
    }

    /// SIGTERM; fails the test unless it exits cleanly; returns the whole ledger.
    fn stop(mut self) -> Vec<u64> {
        common::terminate(&mut self.child);
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the device failed: {status}\n{}",
            Self::tail(&self.log)
        );
        if let Some(t) = self.stdout.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.ledger.lock().unwrap())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Only while it runs: once reaped, its PID may belong to someone else.
        if let Ok(None) = self.child.try_wait() {
            common::terminate(&mut self.child);
        }
    }
}

/// A subscriber that reads slowly: `mosquitto_sub` whose output is drained at about 2.5 KB/s
/// (a dozen reports per second), so its socket backs up and the broker queues for it.
struct SlowSubscriber {
    child: Child,
    bytes: Arc<AtomicU64>,
}

impl SlowSubscriber {
    fn start(broker: &Broker, id: &str) -> Self {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-q", "1", "-t", TOPIC, "-i", id])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub not found: run tests/setup.sh (mosquitto-clients)");
        let bytes = Arc::new(AtomicU64::new(0));
        {
            let bytes = bytes.clone();
            let mut out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = out.read(&mut buf) {
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // Subscribed once the broker logs the subscription (`log_type subscribe`).
        let subscribed = format!("{id} 1 {TOPIC}");
        wait_until("the slow subscriber's subscription", EVENT_DEADLINE, || {
            broker.log().contains(&subscribed)
        });
        Self { child, bytes }
    }

    fn stop(mut self) -> u64 {
        common::terminate(&mut self.child);
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for SlowSubscriber {
    fn drop(&mut self) {
        // std's kill does nothing to a child already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The soak's peers: broker, subscribers, serial line.
struct Peers {
    dir: tempfile::TempDir,
    broker: Option<Broker>,
    port: u16,
    fast: Option<Subscriber>,
    /// Reports the fast subscriber received so far (identities, duplicates included).
    received: Vec<u64>,
    slow: Option<SlowSubscriber>,
    slow_bytes: u64,
    slow_sessions: u32,
    pty: Option<PtyPair>,
    reader: Reader,
}

impl Peers {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("broker")).unwrap();
        std::fs::create_dir(dir.path().join("serial")).unwrap();
        let port = free_port();
        let pty = PtyPair::start(&dir.path().join("serial"));
        let reader = Reader::start(pty.host.clone());
        let mut peers = Self {
            broker: None,
            port,
            fast: None,
            received: Vec::new(),
            slow: None,
            slow_bytes: 0,
            slow_sessions: 0,
            pty: Some(pty),
            reader,
            dir,
        };
        peers.start_broker();
        peers
    }

    fn serial_dev(&self) -> String {
        self.dir.path().join("serial/dev").display().to_string()
    }

    fn start_broker(&mut self) {
        let broker = Broker::start_logging(
            &self.dir.path().join("broker"),
            self.port,
            "allow_anonymous true",
            BROKER_LOG,
        );
        self.fast = Some(Subscriber::start(
            self.port,
            &[TOPIC],
            Some(FAST_SESSION),
            &[],
        ));
        self.slow_sessions += 1;
        self.slow = Some(SlowSubscriber::start(
            &broker,
            &format!("soak-slow-{}", self.slow_sessions),
        ));
        self.broker = Some(broker);
    }

    /// Moves what the fast subscriber received into `received`.
    fn collect(&mut self) {
        if let Some(fast) = &self.fast {
            for payload in fast.take_payloads(TOPIC) {
                let json: serde_json::Value = serde_json::from_str(&payload).unwrap();
                self.received.push(key(&json).unwrap());
            }
        }
    }

    /// Stops the subscribers (the fast one's session stays with the broker) and the broker
    /// (SIGTERM: it saves its sessions).
    fn stop_broker(&mut self) {
        if let Some(fast) = self.fast.as_mut() {
            fast.stop();
        }
        self.collect();
        self.fast = None;
        if let Some(slow) = self.slow.take() {
            self.slow_bytes += slow.stop();
        }
        if let Some(broker) = self.broker.take() {
            broker.stop();
        }
    }
}

/// The device's configuration for the soak.
fn device_config(plan: &Plan, peers: &Peers) -> String {
    format!(
        "source = \"synthetic:11\"\n\
         faces = \"bundled\"\n\
         fps = {fps:.1}\n\
         report = [\"stdout\", \"serial:{dev}\", \"mqtt://127.0.0.1:{port}/{TOPIC}\"]\n\
         status_interval_s = 5.0\n\
         [synthetic]\n\
         people = 2\n\
         width = 320\n\
         height = 240\n\
         [source_outages]\n\
         up_s = {up:.1}\n\
         down_s = {down:.1}\n\
         [serial]\n\
         queue = {SERIAL_QUEUE}\n\
         [serial.backoff]\n\
         initial_ms = 50\n\
         max_ms = 500\n\
         factor = 2.0\n\
         [mqtt]\n\
         queue = {MQTT_QUEUE}\n\
         inflight = {INFLIGHT}\n\
         keep_alive_s = 5\n\
         connect_timeout_s = 2\n\
         [mqtt.backoff]\n\
         initial_ms = 50\n\
         max_ms = 500\n\
         factor = 2.0\n\
         [http]\n\
         listen = \"127.0.0.1:0\"\n\
         stale_after_s = 1.0\n",
        fps = plan.fps,
        dev = peers.serial_dev(),
        port = peers.port,
        up = plan.source_up_s,
        down = plan.source_down_s,
    )
}

/// A fault window in frames: reports of frames in it may be dropped.
#[derive(Debug, Clone, Copy)]
struct Window {
    from_frame: u64,
    to_frame: u64,
}

/// Steady running for `d`, while the monitor watches: the harness's only timed wait, and it is
/// the point of a soak (time passing), not a guess at readiness.
fn run_for(d: Duration) {
    std::thread::sleep(d);
}

fn frames(monitor: &Monitor) -> u64 {
    monitor.metrics().get("affect_frames_total") as u64
}

/// The broker goes away until the runtime's queue overflows (`/healthz` 503 naming it, reports
/// dropped), then comes back with the same sessions.
fn broker_outage(peers: &mut Peers, monitor: &Monitor, mqtt: &str) -> Window {
    let from_frame = frames(monitor);
    let dropped_before = monitor
        .metrics()
        .count("affect_reporter_dropped_total", mqtt);
    peers.stop_broker();
    monitor.wait_health(503, &format!("queue full: {mqtt}"));
    wait_until("reports dropped beyond the bound", EVENT_DEADLINE, || {
        monitor
            .metrics()
            .count("affect_reporter_dropped_total", mqtt)
            >= dropped_before + 30
    });
    peers.start_broker();
    wait_until("the MQTT reconnect", EVENT_DEADLINE, || {
        monitor
            .metrics()
            .reporter("affect_reporter_connected", mqtt)
            == 1.0
    });
    monitor.wait_health(200, "");
    Window {
        from_frame,
        to_frame: frames(monitor),
    }
}

/// The serial line is unplugged until the runtime's queue overflows, then plugged back in.
fn serial_unplug(peers: &mut Peers, monitor: &Monitor, serial: &str) -> Window {
    let from_frame = frames(monitor);
    let dropped_before = monitor
        .metrics()
        .count("affect_reporter_dropped_total", serial);
    peers.pty.take().unwrap().stop();
    monitor.wait_health(503, &format!("queue full: {serial}"));
    wait_until("serial reports dropped", EVENT_DEADLINE, || {
        monitor
            .metrics()
            .count("affect_reporter_dropped_total", serial)
            >= dropped_before + 10
    });
    peers.pty = Some(PtyPair::start(&peers.dir.path().join("serial")));
    wait_until("the serial reopen", EVENT_DEADLINE, || {
        monitor
            .metrics()
            .reporter("affect_reporter_connected", serial)
            == 1.0
    });
    monitor.wait_health(200, "");
    Window {
        from_frame,
        to_frame: frames(monitor),
    }
}

/// Final counts taken while the rehearsed source outage holds the frames back: every report
/// made so far is delivered or dropped, none queued, and the ledger has them all.
struct Tally {
    metrics: Metrics,
    reports: usize,
}

fn tally(device: &Device, monitor: &Monitor, mqtt: &str, serial: &str) -> Tally {
    let mut found = None;
    wait_until(
        "a settled tally in a source outage",
        EVENT_DEADLINE * 3,
        || {
            let m = monitor.metrics();
            let reports = m.get("affect_reports_total") as u64;
            let settled = |r: &str| {
                m.count("affect_reporter_queued", r) == 0
                    && m.count("affect_reporter_delivered_total", r)
                        + m.count("affect_reporter_dropped_total", r)
                        == reports
            };
            let stalled = monitor.health().1.iter().any(|k| k == "source stalled");
            if stalled && settled(mqtt) && settled(serial) && device.ledger_len() as u64 == reports
            {
                found = Some(Tally {
                    metrics: m,
                    reports: reports as usize,
                });
            }
            found.is_some()
        },
    );
    found.unwrap()
}

/// Reports of `ledger` not in `got`, and how many of `got` are not in `ledger` at all.
fn compare(ledger: &[u64], got: &[u64]) -> (Vec<u64>, usize) {
    let made: HashSet<u64> = ledger.iter().copied().collect();
    let got_set: HashSet<u64> = got.iter().copied().collect();
    let missing = ledger
        .iter()
        .copied()
        .filter(|k| !got_set.contains(k))
        .collect();
    let phantom = got_set.iter().filter(|k| !made.contains(k)).count();
    (missing, phantom)
}

fn within(windows: &[Window], key: u64, margin: u64) -> bool {
    let frame = key >> 16;
    windows
        .iter()
        .any(|w| frame + margin >= w.from_frame && frame <= w.to_frame + margin)
}

fn soak(plan: Plan) {
    let started = Instant::now();
    let mut peers = Peers::start();
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(&device_config(&plan, &peers), dir.path());
    let monitor = Monitor::start(device.addr, plan.sample_every);
    let mqtt = format!("mqtt://127.0.0.1:{}/{TOPIC}", peers.port);
    let serial = format!("serial {}@115200", peers.serial_dev());
    monitor.wait_health(200, "");
    eprintln!(
        "soak: device up after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    run_for(plan.warm_up);
    let warmed_at = monitor.observed.lock().unwrap().samples.len();
    // The memory baseline: the first sample after the first round of faults, once every fault
    // path (broker outage, unplug, source outage) has run and made its one-time allocations.
    let mut baseline_at = None;
    let mut broker_windows = Vec::new();
    let mut serial_windows = Vec::new();
    let mut round = 0;
    loop {
        let more = match (plan.rounds, plan.minutes) {
            (Some(n), _) => round < n,
            (None, Some(m)) => started.elapsed().as_secs_f64() < m * 60.0,
            (None, None) => false,
        };
        if !more {
            break;
        }
        round += 1;
        run_for(plan.steady);
        broker_windows.push(broker_outage(&mut peers, &monitor, &mqtt));
        run_for(plan.steady);
        serial_windows.push(serial_unplug(&mut peers, &monitor, &serial));
        run_for(plan.steady);
        broker_windows.push(broker_outage(&mut peers, &monitor, &mqtt));
        peers.collect();
        baseline_at.get_or_insert(monitor.observed.lock().unwrap().samples.len());
        eprintln!(
            "soak: round {round} done after {:.0} s, {} frames",
            started.elapsed().as_secs_f64(),
            frames(&monitor)
        );
    }

    // The end: a rehearsed source outage that begins after the last fault, where the counts
    // settle.
    let faults_over = monitor.observed.lock().unwrap().transitions.len();
    wait_until(
        "a source outage after the faults",
        EVENT_DEADLINE * 3,
        || {
            monitor.observed.lock().unwrap().transitions[faults_over..]
                .iter()
                .any(|(_, code, kinds)| *code == 503 && kinds.iter().any(|k| k == "source stalled"))
        },
    );
    let tally = tally(&device, &monitor, &mqtt, &serial);
    let delivered_mqtt = tally
        .metrics
        .count("affect_reporter_delivered_total", &mqtt);
    let dropped_mqtt = tally.metrics.count("affect_reporter_dropped_total", &mqtt);
    let delivered_serial = tally
        .metrics
        .count("affect_reporter_delivered_total", &serial);
    let dropped_serial = tally
        .metrics
        .count("affect_reporter_dropped_total", &serial);
    let ledger_now: Vec<u64> = device.ledger.lock().unwrap()[..tally.reports].to_vec();
    // Everything acknowledged reaches the subscriber (the broker may still be forwarding).
    wait_until(
        "the subscriber to receive every acknowledged report",
        EVENT_DEADLINE,
        || {
            peers.collect();
            let (missing, _) = compare(&ledger_now, &peers.received);
            (missing.len() as u64) <= dropped_mqtt
        },
    );
    wait_until("the serial reader to catch up", EVENT_DEADLINE, || {
        peers.reader.frames_seen() as u64 + (SERIAL_LOSS_PER_UNPLUG * serial_windows.len()) as u64
            >= delivered_serial
    });
    let observed = monitor.finish();
    let ledger = device.stop();
    peers.stop_broker();
    let serial_bytes = peers.reader.finish();
    let elapsed = started.elapsed();

    // The ledger: two people, one report per face per frame, each (frame, track) once.
    let ledger = &ledger[..tally.reports];
    assert_eq!(
        ledger.iter().collect::<HashSet<_>>().len(),
        ledger.len(),
        "a (frame, track) reported twice"
    );
    let frames_with_reports = ledger.iter().map(|k| k >> 16).collect::<HashSet<_>>().len();
    let faces_per_frame = ledger.len() as f64 / frames_with_reports.max(1) as f64;
    assert!(
        faces_per_frame >= 1.8,
        "{faces_per_frame:.2} faces per frame"
    );

    // MQTT: acknowledged ⇒ received; missing ≤ dropped, and only around broker outages.
    assert_eq!(delivered_mqtt + dropped_mqtt, ledger.len() as u64);
    let (missing, phantom) = compare(ledger, &peers.received);
    let unique = peers.received.iter().collect::<HashSet<_>>().len();
    assert_eq!(
        phantom, 0,
        "the subscriber got reports the device never made"
    );
    assert!(
        missing.len() as u64 <= dropped_mqtt,
        "{} reports missing at the subscriber, {dropped_mqtt} counted as dropped",
        missing.len()
    );
    assert!(
        dropped_mqtt > 0,
        "the broker outages never exceeded the bound"
    );
    let margin = INFLIGHT + MQTT_QUEUE as u64;
    let stray: Vec<u64> = missing
        .iter()
        .copied()
        .filter(|k| !within(&broker_windows, *k, margin))
        .map(|k| k >> 16)
        .collect();
    assert!(
        stray.is_empty(),
        "reports lost outside the broker outages {broker_windows:?}: frames {stray:?}"
    );

    assert!(
        peers.slow_bytes > 0,
        "the slow subscriber never received anything"
    );

    // Serial: the oracle decodes the line; written ⇒ received except a pty buffer per unplug.
    assert_eq!(delivered_serial + dropped_serial, ledger.len() as u64);
    let decoded = oracle_decode_lenient(&serial_bytes);
    let damaged = decoded.iter().filter(|d| d.get("error").is_some()).count();
    let serial_keys: Vec<u64> = decoded.iter().filter_map(key).collect();
    let (serial_missing, serial_phantom) = compare(ledger, &serial_keys);
    assert_eq!(serial_phantom, 0, "the serial line carried unknown reports");
    let allowance = dropped_serial as usize + SERIAL_LOSS_PER_UNPLUG * serial_windows.len();
    assert!(
        serial_missing.len() <= allowance,
        "{} reports missing on the serial line, {dropped_serial} dropped",
        serial_missing.len()
    );
    assert!(
        dropped_serial > 0,
        "the unplug never exceeded the serial bound"
    );
    assert!(
        damaged <= serial_windows.len(),
        "{damaged} damaged serial frames"
    );

    // Health: 503 naming each outage, and 200 again at the end of each.
    let kinds_seen: HashSet<String> = observed
        .transitions
        .iter()
        .filter(|(_, code, _)| *code == 503)
        .flat_map(|(_, _, kinds)| kinds.clone())
        .collect();
    for want in [
        "source stalled".to_owned(),
        format!("queue full: {mqtt}"),
        format!("queue full: {serial}"),
    ] {
        assert!(
            kinds_seen.contains(&want),
            "/healthz never said {want:?}: {:?}",
            observed.transitions
        );
    }
    let recoveries = observed
        .transitions
        .iter()
        .filter(|(_, code, _)| *code == 200)
        .count();

    // Memory and descriptors from the end of the first round of faults (what the warm-up and the
    // first faults allocate once is printed, not bounded): start, middle and end of the curve.
    let baseline_at = baseline_at.expect("at least one round of faults");
    let curve = &observed.samples[baseline_at.min(observed.samples.len())..];
    assert!(curve.len() >= 3, "too few samples: {curve:?}");
    let (first, middle, last) = (curve[0], curve[curve.len() / 2], curve[curve.len() - 1]);
    let peak = curve.iter().map(|s| s.rss).fold(0.0, f64::max);
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let growth = last.rss / first.rss - 1.0;
    let warmed = observed.samples[warmed_at];
    eprintln!(
        "soak: {:.0} s, {} frames, {} reports ({faces_per_frame:.2} per frame), {} rounds of faults",
        elapsed.as_secs_f64(),
        ledger.iter().map(|k| k >> 16).max().unwrap_or(0) + 1,
        ledger.len(),
        round
    );
    eprintln!(
        "soak: MQTT  acknowledged {delivered_mqtt}, dropped {dropped_mqtt}, received {unique} \
         distinct ({} with duplicates), missing {}; slow subscriber read {} bytes",
        peers.received.len(),
        missing.len(),
        peers.slow_bytes
    );
    eprintln!(
        "soak: serial written {delivered_serial}, dropped {dropped_serial}, decoded {} \
         ({damaged} damaged), missing {}",
        serial_keys.len(),
        serial_missing.len()
    );
    eprintln!(
        "soak: /healthz transitions {} (back to 200 {recoveries} times): {:?}",
        observed.transitions.len(),
        observed
            .transitions
            .iter()
            .map(|(t, c, k)| format!("{:.0}s {c} {k:?}", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    for (name, s) in [
        ("warm", warmed),
        ("start", first),
        ("middle", middle),
        ("end", last),
    ] {
        eprintln!(
            "soak: RSS {name:>6} at {:>5.0} s, frame {:>8}: {:.1} MiB, {} fds",
            s.at.as_secs_f64(),
            s.frames,
            mib(s.rss),
            s.fds
        );
    }
    eprintln!(
        "soak: RSS growth after the first round of faults {:+.2} % (during warm-up and that \
         round {:+.2} %; peak {:.1} MiB)",
        growth * 100.0,
        (first.rss / warmed.rss - 1.0) * 100.0,
        mib(peak)
    );
    assert!(
        growth < 0.05,
        "resident memory grew {:.1} %",
        growth * 100.0
    );
    assert!(
        last.fds <= first.fds + 2.0,
        "open descriptors {} → {}",
        first.fds,
        last.fds
    );
}

#[test]
fn a_soak_with_broker_serial_and_source_outages_loses_nothing_uncounted() {
    soak(Plan::ci());
}

/// The long form: `AFFECT_SOAK_MINUTES` (default 60) minutes of rounds, unpaced unless
/// `AFFECT_SOAK_FPS` is set.
#[test]
#[ignore = "long: run with AFFECT_SOAK_MINUTES=N -- --ignored (docs/operations.md)"]
fn a_long_soak() {
    let var = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?}")))
            .unwrap_or(default)
    };
    soak(Plan::long(
        var("AFFECT_SOAK_MINUTES", 60.0),
        var("AFFECT_SOAK_FPS", 0.0),
    ));
}
