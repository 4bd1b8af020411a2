//! Response bodies. Each is rendered from stored records only, with fields in
//! a fixed order, so a replayed request gets a byte-identical body.

use applause_core::{Channel, Currency};
use applause_ledger::{GiftRecord, Room, TopUpRecord, Wallet};
use applause_web::rfc3339_ms;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A JSON response with an exact body.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    json_response(
        status,
        serde_json::to_string(value).expect("response serializes"),
    )
}

#[derive(Serialize)]
struct SplitBody {
    store: String,
    broadcaster: String,
    platform: String,
}

#[derive(Serialize)]
struct GiftBody<'a> {
    gift_id: &'a str,
    room_id: &'a str,
    sender_id: &'a str,
    sticker_id: &'a str,
    quantity: u32,
    amount: String,
    message: Option<&'a str>,
    split: SplitBody,
    balance: String,
    seq: u64,
    created_at: String,
}

/// The body of `201` for a purchase (and of its replays).
pub(crate) fn gift_created(g: &GiftRecord, currency: &Currency) -> String {
    serde_json::to_string(&GiftBody {
        gift_id: &g.gift_id,
        room_id: &g.room_id,
        sender_id: &g.sender_id,
        sticker_id: &g.sticker_id,
        quantity: g.quantity,
        amount: currency.format(g.amount_minor),
        message: g.message.as_deref(),
        split: split(g, currency),
        balance: currency.format(g.balance_after_minor),
        seq: g.seq,
        created_at: rfc3339_ms(g.created_at_ms),
    })
    .expect("gift serializes")
}

fn split(g: &GiftRecord, currency: &Currency) -> SplitBody {
    SplitBody {
        store: currency.format(g.split.store),
        broadcaster: currency.format(g.split.broadcaster),
        platform: currency.format(g.split.platform),
    }
}

/// `GET /v1/gifts/{id}`: the gift with its acknowledgement and refund state.
pub(crate) fn gift_view(g: &GiftRecord, currency: &Currency) -> serde_json::Value {
    serde_json::json!({
        "gift_id": g.gift_id,
        "room_id": g.room_id,
        "broadcaster_id": g.broadcaster_id,
        "sender_id": g.sender_id,
        "sender_name": g.sender_name,
        "sticker_id": g.sticker_id,
        "quantity": g.quantity,
        "amount": currency.format(g.amount_minor),
        "message": g.message,
        "split": split(g, currency),
        "seq": g.seq,
        "created_at": rfc3339_ms(g.created_at_ms),
        "ack": g.ack_text.as_ref().map(|t| serde_json::json!({
            "text": t,
            "created_at": g.acked_at_ms.map(rfc3339_ms),
        })),
        "refunded_at": g.refunded_at_ms.map(rfc3339_ms),
    })
}

pub(crate) fn room(r: &Room) -> serde_json::Value {
    serde_json::json!({
        "room_id": r.room_id,
        "broadcaster_id": r.broadcaster_id,
        "title": r.title,
        "live": r.live,
        "epoch": r.epoch,
        "seq": r.last_seq,
        "created_at": rfc3339_ms(r.created_at_ms),
        "ended_at": r.ended_at_ms.map(rfc3339_ms),
    })
}

pub(crate) fn wallet(user_id: &str, w: &Wallet, currency: &Currency) -> serde_json::Value {
    let mut by_channel = serde_json::Map::new();
    for c in Channel::ALL {
        by_channel.insert(
            c.as_str().into(),
            currency.format(w.by_channel[c.index()]).into(),
        );
    }
    serde_json::json!({
        "user_id": user_id,
        "currency": currency.code(),
        "balance": currency.format(w.total()),
        "by_channel": by_channel,
    })
}

pub(crate) fn top_up(t: &TopUpRecord, currency: &Currency) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        receipt_id: &'a str,
        user_id: &'a str,
        channel: &'a str,
        amount: String,
        created_at: String,
    }
    serde_json::to_string(&Body {
        receipt_id: &t.receipt_id,
        user_id: &t.user_id,
        channel: t.channel.as_str(),
        amount: currency.format(t.amount_minor),
        created_at: rfc3339_ms(t.created_at_ms),
    })
    .expect("top-up serializes")
}
