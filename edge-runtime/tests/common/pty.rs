//! A real pseudo-terminal pair from `socat`, standing in for a serial adapter and the device
//! on its other end. Include with `#[path = "common/pty.rs"] mod pty;` next to `mod common;`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A socat pty pair: the device end (`dev`) for the reporter, the host end (`host`) for the
/// reader.
pub struct PtyPair {
    child: Child,
    /// The device end (what the runtime opens).
    pub dev: PathBuf,
    /// The host end (what a reader opens).
    pub host: PathBuf,
}

impl PtyPair {
    /// Starts socat with both links in `dir` and waits until they exist.
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
