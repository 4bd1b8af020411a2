//! The gift service's routes (SPEC §3) and the JSON fallbacks every node's
//! router ends with.

use applause_core::ErrorCode;
use applause_web::ApiError;
use axum::routing::{get, post};
use axum::Router;

use crate::service::GiftService;
use crate::{boards, finance, gifts, redpackets, refunds, rooms, statements, wallet};

impl GiftService {
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
