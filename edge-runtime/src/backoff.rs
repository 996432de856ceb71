//! Exponential backoff between attempts to reopen something that went away (a camera that was
//! unplugged, a serial adapter, an MQTT broker). Pure: the caller passes the current time, so the
//! schedule is tested without sleeping.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long to wait between reopen attempts: `initial_ms`, then × `factor` after every failure,
/// never more than `max_ms`. Maps onto a TOML table such as
/// `backoff = { initial_ms = 100, max_ms = 5000, factor = 2.0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Wait after the first failure, milliseconds.
    pub initial_ms: u64,
    /// Longest wait, milliseconds.
    pub max_ms: u64,
    /// Growth of the wait after each further failure (≥ 1).
    pub factor: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 100,
            max_ms: 5_000,
            factor: 2.0,
        }
    }
}

impl BackoffConfig {
    /// Checks the numbers; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(format!(
                "backoff.factor must be a number ≥ 1, got {}",
                self.factor
            ));
        }
        if self.max_ms < self.initial_ms {
            return Err(format!(
                "backoff.max_ms ({}) is smaller than backoff.initial_ms ({})",
                self.max_ms, self.initial_ms
            ));
        }
        Ok(())
    }
}

/// The reopen schedule of one link: when the next attempt may happen.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// A schedule that allows an attempt right away.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            failures: 0,
            retry_at: None,
        }
    }

    /// The wait after `failures` consecutive failures (1 → `initial_ms`).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let ms = self.config.initial_ms as f64 * self.config.factor.powi(exponent);
        Duration::from_millis(ms.min(self.config.max_ms as f64) as u64)
    }

    /// Records a failed attempt at `now`; returns how long until the next one is allowed.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self.delay_after(self.failures);
        self.retry_at = Some(now + delay);
        delay
    }

    /// Records a successful open: the next failure starts again at `initial_ms`.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// Whether an attempt is allowed at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// When the next attempt is allowed (`None`: now).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_geometrically_up_to_the_cap_and_reset_on_success() {
        let config = BackoffConfig {
            initial_ms: 100,
            max_ms: 1_000,
            factor: 3.0,
        };
        let mut backoff = Backoff::new(config);
        let t0 = Instant::now();
        assert!(backoff.ready(t0));
        let waits: Vec<u64> = (0..5)
            .map(|_| backoff.failed(t0).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 300, 900, 1_000, 1_000]);
        assert!(!backoff.ready(t0 + Duration::from_millis(999)));
        assert!(backoff.ready(t0 + Duration::from_millis(1_000)));
        backoff.succeeded();
        assert!(backoff.ready(t0));
        assert_eq!(backoff.failed(t0), Duration::from_millis(100));
    }

    #[test]
    fn rejects_shrinking_or_inverted_schedules() {
        let bad_factor = BackoffConfig {
            factor: 0.5,
            ..BackoffConfig::default()
        };
        assert!(bad_factor.validate().unwrap_err().contains("factor"));
        let inverted = BackoffConfig {
            initial_ms: 10,
            max_ms: 5,
            factor: 2.0,
        };
        assert!(inverted.validate().unwrap_err().contains("max_ms"));
        assert!(BackoffConfig::default().validate().is_ok());
    }
}
