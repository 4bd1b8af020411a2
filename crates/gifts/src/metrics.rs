//! The gift service's Prometheus metrics (the pipeline's are the relay's).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub(crate) struct Metrics {
    pub purchases: IntCounterVec,
    pub purchase_seconds: Histogram,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Metrics {
        let m = Metrics {
            purchases: IntCounterVec::new(
                Opts::new(
                    "applause_purchases_total",
                    "Gift purchases by outcome (created, replayed, or the error code).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            purchase_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "applause_purchase_seconds",
                    "Gift purchase latency, request to response.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.purchases.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.purchase_seconds.clone()),
        ] {
            let _ = registry.register(c);
        }
        m
    }
}
