//! The `applause` binary's library: settings, and the wiring of ledger, bus,
//! leaderboards, gift service and gateway into one of three process kinds —
//! embedded (`serve`: everything on one port), `gifts` (HTTP API) and
//! `gateway` (WebSockets). `run` serves a bound listener until `shutdown`
//! resolves, so tests bind `127.0.0.1:0` and spawn it.

pub mod config;
pub mod demo;
pub mod ops;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use applause_bus::{EventBus, InProcessBus, RedisBus};
use applause_core::clock::{SharedClock, SystemClock};
use applause_gateway::{AckHandler, Gateway, GatewayConfig, RoomDirectory, RoomInfo, Spawner};
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
    /// The HTTP API; a gateway node has none.
    pub gifts: Option<GiftService>,
    pub gateway: Option<Gateway>,
    pub relay: Relay,
    pub router: Router,
    /// The OpenAPI 3.1 description of `router`'s API routes (served at
    /// `/openapi.json`; the pages are not in it).
    pub openapi: serde_json::Value,
    pub ledger: Ledger,
    /// The process's background tasks; `run` cancels and awaits them.
    pub tasks: Tasks,
}

/// Opens the ledger with the process's settings.
pub async fn open_ledger(
    settings: &Settings,
    registry: &prometheus::Registry,
) -> anyhow::Result<Ledger> {
    open_ledger_with_clock(settings, registry, Arc::new(SystemClock)).await
}

/// [`open_ledger`] reading the time from `clock`.
pub async fn open_ledger_with_clock(
    settings: &Settings,
    registry: &prometheus::Registry,
    clock: SharedClock,
) -> anyhow::Result<Ledger> {
    if settings.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("--data-dir {}", settings.data_dir.display()))?;
    }
    Ledger::open_with_clock(
        &settings.database_url,
        settings.ledger.clone(),
        registry,
        clock,
    )
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

/// WebSocket acks go through the same checks as HTTP ones
/// ([`applause_gifts::acknowledge`]) straight to the ledger, so a gateway
/// node needs no gift service.
struct LedgerAcks {
    ledger: Ledger,
    blocked_words: HashSet<String>,
}

#[async_trait]
impl AckHandler for LedgerAcks {
    async fn ack(&self, who: &Principal, gift_id: &str, text: &str) -> Result<(), ApiError> {
        applause_gifts::acknowledge(&self.ledger, &self.blocked_words, who, gift_id, text)
            .await
            .map(|_| ())
    }
}

/// Builds a process of the given kind.
pub async fn build(settings: &Settings, secret: &[u8], mode: Mode) -> anyhow::Result<App> {
    if mode != Mode::Embedded && settings.redis_url.is_none() {
        anyhow::bail!("--redis-url is required for separate gateway and gifts processes (they talk over Redis)");
    }
    let auth = Authenticator::new(secret).map_err(anyhow::Error::msg)?;
    let registry = prometheus::Registry::new();
    // The one wall clock of the process: the ledger, the relay and the gift
    // service all read it.
    let clock: SharedClock = Arc::new(SystemClock);
    let ledger = open_ledger_with_clock(settings, &registry, clock.clone()).await?;
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
    let gifts = match mode {
        Mode::Gateway => None,
        Mode::Embedded | Mode::Gifts => Some(GiftService::start(
            settings.gifts.clone(),
            auth.clone(),
            ledger.clone(),
            settings.catalog.clone(),
            boards,
            clock,
            &registry,
        )),
    };
    if let Some(g) = &gifts {
        tasks.spawn_loop(g.upkeep());
    }
    let gateway = match mode {
        Mode::Gifts => None,
        Mode::Embedded | Mode::Gateway => Some(
            Gateway::new_on(
                gateway_config(mode, settings),
                auth,
                bus.clone(),
                Arc::new(LedgerRooms(ledger.clone())),
                Arc::new(LedgerAcks {
                    ledger: ledger.clone(),
                    blocked_words: settings.gifts.blocked_words.clone(),
                }),
                &registry,
                Spawner {
                    tracker: tasks.tracker(),
                    shutdown: tasks.child_token(),
                },
            )
            .map_err(|e| anyhow::anyhow!("gateway: {e}"))?,
        ),
    };
    // Every API route comes with its description (utoipa-axum's `routes!`):
    // the node's `/openapi.json` describes exactly what it serves.
    let description = ops::Description::default();
    let mut api =
        ops::api(ledger.clone(), bus, registry).merge(ops::description_api(description.clone()));
    if let Some(g) = &gifts {
        api = api.merge(g.api());
    }
    if let Some(g) = &gateway {
        api = api.merge(g.api());
    }
    let (router, openapi) = api.split_for_parts();
    let openapi = applause_web::openapi::document(openapi, env!("CARGO_PKG_VERSION"));
    description.set(openapi.to_string());
    // The pages use relative API paths only, so every kind of node serves
    // all of them; they are HTML, not API, and not in the description.
    let router = applause_gifts::with_json_fallbacks(router.merge(applause_pages::router()));
    Ok(App {
        gifts,
        gateway,
        relay,
        router,
        openapi,
        ledger,
        tasks,
    })
}

/// What a process of this kind runs of the pipeline: every kind publishes
/// what it commits and relays the outbox; gateway nodes leave the board
/// rebuilds and the sweepers to the gifts nodes (docs/architecture.md).
pub fn relay_config(mode: Mode, settings: &RelayConfig) -> RelayConfig {
    let gifts_node = mode != Mode::Gateway;
    RelayConfig {
        rebuild_boards: gifts_node,
        sweepers: gifts_node,
        ..settings.clone()
    }
}

/// The gateway of a process of this kind: unless `--fanout-thread` says
/// otherwise, the fan-out gets a thread of its own only where it shares the
/// process with the HTTP API and the committer (embedded). A gateway node
/// serves no purchases, and there the thread would only cost CPU per
/// delivery (docs/benchmarks.md, "the fan-out's own thread").
pub fn gateway_config(mode: Mode, settings: &Settings) -> GatewayConfig {
    GatewayConfig {
        fanout_thread: settings.fanout_thread.unwrap_or(mode == Mode::Embedded),
        ..settings.gateway.clone()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: stops
/// accepting, closes WebSockets with 1001, lets in-flight requests finish,
/// publishes what was committed, cancels and awaits every background task
/// of `app.tasks` (the gateway's included), and last stops the ledger's
/// committer once whatever was queued has committed.
pub async fn run(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gateway = app.gateway.clone();
    let server = axum::serve(
        // TCP_NODELAY on every connection: the gateway's writes must not
        // wait for the viewers' delayed ACKs (Nagle's algorithm).
        applause_gateway::nodelay_listener(listener),
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
    let served = server.await.context("server failed");
    drop(stop_rx);
    // What was committed reaches the bus first; then every background task
    // (relay, sweepers, gift-service upkeep, the gateway's dispatcher and
    // connections) is cancelled and awaited; last the committer commits
    // what is queued and ends.
    app.relay.drain(Duration::from_secs(5)).await;
    app.tasks.shutdown().await;
    app.ledger.shutdown().await;
    served
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn only_gifts_and_embedded_nodes_rebuild_boards_and_sweep() {
        // The red-packet and idempotency sweepers and the board rebuilds are
        // started by the relay only when its config says so (Relay::start).
        let base = RelayConfig::default();
        for (mode, gifts_node) in [
            (Mode::Embedded, true),
            (Mode::Gifts, true),
            (Mode::Gateway, false),
        ] {
            let c = relay_config(mode, &base);
            assert_eq!(c.rebuild_boards, gifts_node, "{mode:?}");
            assert_eq!(c.sweepers, gifts_node, "{mode:?}");
            assert_eq!(c.leaderboard_push_interval, base.leaderboard_push_interval);
        }
    }

    #[test]
    fn only_embedded_processes_fan_out_on_a_thread_of_their_own_unless_told() {
        let settings = |flag: &[&str]| {
            let args = [&["applause"][..], flag].concat();
            Cli::try_parse_from(args)
                .unwrap()
                .common
                .settings()
                .unwrap()
        };
        for (mode, default) in [
            (Mode::Embedded, true),
            (Mode::Gifts, false),
            (Mode::Gateway, false),
        ] {
            let c = gateway_config(mode, &settings(&[]));
            assert_eq!(c.fanout_thread, default, "{mode:?}");
            for told in [true, false] {
                let flag = format!("--fanout-thread={told}");
                let c = gateway_config(mode, &settings(&[&flag]));
                assert_eq!(c.fanout_thread, told, "{mode:?} {flag}");
            }
        }
        let bad = Cli::try_parse_from(["applause", "--fanout-thread", "maybe"]);
        let err = bad.err().expect("a bad value is refused").to_string();
        assert!(
            err.contains("maybe") && err.contains("--fanout-thread"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gateway_node_has_no_gift_service_but_serves_the_operator_routes() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("applause_citest_gwnode_{}:", std::process::id());
        let settings = Cli::try_parse_from([
            "applause",
            "--data-dir",
            &dir.path().display().to_string(),
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--redis-prefix",
            &prefix,
        ])
        .unwrap()
        .common
        .settings()
        .unwrap();
        let app = build(&settings, &[7u8; 32], Mode::Gateway)
            .await
            .expect("a gateway node builds (Redis on 127.0.0.1:6379)");
        assert!(app.gifts.is_none(), "a gateway node built a gift service");
        assert!(app.gateway.is_some());
        assert!(!app.relay.config().sweepers, "a gateway node sweeps");
        assert!(!app.relay.config().rebuild_boards);
        let tasks = app.tasks.clone();
        let ledger = app.ledger.clone();
        // The relay's loops and the gateway's dispatcher and sweeper.
        assert!(
            tasks.running() >= 3,
            "the relay and the gateway run on the app's tasks"
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(app, listener, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        for (path, status) in [
            ("/healthz", 200),
            ("/readyz", 200),
            ("/metrics", 200),
            // The HTTP API is not served here.
            ("/v1/stickers", 404),
        ] {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{path}");
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        // `run` returned only after every background task had ended, and
        // last stopped the committer: the ledger takes no more writes.
        assert_eq!(tasks.running(), 0);
        let after = ledger
            .create_room(applause_ledger::CreateRoomCmd {
                broadcaster_id: "b".into(),
                title: "after shutdown".into(),
            })
            .await;
        assert!(
            matches!(after, Err(applause_ledger::LedgerError::Unavailable(_))),
            "{after:?}"
        );
    }
}
