//! The relay's Prometheus metrics (their names predate the crate and stay).

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

#[derive(Clone)]
pub(crate) struct Metrics {
    pub published: IntCounter,
    pub publish_errors: IntCounter,
    pub relayed: IntCounter,
    pub publish_lag_seconds: Histogram,
    pub board_errors: IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Metrics {
        let m = Metrics {
            published: IntCounter::new(
                "applause_bus_published_total",
                "Room events published to the bus.",
            )
            .expect("valid metric"),
            publish_errors: IntCounter::new(
                "applause_bus_publish_errors_total",
                "Failed publish attempts (events stay in the outbox).",
            )
            .expect("valid metric"),
            relayed: IntCounter::new(
                "applause_outbox_relayed_total",
                "Events published by the outbox relay (after a crash or bus outage).",
            )
            .expect("valid metric"),
            publish_lag_seconds: Histogram::with_opts(
                HistogramOpts::new("applause_bus_publish_lag_seconds", "Commit to bus publish.")
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
                    ]),
            )
            .expect("valid metric"),
            board_errors: IntCounter::new(
                "applause_leaderboard_errors_total",
                "Failed leaderboard updates (boards are rebuilt).",
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.published.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.publish_errors.clone()),
            Box::new(m.relayed.clone()),
            Box::new(m.publish_lag_seconds.clone()),
            Box::new(m.board_errors.clone()),
        ] {
            let _ = registry.register(c);
        }
        m
    }
}
