//! The gift service: the HTTP API of SPEC §3 (stickers, rooms, top-ups,
//! wallets, gift purchases, acknowledgements, leaderboards, finance, health
//! and metrics). It orchestrates ledger → event bus → leaderboards: the
//! ledger commits, a publisher forwards the committed events to the bus in
//! `seq` order and counts the gifts on the boards.
//!
//! It never imports the gateway; the binary wires both.

mod boards;
mod body;
pub mod decode;
mod finance;
mod gifts;
mod idempotency;
mod limits;
mod metrics;
mod ops;
mod publisher;
mod redpackets;
mod refunds;
mod render;
mod rooms;
mod statements;
mod wallet;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use applause_bus::EventBus;
use applause_core::{Catalog, ErrorCode};
use applause_leaderboard::Leaderboard;
use applause_ledger::Ledger;
use applause_web::{ApiError, Authenticator, Principal};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;

pub use limits::RateLimit;
pub use publisher::{rebuild as rebuild_boards, Publisher};

/// Settings of the gift service, validated before any port is bound.
#[derive(Debug, Clone)]
pub struct GiftsConfig {
    /// Gift purchases per user: sustained rate and burst.
    pub rate: RateLimit,
    /// Words that may not appear in gift messages or acknowledgements (lowercase).
    pub blocked_words: HashSet<String>,
    /// How long idempotency records are kept (at least 24 h).
    pub idempotency_retention: Duration,
    /// The largest request body accepted, in bytes.
    pub body_bytes_max: usize,
    /// How often the live leaderboard of a busy room may be pushed.
    pub leaderboard_push_interval: Duration,
    /// How long a red packet stays claimable when the drop does not say
    /// (SPEC §7: default 24 h, at most 24 h).
    pub red_packet_expiry: Duration,
    /// Whether this process rebuilds the leaderboards from the ledger (at
    /// start, after a failed update, when Redis lost them). Gateway nodes
    /// leave that to the gifts nodes: a fleet of gateways restarting would
    /// otherwise each read every gift in the ledger.
    pub rebuild_boards: bool,
}

impl Default for GiftsConfig {
    fn default() -> Self {
        Self {
            rate: RateLimit {
                per_second: 50,
                burst: 100,
            },
            blocked_words: HashSet::new(),
            idempotency_retention: Duration::from_secs(48 * 3600),
            body_bytes_max: 16 * 1024,
            leaderboard_push_interval: Duration::from_millis(250),
            red_packet_expiry: Duration::from_secs(redpackets::EXPIRES_IN_S_MAX),
            rebuild_boards: true,
        }
    }
}

impl GiftsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.rate.per_second == 0 || self.rate.burst == 0 {
            return Err(
                "gift rate limit must be at least 1 per second with a burst of at least 1".into(),
            );
        }
        if self.idempotency_retention < Duration::from_secs(24 * 3600) {
            return Err("idempotency retention must be at least 24 hours".into());
        }
        if !(1024..=1024 * 1024).contains(&self.body_bytes_max) {
            return Err("body size limit must be between 1 KiB and 1 MiB".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(redpackets::EXPIRES_IN_S_MAX))
            .contains(&self.red_packet_expiry)
        {
            return Err("red packet expiry must be between 1 second and 24 hours".into());
        }
        if self.leaderboard_push_interval < Duration::from_millis(50) {
            return Err("leaderboard push interval must be at least 50 ms".into());
        }
        Ok(())
    }

    /// Reads a blocked-words file: one word or phrase per line, `#` comments.
    pub fn parse_blocked_words(text: &str) -> HashSet<String> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_lowercase())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// Everything a request handler needs.
pub(crate) struct Inner {
    pub config: GiftsConfig,
    pub auth: Authenticator,
    pub ledger: Ledger,
    pub catalog: Catalog,
    pub boards: Arc<dyn Leaderboard>,
    pub bus: Arc<dyn EventBus>,
    pub limiter: limits::RateLimiter,
    pub in_flight: dashmap::DashSet<(String, String)>,
    pub metrics: metrics::Metrics,
    pub registry: prometheus::Registry,
    pub publisher: Publisher,
}

/// The gift service; cheap to clone.
#[derive(Clone)]
pub struct GiftService(pub(crate) Arc<Inner>);

impl GiftService {
    /// Builds the service and starts its background tasks (publisher, relay,
    /// leaderboard upkeep, sweepers). Call from within a tokio runtime.
    pub fn start(
        config: GiftsConfig,
        auth: Authenticator,
        ledger: Ledger,
        catalog: Catalog,
        boards: Arc<dyn Leaderboard>,
        bus: Arc<dyn EventBus>,
        registry: prometheus::Registry,
    ) -> GiftService {
        let metrics = metrics::Metrics::register(&registry);
        let publisher = Publisher::start(
            ledger.clone(),
            bus.clone(),
            boards.clone(),
            metrics.clone(),
            config.leaderboard_push_interval,
            config.rebuild_boards,
        );
        let inner = Inner {
            limiter: limits::RateLimiter::new(config.rate),
            config,
            auth,
            ledger,
            catalog,
            boards,
            bus,
            in_flight: dashmap::DashSet::new(),
            metrics,
            registry,
            publisher,
        };
        let svc = GiftService(Arc::new(inner));
        svc.spawn_sweepers();
        redpackets::spawn_sweeper(&svc);
        svc
    }

    fn spawn_sweepers(&self) {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.limiter.prune();
                let cutoff =
                    applause_web::now_ms() - inner.config.idempotency_retention.as_millis() as i64;
                if let Err(e) = inner.ledger.sweep_idempotency(cutoff).await {
                    tracing::warn!(error = %e, "idempotency sweep failed");
                }
            }
        });
    }

    /// The HTTP routes of the gift service (everything but `/v1/ws`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/stickers", get(rooms::stickers))
            .route("/v1/rooms", post(rooms::create))
            .route("/v1/rooms/{room_id}", get(rooms::get))
            .route("/v1/rooms/{room_id}/end", post(rooms::end))
            .route("/v1/rooms/{room_id}/gifts", post(gifts::purchase))
            .route("/v1/rooms/{room_id}/leaderboard", get(boards::room_top))
            .route("/v1/rooms/{room_id}/leaderboard/me", get(boards::room_me))
            .route("/v1/leaderboards/broadcasters", get(boards::broadcasters))
            .route("/v1/topups", post(wallet::top_up))
            .route("/v1/wallet", get(wallet::wallet))
            .route("/v1/gifts/{gift_id}", get(gifts::get))
            .route("/v1/gifts/{gift_id}/ack", post(gifts::ack_http))
            .route("/v1/finance/revenue", get(finance::revenue))
            .route("/v1/finance/summary", get(finance::summary))
            .route("/v1/finance/gifts/{gift_id}/refund", post(refunds::refund))
            .route(
                "/v1/finance/broadcasters/{broadcaster_id}/statement",
                get(statements::statement),
            )
            .route(
                "/v1/rooms/{room_id}/red-packets",
                post(redpackets::drop_packet),
            )
            .route("/v1/red-packets/{packet_id}", get(redpackets::get))
            .route("/v1/red-packets/{packet_id}/claim", post(redpackets::claim))
            .with_state(self.clone())
            .merge(self.ops_router())
    }

    /// Only the operator endpoints (for gateway-only nodes).
    pub fn ops_router(&self) -> Router {
        Router::new()
            .route("/healthz", get(ops::healthz))
            .route("/readyz", get(ops::readyz))
            .route("/metrics", get(ops::metrics))
            .with_state(self.clone())
    }

    /// Acknowledges a gift on behalf of its room's broadcaster (the HTTP
    /// endpoint and the gateway's WebSocket `ack` both end here).
    pub async fn acknowledge(
        &self,
        who: &Principal,
        gift_id: &str,
        text: &str,
    ) -> Result<applause_ledger::AckOutcome, ApiError> {
        gifts::acknowledge(self, who, gift_id, text).await
    }

    /// The ledger this service writes to.
    pub fn ledger(&self) -> &Ledger {
        &self.0.ledger
    }

    /// Rebuilds every leaderboard from the ledger.
    pub async fn rebuild_leaderboards(
        &self,
    ) -> Result<applause_leaderboard::RebuildReport, String> {
        publisher::rebuild(&self.0.ledger, self.0.boards.as_ref()).await
    }

    /// Waits until every committed event so far has been handed to the bus
    /// (for graceful shutdown and tests), at most `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        self.0.publisher.drain(timeout).await
    }
}

/// One path segment naming a room, gift, packet or user. A segment that is
/// not valid UTF-8 cannot name anything: it becomes the empty id, which every
/// handler refuses with its own JSON error (axum's rejection is plain text).
pub(crate) struct Id(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Id {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let id = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| id)
            .unwrap_or_default();
        Ok(Id(id))
    }
}

/// Extracts the signed-in user from the `Authorization` header.
pub(crate) fn principal(svc: &GiftService, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::from(ErrorCode::Unauthorized))
        })
        .transpose()?;
    svc.0
        .auth
        .verify_header(header)
        .map_err(|_| ApiError::from(ErrorCode::Unauthorized))
}

/// Gives unknown routes a JSON 404 and wrong methods a JSON 405.
pub fn with_json_fallbacks(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .layer(axum::middleware::map_response(close_after_unread_body))
}

/// A body refused for its size was not read to the end, so the server closes
/// the connection after the answer: say so, or a keep-alive client reuses
/// the connection and its next request fails (`IncompleteMessage`).
async fn close_after_unread_body(mut resp: axum::response::Response) -> axum::response::Response {
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

pub use finance::{check_json, parse_interval, revenue_csv, summary_json};
