//! Row decoding shared by both SQL backends (the column names are the same).

use applause_core::{Channel, ErrorCode, Split};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::model::*;

/// The columns of `gifts`, in the order both backends select them.
pub(crate) const GIFT_COLUMNS: &str = "gift_id, room_id, broadcaster_id, sender_id, sender_name, sticker_id, quantity, \
     amount_minor, store_minor, broadcaster_minor, platform_minor, by_channel, message, balance_after_minor, \
     seq, epoch, created_at_ms, ack_text, acked_at_ms, refunded_at_ms";

pub(crate) const ROOM_COLUMNS: &str =
    "room_id, broadcaster_id, title, epoch, live, last_seq, published_seq, created_at_ms, ended_at_ms";

pub(crate) fn gift<'r, R>(r: &'r R) -> Result<GiftRecord, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let by_channel_text: String = r.try_get("by_channel")?;
    let by_channel: [[i64; 3]; 3] =
        serde_json::from_str(&by_channel_text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let paid = std::array::from_fn(|c| by_channel[c].iter().sum());
    Ok(GiftRecord {
        gift_id: r.try_get("gift_id")?,
        room_id: r.try_get("room_id")?,
        broadcaster_id: r.try_get("broadcaster_id")?,
        sender_id: r.try_get("sender_id")?,
        sender_name: r.try_get("sender_name")?,
        sticker_id: r.try_get("sticker_id")?,
        quantity: r.try_get::<i64, _>("quantity")? as u32,
        amount_minor: r.try_get("amount_minor")?,
        paid,
        split: Split {
            store: r.try_get("store_minor")?,
            broadcaster: r.try_get("broadcaster_minor")?,
            platform: r.try_get("platform_minor")?,
            by_channel,
        },
        message: r.try_get("message")?,
        balance_after_minor: r.try_get("balance_after_minor")?,
        seq: r.try_get::<i64, _>("seq")? as u64,
        epoch: r.try_get::<i64, _>("epoch")? as u64,
        created_at_ms: r.try_get("created_at_ms")?,
        ack_text: r.try_get("ack_text")?,
        acked_at_ms: r.try_get("acked_at_ms")?,
        refunded_at_ms: r.try_get("refunded_at_ms")?,
    })
}

pub(crate) fn room<'r, R>(r: &'r R) -> Result<Room, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Room {
        room_id: r.try_get("room_id")?,
        broadcaster_id: r.try_get("broadcaster_id")?,
        title: r.try_get("title")?,
        epoch: r.try_get::<i64, _>("epoch")? as u64,
        live: r.try_get("live")?,
        last_seq: r.try_get::<i64, _>("last_seq")? as u64,
        published_seq: r.try_get::<i64, _>("published_seq")? as u64,
        created_at_ms: r.try_get("created_at_ms")?,
        ended_at_ms: r.try_get("ended_at_ms")?,
    })
}

pub(crate) fn idempotency<'r, R>(r: &'r R) -> Result<IdempotencyRecord, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let gift_id: Option<String> = r.try_get("gift_id")?;
    let code: Option<String> = r.try_get("error_code")?;
    let outcome = match (gift_id, code) {
        (Some(g), _) => StoredOutcome::Gift(g),
        (None, Some(c)) => {
            StoredOutcome::Rejected(ErrorCode::from_wire(&c).unwrap_or(ErrorCode::Internal))
        }
        (None, None) => {
            return Err(sqlx::Error::Decode(
                "idempotency row without outcome".into(),
            ))
        }
    };
    Ok(IdempotencyRecord {
        user_id: r.try_get("user_id")?,
        key: r.try_get("key")?,
        request_hash: r.try_get("request_hash")?,
        outcome,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

pub(crate) fn receipt<'r, R>(r: &'r R) -> Result<TopUpRecord, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let channel: String = r.try_get("channel")?;
    Ok(TopUpRecord {
        receipt_id: r.try_get("receipt_id")?,
        user_id: r.try_get("user_id")?,
        channel: channel
            .parse::<Channel>()
            .map_err(|e| sqlx::Error::Decode(e.into()))?,
        amount_minor: r.try_get("amount_minor")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

pub(crate) fn event<'r, R>(r: &'r R) -> Result<StoredEvent, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StoredEvent {
        envelope: applause_core::EventEnvelope {
            room_id: r.try_get("room_id")?,
            epoch: r.try_get::<i64, _>("epoch")? as u64,
            seq: r.try_get::<i64, _>("seq")? as u64,
            frame: r.try_get("frame")?,
            broadcaster_frame: r.try_get("broadcaster_frame")?,
            broadcaster_id: r.try_get("broadcaster_id")?,
            committed_at_ms: r.try_get("created_at_ms")?,
            ends_room: r.try_get("ends_room")?,
        },
    })
}

/// JSON arrays of the rows a batch inserts, one array per table; both
/// backends expand them in SQL (`json_each` / `jsonb_array_elements`), so a
/// batch costs one statement per table however many gifts it holds.
pub(crate) struct BatchJson {
    pub txns: String,
    pub entries: String,
    pub gifts: String,
    pub idempotency: String,
    pub receipts: String,
    pub events: String,
    /// Net credits per wallet row (upserted: the row may be new).
    pub wallet_credits: String,
    /// Net debits per wallet row (updated: the row exists, it was loaded).
    pub wallet_debits: String,
}

impl BatchJson {
    pub fn of(w: &crate::plan::WriteSet) -> BatchJson {
        use serde_json::json;
        let txns: Vec<_> = w
            .txns
            .iter()
            .map(|t| json!([t.txn_id, t.kind, t.created_at_ms]))
            .collect();
        let entries: Vec<_> = w
            .entries
            .iter()
            .map(|e| json!([e.txn_id, e.account, e.amount_minor]))
            .collect();
        let gifts: Vec<_> = w
            .gifts
            .iter()
            .map(|g| {
                json!([
                    g.gift_id,
                    g.room_id,
                    g.broadcaster_id,
                    g.sender_id,
                    g.sender_name,
                    g.sticker_id,
                    g.quantity,
                    g.amount_minor,
                    g.split.store,
                    g.split.broadcaster,
                    g.split.platform,
                    serde_json::to_string(&g.split.by_channel).expect("array serializes"),
                    g.message,
                    g.balance_after_minor,
                    g.seq,
                    g.epoch,
                    g.created_at_ms
                ])
            })
            .collect();
        let idempotency: Vec<_> = w
            .idempotency
            .iter()
            .map(|i| {
                let (gift, code) = match &i.outcome {
                    StoredOutcome::Gift(g) => (Some(g.as_str()), None),
                    StoredOutcome::Rejected(c) => (None, Some(c.as_str())),
                };
                json!([
                    i.user_id,
                    i.key,
                    i.request_hash,
                    gift,
                    code,
                    i.created_at_ms
                ])
            })
            .collect();
        let receipts: Vec<_> = w
            .receipts
            .iter()
            .map(|r| {
                json!([
                    r.receipt_id,
                    r.user_id,
                    r.channel.as_str(),
                    r.amount_minor,
                    r.created_at_ms
                ])
            })
            .collect();
        let events: Vec<_> = w
            .events
            .iter()
            .map(|e| {
                json!([
                    e.room_id,
                    e.seq,
                    e.epoch,
                    e.frame,
                    e.broadcaster_frame,
                    e.broadcaster_id,
                    e.ends_room,
                    e.committed_at_ms
                ])
            })
            .collect();
        let wallet_rows = |debits: bool| -> Vec<serde_json::Value> {
            w.wallet_deltas
                .iter()
                .filter(|(_, d)| if debits { **d < 0 } else { **d > 0 })
                .map(|((user, channel), delta)| json!([user, channel.as_str(), delta]))
                .collect()
        };
        let s = |v: Vec<serde_json::Value>| serde_json::Value::Array(v).to_string();
        BatchJson {
            txns: s(txns),
            entries: s(entries),
            gifts: s(gifts),
            idempotency: s(idempotency),
            receipts: s(receipts),
            events: s(events),
            wallet_credits: s(wallet_rows(false)),
            wallet_debits: s(wallet_rows(true)),
        }
    }
}
