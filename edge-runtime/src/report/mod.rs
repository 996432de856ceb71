//! Reporters: where valence/arousal estimates go. So far: JSON lines on any writer (stdout) and
//! an in-memory reporter for tests; serial and MQTT follow the same trait.

mod json_lines;
mod memory;

pub use affect_shared::wire::Report;
pub use json_lines::{JsonLinesReporter, to_json_line};
pub use memory::MemoryReporter;

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
}

/// A destination for reports. Implementations queue rather than block when their link is down.
pub trait Reporter {
    /// Sends (or queues) one report.
    fn report(&mut self, report: &Report) -> Result<(), ReportError>;
    /// Delivers everything queued, waiting at most `timeout`; called on shutdown.
    fn drain(&mut self, timeout: std::time::Duration) -> Result<(), ReportError>;
}
