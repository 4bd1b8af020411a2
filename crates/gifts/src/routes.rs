//! The gift service's routes (SPEC §3) and the JSON fallbacks every node's
//! router ends with.

use applause_core::ErrorCode;
use applause_web::ApiError;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::GiftService;
use crate::{boards, finance, gifts, redpackets, refunds, rooms, statements, wallet};

impl GiftService {
    /// The HTTP routes of the gift service (everything but `/v1/ws` and the
    /// operator routes, which every node serves: the binary's `ops`), each
    /// with its OpenAPI description: a route is added only through
    /// `routes!`, which takes its path and method from the handler's
    /// `#[utoipa::path]`, so no route goes undescribed.
    pub fn api(&self) -> OpenApiRouter {
        OpenApiRouter::new()
            .routes(routes!(rooms::stickers))
            .routes(routes!(rooms::create))
            .routes(routes!(rooms::get))
            .routes(routes!(rooms::end))
            .routes(routes!(gifts::purchase))
            .routes(routes!(boards::room_top))
            .routes(routes!(boards::room_me))
            .routes(routes!(boards::broadcasters))
            .routes(routes!(wallet::top_up))
            .routes(routes!(wallet::wallet))
            .routes(routes!(gifts::get))
            .routes(routes!(gifts::ack_http))
            .routes(routes!(finance::revenue))
            .routes(routes!(finance::summary))
            .routes(routes!(refunds::refund))
            .routes(routes!(statements::statement))
            .routes(routes!(redpackets::drop_packet))
            .routes(routes!(redpackets::get))
            .routes(routes!(redpackets::claim))
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
