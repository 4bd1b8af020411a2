//! Row decoding shared by both SQL backends (the column names are the same).

use applause_core::{Channel, ErrorCode, Split};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::model::*;

/// The columns of `gifts`, in the order both backends select them.
pub(crate) const GIFT_COLUMNS: &str = "gift_id, room_id, broadcaster_id, sender_id, sender_name, sticker_id, quantity, \
     amount_minor, store_minor, broadcaster_minor, platform_minor, by_channel, message, balance_after_minor, \
     seq, epoch, created_at_ms, ack_text, acked_at_ms, refunded_at_ms";

pub(crate) const PACKET_COLUMNS: &str = "packet_id, room_id, sender_id, sender_name, mode, total_minor, count, shares, \
     claimed_count, claimed_minor, escrow_apple, escrow_google, escrow_web, created_at_ms, expires_at_ms, \
     settled_at_ms, returned_minor";

pub(crate) const CLAIM_COLUMNS: &str =
    "packet_id, user_id, user_name, idx, amount_minor, by_channel, created_at_ms";

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

pub(crate) fn packet<'r, R>(r: &'r R) -> Result<RedPacket, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let shares_text: String = r.try_get("shares")?;
    let shares: Vec<i64> =
        serde_json::from_str(&shares_text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(RedPacket {
        packet_id: r.try_get("packet_id")?,
        room_id: r.try_get("room_id")?,
        sender_id: r.try_get("sender_id")?,
        sender_name: r.try_get("sender_name")?,
        mode: r.try_get("mode")?,
        total_minor: r.try_get("total_minor")?,
        count: r.try_get::<i64, _>("count")? as u32,
        shares,
        claimed_count: r.try_get::<i64, _>("claimed_count")? as u32,
        claimed_minor: r.try_get("claimed_minor")?,
        escrow: [
            r.try_get("escrow_apple")?,
            r.try_get("escrow_google")?,
            r.try_get("escrow_web")?,
        ],
        created_at_ms: r.try_get("created_at_ms")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        settled_at_ms: r.try_get("settled_at_ms")?,
        returned_minor: r.try_get("returned_minor")?,
    })
}

pub(crate) fn claim<'r, R>(r: &'r R) -> Result<ClaimRecord, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let text: String = r.try_get("by_channel")?;
    let by_channel: [i64; 3] =
        serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(ClaimRecord {
        packet_id: r.try_get("packet_id")?,
        user_id: r.try_get("user_id")?,
        user_name: r.try_get("user_name")?,
        idx: r.try_get::<i64, _>("idx")? as u32,
        amount_minor: r.try_get("amount_minor")?,
        by_channel,
        created_at_ms: r.try_get("created_at_ms")?,
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

/// A `wallets` row into the loaded balances: the user's balance on its
/// channel.
pub(crate) fn wallet_into<'r, R>(
    r: &'r R,
    wallets: &mut std::collections::HashMap<String, applause_core::PerChannel>,
) -> Result<(), sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let channel: String = r.try_get("channel")?;
    let channel: Channel = channel
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
    wallets.entry(r.try_get("user_id")?).or_default()[channel.index()] =
        r.try_get("balance_minor")?;
    Ok(())
}

/// An outbox row of a room whose `published_seq` is `published_through`.
pub(crate) fn event<'r, R>(r: &'r R, published_through: u64) -> Result<StoredEvent, sqlx::Error>
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
        published_through,
        gift_id: r.try_get("gift_id")?,
    })
}
