//! The main loop: frames from a source through the pipeline to every reporter, until the source
//! ends, a frame limit is reached or a stop signal arrives; then reporters drain their queues.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::deploy::Deployments;
use crate::pipeline::{Pipeline, PipelineError};
use crate::report::{ReportError, Reporter};
use crate::source::{FrameSource, SourceError};
use crate::telemetry::{FrameRecord, SkipCause, Telemetry};
use crate::timing::Latency;

/// How often reporter states and the frame rate reach the telemetry.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Least time between two warnings about failed reports (a full disk fails every report).
const REPORT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// A warning that may recur for every report: logged at most once per `every`, saying how many
/// were held back since, so a persistent fault is visible in the journal without flooding it.
#[derive(Debug)]
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Whether to log now; if so, how many occurrences were held back since the last one.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// Why a run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The source cannot work at all (bad configuration, not a transient outage).
    #[error("source: {0}")]
    Source(SourceError),
    /// The model failed on a frame.
    #[error(transparent)]
    Pipeline(PipelineError),
    /// A reporter's destination is gone for good (see [`ReportError::is_permanent`]); the
    /// reports of this frame that other reporters took are drained first.
    #[error("report: {0}")]
    Report(#[source] ReportError),
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Stop after this many frames (0 = no limit).
    pub max_frames: u64,
    /// Longest wait for one frame before checking the stop flag again.
    pub poll: Duration,
    /// Time given to reporters to deliver their queues at the end.
    pub drain: Duration,
    /// How often the device status goes to the reporters (MQTT's retained `<topic>/status`).
    pub status_every: Duration,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_frames: 0,
            poll: Duration::from_millis(200),
            drain: Duration::from_secs(5),
            status_every: Duration::from_secs(30),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Frames processed.
    pub frames: u64,
    /// Reports produced (one per face per frame).
    pub reports: u64,
    /// Frames the source could not decode (skipped).
    pub bad_frames: u64,
    /// Frames whose faces could not be preprocessed (skipped).
    pub skipped_frames: u64,
    /// Reporter errors (each reporter keeps or queues what it can).
    pub report_errors: u64,
    /// Stale frames the source dropped because a newer one arrived first ([`FrameSource::dropped`]).
    pub dropped_frames: u64,
    /// From a frame's capture (its timestamp) to its reports handed to every reporter, per
    /// frame with reports.
    pub capture_to_report: Latency,
    /// Time spent waiting for and decoding frames.
    pub source_times: Latency,
    /// Time spent in reporters.
    pub report_times: Latency,
    /// Time of a whole processed frame: source, pipeline and reporters.
    pub frame_times: Latency,
    /// Wall-clock time of the loop.
    pub elapsed: Duration,
}

/// Runs until the source ends, `limits.max_frames`, or `stop` becomes true; records every
/// frame in `telemetry` and hands reporters the device status every `limits.status_every`
/// (and at once when a deploy changed it). With `deploys`, new models are swapped in between
/// two frames.
pub fn run(
    source: &mut dyn FrameSource,
    pipeline: &mut Pipeline,
    reporters: &mut [Box<dyn Reporter>],
    telemetry: &Telemetry,
    stop: &AtomicBool,
    limits: RunLimits,
    mut deploys: Option<&mut Deployments>,
) -> Result<RunSummary, RunError> {
    let mut summary = RunSummary::default();
    let mut warnings = Throttle::new(REPORT_WARNING_EVERY);
    let started = Instant::now();
    let mut next_refresh = started;
    let mut next_status = started;
    while !stop.load(Ordering::Relaxed)
        && (limits.max_frames == 0 || summary.frames < limits.max_frames)
    {
        let frame_started = Instant::now();
        telemetry.beat(frame_started);
        if frame_started >= next_refresh {
            refresh(telemetry, reporters, frame_started);
            next_refresh = frame_started + REFRESH_EVERY;
        }
        if let Some(deploys) = deploys.as_deref_mut()
            && deploys.between_frames(pipeline, telemetry)
        {
            next_status = frame_started;
        }
        if frame_started >= next_status {
            let status = telemetry.device_status(frame_started);
            for r in reporters.iter_mut() {
                r.publish_status(&status);
            }
            next_status = frame_started + limits.status_every;
        }
        let frame = match source.next_frame(limits.poll) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(SourceError::Unavailable { what, message }) => {
                tracing::warn!("{what}: {message}; waiting for it to come back");
                continue;
            }
            Err(SourceError::Decode { what, message }) => {
                tracing::warn!("{what}: cannot decode frame, skipped: {message}");
                summary.bad_frames += 1;
                telemetry.skipped(SkipCause::Undecodable);
                continue;
            }
            Err(e @ SourceError::Config(_)) => return Err(RunError::Source(e)),
        };
        let source_time = frame_started.elapsed();
        summary.source_times.record(source_time);
        let reports = match pipeline.process(&frame) {
            Ok(r) => r,
            Err(PipelineError::Preprocess(e)) => {
                tracing::warn!("frame {}: {e}; skipped", frame.index);
                summary.skipped_frames += 1;
                telemetry.skipped(SkipCause::Unusable);
                continue;
            }
            Err(e) => return Err(RunError::Pipeline(e)),
        };
        summary.frames += 1;
        let t = Instant::now();
        if let Err(e) = send(&reports, reporters, &mut summary, &mut warnings) {
            drain_all(reporters, limits.drain, &mut summary);
            return Err(RunError::Report(e));
        }
        let report_time = t.elapsed();
        summary.report_times.record(report_time);
        let capture_to_report = (!reports.is_empty()).then(|| {
            Duration::from_millis(crate::source::wall_clock_ms().saturating_sub(frame.timestamp_ms))
        });
        if let Some(latency) = capture_to_report {
            summary.capture_to_report.record(latency);
        }
        let dropped = source.dropped();
        telemetry.stale(dropped.saturating_sub(summary.dropped_frames));
        summary.dropped_frames = dropped;
        summary.frame_times.record(frame_started.elapsed());
        let last = pipeline.last;
        telemetry.frame(
            &FrameRecord {
                faces: last.faces,
                tracks: last.tracks,
                reports: reports.len(),
                source: source_time,
                faces_time: last.faces_time,
                preprocess: last.preprocess_time,
                model: last.model_time,
                report: report_time,
                capture_to_report,
            },
            &reports,
            Instant::now(),
        );
    }
    summary.elapsed = started.elapsed();
    // The tracks still live end with the run: each gets its final report.
    let sent = send(&pipeline.finish(), reporters, &mut summary, &mut warnings);
    drain_all(reporters, limits.drain, &mut summary);
    refresh(telemetry, reporters, Instant::now());
    sent.map_err(RunError::Report)?;
    Ok(summary)
}

fn refresh(telemetry: &Telemetry, reporters: &[Box<dyn Reporter>], now: Instant) {
    telemetry.refresh(reporters.iter().map(|r| r.health()).collect(), now);
}

/// Gives every report to every reporter; the first permanent failure is returned after all
/// reporters had their turn (transient ones are logged and counted).
fn send(
    reports: &[crate::report::Report],
    reporters: &mut [Box<dyn Reporter>],
    summary: &mut RunSummary,
    warnings: &mut Throttle,
) -> Result<(), ReportError> {
    let mut gone = None;
    for report in reports {
        summary.reports += 1;
        for r in reporters.iter_mut() {
            if let Err(e) = r.report(report) {
                summary.report_errors += 1;
                if e.is_permanent() {
                    gone.get_or_insert(e);
                } else if let Some(held_back) = warnings.admit(Instant::now()) {
                    match held_back {
                        0 => tracing::warn!("report: {e}"),
                        n => tracing::warn!("report: {e} ({n} more failed reports not logged)"),
                    }
                }
            }
        }
    }
    gone.map_or(Ok(()), Err)
}

fn drain_all(reporters: &mut [Box<dyn Reporter>], timeout: Duration, summary: &mut RunSummary) {
    for r in reporters.iter_mut() {
        if let Err(e) = r.drain(timeout) {
            summary.report_errors += 1;
            tracing::warn!("draining reports: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recurring_warning_is_logged_once_per_interval_with_the_count_held_back() {
        let mut throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.admit(t0), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(throttle.admit(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.admit(t0 + Duration::from_secs(10)), Some(3));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(11)), None);
        assert_eq!(throttle.admit(t0 + Duration::from_secs(25)), Some(1));
    }
}
