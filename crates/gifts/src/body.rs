//! Request bodies: size-limited, `application/json` only, parsed strictly into
//! typed structs whose unknown fields are refused (so no client field can set
//! a price, a split or another user's id). Every failure is a 4xx with a code.

use applause_core::ErrorCode;
use applause_web::ApiError;
use axum::body::Body;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

/// Reads and parses a JSON body of at most `limit` bytes.
pub(crate) async fn json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON with Content-Type: application/json",
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    })?;
    parse(&bytes)
}

/// Parses JSON bytes, telling malformed JSON from a well-formed body of the
/// wrong shape. Every body is an object: serde would also fill a struct
/// from an array (`["rose", 1]`), which is no body of the API.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::new(ErrorCode::InvalidRequest, "the body must be a JSON object"),
                Err(_) => ApiError::new(ErrorCode::InvalidJson, "the body is not valid JSON"),
            },
        );
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::new(ErrorCode::InvalidJson, "the body is not valid JSON")
            }
            Category::Data => ApiError::new(ErrorCode::InvalidRequest, data_error_message(&e)),
        }
    })
}

/// serde's message without the line/column suffix, which means nothing to API clients.
fn data_error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

/// Reads an amount field: a JSON string with at most the currency's decimals.
pub(crate) fn amount(
    currency: &applause_core::Currency,
    value: &serde_json::Value,
    field: &str,
) -> Result<i64, ApiError> {
    currency
        .parse_json(value)
        .and_then(|m| {
            if m == 0 {
                Err(applause_core::AmountError::Zero)
            } else {
                Ok(m)
            }
        })
        .map_err(|e| ApiError::new(ErrorCode::InvalidAmount, format!("{field}: {e}")))
}

/// Whether a header value is 1–255 printable ASCII characters.
pub(crate) fn printable_ascii(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}
