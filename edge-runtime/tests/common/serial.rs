//! A serial line for integration tests: a `socat` pseudo-terminal pair (unplugging is killing
//! socat, plugging back in is starting it again on the same link names), a reader of its host
//! end, and the independent wire decoder (`tests/oracles/wire_oracle.py`).
//!
//! Include with `#[path = "common/serial.rs"] mod serial_peers;` next to `mod common;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A socat pty pair: the device end (`dev`) for the reporter, the host end (`host`) for the
/// reader.
pub struct PtyPair {
    child: Child,
    /// The device end, for the reporter.
    pub dev: PathBuf,
    /// The host end, for the reader.
    pub host: PathBuf,
}

impl PtyPair {
    /// Starts socat with its links `dir/dev` and `dir/host` and waits until both exist.
    pub fn start(dir: &Path) -> Self {
        let dev = dir.join("dev");
        let host = dir.join("host");
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", dev.display()))
            .arg(format!("pty,raw,echo=0,link={}", host.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat not found: run tests/setup.sh (Debian package socat)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(dev.exists() && host.exists()) {
            assert!(Instant::now() < deadline, "socat did not create its ptys");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, dev, host }
    }

    /// Unplugs: SIGTERM so socat removes its links, then waits for it.
    pub fn stop(mut self) {
        crate::common::terminate(&mut self.child);
        let _ = std::fs::remove_file(&self.dev);
        let _ = std::fs::remove_file(&self.host);
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the host end into a buffer on a thread, reopening it whenever it goes away.
pub struct Reader {
    /// Everything read so far.
    pub bytes: Arc<Mutex<Vec<u8>>>,
    opens: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts reading `host` (opened as soon as it exists).
    pub fn start(host: PathBuf) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let opens = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bytes, opens, stop) = (bytes.clone(), opens.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut port) = serialport::new(host.to_string_lossy(), 115_200)
                        .timeout(Duration::from_millis(50))
                        .open()
                    else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    *opens.lock().unwrap() += 1;
                    let mut buf = [0u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        match port.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => bytes.lock().unwrap().extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                }
            })
        };
        Self {
            bytes,
            opens,
            stop,
            thread: Some(thread),
        }
    }

    /// Delimited frames read so far.
    pub fn frames_seen(&self) -> usize {
        self.bytes
            .lock()
            .unwrap()
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .count()
    }

    /// Waits until `n` frames were read; fails the test after `timeout`.
    pub fn wait_for_frames(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.frames_seen() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} frames arrived",
                self.frames_seen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the host end was opened `n` times; fails the test after `timeout`.
    pub fn wait_for_opens(&self, n: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while *self.opens.lock().unwrap() < n {
            assert!(
                Instant::now() < deadline,
                "reader did not reopen the host end"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops reading; returns every byte read.
    pub fn finish(mut self) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        std::mem::take(&mut *self.bytes.lock().unwrap())
    }
}

/// Decodes the byte stream with the Python oracle; one JSON value per frame. A frame the oracle
/// refuses fails the test.
pub fn oracle_decode(bytes: &[u8]) -> Vec<serde_json::Value> {
    run_oracle(bytes, "decode")
}

/// Like [`oracle_decode`], but a frame the oracle refuses (the half frame an unplugged line
/// leaves behind) becomes `{"error": "…"}` instead of failing the test.
pub fn oracle_decode_lenient(bytes: &[u8]) -> Vec<serde_json::Value> {
    run_oracle(bytes, "decode-lenient")
}

fn run_oracle(bytes: &[u8], mode: &str) -> Vec<serde_json::Value> {
    let hex: String = bytes
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| {
            let mut line: String = f.iter().map(|b| format!("{b:02x}")).collect();
            line.push_str("00\n");
            line
        })
        .collect();
    let python = std::env::var("AFFECT_PYTHON").unwrap_or_else(|_| "python3".into());
    let oracle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oracles/wire_oracle.py");
    let mut child = Command::new(python)
        .arg(oracle)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 for the wire oracle");
    // Written from a thread: a large input would otherwise fill both pipes and stall.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(hex.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "oracle failed on the received bytes"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
