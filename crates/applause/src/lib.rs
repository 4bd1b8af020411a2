//! The `applause` binary's library: settings, and the wiring of ledger, bus,
//! leaderboards, gift service and gateway into one of three process kinds —
//! embedded (`serve`: everything on one port), `gifts` (HTTP API) and
//! `gateway` (WebSockets). `run` serves a bound listener until `shutdown`
//! resolves, so tests bind `127.0.0.1:0` and spawn it.

pub mod config;
pub mod demo;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use applause_bus::{EventBus, InProcessBus, RedisBus};
use applause_core::clock::{SharedClock, SystemClock};
use applause_gateway::{AckHandler, Gateway, RoomDirectory, RoomInfo};
use applause_gifts::GiftService;
use applause_leaderboard::{Leaderboard, MemoryBoards, RedisBoards};
use applause_ledger::Ledger;
use applause_relay::{Relay, RelayConfig, Tasks};
use applause_web::{ApiError, Authenticator, Principal};
use async_trait::async_trait;
use axum::Router;

pub use config::{CommonArgs, Settings};

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Gift service and gateway on one port (`applause serve`).
    Embedded,
    /// The HTTP API only (`applause gifts`).
    Gifts,
    /// WebSockets only (`applause gateway`).
    Gateway,
}

/// A built process, ready to serve.
pub struct App {
    pub gifts: GiftService,
    pub gateway: Option<Gateway>,
    pub relay: Relay,
    pub router: Router,
    pub ledger: Ledger,
    /// The process's background tasks; `run` cancels and awaits them.
    pub tasks: Tasks,
}

/// Opens the ledger with the process's settings.
pub async fn open_ledger(
    settings: &Settings,
    registry: &prometheus::Registry,
) -> anyhow::Result<Ledger> {
    if settings.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("--data-dir {}", settings.data_dir.display()))?;
    }
    Ledger::open(&settings.database_url, settings.ledger.clone(), registry)
        .await
        .with_context(|| {
            format!(
                "cannot open the ledger at {}",
                redact(&settings.database_url)
            )
        })
}

/// Hides a password in a database URL before it is printed.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub async fn open_boards(
    settings: &Settings,
    registry: &prometheus::Registry,
) -> anyhow::Result<Arc<dyn Leaderboard>> {
    let metrics = applause_leaderboard::Metrics::register(registry).ok();
    Ok(match &settings.redis_url {
        Some(url) => {
            let mut b = RedisBoards::connect(url, &format!("{}lb:", settings.redis_prefix))
                .await
                .with_context(|| format!("cannot reach Redis at {url}"))?;
            if let Some(m) = metrics {
                b = b.with_metrics(m);
            }
            Arc::new(b)
        }
        None => {
            let mut b = MemoryBoards::new();
            if let Some(m) = metrics {
                b = b.with_metrics(m);
            }
            Arc::new(b)
        }
    })
}

async fn open_bus(settings: &Settings) -> anyhow::Result<Arc<dyn EventBus>> {
    if let Some(url) = &settings.redis_url {
        warn_unless_noeviction(url).await;
    }
    Ok(match &settings.redis_url {
        Some(url) => Arc::new(
            RedisBus::connect(
                url,
                &format!("{}bus:", settings.redis_prefix),
                settings.history,
            )
            .await
            .with_context(|| format!("cannot reach Redis at {url}"))?,
        ),
        None => Arc::new(InProcessBus::new(settings.history)),
    })
}

/// Logs a warning when Redis may evict keys (see [`applause_bus::eviction_policy`]).
async fn warn_unless_noeviction(url: &str) {
    match applause_bus::eviction_policy(url).await {
        Ok(Some(policy)) if policy != "noeviction" => tracing::warn!(
            %policy,
            "Redis maxmemory-policy is not noeviction: under memory pressure it may drop \
             rooms' seq and history keys (viewers resync) and leaderboard keys (boards \
             are rebuilt); run Redis with --maxmemory-policy noeviction"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not read Redis's maxmemory-policy"),
    }
}

/// The gateway's view of rooms, read from the ledger.
struct LedgerRooms(Ledger);

#[async_trait]
impl RoomDirectory for LedgerRooms {
    async fn room(&self, room_id: &str) -> Result<Option<RoomInfo>, ApiError> {
        let room = self.0.room(room_id).await.map_err(ApiError::unavailable)?;
        Ok(room.map(|r| RoomInfo {
            room_id: r.room_id,
            broadcaster_id: r.broadcaster_id,
            epoch: r.epoch,
            live: r.live,
            published_seq: r.published_seq,
        }))
    }
}

/// WebSocket acks go to the gift service like HTTP ones.
struct GiftAcks(GiftService);

#[async_trait]
impl AckHandler for GiftAcks {
    async fn ack(&self, who: &Principal, gift_id: &str, text: &str) -> Result<(), ApiError> {
        self.0.acknowledge(who, gift_id, text).await.map(|_| ())
    }
}

/// Builds a process of the given kind.
pub async fn build(settings: &Settings, secret: &[u8], mode: Mode) -> anyhow::Result<App> {
    if mode != Mode::Embedded && settings.redis_url.is_none() {
        anyhow::bail!("--redis-url is required for separate gateway and gifts processes (they talk over Redis)");
    }
    let auth = Authenticator::new(secret).map_err(anyhow::Error::msg)?;
    let registry = prometheus::Registry::new();
    // The one wall clock of the process (the ledger reads its own until it
    // takes one too).
    let clock: SharedClock = Arc::new(SystemClock);
    let ledger = open_ledger(settings, &registry).await?;
    let bus = open_bus(settings).await?;
    let boards = open_boards(settings, &registry).await?;
    let tasks = Tasks::new();
    let relay = Relay::start(
        relay_config(mode, &settings.relay),
        ledger.clone(),
        bus.clone(),
        boards.clone(),
        clock.clone(),
        &registry,
        &tasks,
    );
    let gifts = GiftService::start(
        settings.gifts.clone(),
        auth.clone(),
        ledger.clone(),
        settings.catalog.clone(),
        boards,
        bus.clone(),
        registry.clone(),
    );
    let gateway = match mode {
        Mode::Gifts => None,
        Mode::Embedded | Mode::Gateway => Some(
            Gateway::new(
                settings.gateway.clone(),
                auth,
                bus,
                Arc::new(LedgerRooms(ledger.clone())),
                Arc::new(GiftAcks(gifts.clone())),
                &registry,
            )
            .map_err(|e| anyhow::anyhow!("gateway: {e}"))?,
        ),
    };
    let router = match (mode, &gateway) {
        (Mode::Embedded, Some(g)) => gifts.router().merge(g.router()),
        (Mode::Gateway, Some(g)) => gifts.ops_router().merge(g.router()),
        _ => gifts.router(),
    };
    let router = applause_gifts::with_json_fallbacks(router);
    Ok(App {
        gifts,
        gateway,
        relay,
        router,
        ledger,
        tasks,
    })
}

/// What a process of this kind runs of the pipeline.
pub fn relay_config(mode: Mode, settings: &RelayConfig) -> RelayConfig {
    RelayConfig {
        // Gateway nodes leave the leaderboards' upkeep to the gifts nodes.
        rebuild_boards: mode != Mode::Gateway,
        ..settings.clone()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: stops
/// accepting, closes WebSockets with 1001, lets in-flight requests finish,
/// publishes what was committed.
pub async fn run(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gateway = app.gateway.clone();
    let server = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        // Upgraded WebSockets are not tracked by the HTTP server: close them here.
        if let Some(g) = gateway {
            g.shutdown().await;
        }
    });
    server.await.context("server failed")?;
    drop(stop_rx);
    app.relay.drain(Duration::from_secs(5)).await;
    app.tasks.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining connections and in-flight purchases");
}
