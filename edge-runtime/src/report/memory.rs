//! A reporter that keeps reports in memory: the sink for pipeline tests.

use super::{Report, ReportError, Reporter, ReporterHealth};

/// Collects every report in order.
#[derive(Debug, Default)]
pub struct MemoryReporter {
    /// Reports received so far.
    pub reports: Vec<Report>,
}

impl Reporter for MemoryReporter {
    fn report(&mut self, report: &Report) -> Result<(), ReportError> {
        self.reports.push(*report);
        Ok(())
    }

    fn drain(&mut self, _timeout: std::time::Duration) -> Result<(), ReportError> {
        Ok(())
    }

    fn health(&self) -> ReporterHealth {
        ReporterHealth {
            name: "memory".into(),
            connected: true,
            delivered: self.reports.len() as u64,
            ..ReporterHealth::default()
        }
    }
}
