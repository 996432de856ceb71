//! Reporters: where valence/arousal estimates go. JSON lines on any writer (stdout), the serial
//! wire format (or readable text) on a serial line, JSON over MQTT, and an in-memory reporter for
//! tests; [`RateLimited`] and [`Smoothed`] wrap any of them. Only numbers leave the device.
//!
//! Links that can go away (serial adapters, brokers) are reopened with [`crate::backoff`] and
//! keep a bounded queue while they are gone: the oldest report is dropped (and counted) when the
//! queue is full, everything within the bound is delivered in order once the link is back.

pub mod journal;
mod json_lines;
mod link;
mod memory;
mod mqtt;
mod outbox;
mod rate_limit;
mod serial;
mod smooth;

use affect_shared::status::DeviceStatus;
pub use affect_shared::wire::Report;
pub use journal::JournalError;
pub use json_lines::{JsonLinesReporter, to_json_line};
pub use link::{LinkOpener, LinkStats, ReopeningLink};
pub use memory::MemoryReporter;
pub use mqtt::{
    ConnectReturnCode, MqttConfig, MqttReporter, MqttStats, MqttTlsConfig, ProbeError, queue_dir,
};
pub use rate_limit::{RateLimitConfig, RateLimited};
use serde::Serialize;
pub use serial::{
    SerialConfig, SerialMode, SerialOpener, SerialReporter, serial_queue_dir, to_text_line,
};
pub use smooth::{SmoothConfig, Smoothed};

/// Why a reporter failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing failed.
    #[error("{what}: {source}")]
    Io {
        /// Destination.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The report cannot be put on the wire (a value is NaN or infinite).
    #[error("{what}: {source}")]
    Encode {
        /// Destination.
        what: String,
        /// What the encoder refused.
        #[source]
        source: affect_shared::wire::WireError,
    },
    /// The reporter's configuration is unusable.
    #[error("{what}: {message}")]
    Config {
        /// Destination (or the configuration field).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The on-disk report queue cannot be opened or written.
    #[error("{what}: report queue: {source}")]
    Queue {
        /// Destination.
        what: String,
        /// What the queue reported.
        #[source]
        source: JournalError,
    },
    /// `drain` ran out of time with reports still queued (the link is down or slow).
    #[error("{what}: {pending} report(s) still queued after {waited_ms} ms ({detail})")]
    Undelivered {
        /// Destination.
        what: String,
        /// Reports not delivered.
        pending: usize,
        /// How long `drain` waited.
        waited_ms: u64,
        /// Last link error, or "link up" when it was merely slow.
        detail: String,
    },
}

impl ReportError {
    /// The destination is gone for good and retrying cannot help: the reader of a pipe (stdout
    /// piped into a consumer that exited) has closed it. Links that reconnect (serial, MQTT)
    /// never report this.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// `inner` with the configured post-processing: smoothing outside rate limiting, so the average
/// sees every frame's estimate and the limiter only thins what leaves the device.
pub fn post_processed(
    inner: Box<dyn Reporter>,
    smoothing: Option<SmoothConfig>,
    rate_limit: Option<RateLimitConfig>,
) -> Result<Box<dyn Reporter>, ReportError> {
    let limited: Box<dyn Reporter> = match rate_limit {
        Some(r) => Box::new(RateLimited::new(inner, r)?),
        None => inner,
    };
    Ok(match smoothing {
        Some(s) => Box::new(Smoothed::new(limited, s)?),
        None => limited,
    })
}

/// A reporter's delivery state now: what health checks, metrics and the status page show.
/// Every report a reporter accepted is delivered, queued or dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReporterHealth {
    /// Destination (`stdout`, the serial port, the broker URL without credentials).
    pub name: String,
    /// The link is up (port open, broker connected, last write succeeded).
    pub connected: bool,
    /// Reports delivered: written completely, or for MQTT acknowledged by the broker.
    pub delivered: u64,
    /// Reports waiting for the link.
    pub queued: usize,
    /// Most reports the queue holds before the oldest is dropped (0: no queue, or a queue on
    /// disk, bounded in bytes by `capacity_bytes`).
    pub capacity: usize,
    /// Bytes of the queue on disk (0: the queue, if any, is in memory).
    pub queued_bytes: u64,
    /// Bytes the queue on disk holds before its oldest segment is dropped (0: not on disk).
    pub capacity_bytes: u64,
    /// Damaged records of the queue on disk found and skipped (after a crash, a power cut or a
    /// disk error).
    pub damaged: u64,
    /// Reports dropped because the queue was full.
    pub dropped: u64,
    /// Times the link came back after a loss.
    pub reconnects: u64,
    /// The last link error, if any.
    pub last_error: Option<String>,
}

impl ReporterHealth {
    /// Reports accepted so far: delivered, queued or dropped.
    pub fn accepted(&self) -> u64 {
        self.delivered + self.queued as u64 + self.dropped
    }

    /// Healthy: connected, or down with room left in its queue (nothing dropped yet now; on
    /// disk: room for at least one more segment, a sixteenth of the bound).
    pub fn is_healthy(&self) -> bool {
        self.connected
            || if self.capacity_bytes > 0 {
                self.queued_bytes + self.capacity_bytes / journal::SEGMENTS <= self.capacity_bytes
            } else {
                self.queued < self.capacity
            }
    }

    /// The queue's fill in words: `3 of 10` reports, or bytes on disk.
    pub fn fill(&self) -> String {
        if self.capacity_bytes > 0 {
            format!(
                "{} of {} bytes on disk",
                self.queued_bytes, self.capacity_bytes
            )
        } else {
            format!("{} of {}", self.queued, self.capacity)
        }
    }
}

/// A destination for reports. Implementations queue rather than block when their link is down.
pub trait Reporter {
    /// Sends (or queues) one report.
    fn report(&mut self, report: &Report) -> Result<(), ReportError>;
    /// Delivers everything queued, waiting at most `timeout`; called on shutdown.
    fn drain(&mut self, timeout: std::time::Duration) -> Result<(), ReportError>;
    /// Delivery state now.
    fn health(&self) -> ReporterHealth;
    /// Takes the device status to publish; reporters with a status channel (MQTT's retained
    /// `<topic>/status`) send it, the others have nowhere to put it.
    fn publish_status(&mut self, _status: &DeviceStatus) {}
}

impl<R: Reporter + ?Sized> Reporter for Box<R> {
    fn report(&mut self, report: &Report) -> Result<(), ReportError> {
        (**self).report(report)
    }

    fn drain(&mut self, timeout: std::time::Duration) -> Result<(), ReportError> {
        (**self).drain(timeout)
    }

    fn health(&self) -> ReporterHealth {
        (**self).health()
    }

    fn publish_status(&mut self, status: &DeviceStatus) {
        (**self).publish_status(status);
    }
}

/// Refuses reports carrying NaN or infinity, so only numbers leave the device whatever the
/// channel (the wire encoder applies the same rule).
pub(crate) fn check_finite(report: &Report, what: &str) -> Result<(), ReportError> {
    let fields = [
        ("valence", report.valence),
        ("arousal", report.arousal),
        ("score", report.score),
    ];
    let bad = fields
        .into_iter()
        .find(|(_, v)| !v.is_finite())
        .map(|(name, _)| name)
        .or_else(|| report.bbox.iter().any(|v| !v.is_finite()).then_some("bbox"));
    match bad {
        Some(name) => Err(ReportError::Encode {
            what: what.to_owned(),
            source: affect_shared::wire::WireError::NonFinite(name),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use affect_shared::wire::StatusFlags;

    use super::*;

    /// Keeps what it receives where the test can read it after handing the reporter over.
    struct Shared(Arc<Mutex<Vec<Report>>>);

    impl Reporter for Shared {
        fn report(&mut self, report: &Report) -> Result<(), ReportError> {
            self.0.lock().unwrap().push(*report);
            Ok(())
        }
        fn drain(&mut self, _: std::time::Duration) -> Result<(), ReportError> {
            Ok(())
        }

        fn health(&self) -> ReporterHealth {
            ReporterHealth::default()
        }
    }

    #[test]
    fn smoothing_sees_every_frame_when_reports_are_rate_limited() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut reporter = post_processed(
            Box::new(Shared(Arc::clone(&got))),
            Some(SmoothConfig {
                time_constant_ms: 100.0,
                reset_after_ms: 1_000,
            }),
            Some(RateLimitConfig { max_hz: 10.0 }),
        )
        .unwrap();
        // 40 ms frames: the limiter passes frames 0, 3, 6; the average runs over all of them.
        let values = [0.0f32, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0];
        let mut average = 0.0f64;
        let alpha = 1.0 - (-40.0f64 / 100.0).exp();
        let mut expected = Vec::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                average += alpha * (f64::from(*v) - average);
            }
            if i % 3 == 0 {
                expected.push(average as f32);
            }
            let report = Report {
                timestamp_ms: 40 * i as u64,
                frame: i as u32,
                track: 1,
                valence: *v,
                arousal: 0.0,
                bbox: [0.0; 4],
                score: 1.0,
                flags: StatusFlags(0),
                latency_ms: Some(20),
            };
            reporter.report(&report).unwrap();
        }
        let got: Vec<f32> = got.lock().unwrap().iter().map(|r| r.valence).collect();
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
    }
}
