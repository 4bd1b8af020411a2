//! The gateway's Prometheus metrics: connections, deliveries, slow-consumer
//! closes, frames left to the writer tasks, resume outcomes, refused connects and commit-to-socket latency.

use std::time::Duration;

use prometheus::{
    Counter, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Cheap to clone: every handle is an `Arc` inside.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub connections: IntGauge,
    pub deliveries: IntCounter,
    pub frames_queued: IntCounter,
    pub slow_consumer_closes: IntCounter,
    pub resumes: IntCounterVec,
    pub connects_refused: IntCounterVec,
    pub protocol_errors: IntCounterVec,
    pub fanout_latency: Histogram,
    pub socket_writes: IntCounter,
    pub fanout_rounds: IntCounter,
    pub fanout_round_messages: IntCounter,
    pub fanout_window_waits: IntCounter,
    pub fanout_window_seconds: Counter,
    pub fanout_staggered: IntCounter,
}

impl Metrics {
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::unregistered();
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.frames_queued.clone()))?;
        registry.register(Box::new(m.slow_consumer_closes.clone()))?;
        registry.register(Box::new(m.resumes.clone()))?;
        registry.register(Box::new(m.connects_refused.clone()))?;
        registry.register(Box::new(m.protocol_errors.clone()))?;
        registry.register(Box::new(m.fanout_latency.clone()))?;
        registry.register(Box::new(m.socket_writes.clone()))?;
        registry.register(Box::new(m.fanout_rounds.clone()))?;
        registry.register(Box::new(m.fanout_round_messages.clone()))?;
        registry.register(Box::new(m.fanout_window_waits.clone()))?;
        registry.register(Box::new(m.fanout_window_seconds.clone()))?;
        registry.register(Box::new(m.fanout_staggered.clone()))?;
        Ok(m)
    }

    /// The same metrics on no registry (unit tests).
    pub(crate) fn unregistered() -> Self {
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        Self {
            connections: IntGauge::new(
                "applause_gateway_connections",
                "Open WebSocket connections",
            )
            .expect("valid metric"),
            deliveries: IntCounter::new(
                "applause_gateway_deliveries_total",
                "Room event frames written to sockets",
            )
            .expect("valid metric"),
            frames_queued: IntCounter::new(
                "applause_gateway_frames_queued_total",
                "Frames that did not go straight to the socket and waited in their connection's queue for its writer",
            )
            .expect("valid metric"),
            slow_consumer_closes: IntCounter::new(
                "applause_gateway_slow_consumer_closes_total",
                "Connections closed with 4008 because their outbound queue overflowed",
            )
            .expect("valid metric"),
            resumes: IntCounterVec::new(
                Opts::new(
                    "applause_gateway_resumes_total",
                    "Resume requests by outcome",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            connects_refused: IntCounterVec::new(
                Opts::new(
                    "applause_gateway_connects_refused_total",
                    "WebSocket connects refused before the upgrade, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            protocol_errors: IntCounterVec::new(
                Opts::new(
                    "applause_gateway_protocol_errors_total",
                    "Client frames refused, by error code",
                ),
                &["code"],
            )
            .expect("valid metric"),
            fanout_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "applause_gateway_fanout_latency_seconds",
                    "From an event's ledger commit to its frame being flushed to a socket",
                )
                .buckets(buckets),
            )
            .expect("valid metric"),
            socket_writes: IntCounter::new(
                "applause_gateway_socket_writes_total",
                "Writes to WebSocket sockets that took bytes (frames per write = deliveries / writes)",
            )
            .expect("valid metric"),
            fanout_rounds: IntCounter::new(
                "applause_gateway_fanout_rounds_total",
                "Fan-out rounds (bus messages taken and fanned out together)",
            )
            .expect("valid metric"),
            fanout_round_messages: IntCounter::new(
                "applause_gateway_fanout_round_messages_total",
                "Bus messages taken in fan-out rounds",
            )
            .expect("valid metric"),
            fanout_window_waits: IntCounter::new(
                "applause_gateway_fanout_window_waits_total",
                "Holds of a busy or heavy room's events released (each waited for more of the room's events)",
            )
            .expect("valid metric"),
            fanout_window_seconds: Counter::new(
                "applause_gateway_fanout_window_seconds_total",
                "Time the released holds of busy or heavy rooms' events lasted, in all",
            )
            .expect("valid metric"),
            fanout_staggered: IntCounter::new(
                "applause_gateway_fanout_staggered_total",
                "Events of heavy rooms sent staggered: to half the room at once, to the other half with the room's next event",
            )
            .expect("valid metric"),
        }
    }

    /// Records one fan-out round of `messages`.
    pub(crate) fn fanout_round(&self, messages: usize) {
        self.fanout_rounds.inc();
        self.fanout_round_messages.inc_by(messages as u64);
    }

    /// Records a hold of a room's events released after `waited`.
    pub(crate) fn fanout_held(&self, waited: Duration) {
        self.fanout_window_waits.inc();
        self.fanout_window_seconds.inc_by(waited.as_secs_f64());
    }

    /// Records event frames taken whole by a socket at `now_ms` (read once
    /// per fan-out round or drain, not per frame): one delivery each, with
    /// its latency from the event's commit time.
    pub(crate) fn delivered(&self, now_ms: i64, committed_at_ms: impl Iterator<Item = i64>) {
        let mut n = 0;
        for at in committed_at_ms {
            n += 1;
            let ms = (now_ms - at).max(0);
            self.fanout_latency.observe(ms as f64 / 1_000.0);
        }
        if n > 0 {
            self.deliveries.inc_by(n);
        }
    }
}

/// Milliseconds since the Unix epoch, as the events' commit times count.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
