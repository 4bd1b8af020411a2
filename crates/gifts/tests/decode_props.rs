//! Property tests of the request decoders the gift handlers run
//! (`applause_gifts::decode`): random bodies and query strings never panic
//! and are refused only with the codes their endpoint documents; valid
//! bodies with a random amount decode to exactly that amount. Case count:
//! `APPLAUSE_PROP_CASES`.

use applause_core::money::AMOUNT_MINOR_MAX;
use applause_core::{Currency, ErrorCode};
use applause_gifts::decode;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("APPLAUSE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn body_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidJson | ErrorCode::InvalidRequest | ErrorCode::InvalidAmount
    )
}

/// Query text: mostly the real keys and value shapes, sometimes anything.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(
            (
                "from|to|group_by|format|window|limit|x",
                "[0-9]{4}-[0-9]{2}-[0-9]{2}|day|channel|csv|json|live|week|all|-?[0-9]{1,22}|%[0-9a-fA-F]{2}|[^&=]{0,8}"
            ),
            0..6
        )
        .prop_map(|kv| kv.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_are_refused_cleanly(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "\\[((\"[a-z0-9.]{0,6}\"|[0-9]{1,3}|null),?){0,5}\\]".prop_map(String::into_bytes),
        "\\{(\"(user_id|channel|amount|receipt_id|total|count|mode|shares|sticker_id|quantity|text|reason|title)\":(\"[0-9.]{0,6}\"|[0-9.e-]{1,6}|null|\\[\\]),?){0,5}\\}".prop_map(String::into_bytes),
    ]) {
        let usd = Currency::usd();
        for r in [
            decode::purchase_body(&bytes),
            decode::top_up_body(&bytes, &usd).map(drop),
            decode::red_packet_body(&bytes, &usd).map(drop),
            decode::ack_body(&bytes),
            decode::refund_body(&bytes),
            decode::room_body(&bytes),
        ] {
            match r {
                // Every body of the API is an object (not an array serde
                // could also fill a struct from).
                Ok(()) => prop_assert_eq!(bytes.iter().find(|b| !b.is_ascii_whitespace()), Some(&b'{')),
                Err(e) => {
                    prop_assert!(body_code(e.code), "{:?}", e.code);
                    prop_assert!((400..500).contains(&e.code.status()));
                }
            }
        }
    }

    #[test]
    fn top_up_amounts_decode_exactly(m in 1i64..=AMOUNT_MINOR_MAX) {
        let usd = Currency::usd();
        let body = serde_json::json!({"user_id": "u", "channel": "web", "amount": usd.format(m), "receipt_id": "r"});
        prop_assert_eq!(decode::top_up_body(body.to_string().as_bytes(), &usd), Ok(m));
        let number = serde_json::json!({"user_id": "u", "channel": "web", "amount": m, "receipt_id": "r"});
        prop_assert_eq!(
            decode::top_up_body(number.to_string().as_bytes(), &usd).map_err(|e| e.code),
            Err(ErrorCode::InvalidAmount)
        );
    }

    #[test]
    fn random_queries_are_refused_cleanly(q in query()) {
        if let Some(r) = decode::revenue_query(&q) {
            match r {
                Ok((from, to, _)) => prop_assert!(from < to && to - from <= 366 * 86_400_000),
                Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidQuery),
            }
        }
        for room in [true, false] {
            if let Some(r) = decode::board_query(&q, room) {
                match r {
                    Ok((_, limit)) => prop_assert!((1..=100).contains(&limit)),
                    Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidQuery),
                }
            }
        }
    }
}
