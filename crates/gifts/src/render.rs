//! Response bodies. Each is rendered from stored records only, with fields in
//! a fixed order, so a replayed request gets a byte-identical body.

use applause_core::Currency;
use applause_ledger::{GiftRecord, Room, TopUpRecord, Wallet};
use applause_web::rfc3339_ms;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::views::{
    AckView, Amount, ByChannel, GiftCreated, GiftView, RoomView, Split, TopUpView, WalletView,
};

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

/// The body of `201` for a purchase (and of its replays).
pub(crate) fn gift_created(g: &GiftRecord, currency: &Currency) -> String {
    serde_json::to_string(&GiftCreated {
        gift_id: &g.gift_id,
        room_id: &g.room_id,
        sender_id: &g.sender_id,
        sticker_id: &g.sticker_id,
        quantity: g.quantity,
        amount: Amount::of(currency, g.amount_minor),
        message: g.message.as_deref(),
        split: split(g, currency),
        balance: Amount::of(currency, g.balance_after_minor),
        seq: g.seq,
        created_at: rfc3339_ms(g.created_at_ms),
    })
    .expect("gift serializes")
}

pub(crate) fn split(g: &GiftRecord, c: &Currency) -> Split {
    Split {
        store: Amount::of(c, g.split.store),
        broadcaster: Amount::of(c, g.split.broadcaster),
        platform: Amount::of(c, g.split.platform),
    }
}

/// `GET /v1/gifts/{id}`: the gift with its acknowledgement and refund state.
pub(crate) fn gift_view<'a>(g: &'a GiftRecord, currency: &Currency) -> GiftView<'a> {
    GiftView {
        ack: g.ack_text.as_deref().map(|text| AckView {
            created_at: g.acked_at_ms.map(rfc3339_ms),
            text,
        }),
        amount: Amount::of(currency, g.amount_minor),
        broadcaster_id: &g.broadcaster_id,
        created_at: rfc3339_ms(g.created_at_ms),
        gift_id: &g.gift_id,
        message: g.message.as_deref(),
        quantity: g.quantity,
        refunded_at: g.refunded_at_ms.map(rfc3339_ms),
        room_id: &g.room_id,
        sender_id: &g.sender_id,
        sender_name: &g.sender_name,
        seq: g.seq,
        split: split(g, currency),
        sticker_id: &g.sticker_id,
    }
}

pub(crate) fn room(r: &Room) -> RoomView<'_> {
    RoomView {
        broadcaster_id: &r.broadcaster_id,
        created_at: rfc3339_ms(r.created_at_ms),
        ended_at: r.ended_at_ms.map(rfc3339_ms),
        epoch: r.epoch,
        live: r.live,
        room_id: &r.room_id,
        seq: r.last_seq,
        title: &r.title,
    }
}

pub(crate) fn wallet<'a>(user_id: &'a str, w: &Wallet, currency: &'a Currency) -> WalletView<'a> {
    WalletView {
        balance: Amount::of(currency, w.total()),
        by_channel: ByChannel::of(currency, &w.by_channel),
        currency: currency.code(),
        user_id,
    }
}

pub(crate) fn top_up(t: &TopUpRecord, currency: &Currency) -> String {
    serde_json::to_string(&TopUpView {
        receipt_id: &t.receipt_id,
        user_id: &t.user_id,
        channel: t.channel.as_str(),
        amount: Amount::of(currency, t.amount_minor),
        created_at: rfc3339_ms(t.created_at_ms),
    })
    .expect("top-up serializes")
}
