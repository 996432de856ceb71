//! The main loop: frames from a source through the pipeline to every reporter, until the source
//! ends, a frame limit is reached or a stop signal arrives; then reporters drain their queues.
//!
//! Each frame's capture-to-report latency is measured once, after inference, as its reports are
//! handed to the reporters, and every one of those reports carries it
//! ([`Report::latency_ms`](crate::report::Report::latency_ms)): a `FACE_LOST` report the
//! tracker produced on a frame carries that frame's value like the frame's other reports. The
//! final reports of the tracks still live when the run stops are measured when they are handed
//! over, from the capture of the newest frame, whose timestamp they carry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::deploy::Deployments;
use crate::pipeline::{Pipeline, PipelineError};
use crate::report::{Report, ReportError, Reporter};
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
    /// From a frame's capture (its timestamp) to the moment its reports are handed to the
    /// reporters, per frame with reports: the value those reports carry
    /// ([`Report::latency_ms`]), whole milliseconds.
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
        let mut reports = match pipeline.process(&frame) {
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
        let capture_to_report = (!reports.is_empty()).then(|| {
            let latency_ms =
                capture_to_report_ms(crate::source::wall_clock_ms(), frame.timestamp_ms);
            for report in &mut reports {
                report.latency_ms = Some(latency_ms);
            }
            Duration::from_millis(latency_ms.into())
        });
        if let Some(latency) = capture_to_report {
            summary.capture_to_report.record(latency);
        }
        let t = Instant::now();
        if let Err(e) = send(&reports, reporters, &mut summary, &mut warnings) {
            drain_all(reporters, limits.drain, &mut summary);
            return Err(RunError::Report(e));
        }
        let report_time = t.elapsed();
        summary.report_times.record(report_time);
        let dropped = source.dropped();
        telemetry.stale(dropped.saturating_sub(summary.dropped_frames));
        summary.dropped_frames = dropped;
        summary.frame_times.record(frame_started.elapsed());
        let last = pipeline.last;
        telemetry.frame(
            &FrameRecord {
                faces: last.faces,
                detected: last.detected,
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
    let mut ended = pipeline.finish();
    let now_ms = crate::source::wall_clock_ms();
    for report in &mut ended {
        report.latency_ms = Some(capture_to_report_ms(now_ms, report.timestamp_ms));
    }
    let sent = send(&ended, reporters, &mut summary, &mut warnings);
    drain_all(reporters, limits.drain, &mut summary);
    refresh(telemetry, reporters, Instant::now());
    sent.map_err(RunError::Report)?;
    Ok(summary)
}

/// Capture-to-report latency in whole milliseconds of a frame captured at `timestamp_ms`, handed
/// over at `now_ms` (both since the Unix epoch): 0 for a timestamp ahead of the clock (a
/// synthetic clip rendered ahead, a camera clock that drifted), saturating at `u32::MAX`.
fn capture_to_report_ms(now_ms: u64, timestamp_ms: u64) -> u32 {
    u32::try_from(now_ms.saturating_sub(timestamp_ms)).unwrap_or(u32::MAX)
}

fn refresh(telemetry: &Telemetry, reporters: &[Box<dyn Reporter>], now: Instant) {
    telemetry.refresh(reporters.iter().map(|r| r.health()).collect(), now);
}

/// Gives every report to every reporter; the first permanent failure is returned after all
/// reporters had their turn (transient ones are logged and counted).
fn send(
    reports: &[Report],
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
    use std::sync::{Arc, Mutex};

    use affect_shared::preprocess::FaceInput;
    use affect_shared::wire::StatusFlags;

    use super::*;
    use crate::backend::{AffectBackend, BackendError, ModelContract, TrackState};
    use crate::models::ModelFile;
    use crate::pipeline::{FaceMode, PipelineConfig};
    use crate::report::ReporterHealth;
    use crate::source::Frame;
    use crate::telemetry::HealthPolicy;

    /// How old every frame of [`Aged`] is when the runner takes it.
    const AGE_MS: u64 = 40;
    /// How long the model of [`Slow`] takes per frame.
    const INFERENCE: Duration = Duration::from_millis(15);

    /// A camera whose frames were captured `AGE_MS` before they are taken; frame 3 is a cut,
    /// which ends the track (a `FACE_LOST` report among frame 3's reports).
    struct Aged {
        next: u64,
        frames: u64,
    }

    impl FrameSource for Aged {
        fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
            if self.next == self.frames {
                return Ok(None);
            }
            let index = self.next;
            self.next += 1;
            Ok(Some(Frame {
                index,
                timestamp_ms: crate::source::wall_clock_ms() - AGE_MS,
                image: image::RgbImage::from_pixel(64, 64, image::Rgb([90, 100, 110])),
                truth: None,
                cut: index == 3,
            }))
        }

        fn describe(&self) -> String {
            "aged camera".into()
        }
    }

    /// A model taking `INFERENCE` per frame.
    struct Slow(ModelContract);

    impl AffectBackend for Slow {
        fn contract(&self) -> &ModelContract {
            &self.0
        }

        fn step_batch(
            &mut self,
            faces: &[FaceInput],
            _states: &mut [TrackState],
        ) -> Result<Vec<[f32; 2]>, BackendError> {
            std::thread::sleep(INFERENCE);
            Ok(vec![[0.25, -0.5]; faces.len()])
        }

        fn name(&self) -> String {
            "slow".into()
        }
    }

    /// Keeps what it receives where the test reads it after the run.
    struct Shared(Arc<Mutex<Vec<Report>>>);

    impl Reporter for Shared {
        fn report(&mut self, report: &Report) -> Result<(), ReportError> {
            self.0.lock().unwrap().push(*report);
            Ok(())
        }

        fn drain(&mut self, _: Duration) -> Result<(), ReportError> {
            Ok(())
        }

        fn health(&self) -> ReporterHealth {
            ReporterHealth::default()
        }
    }

    #[test]
    fn every_report_carries_the_latency_the_runner_measured_after_inference() {
        let model = ModelFile::embedded("affect-synth.onnx").unwrap();
        let contract = ModelContract::load(&model).unwrap();
        let telemetry = Telemetry::new(contract.identity(), "slow".into(), HealthPolicy::default());
        let mut pipeline = Pipeline::new(
            FaceMode::WholeFrame,
            Box::new(Slow(contract)),
            PipelineConfig::default(),
        )
        .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut reporters: Vec<Box<dyn Reporter>> = vec![Box::new(Shared(Arc::clone(&got)))];
        let frames = 8;
        let summary = run(
            &mut Aged { next: 0, frames },
            &mut pipeline,
            &mut reporters,
            &telemetry,
            &AtomicBool::new(false),
            RunLimits::default(),
            None,
        )
        .unwrap();
        let got = got.lock().unwrap().clone();
        // One estimate per frame, the track ended by the cut on frame 3, the final report.
        assert_eq!(got.len(), frames as usize + 2, "{got:#?}");
        let latencies: Vec<u32> = got
            .iter()
            .map(|r| r.latency_ms.expect("every report carries its latency"))
            .collect();
        // Measured after inference: at least the frame's age plus the model's time. The upper
        // bound only catches a wrong clock (a machine this loaded fails other tests first).
        let least = AGE_MS as u32 + INFERENCE.as_millis() as u32;
        assert!(
            latencies
                .iter()
                .all(|&ms| (least..least + 2_000).contains(&ms)),
            "{latencies:?}"
        );
        // One measurement per frame: the cut's FACE_LOST report carries frame 3's value.
        let cut: Vec<&Report> = got.iter().filter(|r| r.frame == 3).collect();
        assert_eq!(cut.len(), 2);
        assert!(cut[0].flags.contains(StatusFlags::FACE_LOST));
        assert_eq!(cut[0].latency_ms, cut[1].latency_ms);
        // The values the runner recorded (the summary's histogram, 1 % resolution) are the
        // values the reports carry: the final report is measured when handed over, at the end.
        let (last, estimates) = got.split_last().unwrap();
        assert!(last.flags.contains(StatusFlags::FACE_LOST));
        assert!(last.latency_ms >= estimates.last().unwrap().latency_ms);
        let per_frame: Vec<u32> = estimates
            .iter()
            .filter(|r| !r.flags.contains(StatusFlags::FACE_LOST))
            .map(|r| r.latency_ms.unwrap())
            .collect();
        assert_eq!(summary.capture_to_report.count(), frames);
        let close = |recorded: Duration, carried: u32| {
            let carried = f64::from(carried);
            (recorded.as_secs_f64() * 1e3 - carried).abs() <= carried * 0.01 + 1.0
        };
        let (min, max) = (per_frame.iter().min(), per_frame.iter().max());
        assert!(close(
            summary.capture_to_report.quantile(0.0),
            *min.unwrap()
        ));
        assert!(close(
            summary.capture_to_report.quantile(1.0),
            *max.unwrap()
        ));
    }

    #[test]
    fn latency_is_zero_for_a_timestamp_ahead_of_the_clock_and_saturates() {
        assert_eq!(capture_to_report_ms(1_000, 960), 40);
        assert_eq!(capture_to_report_ms(1_000, 1_000), 0);
        assert_eq!(capture_to_report_ms(1_000, 1_500), 0);
        assert_eq!(capture_to_report_ms(u64::MAX, 0), u32::MAX);
    }

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
