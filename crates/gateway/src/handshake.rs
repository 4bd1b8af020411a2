//! The server side of the WebSocket opening handshake (RFC 6455 §4.2):
//! checks the request, answers it,
//! and hands over the raw upgraded connection, on which the gateway writes
//! frames it encoded itself.

use axum::body::Body;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use base64::Engine as _;
use hyper::upgrade::OnUpgrade;
use sha1::{Digest, Sha1};

/// An accepted handshake: the response to send and the upgrade to await.
pub(crate) struct Accepted {
    /// `Sec-WebSocket-Key`.
    key: HeaderValue,
    pub on_upgrade: OnUpgrade,
}

/// Checks a WebSocket upgrade request; the error says what is wrong with it.
pub(crate) fn accept(parts: &mut Parts) -> Result<Accepted, &'static str> {
    // HTTP/2 is not served here (axum's `http2` feature is off), so the
    // handshake is always HTTP/1.1's.
    if parts.version > Version::HTTP_11 {
        return Err("a WebSocket handshake must be HTTP/1.1");
    }
    if parts.method != Method::GET {
        return Err("a WebSocket handshake must be a GET");
    }
    if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
        return Err("the Connection header must include 'upgrade'");
    }
    if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
        return Err("the Upgrade header must be 'websocket'");
    }
    let key = parts
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("the Sec-WebSocket-Key header is missing")?
        .clone();
    let version_ok = parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        return Err("the Sec-WebSocket-Version header must be 13");
    }
    let on_upgrade = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or("this connection cannot be upgraded")?;
    Ok(Accepted { key, on_upgrade })
}

impl Accepted {
    /// `101 Switching Protocols`.
    pub(crate) fn response(&self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            accept_key(self.key.as_bytes()),
        );
        response
    }
}

/// `Sec-WebSocket-Accept`: base64(SHA-1(key + the RFC's GUID)).
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let encoded = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::from_str(&encoded).expect("base64 is a valid header value")
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_and_tungstenite() {
        // The example of RFC 6455 §1.3.
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        assert_eq!(accept_key(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            accept_key(key),
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key).as_str()
        );
    }

    fn parts(edit: impl FnOnce(&mut axum::http::request::Builder)) -> Parts {
        let mut b = axum::http::Request::builder()
            .uri("/v1/ws")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        edit(&mut b);
        let (parts, ()) = std::mem::take(&mut b).body(()).unwrap().into_parts();
        parts
    }

    #[test]
    fn refuses_requests_that_are_not_websocket_handshakes() {
        let check = |edit: fn(&mut axum::http::request::Builder), want: &str| {
            let err = accept(&mut parts(edit)).err().expect("refused");
            assert!(err.contains(want), "{err} should mention {want}");
        };
        check(|b| *b = std::mem::take(b).method("POST"), "GET");
        check(
            |b| {
                b.headers_mut().unwrap().remove("upgrade");
            },
            "Upgrade",
        );
        check(
            |b| {
                b.headers_mut()
                    .unwrap()
                    .insert("connection", HeaderValue::from_static("close"));
            },
            "Connection",
        );
        check(
            |b| {
                b.headers_mut().unwrap().remove("sec-websocket-key");
            },
            "Sec-WebSocket-Key",
        );
        check(
            |b| {
                b.headers_mut()
                    .unwrap()
                    .insert("sec-websocket-version", HeaderValue::from_static("8"));
            },
            "Version",
        );
        // Every header right, but no connection to upgrade (not from hyper).
        check(|_| {}, "cannot be upgraded");
    }
}
