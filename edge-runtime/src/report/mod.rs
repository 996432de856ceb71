//! Reporters: where valence/arousal estimates go. JSON lines on any writer (stdout), the serial
//! wire format (or readable text) on a serial line, JSON over MQTT, and an in-memory reporter for
//! tests; [`RateLimited`] and [`Smoothed`] wrap any of them. Only numbers leave the device.
//!
//! Links that can go away (serial adapters, brokers) are reopened with [`crate::backoff`] and
//! keep a bounded queue while they are gone: the oldest report is dropped (and counted) when the
//! queue is full, everything within the bound is delivered in order once the link is back.

mod json_lines;
mod link;
mod memory;
mod mqtt;
mod outbox;
mod rate_limit;
mod serial;
mod smooth;

pub use affect_shared::wire::Report;
pub use json_lines::{JsonLinesReporter, to_json_line};
pub use link::{LinkOpener, LinkStats, ReopeningLink};
pub use memory::MemoryReporter;
pub use mqtt::{MqttConfig, MqttReporter, MqttStats, MqttTlsConfig};
pub use rate_limit::{RateLimitConfig, RateLimited};
pub use serial::{SerialConfig, SerialMode, SerialOpener, SerialReporter, to_text_line};
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

/// A destination for reports. Implementations queue rather than block when their link is down.
pub trait Reporter {
    /// Sends (or queues) one report.
    fn report(&mut self, report: &Report) -> Result<(), ReportError>;
    /// Delivers everything queued, waiting at most `timeout`; called on shutdown.
    fn drain(&mut self, timeout: std::time::Duration) -> Result<(), ReportError>;
}

impl<R: Reporter + ?Sized> Reporter for Box<R> {
    fn report(&mut self, report: &Report) -> Result<(), ReportError> {
        (**self).report(report)
    }

    fn drain(&mut self, timeout: std::time::Duration) -> Result<(), ReportError> {
        (**self).drain(timeout)
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
