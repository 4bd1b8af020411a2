//! The `Idempotency-Key` of purchases and red-packet drops: reading the
//! header, marking a key in flight for the length of its request (a second
//! request meanwhile is 409), and the error for a key reused with another body.

use applause_core::ErrorCode;
use applause_web::ApiError;
use axum::http::HeaderMap;
use dashmap::DashSet;

use crate::body;

/// The longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// The request's key: required, 1–255 printable ASCII characters.
pub(crate) fn key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers.get("idempotency-key").ok_or_else(|| {
        ApiError::new(
            ErrorCode::IdempotencyKeyRequired,
            "the Idempotency-Key header is required",
        )
    })?;
    value
        .to_str()
        .ok()
        .filter(|k| body::printable_ascii(k, IDEMPOTENCY_KEY_BYTES_MAX))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdempotencyKeyRequired,
                "the Idempotency-Key header must be 1–255 printable ASCII characters",
            )
        })
}

/// Marks `(user, key)` in flight until dropped, however the request ends.
pub(crate) struct InFlight<'a> {
    set: &'a DashSet<(String, String)>,
    key: (String, String),
}

impl<'a> InFlight<'a> {
    /// `Err(409 idempotency_key_in_flight)` while another request holds it.
    pub(crate) fn enter(
        set: &'a DashSet<(String, String)>,
        user: &str,
        key: &str,
    ) -> Result<Self, ApiError> {
        let key = (user.to_owned(), key.to_owned());
        if !set.insert(key.clone()) {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyInFlight,
                "a request with this Idempotency-Key is still being processed",
            ));
        }
        Ok(Self { set, key })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set.remove(&self.key);
    }
}

pub(crate) fn key_reused() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was already used with a different request",
    )
}
