//! Reporters: stdout JSON lines, serial (shared wire format), MQTT.

pub use affect_shared::wire::Report;

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
    /// The reporter description is invalid.
    #[error("invalid reporter: {0}")]
    Config(String),
    /// Other failure (MQTT client, encoding).
    #[error("{0}")]
    Other(String),
}

/// A destination for reports. Implementations queue rather than block when their link is down.
pub trait Reporter {
    /// Sends (or queues) one report.
    fn report(&mut self, report: &Report) -> Result<(), ReportError>;
    /// Delivers everything queued, waiting at most `timeout`; called on shutdown.
    fn drain(&mut self, timeout: std::time::Duration) -> Result<(), ReportError>;
}
