//! What a running device tells the people who operate it: counters, stage latencies, reporter
//! states and the active model, shared between the frame loop (which records) and the HTTP
//! server (which reads). Prometheus metrics (OpenMetrics text, `prometheus-client`), the
//! health verdict behind `/healthz` and the retained [`DeviceStatus`] all come from here, so
//! they never disagree. Fixed memory: counters, fixed-bucket histograms, one entry per
//! reporter and a bounded window of recent estimates per track for the status page.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use affect_shared::deploy::{DeployOutcome, DeployResult};
use affect_shared::status::{DeviceState, DeviceStatus, ModelIdentity};
use affect_shared::wire::{Report, StatusFlags};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::report::ReporterHealth;

/// The stages of a frame, as labelled in `affect_stage_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Waiting for and decoding the frame.
    Source,
    /// Face detection and landmarks.
    Faces,
    /// Cropping and normalising the faces.
    Preprocess,
    /// Model steps.
    Model,
    /// Handing the reports to every reporter.
    Report,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::Source,
        Stage::Faces,
        Stage::Preprocess,
        Stage::Model,
        Stage::Report,
    ];

    fn label(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Faces => "faces",
            Stage::Preprocess => "preprocess",
            Stage::Model => "model",
            Stage::Report => "report",
        }
    }
}

/// Why a frame produced no reports, as labelled in `affect_frames_skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipCause {
    /// The source delivered bytes that do not decode.
    Undecodable,
    /// A face could not be preprocessed.
    Unusable,
    /// A newer frame arrived before this one was taken: dropped so the newest is processed.
    Stale,
}

impl SkipCause {
    fn label(self) -> &'static str {
        match self {
            SkipCause::Undecodable => "undecodable",
            SkipCause::Unusable => "unusable",
            SkipCause::Stale => "stale",
        }
    }
}

/// One processed frame, as the frame loop saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameRecord {
    /// Faces found.
    pub faces: usize,
    /// The full face detection ran (not landmark tracking).
    pub detected: bool,
    /// Tracks alive after the frame.
    pub tracks: usize,
    /// Reports produced (final reports of ended tracks included).
    pub reports: usize,
    /// Time per stage.
    pub source: Duration,
    /// Face detection and landmarks.
    pub faces_time: Duration,
    /// Preprocessing.
    pub preprocess: Duration,
    /// Model steps.
    pub model: Duration,
    /// Reporters.
    pub report: Duration,
    /// From the frame's capture to its reports handed to the reporters (frames with reports):
    /// the latency those reports carry.
    pub capture_to_report: Option<Duration>,
}

/// When `/healthz` says unhealthy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// No frame for this long is a stall (the camera is gone or the pipeline hangs).
    pub stale_after: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(10),
        }
    }
}

/// The `/healthz` body: the verdict and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Frames flow and every reporter delivers or has room to queue.
    pub healthy: bool,
    /// One sentence per problem; empty when healthy.
    pub problems: Vec<String>,
    /// Frames processed so far.
    pub frames: u64,
    /// Seconds since the last processed frame (`None` before the first).
    pub last_frame_age_s: Option<f64>,
    /// Each reporter's state.
    pub reporters: Vec<ReporterHealth>,
}

/// How long the status page's plot reaches back.
pub const HISTORY_SPAN: Duration = Duration::from_secs(180);
/// At most one plotted point per track per this interval (5 per second).
const HISTORY_STEP_MS: u64 = 200;
/// At most this many plotted points in all (≈ 16 tracks × 3 minutes × 5/s … thinned sooner).
const HISTORY_POINTS: usize = 16_384;

/// One plotted estimate: `[ms since start, track, valence, arousal]` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrackPoint(pub u64, pub u16, pub f32, pub f32);

/// Recent estimates per track, thinned to [`HISTORY_STEP_MS`] and cut at [`HISTORY_SPAN`].
#[derive(Debug, Default)]
struct History {
    points: VecDeque<TrackPoint>,
    /// Time of each live track's newest point (tracks leave on their final report).
    last_ms: HashMap<u16, u64>,
}

impl History {
    fn add(&mut self, report: &Report, at_ms: u64) {
        if report.flags.contains(StatusFlags::FACE_LOST) {
            self.last_ms.remove(&report.track);
            return;
        }
        if let Some(&last) = self.last_ms.get(&report.track)
            && at_ms < last + HISTORY_STEP_MS
        {
            return;
        }
        self.last_ms.insert(report.track, at_ms);
        if self.points.len() == HISTORY_POINTS {
            self.points.pop_front();
        }
        self.points.push_back(TrackPoint(
            at_ms,
            report.track,
            report.valence,
            report.arousal,
        ));
        let horizon = at_ms.saturating_sub(HISTORY_SPAN.as_millis() as u64);
        while self.points.front().is_some_and(|p| p.0 < horizon) {
            self.points.pop_front();
        }
    }
}

/// What changes once per second rather than per frame.
#[derive(Debug)]
struct Slow {
    last_frame: Option<Instant>,
    reporters: Vec<ReporterHealth>,
    /// Frames and time at the last rate update.
    rate_mark: Option<(Instant, u64)>,
    fps: Option<f64>,
    /// The model serving now (replaced by a deploy).
    model: ModelIdentity,
    /// The last deploy's outcome.
    deploy: Option<DeployOutcome>,
}

/// Shared telemetry of one run; see the module documentation.
#[derive(Debug)]
pub struct Telemetry {
    started: Instant,
    started_unix_s: f64,
    backend: String,
    policy: HealthPolicy,
    registry: Registry,
    deploys: Family<[(&'static str, &'static str); 1], Counter>,
    frames: Counter,
    reports: Counter,
    skipped: Family<[(&'static str, &'static str); 1], Counter>,
    stages: Family<[(&'static str, &'static str); 1], Histogram>,
    capture_to_report: Histogram,
    faces: Gauge,
    face_detections: Counter,
    tracks: Gauge,
    slow: Mutex<Slow>,
    history: Mutex<History>,
    /// Milliseconds from the start to the frame loop's latest beat.
    beat_ms: AtomicU64,
}

/// Stage latency buckets: 0.25 ms … ~4 s, doubling.
fn stage_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Telemetry {
    /// Telemetry for a run of `model` on `backend`.
    pub fn new(model: ModelIdentity, backend: String, policy: HealthPolicy) -> Self {
        let mut registry = Registry::with_prefix("affect");
        let frames = Counter::default();
        let reports = Counter::default();
        let skipped = Family::default();
        let stages = Family::new_with_constructor(stage_buckets as fn() -> Histogram);
        let capture_to_report = stage_buckets();
        let faces = Gauge::default();
        let face_detections = Counter::default();
        let tracks = Gauge::default();
        let deploys = Family::default();
        registry.register("frames", "Frames processed", frames.clone());
        registry.register(
            "capture_to_report_seconds",
            "From a frame's capture to its reports handed to the reporters",
            capture_to_report.clone(),
        );
        registry.register(
            "reports",
            "Reports produced (one per face per frame, plus each ended track's final report)",
            reports.clone(),
        );
        registry.register(
            "frames_skipped",
            "Frames that produced no reports, by cause (stale: dropped for a newer frame)",
            skipped.clone(),
        );
        registry.register(
            "stage_seconds",
            "Wall-clock time per frame of each pipeline stage",
            stages.clone(),
        );
        registry.register("faces", "Faces found in the last frame", faces.clone());
        registry.register(
            "face_detections",
            "Frames on which the face detector ran (the others followed faces by their landmarks)",
            face_detections.clone(),
        );
        registry.register(
            "tracks",
            "Face tracks alive after the last frame",
            tracks.clone(),
        );
        registry.register(
            "deploys",
            "Model deploys handled, by result (active, rejected, rolled_back)",
            deploys.clone(),
        );
        // Every label value exists from the start, so a scrape shows zeros rather than gaps.
        for result in [
            DeployResult::Active,
            DeployResult::Rejected,
            DeployResult::RolledBack,
        ] {
            drop(deploys.get_or_create(&[("result", result.label())]));
        }
        for cause in [
            SkipCause::Undecodable,
            SkipCause::Unusable,
            SkipCause::Stale,
        ] {
            drop(skipped.get_or_create(&[("cause", cause.label())]));
        }
        for stage in Stage::ALL {
            drop(stages.get_or_create(&[("stage", stage.label())]));
        }
        let started_unix_s = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            started: Instant::now(),
            started_unix_s,
            backend,
            policy,
            registry,
            deploys,
            frames,
            reports,
            skipped,
            stages,
            capture_to_report,
            faces,
            face_detections,
            tracks,
            slow: Mutex::new(Slow {
                last_frame: None,
                reporters: Vec::new(),
                rate_mark: None,
                fps: None,
                model,
                deploy: None,
            }),
            history: Mutex::new(History::default()),
            beat_ms: AtomicU64::new(0),
        }
    }

    fn slow(&self) -> std::sync::MutexGuard<'_, Slow> {
        // A panic elsewhere must not take monitoring down with it.
        self.slow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one processed frame and its reports.
    pub fn frame(&self, f: &FrameRecord, reports: &[Report], now: Instant) {
        self.frames.inc();
        self.reports.inc_by(f.reports as u64);
        self.faces.set(f.faces as i64);
        if f.detected {
            self.face_detections.inc();
        }
        self.tracks.set(f.tracks as i64);
        for (stage, d) in [
            (Stage::Source, f.source),
            (Stage::Faces, f.faces_time),
            (Stage::Preprocess, f.preprocess),
            (Stage::Model, f.model),
            (Stage::Report, f.report),
        ] {
            self.stages
                .get_or_create(&[("stage", stage.label())])
                .observe(d.as_secs_f64());
        }
        if let Some(d) = f.capture_to_report {
            self.capture_to_report.observe(d.as_secs_f64());
        }
        self.slow().last_frame = Some(now);
        let at_ms = self.millis_at(now);
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        for r in reports {
            history.add(r, at_ms);
        }
    }

    /// Milliseconds from the start to `now`: the time axis of [`TrackPoint`]s.
    pub fn millis_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Plotted points newer than `after_ms` (all of them for `None`), oldest first.
    pub fn points_since(&self, after_ms: Option<u64>) -> Vec<TrackPoint> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history
            .points
            .iter()
            .filter(|p| after_ms.is_none_or(|a| p.0 > a))
            .copied()
            .collect()
    }

    /// Faces in the last frame and tracks alive.
    pub fn faces_and_tracks(&self) -> (i64, i64) {
        (self.faces.get(), self.tracks.get())
    }

    /// Records a frame that produced no reports.
    pub fn skipped(&self, cause: SkipCause) {
        self.skipped
            .get_or_create(&[("cause", cause.label())])
            .inc();
    }

    /// Records `count` stale frames the source dropped (a newer frame arrived first).
    pub fn stale(&self, count: u64) {
        self.skipped
            .get_or_create(&[("cause", SkipCause::Stale.label())])
            .inc_by(count);
    }

    /// Takes the reporters' states and updates the frame rate (call about once a second).
    pub fn refresh(&self, reporters: Vec<ReporterHealth>, now: Instant) {
        let frames = self.frames.get();
        let mut slow = self.slow();
        slow.reporters = reporters;
        if let Some((at, count)) = slow.rate_mark {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            if dt > 0.0 {
                slow.fps = Some(frames.saturating_sub(count) as f64 / dt);
            }
        }
        slow.rate_mark = Some((now, frames));
    }

    /// The frame loop made progress (a frame, or a bounded wait for the source ended).
    pub fn beat(&self, now: Instant) {
        self.beat_ms.store(self.millis_at(now), Ordering::Relaxed);
    }

    /// Time since the frame loop's latest beat (since the start before the first).
    pub fn since_progress(&self, now: Instant) -> Duration {
        let beat = Duration::from_millis(self.beat_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(self.started + beat)
    }

    /// The verdict of `/healthz` at `now`.
    pub fn health(&self, now: Instant) -> Health {
        let slow = self.slow();
        let age = slow
            .last_frame
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        let mut problems = Vec::new();
        let stale = self.policy.stale_after.as_secs_f64();
        match age {
            None => problems.push("no frame processed yet".to_owned()),
            Some(a) if a > stale => problems.push(format!(
                "no frame for {a:.1} s (limit {stale:.1} s): the source or the pipeline is stalled"
            )),
            Some(_) => {}
        }
        for r in slow.reporters.iter().filter(|r| !r.is_healthy()) {
            problems.push(format!(
                "reporter {} is down and its queue is full ({}; oldest reports are being \
                 dropped){}",
                r.name,
                r.fill(),
                r.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        Health {
            healthy: problems.is_empty(),
            problems,
            frames: self.frames.get(),
            last_frame_age_s: age,
            reporters: slow.reporters.clone(),
        }
    }

    /// The retained status a reporter publishes.
    pub fn device_status(&self, now: Instant) -> DeviceStatus {
        let slow = self.slow();
        DeviceStatus {
            state: DeviceState::Online,
            model: Some(slow.model.clone()),
            fps: slow.fps.map(|f| (f * 100.0).round() / 100.0),
            uptime_s: Some(now.saturating_duration_since(self.started).as_secs()),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            deploy: slow.deploy.clone(),
        }
    }

    /// The model serving from now on (after a deploy or a rollback).
    pub fn set_model(&self, model: ModelIdentity) {
        self.slow().model = model;
    }

    /// Records a deploy's outcome: the status carries it and `affect_deploys_total` counts it.
    /// `restored` is for the outcome of an earlier run read back at start-up (shown, not
    /// counted again).
    pub fn deploy_outcome(&self, outcome: DeployOutcome, restored: bool) {
        if !restored {
            self.deploys
                .get_or_create(&[("result", outcome.result.label())])
                .inc();
        }
        self.slow().deploy = Some(outcome);
    }

    /// Every metric in the OpenMetrics text format (what Prometheus scrapes).
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; the collector below only formats numbers.
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .and_then(|()| self.encode_snapshot(&mut out))
            .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out))
        {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }

    /// Reporter states, the model, the process: values read now rather than kept per frame.
    fn encode_snapshot(&self, out: &mut String) -> std::fmt::Result {
        let (reporters, fps, model) = {
            let slow = self.slow();
            (
                slow.reporters.clone(),
                slow.fps.unwrap_or(0.0),
                slow.model.clone(),
            )
        };
        let snapshot = Snapshot {
            reporters,
            fps,
            uptime_s: self.started.elapsed().as_secs_f64(),
            started_unix_s: self.started_unix_s,
            model,
            backend: self.backend.clone(),
        };
        let mut registry = Registry::with_prefix("affect");
        registry.register_collector(Box::new(snapshot));
        prometheus_client::encoding::text::encode_registry(out, &registry)
    }
}

/// The values of [`Telemetry::encode_snapshot`], encoded by a `prometheus-client` collector.
#[derive(Debug)]
struct Snapshot {
    reporters: Vec<ReporterHealth>,
    fps: f64,
    uptime_s: f64,
    started_unix_s: f64,
    model: ModelIdentity,
    backend: String,
}

/// Encodes one gauge or counter per reporter.
fn per_reporter<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    reporters: &[ReporterHealth],
    metric: impl Fn(&ReporterHealth) -> M,
) -> std::fmt::Result {
    let Some(first) = reporters.first() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, None, metric(first).metric_type())?;
    for r in reporters {
        let labels = [("reporter", r.name.as_str())];
        metric(r).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> std::fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        let rs = &self.reporters;
        single(
            e,
            "frames_per_second",
            "Frames processed per second over the last second",
            ConstGauge::new(self.fps),
        )?;
        per_reporter(
            e,
            "reporter_accepted",
            "Reports given to the reporter",
            rs,
            |r| ConstCounter::new(r.accepted()),
        )?;
        per_reporter(
            e,
            "reporter_delivered",
            "Reports delivered (written, or acknowledged by the MQTT broker)",
            rs,
            |r| ConstCounter::new(r.delivered),
        )?;
        per_reporter(
            e,
            "reporter_queued",
            "Reports waiting for the link",
            rs,
            |r| ConstGauge::new(r.queued as i64),
        )?;
        per_reporter(
            e,
            "reporter_queue_capacity",
            "Reports the queue holds before dropping the oldest",
            rs,
            |r| ConstGauge::new(r.capacity as i64),
        )?;
        per_reporter(
            e,
            "reporter_queue_bytes",
            "Bytes of the reporter's queue on disk (0: in memory)",
            rs,
            |r| ConstGauge::new(r.queued_bytes as i64),
        )?;
        per_reporter(
            e,
            "reporter_queue_capacity_bytes",
            "Bytes the queue on disk holds before dropping its oldest segment (0: in memory)",
            rs,
            |r| ConstGauge::new(r.capacity_bytes as i64),
        )?;
        per_reporter(
            e,
            "reporter_queue_damaged",
            "Damaged records of the queue on disk found and skipped",
            rs,
            |r| ConstCounter::new(r.damaged),
        )?;
        per_reporter(
            e,
            "reporter_dropped",
            "Reports dropped because the queue was full",
            rs,
            |r| ConstCounter::new(r.dropped),
        )?;
        per_reporter(
            e,
            "reporter_reconnects",
            "Times the link came back",
            rs,
            |r| ConstCounter::new(r.reconnects),
        )?;
        per_reporter(e, "reporter_connected", "1 when the link is up", rs, |r| {
            ConstGauge::new(i64::from(r.connected))
        })?;
        let model = Info::new(vec![
            ("sha256", self.model.sha256.clone()),
            ("version", self.model.version.clone()),
            ("backbone", self.model.backbone.clone()),
            ("backend", self.backend.clone()),
        ]);
        single(e, "model", "The active model", model)?;
        let runtime = Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_owned())]);
        single(e, "runtime", "The runtime's version", runtime)?;
        single(
            e,
            "uptime_seconds",
            "Seconds since the runtime started",
            ConstGauge::new(self.uptime_s),
        )?;
        single(
            e,
            "start_time_seconds",
            "Start time of the runtime, seconds since the Unix epoch",
            ConstGauge::new(self.started_unix_s),
        )?;
        let process = process_usage();
        if let Some(rss) = process.resident_bytes {
            single(
                e,
                "process_resident_memory_bytes",
                "Resident memory of the process",
                ConstGauge::new(rss as i64),
            )?;
        }
        if let Some(fds) = process.open_fds {
            single(
                e,
                "process_open_fds",
                "Open file descriptors of the process",
                ConstGauge::new(fds as i64),
            )?;
        }
        Ok(())
    }
}

/// Resident memory and open descriptors of this process, from `/proc` (absent elsewhere).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessUsage {
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
}

/// Reads [`ProcessUsage`] now.
pub fn process_usage() -> ProcessUsage {
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    ProcessUsage {
        resident_bytes,
        open_fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(stale_s: u64) -> Telemetry {
        Telemetry::new(
            ModelIdentity {
                sha256: "0".repeat(64),
                version: "v1".into(),
                backbone: "tiny".into(),
                since_unix_s: None,
            },
            "tract".into(),
            HealthPolicy {
                stale_after: Duration::from_secs(stale_s),
            },
        )
    }

    fn reporter(connected: bool, queued: usize) -> ReporterHealth {
        ReporterHealth {
            name: "mqtt://127.0.0.1:1/t".into(),
            connected,
            queued,
            capacity: 10,
            ..ReporterHealth::default()
        }
    }

    #[test]
    fn health_needs_recent_frames_and_reporters_with_room() {
        let t = telemetry(5);
        let start = Instant::now();
        let h = t.health(start);
        assert!(!h.healthy && h.problems[0].contains("no frame"), "{h:?}");

        t.frame(&FrameRecord::default(), &[], start);
        t.refresh(vec![reporter(false, 3)], start);
        let h = t.health(start + Duration::from_secs(1));
        assert!(h.healthy, "down with room in the queue is healthy: {h:?}");

        let h = t.health(start + Duration::from_secs(6));
        assert!(
            !h.healthy && h.problems[0].contains("no frame for 6.0 s"),
            "{h:?}"
        );

        t.refresh(vec![reporter(false, 10)], start);
        let h = t.health(start + Duration::from_secs(1));
        assert!(
            !h.healthy && h.problems[0].contains("queue is full"),
            "{h:?}"
        );

        // A queue on disk is full when there is no room for another sixteenth of its bound.
        let disk = |queued_bytes| ReporterHealth {
            capacity: 0,
            queued_bytes,
            capacity_bytes: 1600,
            ..reporter(false, 5)
        };
        t.refresh(vec![disk(1500)], start);
        assert!(t.health(start + Duration::from_secs(1)).healthy);
        t.refresh(vec![disk(1501)], start);
        let h = t.health(start + Duration::from_secs(1));
        assert!(
            !h.healthy && h.problems[0].contains("1501 of 1600 bytes on disk"),
            "{h:?}"
        );
    }

    #[test]
    fn progress_is_timed_from_the_latest_beat() {
        let t = telemetry(5);
        let start = t.started;
        assert_eq!(
            t.since_progress(start + Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        t.beat(start + Duration::from_secs(4));
        assert_eq!(
            t.since_progress(start + Duration::from_secs(6)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn frame_rate_is_measured_between_refreshes() {
        let t = telemetry(5);
        let start = Instant::now();
        t.refresh(Vec::new(), start);
        for _ in 0..30 {
            t.frame(&FrameRecord::default(), &[], start);
        }
        t.refresh(Vec::new(), start + Duration::from_secs(2));
        let status = t.device_status(start + Duration::from_secs(2));
        assert_eq!(status.fps, Some(15.0));
        assert_eq!(status.model.unwrap().version, "v1");
    }

    fn report(track: u16, valence: f32, flags: u8) -> Report {
        Report {
            timestamp_ms: 0,
            frame: 0,
            track,
            valence,
            arousal: -valence,
            bbox: [0.0; 4],
            score: 1.0,
            flags: StatusFlags(flags),
            latency_ms: Some(20),
        }
    }

    #[test]
    fn history_is_thinned_per_track_and_cut_at_the_span() {
        let t = telemetry(5);
        let start = t.started;
        // 30 frames/s for 2 s, two faces: five points per second per track.
        for i in 0..60u64 {
            let now = start + Duration::from_millis(i * 1000 / 30);
            t.frame(
                &FrameRecord::default(),
                &[report(1, 0.5, 0), report(2, -0.5, 0)],
                now,
            );
        }
        let points = t.points_since(None);
        let per_track = |id| points.iter().filter(|p| p.1 == id).count();
        assert_eq!((per_track(1), per_track(2)), (10, 10), "{points:?}");
        let newest = points.last().unwrap().0;
        assert!(t.points_since(Some(newest)).is_empty());
        // A track's final report ends it; its points stay until they age out.
        t.frame(
            &FrameRecord::default(),
            &[report(1, 0.5, StatusFlags::FACE_LOST)],
            start,
        );
        let later = start + HISTORY_SPAN + Duration::from_secs(3);
        t.frame(&FrameRecord::default(), &[report(2, 0.1, 0)], later);
        let left = t.points_since(None);
        assert_eq!(
            left.len(),
            1,
            "only the newest point is inside the span: {left:?}"
        );
        assert_eq!(left[0].1, 2);
    }

    #[test]
    fn metrics_carry_every_family_and_end_with_eof() {
        let t = telemetry(5);
        t.frame(
            &FrameRecord {
                faces: 2,
                detected: true,
                tracks: 2,
                reports: 2,
                model: Duration::from_millis(3),
                capture_to_report: Some(Duration::from_millis(30)),
                ..FrameRecord::default()
            },
            &[],
            Instant::now(),
        );
        t.skipped(SkipCause::Unusable);
        t.stale(3);
        t.refresh(vec![reporter(true, 0)], Instant::now());
        let text = t.encode_metrics();
        for needle in [
            "affect_frames_total 1",
            "affect_reports_total 2",
            "affect_frames_skipped_total{cause=\"unusable\"} 1",
            "affect_frames_skipped_total{cause=\"stale\"} 3",
            "affect_capture_to_report_seconds_bucket{le=\"0.032\"} 1",
            "affect_stage_seconds_bucket{le=\"0.004\",stage=\"model\"} 1",
            "affect_faces 2",
            "affect_face_detections_total 1",
            "affect_reporter_connected{reporter=\"mqtt://127.0.0.1:1/t\"} 1",
            "affect_reporter_queue_bytes{reporter=\"mqtt://127.0.0.1:1/t\"} 0",
            "affect_reporter_queue_damaged_total{reporter=\"mqtt://127.0.0.1:1/t\"} 0",
            "affect_model_info{sha256=\"0000",
            "affect_process_resident_memory_bytes ",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }
}
