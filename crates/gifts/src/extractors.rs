//! What handlers take from a request besides the body: a path id, and the
//! signed-in user.

use applause_core::ErrorCode;
use applause_web::{ApiError, Principal};
use axum::http::HeaderMap;

use crate::service::GiftService;

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

/// The signed-in user, from the `Authorization` header (401 without one).
pub(crate) fn principal(svc: &GiftService, headers: &HeaderMap) -> Result<Principal, ApiError> {
    svc.0
        .auth
        .verify_request(headers)
        .map_err(|_| ApiError::from(ErrorCode::Unauthorized))
}
