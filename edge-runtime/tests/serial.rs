//! The serial reporter against a real pseudo-terminal pair (`socat`), read back by an
//! independent decoder (`tests/oracles/wire_oracle.py`). Unplugging is killing socat; plugging
//! back in is starting it again on the same link names.

mod common;
#[path = "common/serial.rs"]
mod serial_peers;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use affect_edge::backoff::BackoffConfig;
use affect_edge::report::{Report, Reporter, SerialConfig, SerialMode, SerialReporter};
use affect_shared::wire::{LATENCY_MAX_MS, StatusFlags};
use serial_peers::{PtyPair, Reader, oracle_decode};

fn report(frame: u32) -> Report {
    Report {
        timestamp_ms: 1_764_000_000_000 + u64::from(frame) * 33,
        frame,
        track: (frame % 3) as u16,
        valence: ((frame as f32) * 0.37).sin(),
        arousal: ((frame as f32) * 0.11).cos() * 0.8,
        bbox: [frame as f32, 20.5, 96.0, 100.0 + frame as f32 / 7.0],
        score: 0.5 + (frame % 50) as f32 / 100.0,
        flags: StatusFlags(if frame.is_multiple_of(3) {
            StatusFlags::NEW_TRACK
        } else {
            StatusFlags::SMOOTHED
        }),
        // Unknown now and then, and beyond what the frame carries from frame 219 on.
        latency_ms: (!frame.is_multiple_of(7)).then_some(frame * 300),
    }
}

/// Checks a decoded frame against the report it came from (wire quantisation: 1e-4, whole
/// pixels).
fn assert_same(decoded: &serde_json::Value, sent: &Report) {
    let f = |k: &str| decoded[k].as_f64().unwrap();
    assert_eq!(decoded["frame"], sent.frame, "{decoded}");
    assert_eq!(decoded["timestamp_ms"], sent.timestamp_ms);
    assert_eq!(decoded["track"], sent.track);
    assert_eq!(decoded["flags"], sent.flags.0);
    let latency = sent.latency_ms.map(|ms| ms.min(u32::from(LATENCY_MAX_MS)));
    assert_eq!(decoded["latency_ms"].as_u64(), latency.map(u64::from));
    assert!((f("valence") - f64::from(sent.valence)).abs() <= 0.5e-4 + 1e-9);
    assert!((f("arousal") - f64::from(sent.arousal)).abs() <= 0.5e-4 + 1e-9);
    assert!((f("score") - f64::from(sent.score)).abs() <= 0.5e-4 + 1e-9);
    let bbox: Vec<f64> = decoded["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (got, want) in bbox.iter().zip(sent.bbox) {
        assert!(
            (got - f64::from(want)).abs() <= 0.5,
            "{bbox:?} vs {:?}",
            sent.bbox
        );
    }
}

fn config(dev: &Path, queue: usize, mode: SerialMode) -> SerialConfig {
    SerialConfig {
        path: dev.to_path_buf(),
        mode,
        queue,
        backoff: BackoffConfig {
            initial_ms: 20,
            max_ms: 200,
            factor: 2.0,
        },
        ..SerialConfig::default()
    }
}

#[test]
fn every_report_crosses_the_line_and_the_oracle_decodes_it() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let reader = Reader::start(pty.host.clone());
    reader.wait_for_opens(1, Duration::from_secs(5));
    let mut reporter = SerialReporter::new(&config(&pty.dev, 64, SerialMode::Binary)).unwrap();
    let sent: Vec<Report> = (0..300).map(report).collect();
    for r in &sent {
        reporter.report(r).unwrap();
    }
    reporter.drain(Duration::from_secs(5)).unwrap();
    reader.wait_for_frames(sent.len(), Duration::from_secs(10));
    let decoded = oracle_decode(&reader.finish());
    assert_eq!(decoded.len(), sent.len());
    for (d, s) in decoded.iter().zip(&sent) {
        assert_same(d, s);
    }
    let stats = reporter.stats();
    assert_eq!((stats.sent, stats.dropped, stats.opens), (300, 0, 1));
    pty.stop();
}

#[test]
fn unplugging_queues_within_the_bound_and_replugging_delivers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let reader = Reader::start(pty.host.clone());
    reader.wait_for_opens(1, Duration::from_secs(5));
    let queue = 16;
    let mut reporter = SerialReporter::new(&config(&pty.dev, queue, SerialMode::Binary)).unwrap();
    for frame in 0..50 {
        reporter.report(&report(frame)).unwrap();
    }
    reader.wait_for_frames(50, Duration::from_secs(10));

    // Unplug, and keep reporting while the port is gone: 30 reports, the queue holds 16.
    let dev = pty.dev.clone();
    let host = pty.host.clone();
    pty.stop();
    for frame in 50..80 {
        reporter.report(&report(frame)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let gone = reporter.stats();
    assert_eq!(gone.queued, queue);
    assert_eq!(gone.dropped, 30 - queue as u64);
    assert!(gone.failures >= 1, "{gone:?}");

    // Plug back in (same device name), once the far end listens again.
    let pty = PtyPair::start(dir.path());
    assert_eq!((pty.dev.clone(), pty.host.clone()), (dev, host));
    reader.wait_for_opens(2, Duration::from_secs(5));
    reporter.drain(Duration::from_secs(5)).unwrap();
    for frame in 80..100 {
        reporter.report(&report(frame)).unwrap();
    }
    reporter.drain(Duration::from_secs(5)).unwrap();
    let expected: Vec<u32> = (0..50).chain(80 - queue as u32..100).collect();
    reader.wait_for_frames(expected.len(), Duration::from_secs(10));
    let decoded = oracle_decode(&reader.finish());
    let frames: Vec<u64> = decoded
        .iter()
        .map(|d| d["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(
        frames,
        expected.iter().map(|f| u64::from(*f)).collect::<Vec<_>>()
    );
    for (d, f) in decoded.iter().zip(&expected) {
        assert_same(d, &report(*f));
    }
    let stats = reporter.stats();
    assert_eq!(stats.opens, 2);
    pty.stop();
}

#[test]
fn text_mode_is_readable_lines() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let reader = Reader::start(pty.host.clone());
    reader.wait_for_opens(1, Duration::from_secs(5));
    let mut reporter = SerialReporter::new(&config(&pty.dev, 8, SerialMode::Text)).unwrap();
    for frame in 0..5 {
        reporter.report(&report(frame)).unwrap();
    }
    reporter.drain(Duration::from_secs(2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = reader
            .bytes
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        if lines >= 6 {
            break;
        }
        assert!(Instant::now() < deadline, "text lines did not arrive");
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = String::from_utf8(reader.finish()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5);
    for (frame, line) in lines.iter().enumerate() {
        assert!(line.starts_with("ts=1764000000."), "{line}");
        assert!(line.contains(&format!(" frame={frame} ")), "{line}");
        assert!(
            line.contains(" valence=") && line.contains(" flags="),
            "{line}"
        );
        let latency = report(frame as u32)
            .latency_ms
            .map_or_else(|| "-".to_owned(), |ms| ms.to_string());
        assert!(line.ends_with(&format!(" latency_ms={latency}")), "{line}");
    }
    pty.stop();
}

/// The binary as the service runs it, `affect-edge run --report serial:PATH@BAUD`: every
/// report reaches the line (the target's `serial:` prefix is not part of the device path).
#[test]
fn the_binary_reports_over_a_serial_target() {
    let dir = tempfile::tempdir().unwrap();
    let pair = PtyPair::start(dir.path());
    let reader = Reader::start(pair.host.clone());
    reader.wait_for_opens(1, Duration::from_secs(5));
    let out = Command::new(env!("CARGO_BIN_EXE_affect-edge"))
        .args([
            "run",
            "--source",
            "synthetic",
            "--max-frames",
            "10",
            "--report",
        ])
        .arg(format!("serial:{}@115200", pair.dev.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One report per frame, then the track's final one (face lost) when the run stops.
    reader.wait_for_frames(11, Duration::from_secs(10));
    let decoded = oracle_decode(&reader.finish());
    let frames: Vec<(u64, bool)> = decoded
        .iter()
        .map(|d| {
            let flags = d["flags"].as_u64().unwrap() as u8;
            (
                d["frame"].as_u64().unwrap(),
                flags & StatusFlags::FACE_LOST != 0,
            )
        })
        .collect();
    let mut expected: Vec<(u64, bool)> = (0..10).map(|f| (f, false)).collect();
    expected.push((9, true));
    assert_eq!(frames, expected);
    // Every report, final one included, carries the latency the runner measured.
    assert!(
        decoded.iter().all(|d| d["latency_ms"].is_u64()),
        "{decoded:?}"
    );
}

/// A crash while the adapter is unplugged loses nothing: the reports queued on disk before
/// `kill -9` go out first, in order, when the binary runs again with the adapter back.
#[test]
fn reports_queued_on_disk_survive_kill_9_and_go_out_first_on_the_next_run() {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let links = dir.path().join("links");
    std::fs::create_dir(&links).unwrap();
    // Where the pty pair will appear; absent during the first run (the adapter is unplugged).
    let dev = links.join("dev");
    let target = format!("serial:{}@115200", dev.display());
    let queue = affect_edge::report::serial_queue_dir(
        &state,
        &SerialConfig::from_spec(target.strip_prefix("serial:").unwrap()).unwrap(),
    );
    let device =
        |extra: &[&str], log: &Path| common::start_queueing_device(&target, &state, extra, log);

    let log1 = dir.path().join("run1.log");
    let mut first = device(&[], &log1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::queued_on_disk(&queue).len() < 40 {
        if let Ok(Some(status)) = first.try_wait() {
            panic!(
                "the first run exited ({status}):\n{}",
                std::fs::read_to_string(&log1).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "40 reports never reached the queue on disk:\n{}",
            std::fs::read_to_string(&log1).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap();
    let status = first.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    let before: Vec<serde_json::Value> = oracle_decode(&common::queued_on_disk(&queue).concat());
    assert!(before.len() >= 40, "{}", before.len());

    // The adapter is back; the next run (5 frames, then a clean stop) writes the old reports
    // first, in order, then its own.
    let pair = PtyPair::start(&links);
    let reader = Reader::start(pair.host.clone());
    reader.wait_for_opens(1, Duration::from_secs(5));
    let log2 = dir.path().join("run2.log");
    let mut second = device(&["--max-frames", "5"], &log2);
    let log = common::wait_for_clean_exit(&mut second, Duration::from_secs(60), &log2);
    assert!(
        log.contains(&format!("{} report(s) from before", before.len())),
        "{log}"
    );
    // The old reports, then the new run's 5 frames and its track's final report.
    reader.wait_for_frames(before.len() + 6, Duration::from_secs(10));
    let got = oracle_decode(&reader.finish());
    assert_eq!(got[..before.len()], before[..], "the old reports, in order");
    let last_old = before
        .iter()
        .map(|r| r["timestamp_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        got[before.len()..]
            .iter()
            .all(|r| r["timestamp_ms"].as_u64().unwrap() > last_old),
        "only the new run's reports come after the old ones"
    );
    // Everything was written: the cursor on disk is past every report.
    let cursor = std::fs::read(queue.join("acked")).unwrap();
    let written = u64::from_le_bytes(cursor[..8].try_into().unwrap());
    assert!(written as usize >= before.len() + 6, "{written}");
    pair.stop();
}
