//! Prometheus metrics of the boards: update lag, Redis errors and rebuilds.
//!
//! Registered on a registry the caller passes, so the binary decides where
//! they are exported and tests can use a private registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

/// Handles to the leaderboard metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Seconds from a gift's commit time (`at_ms`) to its update being applied.
    pub update_lag: Histogram,
    /// Failed Redis round trips (each retry counts).
    pub redis_errors: IntCounter,
    /// Completed rebuilds.
    pub rebuilds: IntCounter,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let update_lag = Histogram::with_opts(
            HistogramOpts::new(
                "applause_leaderboard_update_lag_seconds",
                "Time from a gift's commit to its leaderboard update being applied.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let redis_errors = IntCounter::new(
            "applause_leaderboard_redis_errors_total",
            "Failed Redis round trips of the leaderboard.",
        )?;
        let rebuilds = IntCounter::new(
            "applause_leaderboard_rebuilds_total",
            "Leaderboard rebuilds completed.",
        )?;
        registry.register(Box::new(update_lag.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        registry.register(Box::new(rebuilds.clone()))?;
        Ok(Self {
            update_lag,
            redis_errors,
            rebuilds,
        })
    }

    /// Records the lag of an update committed at `at_ms`, applied at `now_ms`.
    pub(crate) fn observe_lag(&self, at_ms: i64, now_ms: i64) {
        // Clock skew between the ledger host and this one can make it
        // negative; a negative lag is recorded as zero.
        let lag_ms = now_ms.saturating_sub(at_ms).max(0);
        self.update_lag.observe(lag_ms as f64 / 1000.0);
    }
}
