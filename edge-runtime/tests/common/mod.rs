//! Helpers shared by the integration tests that start real processes (each test file includes
//! this module and uses part of it).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// SIGTERM (so the process can save state or remove its links), then waits up to 5 s and kills
/// it if it is still running.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed when the guard drops (a failing assertion unwinds through it), so a
/// failed test leaves no device running behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Whether this run is in CI (`CI` set to `true` or `1`), where a missing oracle is a failure.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// The value of the environment variable `var` that an oracle check (`what`) needs. When it is
/// unset: panics in CI, so the check can never pass silently there; elsewhere prints why `what`
/// is skipped and returns `None`.
pub fn oracle_env(var: &str, what: &str) -> Option<std::ffi::OsString> {
    if let Some(value) = std::env::var_os(var) {
        return Some(value);
    }
    let reason = format!("{var} is unset (run `. tests/setup.sh` first): {what} cannot run");
    assert!(!in_ci(), "{reason}; CI must run every oracle check");
    eprintln!("SKIPPED: {reason}");
    None
}

/// `GET path` over a plain socket: status code, headers and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_owned(), dechunk(head, body))
}

/// The body of a response that may use chunked transfer encoding.
pub fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

/// The payloads in a report queue on disk, oldest first, read independently of the runtime
/// from the documented record format (`len u32 | crc u32 | seq u64 | payload`, little endian,
/// CRC-32 of all but itself); a torn or damaged record ends its segment.
pub fn queued_on_disk(queue: &std::path::Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(queue) else {
        return Vec::new();
    };
    let mut segments: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        let bytes = std::fs::read(&segment).unwrap_or_default();
        let mut at = 0;
        while bytes.len() >= at + 16 {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            let Some(payload) = bytes.get(at + 16..at + 16 + len) else {
                break;
            };
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&bytes[at..at + 4]);
            hasher.update(&bytes[at + 8..at + 16]);
            hasher.update(payload);
            if hasher.finalize() != crc {
                break;
            }
            out.push(payload.to_vec());
            at += 16 + len;
        }
    }
    out
}

/// Waits up to `timeout` for `child` to end and asserts it exited with 0; returns its log
/// (`log`, where its stderr went). Kills it and fails with the log when it does not end.
pub fn wait_for_clean_exit(child: &mut Child, timeout: Duration, log: &std::path::Path) -> String {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the process did not end within {timeout:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "{status}:\n{text}");
    text
}

/// `affect-edge run` from the synthetic camera at 50 frames/s to the report target `target`,
/// queueing in `state`, its stderr in `log` (the crash tests of the durable queues).
pub fn start_queueing_device(
    target: &str,
    state: &std::path::Path,
    extra: &[&str],
    log: &std::path::Path,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_affect-edge"))
        .args([
            "run",
            "--source",
            "synthetic:4",
            "--fps",
            "50",
            "--report",
            target,
        ])
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start affect-edge")
}
