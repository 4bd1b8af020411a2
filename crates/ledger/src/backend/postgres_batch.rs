//! PostgreSQL's batch writes: the rows of each hot table (idempotency keys,
//! transactions, entries, gifts, room events, wallet deltas) go in as one
//! array per column, expanded by `UNNEST` — one statement per table however
//! many gifts the batch holds, and all but the idempotency keys in one
//! statement together ([`hot_rows`]). Arrays travel in PostgreSQL's binary format,
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
    hot_rows(tx, w).await?;
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

/// The rows every purchase writes — its room's new state, the wallet
/// deltas, the transaction and its entries, the gift and its room event —
/// in one statement: each table a data-modifying `WITH` over `UNNEST`ed
/// column arrays (an empty array writes nothing), one round trip to the
/// database instead of seven. The parts touch disjoint rows (a room's final
/// state once, each wallet row in one sign, new ids), so their order within
/// the statement does not matter; rooms and wallets are locked already.
async fn hot_rows(tx: &mut Transaction<'static, Postgres>, w: &WriteSet) -> Result<(), Attempt> {
    if w.room_updates.is_empty()
        && w.wallet_deltas.is_empty()
        && w.txns.is_empty()
        && w.entries.is_empty()
        && w.gifts.is_empty()
        && w.events.is_empty()
    {
        return Ok(());
    }
    let rooms = &w.room_updates;
    let (credit_users, credit_channels, credits) = wallet_columns(w, true);
    let (debit_users, debit_channels, debits) = wallet_columns(w, false);
    let gifts = &w.gifts;
    let g = |f: fn(&GiftRecord) -> &str| -> Vec<&str> { gifts.iter().map(f).collect() };
    let gn = |f: fn(&GiftRecord) -> i64| -> Vec<i64> { gifts.iter().map(f).collect() };
    let by_channel: Vec<String> = gifts
        .iter()
        .map(|g| serde_json::to_string(&g.split.by_channel).expect("an array serializes"))
        .collect();
    let events = &w.events;
    let en = |f: fn(&applause_core::EventEnvelope) -> i64| -> Vec<i64> {
        events.iter().map(|o| f(&o.envelope)).collect()
    };
    sqlx::query(
        "WITH \
         room_updates AS (UPDATE rooms SET live = d.live, last_seq = d.last_seq, \
             published_seq = d.published_seq, ended_at_ms = d.ended_at_ms \
             FROM UNNEST($1::text[], $2::boolean[], $3::bigint[], $4::bigint[], $5::bigint[]) \
                 AS d(room_id, live, last_seq, published_seq, ended_at_ms) \
             WHERE rooms.room_id = d.room_id), \
         credits AS (INSERT INTO wallets (user_id, channel, balance_minor) \
             SELECT * FROM UNNEST($6::text[], $7::text[], $8::bigint[]) \
             ON CONFLICT (user_id, channel) DO UPDATE SET balance_minor = wallets.balance_minor + excluded.balance_minor), \
         debits AS (UPDATE wallets SET balance_minor = wallets.balance_minor + d.delta \
             FROM UNNEST($9::text[], $10::text[], $11::bigint[]) AS d(u, c, delta) \
             WHERE wallets.user_id = d.u AND wallets.channel = d.c), \
         txns AS (INSERT INTO transactions (txn_id, kind, created_at_ms) \
             SELECT * FROM UNNEST($12::text[], $13::text[], $14::bigint[])), \
         entries AS (INSERT INTO entries (txn_id, account, amount_minor) \
             SELECT * FROM UNNEST($15::text[], $16::text[], $17::bigint[])), \
         gifts AS (INSERT INTO gifts (gift_id, room_id, broadcaster_id, sender_id, sender_name, sticker_id, \
             quantity, amount_minor, store_minor, broadcaster_minor, platform_minor, by_channel, message, \
             balance_after_minor, seq, epoch, created_at_ms) \
             SELECT * FROM UNNEST($18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], \
             $24::bigint[], $25::bigint[], $26::bigint[], $27::bigint[], $28::bigint[], $29::text[], $30::text[], \
             $31::bigint[], $32::bigint[], $33::bigint[], $34::bigint[])), \
         events AS (INSERT INTO room_events (room_id, seq, epoch, frame, broadcaster_frame, broadcaster_id, \
             ends_room, created_at_ms, gift_id) \
             SELECT * FROM UNNEST($35::text[], $36::bigint[], $37::bigint[], $38::text[], $39::text[], $40::text[], \
             $41::boolean[], $42::bigint[], $43::text[])) \
         SELECT 1",
    )
    .bind(rooms.iter().map(|r| r.room_id.as_str()).collect::<Vec<_>>())
    .bind(rooms.iter().map(|r| r.live).collect::<Vec<_>>())
    .bind(rooms.iter().map(|r| r.last_seq as i64).collect::<Vec<_>>())
    .bind(rooms.iter().map(|r| r.published_seq as i64).collect::<Vec<_>>())
    .bind(rooms.iter().map(|r| r.ended_at_ms).collect::<Vec<_>>())
    .bind(credit_users)
    .bind(credit_channels)
    .bind(credits)
    .bind(debit_users)
    .bind(debit_channels)
    .bind(debits)
    .bind(w.txns.iter().map(|t| t.txn_id.as_str()).collect::<Vec<_>>())
    .bind(w.txns.iter().map(|t| t.kind).collect::<Vec<_>>())
    .bind(w.txns.iter().map(|t| t.created_at_ms).collect::<Vec<_>>())
    .bind(w.entries.iter().map(|e| e.txn_id.as_str()).collect::<Vec<_>>())
    .bind(w.entries.iter().map(|e| e.account.as_str()).collect::<Vec<_>>())
    .bind(w.entries.iter().map(|e| e.amount_minor).collect::<Vec<_>>())
    .bind(g(|g| &g.gift_id))
    .bind(g(|g| &g.room_id))
    .bind(g(|g| &g.broadcaster_id))
    .bind(g(|g| &g.sender_id))
    .bind(g(|g| &g.sender_name))
    .bind(g(|g| &g.sticker_id))
    .bind(gn(|g| i64::from(g.quantity)))
    .bind(gn(|g| g.amount_minor))
    .bind(gn(|g| g.split.store))
    .bind(gn(|g| g.split.broadcaster))
    .bind(gn(|g| g.split.platform))
    .bind(by_channel)
    .bind(gifts.iter().map(|g| g.message.as_deref()).collect::<Vec<_>>())
    .bind(gn(|g| g.balance_after_minor))
    .bind(gn(|g| g.seq as i64))
    .bind(gn(|g| g.epoch as i64))
    .bind(gn(|g| g.created_at_ms))
    .bind(events.iter().map(|o| o.envelope.room_id.as_str()).collect::<Vec<_>>())
    .bind(en(|v| v.seq as i64))
    .bind(en(|v| v.epoch as i64))
    .bind(events.iter().map(|o| o.envelope.frame.as_str()).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|o| o.envelope.broadcaster_frame.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|o| o.envelope.broadcaster_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(events.iter().map(|o| o.envelope.ends_room).collect::<Vec<_>>())
    .bind(en(|v| v.committed_at_ms))
    .bind(events.iter().map(|o| o.gift_id.as_deref()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
