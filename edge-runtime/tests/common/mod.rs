//! Helpers shared by the integration tests that start real processes (each test file includes
//! this module and uses part of it).
#![allow(dead_code)]

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
