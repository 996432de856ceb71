//! A real mosquitto broker and a real `mosquitto_sub` subscriber for integration tests, each
//! ready only once it has shown so by an MQTT exchange: the broker answers a CONNECT on its probe
//! listener with a CONNACK, the subscriber has printed the broker's SUBACK. A process that exits
//! early fails the test at once with its log, instead of running into a deadline.
//!
//! Include with `#[path = "common/mqtt.rs"] mod mqtt_peers;` next to `mod common;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a peer may take to become ready before the test fails: only a safety net, readiness
/// itself is an observed event.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `done` every 10 ms; fails the test naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sets `path`'s permission bits (mosquitto reads its files after dropping root).
pub fn make_accessible(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes a CA and a broker certificate for `localhost`/127.0.0.1 with openssl.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=affect test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    // Throwaway test key; the broker reads it after dropping root.
    make_accessible(&dir.join("server.key"), 0o644);
}

/// Sends an MQTT 3.1.1 CONNECT to `port` and reads the reply: `Some(return code)` of a CONNACK
/// (0 accepted, 5 not authorised, …), `None` when nothing answering MQTT listens there.
pub fn mqtt_connack(port: u16) -> Option<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let client_id = b"affect-probe";
    let mut packet = vec![0x10, (12 + client_id.len()) as u8];
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10]);
    packet.extend_from_slice(&[0, client_id.len() as u8]);
    packet.extend_from_slice(client_id);
    stream.write_all(&packet).ok()?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).ok()?;
    let _ = stream.write_all(&[0xE0, 0x00]);
    (connack[0] == 0x20 && connack[1] == 0x02).then_some(connack[3])
}

/// A mosquitto broker on 127.0.0.1 persisting sessions in its directory, with the test's
/// listener on `port` (plain or TLS, as `extra` configures it) and a plain probe listener that
/// tells when the broker serves MQTT.
pub struct Broker {
    child: Child,
    /// The test's listener.
    pub port: u16,
    dir: PathBuf,
    extra: String,
}

impl Broker {
    /// Starts mosquitto with `extra` configuration lines for the listener on `port` and waits
    /// until it answers MQTT. It logs everything (`log_type all`).
    pub fn start(dir: &Path, port: u16, extra: &str) -> Self {
        Self::start_logging(dir, port, extra, "all")
    }

    /// [`Broker::start`] logging only `log_types` (mosquitto's `log_type` values, space
    /// separated): a long run would otherwise log every message.
    pub fn start_logging(dir: &Path, port: u16, extra: &str, log_types: &str) -> Self {
        // Started as root, mosquitto drops to its own user: let it into the directory (its
        // persistence file, its log, the test keys).
        make_accessible(dir, 0o777);
        let probe = free_port();
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let log_types: String = log_types
            .split_whitespace()
            .map(|t| format!("log_type {t}\n"))
            .collect();
        // Options after a `listener` line configure that listener: the probe comes first, so
        // `extra` (TLS files, …) applies to the test's listener.
        std::fs::write(
            &conf,
            format!(
                "log_dest file {log}\n\
                 {log_types}\
                 persistence true\n\
                 persistence_location {dir}/\n\
                 listener {probe} 127.0.0.1\n\
                 listener {port} 127.0.0.1\n\
                 {extra}\n",
                log = log.display(),
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto not found: run tests/setup.sh (Debian package mosquitto)");
        let mut broker = Self {
            child,
            port,
            dir: dir.to_path_buf(),
            extra: extra.to_owned(),
        };
        let deadline = Instant::now() + READY_DEADLINE;
        while mqtt_connack(probe).is_none() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!(
                    "mosquitto on port {port} exited ({status}) before serving:\n{}",
                    broker.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto on port {port} did not answer MQTT:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        broker
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// SIGTERM: mosquitto saves its sessions (persistence) and exits. Returns what
    /// [`Broker::start`] needs to start it again on the same port and directory.
    pub fn stop(mut self) -> (PathBuf, u16, String) {
        crate::common::terminate(&mut self.child);
        (self.dir.clone(), self.port, self.extra.clone())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `mosquitto_sub` collecting `topic payload` lines.
pub struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<Vec<String>>>,
    stdout_reader: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes with QoS 1 to `topics` (`session`: a persistent session under that client id)
    /// and waits for the broker's SUBACK.
    pub fn start(port: u16, topics: &[&str], session: Option<&str>, extra: &[&str]) -> Self {
        // Line-buffered: through a pipe the client's output would otherwise sit in its buffer.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "mosquitto_sub"]);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-v",
            "-d",
        ]);
        for t in topics {
            cmd.args(["-t", t]);
        }
        if let Some(id) = session {
            cmd.args(["-i", id, "-c"]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub not found: run tests/setup.sh (mosquitto-clients)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stdout_reader = {
            let (lines, log) = (lines.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // `-d` interleaves the client's log ("Client … received SUBACK") with the
                    // messages. Its two lines per message (PUBLISH, PUBACK) are not kept: a
                    // long run would pile them up.
                    if line.starts_with("Client ") || line.starts_with("Subscribed (mid") {
                        if !(line.contains(" PUBLISH ") || line.contains(" PUBACK ")) {
                            log.lock().unwrap().push(line);
                        }
                    } else {
                        lines.lock().unwrap().push(line);
                    }
                }
            })
        };
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut sub = Self {
            child,
            lines,
            log,
            stdout_reader: Some(stdout_reader),
        };
        let deadline = Instant::now() + READY_DEADLINE;
        while !sub.log_contains("received SUBACK") {
            if let Ok(Some(status)) = sub.child.try_wait() {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "mosquitto_sub on port {port} exited ({status}) before subscribing:\n{}",
                    sub.log().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub on port {port} got no SUBACK:\n{}",
                sub.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sub
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The client's own log lines (`-d` output and stderr).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Removes and returns the payloads received on `topic` so far, in arrival order (what
    /// arrives on other topics is dropped too): a long run keeps its own digest of them.
    pub fn take_payloads(&self, topic: &str) -> Vec<String> {
        let prefix = format!("{topic} ");
        std::mem::take(&mut *self.lines.lock().unwrap())
            .into_iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// Disconnects (SIGTERM: the client finishes the message in hand) and waits until its
    /// output is read; the payloads stay readable.
    pub fn stop(&mut self) {
        crate::common::terminate(&mut self.child);
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
    }

    /// Payloads received on `topic`, in arrival order.
    pub fn payloads(&self, topic: &str) -> Vec<String> {
        let prefix = format!("{topic} ");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
