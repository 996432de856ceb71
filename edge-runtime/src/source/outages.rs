//! Rehearsed source outages: [`WithOutages`] wraps any [`FrameSource`] and makes it unavailable
//! on a fixed schedule, the way an unplugged camera is — `next_frame` waits within its timeout
//! and returns [`SourceError::Unavailable`] until the outage ends, and frame numbering continues
//! afterwards. It is for rehearsing what a fleet's monitoring does when a camera goes away
//! (`/healthz` turning 503, alerts firing and clearing) and for soak tests; it is off unless the
//! `[source_outages]` table is in the configuration.
//!
//! The schedule is pure ([`OutageSchedule::phase`]: time since start → up or down), so it is
//! tested without sleeping.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Frame, FrameSource, SourceError};

/// When the source is made unavailable; maps onto the `[source_outages]` TOML table. The source
/// works for `up_s` seconds, is unavailable for `down_s` seconds, and so on, from the start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageConfig {
    /// Seconds the source works before each outage (> 0).
    pub up_s: f64,
    /// Seconds each outage lasts (> 0).
    pub down_s: f64,
}

/// Whether the source is up or down at some moment of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Working; the next outage starts after this long.
    Up {
        /// Time until the next outage.
        down_in: Duration,
    },
    /// In outage number `outage` (counting from 1), which ends after `up_in`.
    Down {
        /// Which outage this is, from 1.
        outage: u64,
        /// Time until the source works again.
        up_in: Duration,
    },
}

/// The validated up/down cycle of an [`OutageConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageSchedule {
    up: Duration,
    down: Duration,
}

impl OutageSchedule {
    /// Checks `config`: both durations positive and finite.
    pub fn new(config: &OutageConfig) -> Result<Self, SourceError> {
        let seconds = |v: f64, name: &str| {
            if v.is_finite() && v > 0.0 && v < 1e9 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(SourceError::Config(format!(
                    "source_outages.{name} must be a positive number of seconds, got {v}"
                )))
            }
        };
        Ok(Self {
            up: seconds(config.up_s, "up_s")?,
            down: seconds(config.down_s, "down_s")?,
        })
    }

    /// The phase `elapsed` after the start.
    pub fn phase(&self, elapsed: Duration) -> Phase {
        let period = self.up + self.down;
        let cycles = elapsed.as_nanos() / period.as_nanos();
        // Within one period: fits in u64 nanoseconds as the period does (< 2e9 s).
        let within = Duration::from_nanos((elapsed.as_nanos() % period.as_nanos()) as u64);
        if within < self.up {
            Phase::Up {
                down_in: self.up - within,
            }
        } else {
            Phase::Down {
                outage: cycles as u64 + 1,
                up_in: period - within,
            }
        }
    }
}

/// A source made unavailable on an [`OutageSchedule`] (see the module documentation).
pub struct WithOutages<S> {
    inner: S,
    schedule: OutageSchedule,
    started: Instant,
}

impl<S: FrameSource> WithOutages<S> {
    /// Wraps `inner`; the schedule starts now.
    pub fn new(inner: S, config: &OutageConfig) -> Result<Self, SourceError> {
        Ok(Self {
            inner,
            schedule: OutageSchedule::new(config)?,
            started: Instant::now(),
        })
    }

    /// The frame at time `now`: from the inner source when the schedule is up, else
    /// `Unavailable` — after waiting out the outage if it ends within `timeout`.
    fn next_frame_at(
        &mut self,
        now: Instant,
        timeout: Duration,
    ) -> Result<Option<Frame>, SourceError> {
        match self
            .schedule
            .phase(now.saturating_duration_since(self.started))
        {
            Phase::Up { .. } => self.inner.next_frame(timeout),
            Phase::Down { up_in, .. } if up_in <= timeout => {
                std::thread::sleep(up_in);
                self.inner.next_frame(timeout - up_in)
            }
            Phase::Down { outage, up_in } => {
                std::thread::sleep(timeout);
                Err(SourceError::Unavailable {
                    what: self.inner.describe(),
                    message: format!(
                        "rehearsed outage {outage} (source_outages), back in {:.1} s",
                        (up_in - timeout).as_secs_f64()
                    ),
                })
            }
        }
    }
}

impl<S: FrameSource> FrameSource for WithOutages<S> {
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError> {
        self.next_frame_at(Instant::now(), timeout)
    }

    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    fn describe(&self) -> String {
        format!(
            "{} (rehearsed outages: {:.1} s every {:.1} s)",
            self.inner.describe(),
            self.schedule.down.as_secs_f64(),
            (self.schedule.up + self.schedule.down).as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SyntheticCamera, SyntheticConfig};

    fn schedule(up_s: f64, down_s: f64) -> OutageSchedule {
        OutageSchedule::new(&OutageConfig { up_s, down_s }).unwrap()
    }

    #[test]
    fn the_schedule_alternates_up_and_down_from_the_start() {
        let s = schedule(10.0, 2.0);
        let at = |ms| s.phase(Duration::from_millis(ms));
        let secs = Duration::from_secs;
        assert_eq!(at(0), Phase::Up { down_in: secs(10) });
        assert_eq!(
            at(9_999),
            Phase::Up {
                down_in: Duration::from_millis(1)
            }
        );
        assert_eq!(
            at(10_000),
            Phase::Down {
                outage: 1,
                up_in: secs(2)
            }
        );
        assert_eq!(
            at(11_500),
            Phase::Down {
                outage: 1,
                up_in: Duration::from_millis(500)
            }
        );
        assert_eq!(at(12_000), Phase::Up { down_in: secs(10) });
        assert_eq!(
            at(23_000),
            Phase::Down {
                outage: 2,
                up_in: secs(1)
            }
        );
        // Far into a long run.
        assert_eq!(
            at(12_000 * 1_000_000 + 10_000),
            Phase::Down {
                outage: 1_000_001,
                up_in: secs(2)
            }
        );
    }

    #[test]
    fn nonsense_durations_are_a_configuration_error_naming_the_key() {
        for (up_s, down_s, key) in [
            (0.0, 1.0, "up_s"),
            (-1.0, 1.0, "up_s"),
            (1.0, f64::NAN, "down_s"),
            (1.0, f64::INFINITY, "down_s"),
        ] {
            let err = OutageSchedule::new(&OutageConfig { up_s, down_s }).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
            assert!(matches!(err, SourceError::Config(_)));
        }
    }

    fn camera() -> SyntheticCamera {
        SyntheticCamera::new(&SyntheticConfig {
            width: 64,
            height: 64,
            people: Some(1),
            face_size: 48,
            fps: None,
            jpeg_quality: None,
            ..SyntheticConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn an_outage_is_unavailable_and_numbering_continues_after_it() {
        let config = OutageConfig {
            up_s: 10.0,
            down_s: 5.0,
        };
        let mut source = WithOutages::new(camera(), &config).unwrap();
        let t0 = source.started;
        let at = |s: u64| t0 + Duration::from_secs(s);
        let frame = |source: &mut WithOutages<_>, s| {
            source
                .next_frame_at(at(s), Duration::ZERO)
                .unwrap()
                .unwrap()
                .index
        };
        assert_eq!(frame(&mut source, 0), 0);
        assert_eq!(frame(&mut source, 9), 1);
        for s in [10, 12, 14] {
            let err = source.next_frame_at(at(s), Duration::ZERO).unwrap_err();
            assert!(matches!(err, SourceError::Unavailable { .. }), "{err}");
            assert!(err.to_string().contains("rehearsed outage 1"), "{err}");
        }
        assert_eq!(frame(&mut source, 15), 2);
        let err = source.next_frame_at(at(25), Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("rehearsed outage 2"), "{err}");
        assert!(source.describe().contains("5.0 s every 15.0 s"));
    }

    #[test]
    fn an_outage_ending_within_the_timeout_is_waited_out() {
        let config = OutageConfig {
            up_s: 1.0,
            down_s: 0.02,
        };
        let mut source = WithOutages::new(camera(), &config).unwrap();
        // 10 ms before the end of the first outage, with a 1 s timeout: a frame, not an error.
        let near_end = source.started + Duration::from_millis(1_010);
        let frame = source
            .next_frame_at(near_end, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(frame.index, 0);
    }
}
