//! Reports on a serial line: one `affect_shared::wire` frame per report (`docs/wire-format.md`),
//! or readable text lines for a human on a terminal. The port is reopened with backoff when the
//! adapter is unplugged; reports wait in a bounded queue meanwhile (see [`ReopeningLink`]) —
//! with a state directory on disk, in the same CRC-checked log as MQTT's
//! ([`super::journal`]), so a crash or power cut during an unplug loses nothing queued.
//!
//! After every (re)open the reporter first writes a lone delimiter (binary: `0x00`, text: `\n`),
//! so a receiver throws away any half frame from before the break instead of losing the next one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use affect_shared::wire;
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use super::journal::{self, Journal, SyncJob};
use super::link::{LinkOpener, LinkStats, ReopeningLink};
use super::{Report, ReportError, Reporter, ReporterHealth, check_finite};
use crate::backoff::BackoffConfig;

/// What goes over the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialMode {
    /// COBS-framed binary reports, `docs/wire-format.md` (for microcontrollers).
    #[default]
    Binary,
    /// One readable line per report, see [`to_text_line`] (for a terminal).
    Text,
}

/// Serial reporter settings; maps onto a `[report.serial]`-style TOML table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/…`.
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// Binary frames or text lines.
    pub mode: SerialMode,
    /// Reports kept in memory (no state directory) while the port is gone; the oldest is
    /// dropped beyond this.
    pub queue: usize,
    /// Bytes of the on-disk queue (with a state directory); the oldest reports are dropped
    /// beyond, a sixteenth of the bound at a time.
    pub queue_bytes: u64,
    /// Longest time between two fsyncs of the on-disk queue, ms: what a power cut can lose.
    pub fsync_interval_ms: u64,
    /// How long one write may wait for the port to accept bytes before the port counts as gone,
    /// milliseconds.
    pub write_timeout_ms: u64,
    /// Reopen schedule.
    pub backoff: BackoffConfig,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/dev/ttyUSB0"),
            baud: 115_200,
            mode: SerialMode::Binary,
            queue: 256,
            queue_bytes: 16 * 1024 * 1024,
            fsync_interval_ms: 1_000,
            write_timeout_ms: 500,
            backoff: BackoffConfig::default(),
        }
    }
}

impl SerialConfig {
    /// Settings for `serial:PATH[@BAUD]` (the CLI form); the rest default.
    pub fn from_spec(spec: &str) -> Result<Self, ReportError> {
        let (path, baud) = match spec.rsplit_once('@') {
            Some((path, baud)) => {
                let baud = baud.parse::<u32>().ok().filter(|b| *b > 0).ok_or_else(|| {
                    ReportError::Config {
                        what: format!("serial:{spec}"),
                        message: format!("baud rate {baud:?} is not a positive integer"),
                    }
                })?;
                (path, baud)
            }
            None => (spec, SerialConfig::default().baud),
        };
        if path.is_empty() {
            return Err(ReportError::Config {
                what: format!("serial:{spec}"),
                message: "no device path".into(),
            });
        }
        Ok(Self {
            path: PathBuf::from(path),
            baud,
            ..Self::default()
        })
    }
}

/// One report as a readable line (with `\n`), e.g.
/// `ts=1700000000.123 frame=42 track=1 valence=+0.2500 arousal=-0.5000 box=120,80,96,96 score=0.9876 flags=new-track latency_ms=35`;
/// the capture-to-report latency comes last (appended after the fields of the first release, so
/// readers of those keep working), `latency_ms=-` when unknown.
pub fn to_text_line(report: &Report) -> String {
    let flags: Vec<&str> = report.flags.names().collect();
    let [x, y, w, h] = report.bbox;
    format!(
        "ts={}.{:03} frame={} track={} valence={:+.4} arousal={:+.4} box={:.0},{:.0},{:.0},{:.0} score={:.4} flags={} latency_ms={}\n",
        report.timestamp_ms / 1000,
        report.timestamp_ms % 1000,
        report.frame,
        report.track,
        report.valence,
        report.arousal,
        x,
        y,
        w,
        h,
        report.score,
        if flags.is_empty() {
            "-".to_owned()
        } else {
            flags.join(",")
        },
        report
            .latency_ms
            .map_or_else(|| "-".to_owned(), |ms| ms.to_string())
    )
}

/// Opens a serial port with the `serialport` crate (8N1, no flow control).
#[derive(Debug, Clone)]
pub struct SerialOpener {
    path: PathBuf,
    baud: u32,
    write_timeout: Duration,
}

impl SerialOpener {
    /// An opener for `path` at `baud`.
    pub fn new(path: PathBuf, baud: u32, write_timeout: Duration) -> Self {
        Self {
            path,
            baud,
            write_timeout,
        }
    }
}

/// An open port. `write` goes straight to the device; `flush` does not wait for the UART to
/// empty (`tcdrain` could block forever on a vanished pty), the kernel sends what was written.
pub struct SerialLink(Box<dyn serialport::SerialPort>);

impl Write for SerialLink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LinkOpener for SerialOpener {
    type Link = SerialLink;

    fn open(&mut self) -> std::io::Result<SerialLink> {
        let path = self.path.to_string_lossy();
        serialport::new(path, self.baud)
            .timeout(self.write_timeout)
            .open()
            .map(SerialLink)
            .map_err(std::io::Error::from)
    }

    fn describe(&self) -> String {
        format!("serial {}@{}", self.path.display(), self.baud)
    }
}

/// Writes reports to a serial port, reopening it when it comes back.
pub struct SerialReporter<O: LinkOpener = SerialOpener> {
    link: ReopeningLink<O>,
    mode: SerialMode,
    /// With a queue on disk: the fsync interval, when the next fsync is due, and the thread
    /// that runs it off the frame loop (the thread ends when the sender is dropped).
    syncing: Option<(Duration, Instant, Sender<SyncJob>)>,
}

/// The queue directory of a serial port in `state_dir`: `queue/serial-<path>-<hash>`.
pub fn serial_queue_dir(state_dir: &Path, config: &SerialConfig) -> PathBuf {
    let path = config.path.display().to_string();
    journal::queue_directory(state_dir, "serial", &path, &path)
}

impl SerialReporter<SerialOpener> {
    /// A reporter for the configured port with its queue in memory. The port is opened on the
    /// first report; a missing device is not an error here (it may be plugged in later), a bad
    /// configuration is.
    pub fn new(config: &SerialConfig) -> Result<Self, ReportError> {
        Self::open(config, None)
    }

    /// [`new`](Self::new) with the queue on disk under `state_dir` ([`serial_queue_dir`];
    /// reports left there by an earlier run go out first), or in memory without one.
    pub fn open(config: &SerialConfig, state_dir: Option<&Path>) -> Result<Self, ReportError> {
        let what = format!("serial {}", config.path.display());
        let bad = |message: String| ReportError::Config {
            what: what.clone(),
            message,
        };
        if config.baud == 0 {
            return Err(bad("baud must be positive".into()));
        }
        if config.queue == 0 || config.fsync_interval_ms == 0 {
            return Err(bad("queue and fsync_interval_ms must be at least 1".into()));
        }
        if config.queue_bytes < journal::MIN_BYTES {
            return Err(bad(format!(
                "queue_bytes must be at least {} (64 KiB)",
                journal::MIN_BYTES
            )));
        }
        config.backoff.validate().map_err(bad)?;
        let opener = SerialOpener::new(
            config.path.clone(),
            config.baud,
            Duration::from_millis(config.write_timeout_ms.max(1)),
        );
        let Some(state_dir) = state_dir else {
            tracing::info!("{what}: report queue in memory ({} reports)", config.queue);
            return Ok(Self::with_opener(
                opener,
                config.mode,
                config.queue,
                config.backoff,
            ));
        };
        let dir = serial_queue_dir(state_dir, config);
        let queue_error = |source| ReportError::Queue {
            what: what.clone(),
            source,
        };
        let journal = Journal::open(&dir, config.queue_bytes).map_err(queue_error)?;
        tracing::info!(
            "{what}: report queue on disk in {} (at most {} bytes, fsync every {} ms): {} \
             report(s) from before, {} damaged record(s) skipped",
            dir.display(),
            config.queue_bytes,
            config.fsync_interval_ms,
            journal.len(),
            journal.damaged()
        );
        let (jobs, receive) = crossbeam_channel::bounded::<SyncJob>(1);
        let sync_what = what.clone();
        std::thread::Builder::new()
            .name("serial-queue-sync".into())
            .spawn(move || {
                for job in receive {
                    if let Err(e) = job.run() {
                        tracing::warn!("{sync_what}: syncing the report queue: {e}");
                    }
                }
            })
            .map_err(|source| ReportError::Io {
                what: what.clone(),
                source,
            })?;
        let interval = Duration::from_millis(config.fsync_interval_ms);
        Ok(Self {
            link: ReopeningLink::with_store(
                opener,
                Box::new(journal),
                0,
                resync(config.mode),
                config.backoff,
            ),
            mode: config.mode,
            syncing: Some((interval, Instant::now() + interval, jobs)),
        })
    }
}

/// What a (re)opened line starts with, so the receiver drops any half message from before.
fn resync(mode: SerialMode) -> Vec<u8> {
    match mode {
        SerialMode::Binary => vec![0],
        SerialMode::Text => b"\n".to_vec(),
    }
}

impl<O: LinkOpener> SerialReporter<O> {
    /// A reporter over any reopenable link (tests use an in-memory one).
    pub fn with_opener(opener: O, mode: SerialMode, queue: usize, backoff: BackoffConfig) -> Self {
        Self {
            link: ReopeningLink::new(opener, queue, resync(mode), backoff),
            mode,
            syncing: None,
        }
    }

    /// Hands the queue's fsync to the sync thread when it is due (never blocks the frame loop:
    /// a sync still running makes this one wait for the next interval).
    fn sync_when_due(&mut self, now: Instant) {
        let Some((interval, due, jobs)) = &mut self.syncing else {
            return;
        };
        if now < *due {
            return;
        }
        *due = now + *interval;
        if let Some(job) = self.link.sync_job() {
            let _ = jobs.try_send(job);
        }
    }

    /// Delivery counters (sent, dropped, queued, opens, failures).
    pub fn stats(&self) -> LinkStats {
        self.link.stats()
    }

    fn encode(&self, report: &Report) -> Result<Vec<u8>, ReportError> {
        match self.mode {
            SerialMode::Binary => wire::encode_frame_vec(report)
                .map(|frame| frame.to_vec())
                .map_err(|source| ReportError::Encode {
                    what: self.link.describe(),
                    source,
                }),
            SerialMode::Text => {
                check_finite(report, &self.link.describe())?;
                Ok(to_text_line(report).into_bytes())
            }
        }
    }
}

impl<O: LinkOpener> Reporter for SerialReporter<O> {
    /// Encodes and queues the report, then writes what the port takes. A port that is gone is
    /// not an error (the report waits); a report with NaN/infinite values is.
    fn report(&mut self, report: &Report) -> Result<(), ReportError> {
        let bytes = self.encode(report)?;
        let now = Instant::now();
        self.link
            .send(&bytes, now)
            .map_err(|source| ReportError::Queue {
                what: self.link.describe(),
                source,
            })?;
        self.sync_when_due(now);
        Ok(())
    }

    fn drain(&mut self, timeout: Duration) -> Result<(), ReportError> {
        let pending = self.link.drain(timeout);
        // A clean stop leaves the queue on disk synced, whatever is still in it.
        if let Some(Err(e)) = self.link.sync_job().map(SyncJob::run) {
            tracing::warn!("{}: syncing the report queue: {e}", self.link.describe());
        }
        if pending == 0 {
            return Ok(());
        }
        Err(ReportError::Undelivered {
            what: self.link.describe(),
            pending,
            waited_ms: timeout.as_millis() as u64,
            detail: self.link.last_error().unwrap_or("link up").to_owned(),
        })
    }

    fn health(&self) -> ReporterHealth {
        let stats = self.link.stats();
        let (queued_bytes, capacity_bytes, damaged) = self.link.disk();
        ReporterHealth {
            name: self.link.describe(),
            connected: self.link.is_open(),
            delivered: stats.sent,
            queued: stats.queued,
            capacity: self.link.capacity(),
            queued_bytes,
            capacity_bytes,
            damaged,
            dropped: stats.dropped,
            reconnects: stats.opens.saturating_sub(1),
            last_error: self.link.last_error().map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use affect_shared::wire::FrameDecoder;

    use super::*;

    struct Buffer(Rc<RefCell<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    struct BufferOpener(Rc<RefCell<Vec<u8>>>);
    impl LinkOpener for BufferOpener {
        type Link = Buffer;
        fn open(&mut self) -> std::io::Result<Buffer> {
            Ok(Buffer(self.0.clone()))
        }
        fn describe(&self) -> String {
            "buffer".into()
        }
    }

    fn report(frame: u32) -> Report {
        Report {
            timestamp_ms: 1_700_000_000_123,
            frame,
            track: 1,
            valence: 0.25,
            arousal: -0.5,
            bbox: [120.0, 80.0, 96.0, 96.0],
            score: 0.9876,
            flags: wire::StatusFlags(wire::StatusFlags::NEW_TRACK),
            latency_ms: Some(35),
        }
    }

    #[test]
    fn binary_mode_writes_the_documented_frames_after_a_resync_delimiter() {
        let bytes = Rc::new(RefCell::new(Vec::new()));
        let mut reporter = SerialReporter::with_opener(
            BufferOpener(bytes.clone()),
            SerialMode::Binary,
            4,
            BackoffConfig::default(),
        );
        reporter.report(&report(42)).unwrap();
        reporter.drain(Duration::ZERO).unwrap();
        let written = bytes.borrow().clone();
        // docs/wire-format.md example 1, preceded by the lone resync delimiter.
        let example = "08027b68e5cf8b0101022a0101020106c40978ec78025002600260059426012303d68900";
        let hex: String = written.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, format!("00{example}"));
        let mut decoder = FrameDecoder::new();
        let decoded: Vec<Report> = written
            .iter()
            .filter_map(|b| decoder.push(*b))
            .map(Result::unwrap)
            .collect();
        assert_eq!(decoded, [report(42)]);
        assert_eq!(decoded[0].latency_ms, Some(35));
    }

    #[test]
    fn text_mode_writes_one_readable_line_per_report() {
        let bytes = Rc::new(RefCell::new(Vec::new()));
        let mut reporter = SerialReporter::with_opener(
            BufferOpener(bytes.clone()),
            SerialMode::Text,
            4,
            BackoffConfig::default(),
        );
        reporter.report(&report(42)).unwrap();
        let text = String::from_utf8(bytes.borrow().clone()).unwrap();
        assert_eq!(
            text,
            "\nts=1700000000.123 frame=42 track=1 valence=+0.2500 arousal=-0.5000 \
             box=120,80,96,96 score=0.9876 flags=new-track latency_ms=35\n"
        );
        bytes.borrow_mut().clear();
        reporter
            .report(&Report {
                latency_ms: None,
                ..report(43)
            })
            .unwrap();
        let text = String::from_utf8(bytes.borrow().clone()).unwrap();
        assert!(
            text.ends_with(" flags=new-track latency_ms=-\n"),
            "{text:?}"
        );
    }

    #[test]
    fn non_finite_values_are_refused_in_both_modes() {
        for mode in [SerialMode::Binary, SerialMode::Text] {
            let bytes = Rc::new(RefCell::new(Vec::new()));
            let mut reporter = SerialReporter::with_opener(
                BufferOpener(bytes.clone()),
                mode,
                4,
                BackoffConfig::default(),
            );
            let bad = Report {
                arousal: f32::NAN,
                ..report(1)
            };
            let err = reporter.report(&bad).unwrap_err();
            assert!(err.to_string().contains("arousal"), "{err}");
            assert!(bytes.borrow().is_empty());
        }
    }

    #[test]
    fn cli_spec_parses_path_and_optional_baud() {
        let plain = SerialConfig::from_spec("/dev/ttyACM0").unwrap();
        assert_eq!(
            (plain.path, plain.baud),
            (PathBuf::from("/dev/ttyACM0"), 115_200)
        );
        let fast = SerialConfig::from_spec("/dev/ttyUSB1@921600").unwrap();
        assert_eq!(fast.baud, 921_600);
        let err = SerialConfig::from_spec("/dev/ttyUSB1@fast").unwrap_err();
        assert!(err.to_string().contains("\"fast\""), "{err}");
    }
}
