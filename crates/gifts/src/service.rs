//! The gift service's handle (`GiftService`): what every request handler
//! shares (config, token checks, ledger, catalog, boards, limiter, metrics).

use std::sync::Arc;
use std::time::Duration;

use applause_core::clock::SharedClock;
use applause_core::Catalog;
use applause_leaderboard::Leaderboard;
use applause_ledger::Ledger;
use applause_web::Authenticator;

use crate::config::GiftsConfig;
use crate::{limits, metrics};

/// Everything a request handler needs.
pub(crate) struct Inner {
    pub config: GiftsConfig,
    pub auth: Authenticator,
    pub ledger: Ledger,
    pub catalog: Catalog,
    pub boards: Arc<dyn Leaderboard>,
    /// Every time a handler reads (board windows, a packet's state).
    pub clock: SharedClock,
    pub limiter: limits::RateLimiter,
    pub in_flight: dashmap::DashSet<(String, String)>,
    pub metrics: metrics::Metrics,
}

/// The gift service; cheap to clone.
#[derive(Clone)]
pub struct GiftService(pub(crate) Arc<Inner>);

impl GiftService {
    /// Builds the service and starts its one background task (pruning idle
    /// rate-limit buckets). Call from within a tokio runtime.
    pub fn start(
        config: GiftsConfig,
        auth: Authenticator,
        ledger: Ledger,
        catalog: Catalog,
        boards: Arc<dyn Leaderboard>,
        clock: SharedClock,
        registry: &prometheus::Registry,
    ) -> GiftService {
        let metrics = metrics::Metrics::register(registry);
        let inner = Inner {
            limiter: limits::RateLimiter::new(config.rate),
            config,
            auth,
            ledger,
            catalog,
            boards,
            clock,
            in_flight: dashmap::DashSet::new(),
            metrics,
        };
        let svc = GiftService(Arc::new(inner));
        svc.spawn_upkeep();
        svc
    }

    fn spawn_upkeep(&self) {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.limiter.prune();
            }
        });
    }

    /// The ledger this service writes to.
    pub fn ledger(&self) -> &Ledger {
        &self.0.ledger
    }
}
