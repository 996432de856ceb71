//! Running under systemd (`Type=notify`, `WatchdogSec=`; the unit is
//! `edge-runtime/debian/affect-edge.service`): `READY=1` once the model, source and reporters
//! are up, `STOPPING=1` when the run ends, and watchdog pings tied to the frame loop's
//! progress. The loop beats after every frame and after every bounded wait for the source (a
//! camera outage is handled by reopening it, and shows in `/healthz`); when no beat came for
//! half the watchdog interval — the model, a reporter or a driver call hangs — the pings stop
//! and systemd restarts the service. Without `NOTIFY_SOCKET` every call does nothing.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::telemetry::Telemetry;

/// Whether to ping: the loop made progress within half the watchdog interval.
pub fn should_ping(since_progress: Duration, watchdog: Duration) -> bool {
    since_progress <= watchdog / 2
}

/// The service manager, as far as this process talks to it.
#[derive(Debug, Clone, Copy)]
pub struct ServiceManager {
    watchdog: Option<Duration>,
}

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec))
            .filter(|d| !d.is_zero());
        Self { watchdog }
    }

    /// The watchdog interval systemd expects pings within, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Tells systemd the service is up, with a one-line status for `systemctl status`.
    pub fn ready(&self, status: &str) {
        notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Tells systemd the service is shutting down (queues are being drained).
    pub fn stopping(&self) {
        notify(&[NotifyState::Stopping]);
    }

    /// Starts pinging the watchdog (when systemd asked for one) while `telemetry` shows the
    /// frame loop making progress; pinging ends when the returned value is dropped.
    pub fn start_watchdog(&self, telemetry: Arc<Telemetry>) -> Option<WatchdogPinger> {
        let interval = self.watchdog?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut stalled = false;
                loop {
                    match stopped.recv_timeout(interval / 4) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let since = telemetry.since_progress(Instant::now());
                    if should_ping(since, interval) {
                        notify(&[NotifyState::Watchdog]);
                        stalled = false;
                    } else if !stalled {
                        stalled = true;
                        tracing::error!(
                            "the frame loop made no progress for {:.1} s; no more watchdog \
                             pings, systemd restarts the service after {:.1} s",
                            since.as_secs_f64(),
                            interval.as_secs_f64()
                        );
                    }
                }
            });
        match thread {
            Ok(thread) => Some(WatchdogPinger {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::error!("cannot start the watchdog thread: {e}");
                None
            }
        }
    }
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("systemd notification failed: {e}");
    }
}

/// Pings systemd's watchdog on a thread of its own until dropped.
pub struct WatchdogPinger {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchdogPinger {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the watchdog thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_stop_after_half_the_interval_without_progress() {
        let watchdog = Duration::from_secs(30);
        assert!(should_ping(Duration::from_secs(2), watchdog));
        assert!(should_ping(Duration::from_secs(15), watchdog));
        assert!(!should_ping(Duration::from_millis(15_001), watchdog));
    }
}
