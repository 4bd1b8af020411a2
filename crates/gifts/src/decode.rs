//! The decoders of outside input the handlers run, callable without a service:
//! the fuzz targets (`fuzz/`) and property tests drive exactly the parsing a
//! request body or query string goes through, and get the decoded values or
//! the `ApiError` the client would see.
//!
//! Each function is the handler's own path: the same body structs (strict,
//! unknown fields refused) through `body::parse`, the same amount reader, the
//! same query extractor and checks. What needs the service (the catalog, the
//! ledger, the token) is left out.

use applause_core::Currency;
use applause_leaderboard::Window;
use applause_web::ApiError;
use axum::extract::Query;
use axum::http::Uri;

use crate::body;

/// A purchase body (`POST /v1/rooms/{id}/gifts`); the quantity and message
/// are checked later by the handler, against the catalog and blocked words.
pub fn purchase_body(bytes: &[u8]) -> Result<(), ApiError> {
    body::parse::<crate::gifts::Purchase>(bytes).map(drop)
}

/// A top-up body (`POST /v1/topups`): the credited amount in minor units.
pub fn top_up_body(bytes: &[u8], currency: &Currency) -> Result<i64, ApiError> {
    let req: crate::wallet::TopUp = body::parse(bytes)?;
    body::amount(currency, &req.amount, "amount")
}

/// A red-packet drop body (`POST /v1/rooms/{id}/red-packets`): the total and
/// the given shares, in minor units.
pub fn red_packet_body(
    bytes: &[u8],
    currency: &Currency,
) -> Result<(i64, Option<Vec<i64>>), ApiError> {
    let req: crate::redpackets::DropBody = body::parse(bytes)?;
    let total = body::amount(currency, &req.total, "total")?;
    let shares = match &req.shares {
        None => None,
        Some(v) => Some(
            v.iter()
                .map(|s| body::amount(currency, s, "shares"))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok((total, shares))
}

/// An acknowledgement body (`POST /v1/gifts/{id}/ack`).
pub fn ack_body(bytes: &[u8]) -> Result<(), ApiError> {
    body::parse::<crate::gifts::Ack>(bytes).map(drop)
}

/// A refund body (`POST /v1/finance/gifts/{id}/refund`).
pub fn refund_body(bytes: &[u8]) -> Result<(), ApiError> {
    body::parse::<crate::refunds::Refund>(bytes).map(drop)
}

/// A room body (`POST /v1/rooms`).
pub fn room_body(bytes: &[u8]) -> Result<(), ApiError> {
    body::parse::<crate::rooms::CreateRoom>(bytes).map(drop)
}

/// The revenue query (`from`, `to`, `group_by`, `format`): the interval in
/// Unix milliseconds and whether CSV was asked for. `None` when the text
/// is not a URI query at all (the HTTP server refuses such a request line
/// before any handler runs).
pub fn revenue_query(query: &str) -> Option<Result<(i64, i64, bool), ApiError>> {
    let uri = uri(query)?;
    Some(
        crate::finance::revenue_params(Query::try_from_uri(&uri))
            .map(|(_, from, to, _, csv)| (from, to, csv)),
    )
}

/// A leaderboard query (`window`, `limit`) as the room board (`room: true`,
/// where `live` is allowed) or the broadcaster board reads it.
pub fn board_query(query: &str, room: bool) -> Option<Result<(Window, usize), ApiError>> {
    let uri = uri(query)?;
    let default = if room { Window::Live } else { Window::Day };
    Some(crate::boards::parse(
        Query::try_from_uri(&uri),
        default,
        room,
    ))
}

fn uri(query: &str) -> Option<Uri> {
    format!("/q?{query}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use applause_core::ErrorCode;

    #[test]
    fn bodies_decode_like_the_handlers() {
        let usd = Currency::usd();
        let top_up = br#"{"user_id":"u","channel":"web","amount":"1.50","receipt_id":"r"}"#;
        assert_eq!(top_up_body(top_up, &usd), Ok(150));
        let code = |r: Result<i64, ApiError>| r.map_err(|e| e.code);
        assert_eq!(
            code(top_up_body(
                br#"{"user_id":"u","channel":"web","amount":1.5,"receipt_id":"r"}"#,
                &usd
            )),
            Err(ErrorCode::InvalidAmount)
        );
        assert_eq!(code(top_up_body(b"{", &usd)), Err(ErrorCode::InvalidJson));
        // serde fills a struct from an array: the behaviour the frame property
        // test found in the gateway (crates/gateway/tests/frame_props.rs).
        assert_eq!(
            code(top_up_body(br#"["u","web","1.50","r"]"#, &usd)),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            purchase_body(br#"["rose",1]"#).map_err(|e| e.code),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            ack_body(b" [\"thanks\"]").map_err(|e| e.code),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            ack_body(b"[").map_err(|e| e.code),
            Err(ErrorCode::InvalidJson)
        );
        assert_eq!(
            purchase_body(br#"{"sticker_id":"rose","quantity":1,"price":"0.01"}"#)
                .map_err(|e| e.code),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            red_packet_body(
                br#"{"total":"1.00","count":2,"mode":"fixed","shares":["0.40","0.60"]}"#,
                &usd
            ),
            Ok((100, Some(vec![40, 60])))
        );
    }

    #[test]
    fn queries_decode_like_the_handlers() {
        assert_eq!(
            revenue_query("from=2026-01-01&to=2026-01-02&format=csv"),
            Some(Ok((1_767_225_600_000, 1_767_312_000_000, true)))
        );
        assert!(revenue_query("from=2026-01-02&to=2026-01-01")
            .unwrap()
            .is_err());
        assert_eq!(board_query("limit=5", true), Some(Ok((Window::Live, 5))));
        assert!(board_query("window=live", false).unwrap().is_err());
        assert!(board_query("limit=0", true).unwrap().is_err());
        assert!(revenue_query("a b").is_none());
    }
}
