//! The gift service: the HTTP API of SPEC §3 (stickers, rooms, top-ups,
//! wallets, gift purchases, acknowledgements, leaderboards, finance, health
//! and metrics). Its handlers validate requests and hand commands to the
//! ledger; what happens after a commit (bus, boards, sweepers) is the
//! relay's (`applause-relay`).
//!
//! It never imports the gateway; the binary wires both.

mod boards;
mod body;
mod finance;
mod gifts;
mod idempotency;
mod limits;
mod metrics;
mod redpackets;
mod refunds;
mod render;
mod rooms;
mod statements;
mod wallet;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use applause_core::{Catalog, ErrorCode};
use applause_leaderboard::Leaderboard;
use applause_ledger::Ledger;
use applause_web::{ApiError, Authenticator, Principal};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;

pub use gifts::acknowledge;
pub use limits::RateLimit;

/// Settings of the gift service, validated before any port is bound.
#[derive(Debug, Clone)]
pub struct GiftsConfig {
    /// Gift purchases per user: sustained rate and burst.
    pub rate: RateLimit,
    /// Words that may not appear in gift messages or acknowledgements (lowercase).
    pub blocked_words: HashSet<String>,
    /// The largest request body accepted, in bytes.
    pub body_bytes_max: usize,
    /// How long a red packet stays claimable when the drop does not say
    /// (SPEC §7: default 24 h, at most 24 h).
    pub red_packet_expiry: Duration,
}

impl Default for GiftsConfig {
    fn default() -> Self {
        Self {
            rate: RateLimit {
                per_second: 50,
                burst: 100,
            },
            blocked_words: HashSet::new(),
            body_bytes_max: 16 * 1024,
            red_packet_expiry: Duration::from_secs(redpackets::EXPIRES_IN_S_MAX),
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
        if !(1024..=1024 * 1024).contains(&self.body_bytes_max) {
            return Err("body size limit must be between 1 KiB and 1 MiB".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(redpackets::EXPIRES_IN_S_MAX))
            .contains(&self.red_packet_expiry)
        {
            return Err("red packet expiry must be between 1 second and 24 hours".into());
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

    /// The HTTP routes of the gift service (everything but `/v1/ws` and the
    /// operator routes, which every node serves: the binary's `ops`).
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
    }

    /// The ledger this service writes to.
    pub fn ledger(&self) -> &Ledger {
        &self.0.ledger
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
