//! Bounded latency statistics: every per-frame duration goes into a fixed-size HDR histogram, so
//! a run that never ends keeps the same memory while mean and percentiles stay available.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest duration kept exactly, microseconds (one hour); longer ones count as one hour.
const MAX_MICROS: u64 = 3_600_000_000;
/// Significant decimal digits kept: 2 gives 1 % resolution in ~20 KiB, whatever the count.
const SIGNIFICANT_DIGITS: u8 = 2;

/// Distribution of one stage's durations, microsecond resolution, fixed memory.
#[derive(Debug, Clone)]
pub struct Latency {
    micros: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            // Bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, 0–5 digits).
            micros: Histogram::new_with_bounds(1, MAX_MICROS, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
        }
    }
}

impl Latency {
    /// Adds one sample (clamped to 1 µs … 1 h).
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.micros.saturating_record(micros);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.micros.len()
    }

    /// Mean of the samples; zero for none.
    pub fn mean(&self) -> Duration {
        if self.micros.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.micros.mean() / 1e6)
    }

    /// The `q` quantile (`q` in [0, 1], clamped), within 1 %; zero for no samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.micros.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.micros.value_at_quantile(q.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_quantiles_match_the_samples_within_one_percent() {
        let mut latency = Latency::default();
        assert_eq!(latency.mean(), Duration::ZERO);
        assert_eq!(latency.quantile(0.5), Duration::ZERO);
        for ms in 1..=100u64 {
            latency.record(Duration::from_millis(ms));
        }
        assert_eq!(latency.count(), 100);
        let close = |got: Duration, want_ms: f64| {
            let got = got.as_secs_f64() * 1e3;
            assert!(
                (got - want_ms).abs() <= want_ms * 0.01,
                "{got} vs {want_ms}"
            );
        };
        close(latency.mean(), 50.5);
        close(latency.quantile(0.5), 50.0);
        close(latency.quantile(0.99), 99.0);
        close(latency.quantile(1.0), 100.0);
    }

    #[test]
    fn memory_does_not_grow_with_the_number_of_samples() {
        let mut latency = Latency::default();
        let before = latency.micros.distinct_values();
        for i in 0..1_000_000u64 {
            latency.record(Duration::from_micros(i % 50_000));
        }
        latency.record(Duration::from_secs(10 * 3600));
        assert_eq!(latency.micros.distinct_values(), before);
        assert_eq!(latency.count(), 1_000_001);
        assert_eq!(latency.quantile(1.0).as_secs() / 3600, 1);
    }
}
