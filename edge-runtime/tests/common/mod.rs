//! Helpers shared by the integration tests that start real processes (each test file includes
//! this module).

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
