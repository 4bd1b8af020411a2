//! The JSON request bodies of the gift API (purchase, top-up, red-packet
//! drop, ack, refund, room) through the handlers' own decoders
//! (`applause_gifts::decode`): never a panic; a refusal is a 4xx with one of
//! the codes a body can earn (`invalid_json`, `invalid_request`,
//! `invalid_amount`); an accepted amount is positive, bounded, and
//! round-trips through the currency's text format.
#![no_main]

use applause_core::money::AMOUNT_MINOR_MAX;
use applause_core::{Currency, ErrorCode};
use applause_gifts::decode;
use applause_web::ApiError;
use libfuzzer_sys::fuzz_target;

fn refusal(e: &ApiError, amounts: bool) {
    let allowed = matches!(e.code, ErrorCode::InvalidJson | ErrorCode::InvalidRequest)
        || (amounts && e.code == ErrorCode::InvalidAmount);
    assert!(allowed, "unexpected code {:?}: {}", e.code, e.message);
    assert!((400..500).contains(&e.code.status()), "{:?}", e.code);
    assert!(!e.message.is_empty());
}

fn amount(currency: &Currency, minor: i64) {
    assert!((1..=AMOUNT_MINOR_MAX).contains(&minor), "{minor}");
    assert_eq!(currency.parse(&currency.format(minor)), Ok(minor));
}

/// Every body of the API is a JSON object (serde would fill a struct from an array too).
fn object(body: &[u8]) {
    assert_eq!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(&b'{'),
        "accepted a non-object"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let usd = Currency::usd();
    match which % 6 {
        0 => match decode::purchase_body(body) {
            Ok(()) => object(body),
            Err(e) => refusal(&e, false),
        },
        1 => match decode::top_up_body(body, &usd) {
            Ok(minor) => {
                object(body);
                amount(&usd, minor)
            }
            Err(e) => refusal(&e, true),
        },
        2 => match decode::red_packet_body(body, &usd) {
            Ok((total, shares)) => {
                object(body);
                amount(&usd, total);
                for s in shares.unwrap_or_default() {
                    amount(&usd, s);
                }
            }
            Err(e) => refusal(&e, true),
        },
        3 => match decode::ack_body(body) {
            Ok(()) => object(body),
            Err(e) => refusal(&e, false),
        },
        4 => match decode::refund_body(body) {
            Ok(()) => object(body),
            Err(e) => refusal(&e, false),
        },
        _ => match decode::room_body(body) {
            Ok(()) => object(body),
            Err(e) => refusal(&e, false),
        },
    }
});
