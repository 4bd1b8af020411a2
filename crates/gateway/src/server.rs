//! `GET /v1/ws?room=…`: everything decided before the upgrade (shutdown,
//! origin, connection cap, per-IP rate, token, room) answered as plain HTTP errors,
//! then the upgrade: the handshake is answered here and the raw connection
//! split into a read half (the connection's decoder) and a write half (its
//! outbox, which writes frames encoded once per event).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use applause_core::ErrorCode;
use applause_web::openapi::ObjectId;
use applause_web::{ApiError, Principal};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Deserialize;
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::connection::{self, Session};
use crate::gateway::{Gateway, Inner};
use crate::handshake;

#[derive(Debug, Deserialize)]
struct WsQuery {
    room: Option<String>,
    access_token: Option<String>,
}

impl Gateway {
    /// The router serving `GET /v1/ws`. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` to enable the
    /// per-IP connect rate limit (without it the limit is not applied).
    pub fn router(&self) -> Router {
        self.api().split_for_parts().0
    }

    /// [`Gateway::router`] with its OpenAPI description.
    pub fn api(&self) -> OpenApiRouter {
        OpenApiRouter::new()
            .routes(routes!(ws_handler))
            .with_state(self.inner.clone())
    }
}

/// `listener` with TCP_NODELAY set on every connection it accepts: serve
/// the gateway's router on this. The gateway writes each round's frames in
/// one write as soon as they are due; with Nagle's algorithm on, a write
/// while an earlier one is unacknowledged waits for the peer's ACK, which
/// a viewer that only reads may delay by 40 ms or more.
pub fn nodelay_listener(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn nodelay(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    }
    listener.tap_io(nodelay as fn(&mut tokio::net::TcpStream))
}

/// Holds one slot of the connection cap for as long as it lives.
struct Slot(Arc<Inner>);

impl Slot {
    fn take(inner: &Arc<Inner>) -> Option<Slot> {
        let max = inner.config.connections_max;
        inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        inner.metrics.connections.inc();
        Some(Slot(inner.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.connections.dec();
    }
}

fn refuse(inner: &Inner, reason: &str, err: ApiError) -> Response {
    inner
        .metrics
        .connects_refused
        .with_label_values(&[reason])
        .inc();
    err.into_response()
}

applause_web::api_errors!(
    WsErrors = [
        InvalidQuery,
        InvalidRequest,
        Unauthorized,
        Forbidden,
        RoomNotFound,
        RateLimited,
        Unavailable,
    ]
);

/// Open a room's WebSocket feed (SPEC §4).
///
/// A WebSocket handshake (`Connection: Upgrade`, `Upgrade: websocket`,
/// `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`) is answered 101 and
/// the connection carries the room's JSON frames; a request that is not one
/// is 400 `invalid_request`. Viewers may watch without a token; a token
/// (by `access_token` or `Authorization`) that does not verify is 401. A
/// browser's `Origin` must be allowed (403). Checked before the upgrade:
/// shutdown and the connection cap (503), the per-IP connect rate (429),
/// the token, the room (404).
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "realtime",
    operation_id = "open_websocket",
    params(
        ("room" = inline(ObjectId), Query, description = "The room to watch."),
        ("access_token" = Option<String>, Query,
            description = "A bearer token, for clients that cannot set headers."),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switching protocols: the connection is a WebSocket."),
        WsErrors,
    )
)]
async fn ws_handler(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    if inner.shutdown.is_cancelled() {
        return refuse(
            &inner,
            "shutdown",
            ApiError::new(ErrorCode::Unavailable, "the gateway is shutting down"),
        );
    }
    if !inner
        .config
        .origin_allowed(parts.headers.get(axum::http::header::ORIGIN))
    {
        return refuse(
            &inner,
            "origin",
            ApiError::new(
                ErrorCode::Forbidden,
                "this origin may not open a WebSocket here",
            ),
        );
    }
    let Ok(Query(q)) = Query::<WsQuery>::try_from_uri(&parts.uri) else {
        return refuse(
            &inner,
            "bad_query",
            ApiError::new(ErrorCode::InvalidQuery, "invalid query string"),
        );
    };
    if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        if !inner.limiter.admit(addr.ip()) {
            return refuse(
                &inner,
                "rate_limited",
                ApiError::new(
                    ErrorCode::RateLimited,
                    "too many connections from this address",
                )
                .with_retry_after(1),
            );
        }
    }
    let principal = match authenticate(&inner, &q, &parts.headers) {
        Ok(p) => p,
        Err(e) => return refuse(&inner, "unauthorized", e),
    };
    let Some(room_id) = q.room.filter(|r| applause_core::ids::is_valid_object_id(r)) else {
        return refuse(
            &inner,
            "room_not_found",
            ApiError::from(ErrorCode::RoomNotFound),
        );
    };
    let info = match inner.directory.room(&room_id).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            return refuse(
                &inner,
                "room_not_found",
                ApiError::new(ErrorCode::RoomNotFound, "no such room"),
            )
        }
        Err(e) => return refuse(&inner, "directory", e),
    };
    let upgrade = match handshake::accept(&mut parts) {
        Ok(u) => u,
        // Not a WebSocket handshake: answer in the API's JSON error shape.
        Err(why) => {
            return refuse(
                &inner,
                "not_websocket",
                ApiError::new(ErrorCode::InvalidRequest, why),
            )
        }
    };
    let Some(slot) = Slot::take(&inner) else {
        return refuse(
            &inner,
            "connections_max",
            ApiError::new(
                ErrorCode::Unavailable,
                "the gateway is at its connection limit",
            )
            .with_retry_after(1),
        );
    };
    let room = match inner.joined_room(&info).await {
        Ok(room) => room,
        Err(e) => return refuse(&inner, "bus", e),
    };
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    // A debug span: an enabled span costs every connection about 470 bytes
    // in the subscriber's registry (docs/benchmarks.md), so at the default
    // info level the few connection-scoped warnings name room and conn.
    let span = tracing::debug_span!(
        "ws",
        conn = id,
        room = %info.room_id,
        user = principal.as_ref().map_or("", |p| p.user_id.as_str()),
    );
    let session = Session {
        inner: inner.clone(),
        room,
        info,
        principal,
        id,
    };
    let response = upgrade.response();
    let on_upgrade = upgrade.on_upgrade;
    inner.tasks.spawn(
        async move {
            let _slot = slot;
            let io = match on_upgrade.await {
                Ok(upgraded) => hyper_util::rt::TokioIo::new(upgraded),
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            tracing::debug!("connected");
            // Two halves of one socket: reads and writes proceed
            // independently (the split's lock is held only within a poll).
            let (reader, writer) = tokio::io::split(io);
            connection::run(session, reader, writer).await;
            tracing::debug!("disconnected");
        }
        .instrument(span),
    );
    response
}

/// The token from `access_token` or the `Authorization` header; none is an
/// anonymous viewer, a bad one is a 401.
fn authenticate(
    inner: &Inner,
    q: &WsQuery,
    headers: &axum::http::HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let header = applause_web::authorization(headers)
        .map_err(|_| ApiError::from(ErrorCode::Unauthorized))?;
    let verified = match (&q.access_token, header) {
        (Some(token), _) => inner.auth.verify(token),
        (None, Some(h)) => inner.auth.verify_header(Some(h)),
        (None, None) => return Ok(None),
    };
    verified
        .map(Some)
        .map_err(|_| ApiError::from(ErrorCode::Unauthorized))
}
