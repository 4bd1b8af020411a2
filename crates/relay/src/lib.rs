//! The event pipeline, from the ledger to everyone else: publishes committed
//! room events to the bus in `seq` order, relays what is left in the outbox,
//! counts gifts and refunds on the leaderboards (and rebuilds them), pushes a
//! room's live top 10, and runs the sweepers (red-packet expiry, idempotency
//! expiry).
//!
//! It knows no HTTP: it takes the [`Ledger`] handle, the bus, the boards and
//! a clock, and the binary starts it per process kind.
//!
//! - Events: the committer announces each batch (a `CommitNotice`); they are
//!   published in order and then marked published in the ledger. Whatever is
//!   still unmarked a couple of seconds after its commit (a crash between
//!   commit and publish, a bus outage, a dropped notice, a `Gap` answer) is
//!   published again by the **relay** from the ledger's outbox. The bus drops
//!   an already published `seq`, so a relayed event is never shown twice.
//! - Leaderboards: updates are idempotent by gift id. A failed update marks
//!   the boards dirty, and a lost Redis has no generation marker: either way
//!   the boards are **rebuilt** from the ledger, while purchases go on.

mod boards;
mod metrics;
mod publisher;
mod push;
mod sweepers;
mod tasks;
#[cfg(test)]
mod testkit;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use applause_bus::EventBus;
use applause_core::clock::SharedClock;
use applause_leaderboard::Leaderboard;
use applause_ledger::Ledger;
use tokio::sync::Notify;

pub use boards::rebuild_boards;
pub use sweepers::{sweep_idempotency, sweep_red_packets};
pub use tasks::Tasks;

/// What a process's relay runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// How often the live leaderboard of a busy room may be pushed.
    pub leaderboard_push_interval: Duration,
    /// Whether this process rebuilds the leaderboards from the ledger (at
    /// start, after a failed update, when Redis lost them). Gateway nodes
    /// leave that to the gifts nodes: a fleet of gateways restarting would
    /// otherwise each read every gift in the ledger.
    pub rebuild_boards: bool,
    /// Whether this process runs the sweepers (expired red packets return
    /// their rest; old idempotency records are deleted). Gateway nodes leave
    /// them to the gifts nodes.
    pub sweepers: bool,
    /// How long idempotency records are kept (at least 24 h).
    pub idempotency_retention: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            leaderboard_push_interval: Duration::from_millis(1_000),
            rebuild_boards: true,
            sweepers: true,
            idempotency_retention: Duration::from_secs(48 * 3600),
        }
    }
}

impl RelayConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.idempotency_retention < Duration::from_secs(24 * 3600) {
            return Err("idempotency retention must be at least 24 hours".into());
        }
        if self.leaderboard_push_interval < Duration::from_millis(50) {
            return Err("leaderboard push interval must be at least 50 ms".into());
        }
        Ok(())
    }
}

/// What every task of the relay shares.
pub(crate) struct Shared {
    pub config: RelayConfig,
    pub ledger: Ledger,
    pub bus: Arc<dyn EventBus>,
    pub boards: Arc<dyn Leaderboard>,
    pub clock: SharedClock,
    pub tasks: Tasks,
    pub metrics: metrics::Metrics,
    /// Wakes the relay at once (a `Gap` answer, a drain).
    pub relay_now: Notify,
    pub boards_dirty: AtomicBool,
    /// Rooms whose boards changed since the last push tick.
    pub touched_rooms: Mutex<HashSet<String>>,
}

/// Handle to a running relay; cheap to clone.
#[derive(Clone)]
pub struct Relay(Arc<Shared>);

impl Relay {
    /// Starts the relay's tasks on `tasks` (the caller's shutdown cancels and
    /// awaits them). Call from within a tokio runtime.
    pub fn start(
        config: RelayConfig,
        ledger: Ledger,
        bus: Arc<dyn EventBus>,
        boards: Arc<dyn Leaderboard>,
        clock: SharedClock,
        registry: &prometheus::Registry,
        tasks: &Tasks,
    ) -> Relay {
        let s = Arc::new(Shared {
            config,
            ledger,
            bus,
            boards,
            clock,
            tasks: tasks.clone(),
            metrics: metrics::Metrics::register(registry),
            relay_now: Notify::new(),
            boards_dirty: AtomicBool::new(true),
            touched_rooms: Mutex::new(HashSet::new()),
        });
        if let Some(rx) = s.ledger.take_commit_notices() {
            tasks.spawn_loop(publisher::notice_loop(s.clone(), rx));
        }
        tasks.spawn_loop(publisher::relay_loop(s.clone()));
        if s.config.rebuild_boards {
            tasks.spawn_loop(boards::boards_loop(s.clone()));
        }
        tasks.spawn_loop(push::push_loop(s.clone()));
        if s.config.sweepers {
            tasks.spawn_loop(sweepers::red_packet_loop(s.clone()));
            tasks.spawn_loop(sweepers::idempotency_loop(s.clone()));
        }
        Relay(s)
    }

    /// What this relay runs.
    pub fn config(&self) -> &RelayConfig {
        &self.0.config
    }

    /// Waits until every event committed so far has been handed to the bus
    /// (for graceful shutdown and tests), at most `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            match self.0.ledger.unpublished_events(i64::MAX, 1).await {
                Ok(v) if v.is_empty() => return,
                _ => {
                    self.0.relay_now.notify_one();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// docs/architecture.md: the relay knows no HTTP and imports neither
    /// service.
    #[test]
    fn the_relay_depends_on_no_http_crate() {
        let manifest = include_str!("../Cargo.toml");
        for dep in [
            "axum",
            "hyper",
            "tower",
            "applause-web",
            "applause-gifts",
            "applause-gateway",
        ] {
            assert!(
                !manifest.lines().any(|l| l.trim_start().starts_with(dep)),
                "applause-relay depends on {dep}"
            );
        }
    }
}
