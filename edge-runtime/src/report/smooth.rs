//! Exponential smoothing of valence/arousal per face track, around any reporter.

use std::collections::HashMap;
use std::time::Duration;

use affect_shared::wire::StatusFlags;
use serde::{Deserialize, Serialize};

use super::{Report, ReportError, Reporter, ReporterHealth};
use affect_shared::status::DeviceStatus;

/// Smoothing settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmoothConfig {
    /// Time constant τ of the exponential moving average, milliseconds of capture time (> 0).
    /// A step in the estimate reaches 63 % after τ, 95 % after 3τ, whatever the frame rate.
    pub time_constant_ms: f64,
    /// A track not seen for this long (capture time) starts afresh, milliseconds.
    pub reset_after_ms: u64,
}

impl Default for SmoothConfig {
    fn default() -> Self {
        Self {
            time_constant_ms: 300.0,
            reset_after_ms: 2_000,
        }
    }
}

impl SmoothConfig {
    /// The time constant equivalent to a per-frame EMA weight `w` (weight of the newest value)
    /// at a steady `frame_interval_ms`: `τ = −Δt / ln(1 − w)`. `w = 1` means no smoothing and
    /// gives `None`; `w` outside (0, 1] or a non-positive interval is an error.
    pub fn from_per_frame_weight(
        weight: f64,
        frame_interval_ms: f64,
    ) -> Result<Option<Self>, ReportError> {
        let usable = (0.0..=1.0).contains(&weight) && weight > 0.0 && frame_interval_ms > 0.0;
        if !usable {
            return Err(ReportError::Config {
                what: "smoothing".into(),
                message: format!(
                    "weight must be in (0, 1] and the frame interval positive, got {weight} and \
                     {frame_interval_ms} ms"
                ),
            });
        }
        if weight == 1.0 {
            return Ok(None);
        }
        Ok(Some(Self {
            time_constant_ms: -frame_interval_ms / (1.0 - weight).ln(),
            ..Self::default()
        }))
    }
}

#[derive(Debug, Clone, Copy)]
struct TrackState {
    valence: f64,
    arousal: f64,
    timestamp_ms: u64,
}

/// Replaces each report's valence and arousal with their exponential moving average over the
/// track, `s += α (x − s)` with `α = 1 − exp(−Δt / τ)` for the capture time Δt since the
/// track's previous report, and sets the `SMOOTHED` flag. A `NEW_TRACK` report, a track unseen
/// for `reset_after_ms`, or a clock going backwards restarts the average at the new value. A
/// track's final (`FACE_LOST`) report carries the average as it stands and forgets the track.
pub struct Smoothed<R: Reporter> {
    inner: R,
    config: SmoothConfig,
    tracks: HashMap<u16, TrackState>,
}

impl<R: Reporter> Smoothed<R> {
    /// Wraps `inner`; errors if the time constant is not a positive number.
    pub fn new(inner: R, config: SmoothConfig) -> Result<Self, ReportError> {
        if !(config.time_constant_ms.is_finite() && config.time_constant_ms > 0.0) {
            return Err(ReportError::Config {
                what: "smooth.time_constant_ms".into(),
                message: format!("must be a positive number, got {}", config.time_constant_ms),
            });
        }
        Ok(Self {
            inner,
            config,
            tracks: HashMap::new(),
        })
    }

    /// The wrapped reporter.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// The wrapped reporter, mutably.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The wrapped reporter back.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The smoothed copy of `report`, updating the track's state.
    fn smooth(&mut self, report: &Report) -> Report {
        let x = (f64::from(report.valence), f64::from(report.arousal));
        let restart = |previous: &TrackState| {
            report.flags.contains(StatusFlags::NEW_TRACK)
                || report.timestamp_ms < previous.timestamp_ms
                || report.timestamp_ms - previous.timestamp_ms > self.config.reset_after_ms
        };
        let next = match self.tracks.get(&report.track) {
            Some(previous) if !restart(previous) => {
                let dt = (report.timestamp_ms - previous.timestamp_ms) as f64;
                let alpha = 1.0 - (-dt / self.config.time_constant_ms).exp();
                TrackState {
                    valence: previous.valence + alpha * (x.0 - previous.valence),
                    arousal: previous.arousal + alpha * (x.1 - previous.arousal),
                    timestamp_ms: report.timestamp_ms,
                }
            }
            _ => TrackState {
                valence: x.0,
                arousal: x.1,
                timestamp_ms: report.timestamp_ms,
            },
        };
        self.tracks.insert(report.track, next);
        let now = report.timestamp_ms;
        let forget = self.config.reset_after_ms;
        self.tracks
            .retain(|_, t| now.saturating_sub(t.timestamp_ms) <= forget);
        Report {
            valence: next.valence as f32,
            arousal: next.arousal as f32,
            flags: StatusFlags(report.flags.0 | StatusFlags::SMOOTHED),
            ..*report
        }
    }
}

impl<R: Reporter> Reporter for Smoothed<R> {
    fn report(&mut self, report: &Report) -> Result<(), ReportError> {
        if !(report.valence.is_finite() && report.arousal.is_finite()) {
            // Never let a NaN into the average; the inner reporter names the bad field.
            return self.inner.report(report);
        }
        if report.flags.contains(StatusFlags::FACE_LOST) {
            let last = self.tracks.remove(&report.track);
            let held = last.map_or(*report, |t| Report {
                valence: t.valence as f32,
                arousal: t.arousal as f32,
                flags: StatusFlags(report.flags.0 | StatusFlags::SMOOTHED),
                ..*report
            });
            return self.inner.report(&held);
        }
        let smoothed = self.smooth(report);
        self.inner.report(&smoothed)
    }

    fn drain(&mut self, timeout: Duration) -> Result<(), ReportError> {
        self.inner.drain(timeout)
    }

    fn health(&self) -> ReporterHealth {
        self.inner.health()
    }

    fn publish_status(&mut self, status: &DeviceStatus) {
        self.inner.publish_status(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MemoryReporter;

    fn report(track: u16, timestamp_ms: u64, valence: f32, flags: u8) -> Report {
        Report {
            timestamp_ms,
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

    fn smoother() -> Smoothed<MemoryReporter> {
        Smoothed::new(
            MemoryReporter::default(),
            SmoothConfig {
                time_constant_ms: 100.0,
                reset_after_ms: 1_000,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_step_reaches_63_percent_after_one_time_constant_at_any_frame_rate() {
        for step_ms in [10u64, 25, 50, 100] {
            let mut smoothed = smoother();
            smoothed.report(&report(1, 0, 0.0, 0)).unwrap();
            let mut t = 0;
            while t < 100 {
                t += step_ms;
                smoothed.report(&report(1, t, 1.0, 0)).unwrap();
            }
            let last = smoothed.inner().reports.last().unwrap();
            let expected = 1.0 - (-1.0f64).exp();
            assert!(
                (f64::from(last.valence) - expected).abs() < 1e-6,
                "{step_ms} ms: {}",
                last.valence
            );
            assert!((f64::from(last.arousal) + expected).abs() < 1e-6);
            assert!(last.flags.contains(StatusFlags::SMOOTHED));
        }
    }

    #[test]
    fn a_per_frame_weight_maps_to_the_same_average_at_that_frame_rate() {
        let config = SmoothConfig::from_per_frame_weight(0.3, 40.0)
            .unwrap()
            .unwrap();
        let mut smoothed = Smoothed::new(MemoryReporter::default(), config).unwrap();
        let inputs = [0.0f32, 1.0, 1.0, -0.5, 0.25];
        for (i, v) in inputs.iter().enumerate() {
            smoothed.report(&report(1, 40 * i as u64, *v, 0)).unwrap();
        }
        let mut expected = f64::from(inputs[0]);
        for (v, got) in inputs.iter().zip(&smoothed.inner().reports).skip(1) {
            expected += 0.3 * (f64::from(*v) - expected);
            assert!((f64::from(got.valence) - expected).abs() < 1e-6);
        }
        assert!(
            SmoothConfig::from_per_frame_weight(1.0, 40.0)
                .unwrap()
                .is_none()
        );
        assert!(SmoothConfig::from_per_frame_weight(0.0, 40.0).is_err());
        assert!(SmoothConfig::from_per_frame_weight(0.5, 0.0).is_err());
    }

    #[test]
    fn a_final_report_carries_the_average_and_forgets_the_track() {
        let mut smoothed = smoother();
        smoothed.report(&report(1, 0, 1.0, 0)).unwrap();
        smoothed.report(&report(1, 50, 0.0, 0)).unwrap();
        smoothed
            .report(&report(1, 50, 0.0, StatusFlags::FACE_LOST))
            .unwrap();
        // The next report of the id starts afresh, without a NEW_TRACK flag or a gap.
        smoothed.report(&report(1, 60, -1.0, 0)).unwrap();
        let reports = smoothed.into_inner().reports;
        let after_50ms = (-0.5f64).exp() as f32;
        assert_eq!(reports[2].valence, after_50ms);
        assert!(
            reports[2]
                .flags
                .contains(StatusFlags::FACE_LOST | StatusFlags::SMOOTHED)
        );
        assert_eq!(reports[3].valence, -1.0);
    }

    #[test]
    fn tracks_are_independent_and_restart_on_new_track_or_a_long_gap() {
        let mut smoothed = smoother();
        smoothed.report(&report(1, 0, 1.0, 0)).unwrap();
        smoothed.report(&report(2, 0, -1.0, 0)).unwrap();
        smoothed.report(&report(1, 50, 0.0, 0)).unwrap();
        smoothed.report(&report(2, 50, -1.0, 0)).unwrap();
        smoothed
            .report(&report(1, 60, 0.5, StatusFlags::NEW_TRACK))
            .unwrap();
        smoothed.report(&report(2, 5_000, 0.25, 0)).unwrap();
        let values: Vec<(u16, f32)> = smoothed
            .into_inner()
            .reports
            .iter()
            .map(|r| (r.track, r.valence))
            .collect();
        let after_50ms = (-0.5f64).exp() as f32;
        assert_eq!(
            values,
            [
                (1, 1.0),
                (2, -1.0),
                (1, after_50ms),
                (2, -1.0),
                (1, 0.5),
                (2, 0.25)
            ]
        );
    }
}
