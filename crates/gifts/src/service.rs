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
    /// Builds the service; it spawns nothing (see [`GiftService::upkeep`]).
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
        GiftService(Arc::new(inner))
    }

    /// The service's one background loop (pruning idle rate-limit buckets),
    /// for the caller to spawn on the tasks it shuts down; it never ends by
    /// itself.
    pub fn upkeep(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let inner = self.0.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                inner.limiter.prune();
            }
        }
    }

    /// The ledger this service writes to.
    pub fn ledger(&self) -> &Ledger {
        &self.0.ledger
    }
}
