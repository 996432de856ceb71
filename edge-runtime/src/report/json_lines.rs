//! One JSON object per face per frame (DESIGN.md §6):
//! `{"ts":…,"frame":…,"track":…,"valence":…,"arousal":…,"box":[x,y,w,h],"score":…,"flags":[…],"latency_ms":…}`.

use std::io::Write;

use super::{Report, ReportError, Reporter, ReporterHealth};

/// The JSON line for one report (no trailing newline). `ts` is seconds since the Unix epoch
/// with millisecond resolution; `box` is in source-frame pixels; `flags` names the set
/// [`StatusFlags`](affect_shared::wire::StatusFlags) (`"new-track"`, `"smoothed"`,
/// `"low-confidence"`, `"face-lost"`: the track's final report); `latency_ms` is the
/// capture-to-report latency in whole milliseconds ([`Report::latency_ms`]), `null` when unknown.
pub fn to_json_line(report: &Report) -> String {
    serde_json::json!({
        "ts": report.timestamp_ms as f64 / 1000.0,
        "frame": report.frame,
        "track": report.track,
        "valence": report.valence,
        "arousal": report.arousal,
        "box": report.bbox,
        "score": report.score,
        "flags": report.flags.names().collect::<Vec<_>>(),
        "latency_ms": report.latency_ms,
    })
    .to_string()
}

/// Writes JSON lines to any writer (stdout by default), flushing each line so a reader sees
/// reports as they happen.
pub struct JsonLinesReporter<W: Write> {
    out: W,
    name: String,
    written: u64,
    last_error: Option<String>,
}

impl JsonLinesReporter<std::io::Stdout> {
    /// Reports on standard output.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout(), "stdout")
    }
}

impl<W: Write> JsonLinesReporter<W> {
    /// Reports on `out`; `name` identifies it in errors.
    pub fn new(out: W, name: impl Into<String>) -> Self {
        Self {
            out,
            name: name.into(),
            written: 0,
            last_error: None,
        }
    }

    /// The writer back (e.g. the buffer in tests).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn io(&self, source: std::io::Error) -> ReportError {
        ReportError::Io {
            what: self.name.clone(),
            source,
        }
    }
}

impl<W: Write> Reporter for JsonLinesReporter<W> {
    fn report(&mut self, report: &Report) -> Result<(), ReportError> {
        let line = to_json_line(report);
        match writeln!(self.out, "{line}").and_then(|()| self.out.flush()) {
            Ok(()) => {
                self.written += 1;
                self.last_error = None;
                Ok(())
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                Err(self.io(e))
            }
        }
    }

    fn drain(&mut self, _timeout: std::time::Duration) -> Result<(), ReportError> {
        self.out.flush().map_err(|e| self.io(e))
    }

    /// Unqueued: a line is written or it fails; `connected` is whether the last write worked.
    fn health(&self) -> ReporterHealth {
        ReporterHealth {
            name: self.name.clone(),
            connected: self.last_error.is_none(),
            delivered: self.written,
            last_error: self.last_error.clone(),
            ..ReporterHealth::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use affect_shared::wire::StatusFlags;

    use super::*;

    #[test]
    fn writes_the_documented_schema_one_line_per_report() {
        let report = Report {
            timestamp_ms: 1_700_000_000_123,
            frame: 7,
            track: 2,
            valence: 0.25,
            arousal: -0.5,
            bbox: [10.0, 20.0, 64.0, 64.0],
            score: 0.75,
            flags: StatusFlags(StatusFlags::NEW_TRACK),
            latency_ms: Some(35),
        };
        let mut reporter = JsonLinesReporter::new(Vec::new(), "buffer");
        reporter.report(&report).unwrap();
        let lost = StatusFlags(StatusFlags::SMOOTHED | StatusFlags::FACE_LOST);
        reporter
            .report(&Report {
                frame: 8,
                flags: lost,
                latency_ms: None,
                ..report
            })
            .unwrap();
        reporter.drain(std::time::Duration::ZERO).unwrap();
        let text = String::from_utf8(reporter.into_inner()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let first = lines[0].as_object().unwrap();
        let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "arousal",
                "box",
                "flags",
                "frame",
                "latency_ms",
                "score",
                "track",
                "ts",
                "valence"
            ]
        );
        assert_eq!(first["ts"], serde_json::json!(1_700_000_000.123));
        assert_eq!(first["box"], serde_json::json!([10.0, 20.0, 64.0, 64.0]));
        assert_eq!(
            (first["valence"].as_f64(), first["arousal"].as_f64()),
            (Some(0.25), Some(-0.5))
        );
        assert_eq!(first["flags"], serde_json::json!(["new-track"]));
        assert_eq!(first["latency_ms"], 35);
        assert_eq!(lines[1]["frame"], 8);
        assert_eq!(
            lines[1]["flags"],
            serde_json::json!(["smoothed", "face-lost"])
        );
        assert!(lines[1]["latency_ms"].is_null(), "unknown is null, not 0");
    }

    #[test]
    fn write_failures_name_the_destination() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "closed",
                ))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let report = Report {
            timestamp_ms: 0,
            frame: 0,
            track: 0,
            valence: 0.0,
            arousal: 0.0,
            bbox: [0.0; 4],
            score: 1.0,
            flags: StatusFlags(0),
            latency_ms: None,
        };
        let err = JsonLinesReporter::new(Broken, "pipe:viewer")
            .report(&report)
            .unwrap_err();
        assert!(err.to_string().starts_with("pipe:viewer: "), "{err}");
    }
}
