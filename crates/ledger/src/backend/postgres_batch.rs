//! PostgreSQL's batch writes: the rows of each hot table (idempotency keys,
//! transactions, entries, gifts, room events, wallet deltas) go in as one
//! array per column, expanded by `UNNEST` — one statement per table however
//! many gifts the batch holds. Arrays travel in PostgreSQL's binary format,
//! so the server neither lexes nor de-escapes anything (the JSON arrays used
//! before had it parse every frame of every event twice: `jsonb` in, text
//! out). The rare tables (receipts, red packets, claims) still go as JSON
//! arrays ([`super::batch_json`]).

use sqlx::{Postgres, Transaction};

use super::batch_json;
use super::postgres::{Attempt, PLANNED_EACH_TIME};
use crate::model::*;
use crate::plan::WriteSet;

/// The columns of the batch's wallet deltas of one sign.
fn wallet_columns(w: &WriteSet, credits: bool) -> (Vec<&str>, Vec<&'static str>, Vec<i64>) {
    let mut users = Vec::new();
    let mut channels = Vec::new();
    let mut deltas = Vec::new();
    for ((user, channel), delta) in &w.wallet_deltas {
        if (credits && *delta > 0) || (!credits && *delta < 0) {
            users.push(user.as_str());
            channels.push(channel.as_str());
            deltas.push(*delta);
        }
    }
    (users, channels, deltas)
}

/// Writes a planned batch inside the caller's transaction.
pub(super) async fn write(
    tx: &mut Transaction<'static, Postgres>,
    w: &WriteSet,
) -> Result<(), Attempt> {
    if !w.expired_keys.is_empty() {
        // Before the batch's new keys: a forgotten key may be used again.
        let (users, ks): (Vec<&str>, Vec<&str>) = w
            .expired_keys
            .iter()
            .map(|(u, k)| (u.as_str(), k.as_str()))
            .unzip();
        sqlx::query(
            "DELETE FROM idempotency i USING UNNEST($1::text[], $2::text[]) AS k(u, k) \
             WHERE i.user_id = k.u AND i.key = k.k",
        )
        .persistent(PLANNED_EACH_TIME)
        .bind(users)
        .bind(ks)
        .execute(&mut **tx)
        .await?;
    }
    // Keys first: losing a race to another node must be found before
    // anything else is written.
    if !w.idempotency.is_empty() {
        let n = w.idempotency.len();
        let (mut users, mut keys, mut hashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut gifts, mut codes, mut at) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for i in &w.idempotency {
            users.push(i.user_id.as_str());
            keys.push(i.key.as_str());
            hashes.push(i.request_hash.as_str());
            let (gift, code) = match &i.outcome {
                StoredOutcome::Gift(g) => (Some(g.as_str()), None),
                StoredOutcome::Rejected(c) => (None, Some(c.as_str())),
            };
            gifts.push(gift);
            codes.push(code);
            at.push(i.created_at_ms);
        }
        let inserted = sqlx::query(
            "INSERT INTO idempotency (user_id, key, request_hash, gift_id, error_code, created_at_ms) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(users)
        .bind(keys)
        .bind(hashes)
        .bind(gifts)
        .bind(codes)
        .bind(at)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted != n as u64 {
            return Err(Attempt::Retry(
                "an idempotency key was committed by another node".into(),
            ));
        }
    }
    if !w.receipts.is_empty() {
        let inserted = sqlx::query(
            "INSERT INTO receipts (receipt_id, user_id, channel, amount_minor, created_at_ms) \
             SELECT v->>0, v->>1, v->>2, (v->>3)::bigint, (v->>4)::bigint FROM jsonb_array_elements($1::jsonb) v \
             ON CONFLICT DO NOTHING",
        )
        .bind(batch_json::receipts(w))
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted != w.receipts.len() as u64 {
            return Err(Attempt::Retry(
                "a receipt was committed by another node".into(),
            ));
        }
    }
    for room in &w.new_rooms {
        sqlx::query(
            "INSERT INTO rooms (room_id, broadcaster_id, title, epoch, live, last_seq, published_seq, created_at_ms, ended_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&room.room_id)
        .bind(&room.broadcaster_id)
        .bind(&room.title)
        .bind(room.epoch as i64)
        .bind(room.live)
        .bind(room.last_seq as i64)
        .bind(room.published_seq as i64)
        .bind(room.created_at_ms)
        .bind(room.ended_at_ms)
        .execute(&mut **tx)
        .await?;
    }
    for room in &w.room_updates {
        sqlx::query("UPDATE rooms SET live = $2, last_seq = $3, published_seq = $4, ended_at_ms = $5 WHERE room_id = $1")
            .bind(&room.room_id)
            .bind(room.live)
            .bind(room.last_seq as i64)
            .bind(room.published_seq as i64)
            .bind(room.ended_at_ms)
            .execute(&mut **tx)
            .await?;
    }
    let (users, channels, deltas) = wallet_columns(w, true);
    if !users.is_empty() {
        sqlx::query(
            "INSERT INTO wallets (user_id, channel, balance_minor) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) \
             ON CONFLICT (user_id, channel) DO UPDATE SET balance_minor = wallets.balance_minor + excluded.balance_minor",
        )
        .bind(users)
        .bind(channels)
        .bind(deltas)
        .execute(&mut **tx)
        .await?;
    }
    let (users, channels, deltas) = wallet_columns(w, false);
    if !users.is_empty() {
        sqlx::query(
            "UPDATE wallets SET balance_minor = wallets.balance_minor + d.delta \
             FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS d(u, c, delta) \
             WHERE wallets.user_id = d.u AND wallets.channel = d.c",
        )
        .bind(users)
        .bind(channels)
        .bind(deltas)
        .execute(&mut **tx)
        .await?;
    }
    if !w.txns.is_empty() {
        let ids: Vec<&str> = w.txns.iter().map(|t| t.txn_id.as_str()).collect();
        let kinds: Vec<&str> = w.txns.iter().map(|t| t.kind).collect();
        let at: Vec<i64> = w.txns.iter().map(|t| t.created_at_ms).collect();
        sqlx::query(
            "INSERT INTO transactions (txn_id, kind, created_at_ms) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
        )
        .bind(ids)
        .bind(kinds)
        .bind(at)
        .execute(&mut **tx)
        .await?;
        let txns: Vec<&str> = w.entries.iter().map(|e| e.txn_id.as_str()).collect();
        let accounts: Vec<&str> = w.entries.iter().map(|e| e.account.as_str()).collect();
        let amounts: Vec<i64> = w.entries.iter().map(|e| e.amount_minor).collect();
        sqlx::query(
            "INSERT INTO entries (txn_id, account, amount_minor) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
        )
        .bind(txns)
        .bind(accounts)
        .bind(amounts)
        .execute(&mut **tx)
        .await?;
    }
    if !w.gifts.is_empty() {
        insert_gifts(tx, &w.gifts).await?;
    }
    if !w.events.is_empty() {
        let e = |f: fn(&applause_core::EventEnvelope) -> i64| -> Vec<i64> {
            w.events.iter().map(|o| f(&o.envelope)).collect()
        };
        sqlx::query(
            "INSERT INTO room_events (room_id, seq, epoch, frame, broadcaster_frame, broadcaster_id, ends_room, created_at_ms, gift_id) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
             $7::boolean[], $8::bigint[], $9::text[])",
        )
        .bind(w.events.iter().map(|o| o.envelope.room_id.as_str()).collect::<Vec<_>>())
        .bind(e(|v| v.seq as i64))
        .bind(e(|v| v.epoch as i64))
        .bind(w.events.iter().map(|o| o.envelope.frame.as_str()).collect::<Vec<_>>())
        .bind(
            w.events
                .iter()
                .map(|o| o.envelope.broadcaster_frame.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            w.events
                .iter()
                .map(|o| o.envelope.broadcaster_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(w.events.iter().map(|o| o.envelope.ends_room).collect::<Vec<_>>())
        .bind(e(|v| v.committed_at_ms))
        .bind(w.events.iter().map(|o| o.gift_id.as_deref()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    for (gift_id, text, at) in &w.acks {
        sqlx::query("UPDATE gifts SET ack_text = $2, acked_at_ms = $3 WHERE gift_id = $1")
            .bind(gift_id)
            .bind(text)
            .bind(at)
            .execute(&mut **tx)
            .await?;
    }
    for (gift_id, reason, by, at) in &w.refunds {
        sqlx::query("UPDATE gifts SET refunded_at_ms = $2 WHERE gift_id = $1")
            .bind(gift_id)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO refunds (gift_id, reason, refunded_by, created_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(gift_id)
            .bind(reason)
            .bind(by)
            .bind(at)
            .execute(&mut **tx)
            .await?;
    }
    if !w.new_packets.is_empty() || !w.packet_updates.is_empty() {
        sqlx::query(
            "INSERT INTO red_packets (packet_id, room_id, sender_id, sender_name, mode, total_minor, count, shares, \
             claimed_count, claimed_minor, escrow_apple, escrow_google, escrow_web, created_at_ms, expires_at_ms, \
             settled_at_ms, returned_minor) \
             SELECT v->>0, v->>1, v->>2, v->>3, v->>4, (v->>5)::bigint, (v->>6)::bigint, v->>7, (v->>8)::bigint, \
             (v->>9)::bigint, (v->>10)::bigint, (v->>11)::bigint, (v->>12)::bigint, (v->>13)::bigint, \
             (v->>14)::bigint, (v->>15)::bigint, (v->>16)::bigint FROM jsonb_array_elements($1::jsonb) v \
             ON CONFLICT (packet_id) DO UPDATE SET claimed_count = excluded.claimed_count, \
             claimed_minor = excluded.claimed_minor, escrow_apple = excluded.escrow_apple, \
             escrow_google = excluded.escrow_google, escrow_web = excluded.escrow_web, \
             settled_at_ms = excluded.settled_at_ms, returned_minor = excluded.returned_minor",
        )
        .bind(batch_json::packets(w))
        .execute(&mut **tx)
        .await?;
    }
    if !w.claims.is_empty() {
        sqlx::query(
            "INSERT INTO red_packet_claims (packet_id, user_id, user_name, idx, amount_minor, by_channel, created_at_ms) \
             SELECT v->>0, v->>1, v->>2, (v->>3)::bigint, (v->>4)::bigint, v->>5, (v->>6)::bigint \
             FROM jsonb_array_elements($1::jsonb) v",
        )
        .bind(batch_json::claims(w))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The batch's gifts, one array per column.
async fn insert_gifts(
    tx: &mut Transaction<'static, Postgres>,
    gifts: &[GiftRecord],
) -> Result<(), Attempt> {
    let s = |f: fn(&GiftRecord) -> &str| -> Vec<&str> { gifts.iter().map(f).collect() };
    let n = |f: fn(&GiftRecord) -> i64| -> Vec<i64> { gifts.iter().map(f).collect() };
    let by_channel: Vec<String> = gifts
        .iter()
        .map(|g| serde_json::to_string(&g.split.by_channel).expect("an array serializes"))
        .collect();
    sqlx::query(
        "INSERT INTO gifts (gift_id, room_id, broadcaster_id, sender_id, sender_name, sticker_id, quantity, \
         amount_minor, store_minor, broadcaster_minor, platform_minor, by_channel, message, balance_after_minor, \
         seq, epoch, created_at_ms) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], \
         $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[])",
    )
    .bind(s(|g| &g.gift_id))
    .bind(s(|g| &g.room_id))
    .bind(s(|g| &g.broadcaster_id))
    .bind(s(|g| &g.sender_id))
    .bind(s(|g| &g.sender_name))
    .bind(s(|g| &g.sticker_id))
    .bind(n(|g| i64::from(g.quantity)))
    .bind(n(|g| g.amount_minor))
    .bind(n(|g| g.split.store))
    .bind(n(|g| g.split.broadcaster))
    .bind(n(|g| g.split.platform))
    .bind(by_channel)
    .bind(gifts.iter().map(|g| g.message.as_deref()).collect::<Vec<_>>())
    .bind(n(|g| g.balance_after_minor))
    .bind(n(|g| g.seq as i64))
    .bind(n(|g| g.epoch as i64))
    .bind(n(|g| g.created_at_ms))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
