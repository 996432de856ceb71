//! Rate limiting around any reporter: at most `max_hz` reports per second per face track, by
//! capture time (so the result does not depend on how fast the pipeline ran).

use std::collections::HashMap;
use std::time::Duration;

use affect_shared::wire::StatusFlags;
use serde::{Deserialize, Serialize};

use super::{Report, ReportError, Reporter, ReporterHealth};
use affect_shared::status::DeviceStatus;

/// Rate limit settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Largest report rate per track, reports per second of capture time (> 0).
    pub max_hz: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { max_hz: 5.0 }
    }
}

/// Passes a track's report when at least `1 / max_hz` of capture time has passed since the last
/// one it passed for that track, less 10 % so a camera's frame jitter does not skip a period
/// (30 fps limited to 10 Hz gives every third frame). Always passes a track's first report and
/// reports flagged `NEW_TRACK` or `FACE_LOST`, which carry a change of state.
pub struct RateLimited<R: Reporter> {
    inner: R,
    interval_ms: f64,
    last_passed: HashMap<u16, u64>,
    suppressed: u64,
}

/// Tracks not reported for this long (capture time) are forgotten.
const FORGET_AFTER_MS: u64 = 60_000;

impl<R: Reporter> RateLimited<R> {
    /// Wraps `inner`; errors if `max_hz` is not a positive number.
    pub fn new(inner: R, config: RateLimitConfig) -> Result<Self, ReportError> {
        if !(config.max_hz.is_finite() && config.max_hz > 0.0) {
            return Err(ReportError::Config {
                what: "rate_limit.max_hz".into(),
                message: format!("must be a positive number, got {}", config.max_hz),
            });
        }
        Ok(Self {
            inner,
            interval_ms: 1000.0 / config.max_hz,
            last_passed: HashMap::new(),
            suppressed: 0,
        })
    }

    /// Reports held back so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// The wrapped reporter.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// The wrapped reporter, mutably.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The wrapped reporter back.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn passes(&self, report: &Report) -> bool {
        let state_change = report.flags.contains(StatusFlags::NEW_TRACK)
            || report.flags.contains(StatusFlags::FACE_LOST);
        match self.last_passed.get(&report.track) {
            None => true,
            _ if state_change => true,
            // A clock that went backwards (source restarted) starts the track afresh.
            Some(&last) if report.timestamp_ms < last => true,
            Some(&last) => (report.timestamp_ms - last) as f64 >= 0.9 * self.interval_ms,
        }
    }
}

impl<R: Reporter> Reporter for RateLimited<R> {
    fn report(&mut self, report: &Report) -> Result<(), ReportError> {
        if !self.passes(report) {
            self.suppressed += 1;
            return Ok(());
        }
        self.last_passed.insert(report.track, report.timestamp_ms);
        let now = report.timestamp_ms;
        self.last_passed
            .retain(|_, last| now.saturating_sub(*last) < FORGET_AFTER_MS);
        self.inner.report(report)
    }

    fn drain(&mut self, timeout: Duration) -> Result<(), ReportError> {
        self.inner.drain(timeout)
    }

    fn health(&self) -> ReporterHealth {
        self.inner.health()
    }

    fn publish_status(&mut self, status: &DeviceStatus) {
        self.inner.publish_status(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MemoryReporter;

    fn report(track: u16, timestamp_ms: u64, flags: u8) -> Report {
        Report {
            timestamp_ms,
            frame: (timestamp_ms / 33) as u32,
            track,
            valence: 0.0,
            arousal: 0.0,
            bbox: [0.0; 4],
            score: 1.0,
            flags: StatusFlags(flags),
            latency_ms: Some(20),
        }
    }

    #[test]
    fn thirty_fps_limited_to_ten_hz_passes_every_third_frame_per_track() {
        let mut limited =
            RateLimited::new(MemoryReporter::default(), RateLimitConfig { max_hz: 10.0 }).unwrap();
        for frame in 0..30u64 {
            let ts = 1_000_000 + frame * 1000 / 30;
            limited.report(&report(1, ts, 0)).unwrap();
            limited.report(&report(2, ts, 0)).unwrap();
        }
        let passed: Vec<(u16, u64)> = limited
            .inner()
            .reports
            .iter()
            .map(|r| (r.track, r.timestamp_ms - 1_000_000))
            .collect();
        let expected_times: Vec<u64> = (0..10).map(|i| i * 100).collect();
        for track in [1, 2] {
            let times: Vec<u64> = passed
                .iter()
                .filter(|(t, _)| *t == track)
                .map(|(_, ts)| *ts)
                .collect();
            assert_eq!(times, expected_times, "track {track}");
        }
        assert_eq!(limited.suppressed(), 40);
    }

    #[test]
    fn state_changes_always_pass() {
        let mut limited =
            RateLimited::new(MemoryReporter::default(), RateLimitConfig { max_hz: 1.0 }).unwrap();
        limited
            .report(&report(1, 0, StatusFlags::NEW_TRACK))
            .unwrap();
        limited.report(&report(1, 10, 0)).unwrap();
        limited
            .report(&report(1, 20, StatusFlags::FACE_LOST))
            .unwrap();
        limited
            .report(&report(1, 30, StatusFlags::NEW_TRACK))
            .unwrap();
        let frames: Vec<u64> = limited
            .into_inner()
            .reports
            .iter()
            .map(|r| r.timestamp_ms)
            .collect();
        assert_eq!(frames, [0, 20, 30]);
    }

    #[test]
    fn rejects_a_non_positive_rate() {
        for max_hz in [0.0, -1.0, f64::NAN] {
            let err = RateLimited::new(MemoryReporter::default(), RateLimitConfig { max_hz })
                .err()
                .unwrap();
            assert!(err.to_string().starts_with("rate_limit.max_hz"), "{err}");
        }
    }
}
