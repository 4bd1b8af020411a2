//! HTTP plumbing shared by the gift service and the gateway: JWT auth, the
//! JSON error response, and the time helpers every API renders with.
//! Neither service imports the other; both import this.

pub mod auth;
pub mod error;
pub mod openapi;
mod token_cache;

pub use auth::{authorization, AuthError, Authenticator, Principal};
pub use error::ApiError;

/// RFC 3339 UTC timestamp with millisecond precision, as every API renders time.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
