//! The PostgreSQL backend (production): several gift-service nodes share one
//! database, each with its own committer.
//!
//! A batch runs under READ COMMITTED and locks what it reads, always in the
//! same order — gifts (for acks), then rooms, then wallets, each sorted — so
//! batches of different nodes serialize per row and cannot deadlock. Debits
//! are planned against the locked balances and written as deltas; hot
//! accounts (store, broadcaster, platform) only receive appended entries.
//! Idempotency keys and receipts are inserted with `ON CONFLICT DO NOTHING`:
//! losing that race to another node rolls the batch back and plans it again,
//! which then replays the other node's outcome.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Postgres, Row, Transaction};

use super::batch_json::BatchJson;
use super::lost_commit;
use super::rows::{self, GIFT_COLUMNS, PACKET_COLUMNS, ROOM_COLUMNS};
use super::schema::{apply_migrations, MONEY_SCHEMA};
use super::shared::{ReadQueries, Reads};
use super::{Backend, PlanFn, Ran};
use crate::plan::{self, Command, GiftAckInfo, Loaded, Outcome};
use crate::LedgerError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS rooms (
    room_id TEXT PRIMARY KEY,
    broadcaster_id TEXT NOT NULL,
    title TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    live BOOLEAN NOT NULL,
    last_seq BIGINT NOT NULL,
    published_seq BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT
);
CREATE TABLE IF NOT EXISTS wallets (
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    balance_minor BIGINT NOT NULL CHECK (balance_minor >= 0),
    PRIMARY KEY (user_id, channel)
);
CREATE TABLE IF NOT EXISTS transactions (
    txn_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    entry_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id TEXT NOT NULL,
    account TEXT NOT NULL,
    amount_minor BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS gifts (
    gift_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    broadcaster_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    sticker_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    store_minor BIGINT NOT NULL,
    broadcaster_minor BIGINT NOT NULL,
    platform_minor BIGINT NOT NULL,
    by_channel TEXT NOT NULL,
    message TEXT,
    balance_after_minor BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    ack_text TEXT,
    acked_at_ms BIGINT,
    refunded_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS gifts_by_time ON gifts (created_at_ms, gift_id);
CREATE INDEX IF NOT EXISTS gifts_by_broadcaster ON gifts (broadcaster_id, created_at_ms);
CREATE TABLE IF NOT EXISTS idempotency (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    gift_id TEXT,
    error_code TEXT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE TABLE IF NOT EXISTS receipts (
    receipt_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_events (
    room_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    frame TEXT NOT NULL,
    broadcaster_frame TEXT,
    broadcaster_id TEXT NOT NULL,
    ends_room BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);
"#;

/// How often a batch is planned again after losing a race or a deadlock.
const BATCH_ATTEMPTS_MAX: u32 = 5;

pub(crate) struct Pg {
    writer: PgPool,
    reads: Reads<Postgres>,
    marks: lost_commit::Marks,
}

/// SQLSTATEs that mean "cannot commit now" rather than a broken answer:
/// class 08 connection, 57 operator intervention (shutdown), 53
/// insufficient resources, 55000 "database is not accepting connections"
/// (recovery).
fn unavailable_code(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57") || code.starts_with("53") || code == "55000"
}

/// A PostgreSQL error as the ledger reports it.
pub(crate) fn error(e: sqlx::Error) -> LedgerError {
    super::shared::ledger_error(e, unavailable_code)
}

/// Why one attempt at a batch did not commit, or may not have.
enum Attempt {
    Retry(String),
    Fail(LedgerError),
    /// The COMMIT of the batch that wrote commit mark `mark` went
    /// unanswered: `outcomes` hold if it took effect (see [`lost_commit`]).
    Unanswered {
        mark: i64,
        outcomes: Vec<Outcome>,
        why: String,
    },
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // 40001 serialization failure, 40P01 deadlock: safe to retry.
            if matches!(db.code().as_deref(), Some("40001") | Some("40P01")) {
                return Attempt::Retry(e.to_string());
            }
        }
        Attempt::Fail(error(e))
    }
}

impl Pg {
    pub async fn connect(url: &str, read_connections: u32) -> Result<Pg, LedgerError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| LedgerError::Config(e.to_string()))?;
        let writer = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.clone())
            .await
            .map_err(error)?;
        let reader = PgPoolOptions::new()
            .max_connections(read_connections.max(1))
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(error)?;
        Ok(Pg {
            writer,
            reads: Reads {
                pool: reader,
                error,
            },
            marks: lost_commit::Marks::new(),
        })
    }

    async fn attempt(
        &self,
        commands: &[Command],
        plan: PlanFn<'_>,
    ) -> Result<Vec<Outcome>, Attempt> {
        let mut tx = self.writer.begin().await?;
        let loaded = load(&mut tx, commands).await?;
        let (writes, outcomes) =
            plan(loaded).map_err(|e| Attempt::Fail(LedgerError::Internal(e.to_string())))?;
        let mut mark = None;
        if !writes.is_empty() {
            write(&mut tx, &writes).await?;
            // What to look for should the COMMIT's answer be lost.
            mark = Some(self.marks.next(&mut tx).await?);
        }
        match (tx.commit().await, mark) {
            (Ok(()), _) => Ok(outcomes),
            (Err(e), Some(mark)) if lost_commit::outcome_unknown(&e) => Err(Attempt::Unanswered {
                mark,
                outcomes,
                why: e.to_string(),
            }),
            (Err(e), _) => Err(e.into()),
        }
    }
}

fn text_array(items: impl Iterator<Item = String>) -> Vec<String> {
    items.collect()
}

async fn load(
    tx: &mut Transaction<'static, Postgres>,
    commands: &[Command],
) -> Result<Loaded, sqlx::Error> {
    let mut keys = plan::keys_of(commands);
    let mut loaded = Loaded::default();
    if !keys.gifts.is_empty() {
        let q = format!(
            "SELECT {GIFT_COLUMNS} FROM gifts WHERE gift_id = ANY($1) ORDER BY gift_id FOR UPDATE"
        );
        for r in sqlx::query(&q)
            .bind(text_array(keys.gifts.iter().cloned()))
            .fetch_all(&mut **tx)
            .await?
        {
            let g = rows::gift(&r)?;
            loaded.gifts.insert(g.gift_id.clone(), GiftAckInfo::of(&g));
            loaded.gift_records.insert(g.gift_id.clone(), g);
        }
        plan::add_ack_rooms(&mut keys, &loaded.gifts);
    }
    // Packets after gifts and before rooms: a claim or a return is planned
    // against the locked packet row, so concurrent claims on several nodes
    // serialize per packet and a return happens once.
    if !keys.packets.is_empty() {
        let q = format!(
            "SELECT {PACKET_COLUMNS} FROM red_packets WHERE packet_id = ANY($1) ORDER BY packet_id FOR UPDATE"
        );
        for r in sqlx::query(&q)
            .bind(text_array(keys.packets.iter().cloned()))
            .fetch_all(&mut **tx)
            .await?
        {
            let p = rows::packet(&r)?;
            loaded.packets.insert(p.packet_id.clone(), p);
        }
        plan::add_packet_keys(&mut keys, &loaded.packets);
        let (ps, us): (Vec<String>, Vec<String>) = keys.claims.iter().cloned().unzip();
        for r in sqlx::query(
            "SELECT c.packet_id, c.user_id FROM red_packet_claims c \
             JOIN UNNEST($1::text[], $2::text[]) AS k(p, u) ON c.packet_id = k.p AND c.user_id = k.u",
        )
        .bind(ps)
        .bind(us)
        .fetch_all(&mut **tx)
        .await?
        {
            loaded
                .claimed
                .insert((r.try_get("packet_id")?, r.try_get("user_id")?));
        }
    }
    if !keys.rooms.is_empty() {
        let q = format!(
            "SELECT {ROOM_COLUMNS} FROM rooms WHERE room_id = ANY($1) ORDER BY room_id FOR UPDATE"
        );
        for r in sqlx::query(&q)
            .bind(text_array(keys.rooms.iter().cloned()))
            .fetch_all(&mut **tx)
            .await?
        {
            let room = rows::room(&r)?;
            loaded.rooms.insert(room.room_id.clone(), room);
        }
    }
    if !keys.users.is_empty() {
        for r in sqlx::query(
            "SELECT user_id, channel, balance_minor FROM wallets WHERE user_id = ANY($1) \
             ORDER BY user_id, channel FOR UPDATE",
        )
        .bind(text_array(keys.users.iter().cloned()))
        .fetch_all(&mut **tx)
        .await?
        {
            let channel: String = r.try_get("channel")?;
            let channel: applause_core::Channel = channel
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
            loaded.wallets.entry(r.try_get("user_id")?).or_default()[channel.index()] =
                r.try_get("balance_minor")?;
        }
    }
    if !keys.idempotency.is_empty() {
        let (users, ks): (Vec<String>, Vec<String>) = keys.idempotency.iter().cloned().unzip();
        for r in sqlx::query(
            "SELECT i.user_id, i.key, i.request_hash, i.gift_id, i.error_code, i.created_at_ms \
             FROM idempotency i JOIN UNNEST($1::text[], $2::text[]) AS k(u, k) ON i.user_id = k.u AND i.key = k.k",
        )
        .bind(users)
        .bind(ks)
        .fetch_all(&mut **tx)
        .await?
        {
            let rec = rows::idempotency(&r)?;
            loaded
                .idempotency
                .insert((rec.user_id.clone(), rec.key.clone()), rec);
        }
    }
    if !keys.receipts.is_empty() {
        for r in sqlx::query(
            "SELECT receipt_id, user_id, channel, amount_minor, created_at_ms FROM receipts WHERE receipt_id = ANY($1)",
        )
        .bind(text_array(keys.receipts.iter().cloned()))
        .fetch_all(&mut **tx)
        .await?
        {
            let rec = rows::receipt(&r)?;
            loaded.receipts.insert(rec.receipt_id.clone(), rec);
        }
    }
    if let Some((before_ms, limit)) = keys.expiry {
        // Last, after every other lock; rows another node's sweep holds are
        // skipped, so concurrent sweeps forget disjoint records.
        for r in sqlx::query(
            "SELECT user_id, key, created_at_ms FROM idempotency WHERE created_at_ms < $1 \
             LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut **tx)
        .await?
        {
            loaded
                .expirable
                .push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
        }
    }
    Ok(loaded)
}

async fn write(tx: &mut Transaction<'static, Postgres>, w: &plan::WriteSet) -> Result<(), Attempt> {
    let j = BatchJson::of(w);
    if !w.expired_keys.is_empty() {
        // Before the batch's new keys: a forgotten key may be used again.
        let (users, ks): (Vec<String>, Vec<String>) = w.expired_keys.iter().cloned().unzip();
        sqlx::query(
            "DELETE FROM idempotency i USING UNNEST($1::text[], $2::text[]) AS k(u, k) \
             WHERE i.user_id = k.u AND i.key = k.k",
        )
        .bind(users)
        .bind(ks)
        .execute(&mut **tx)
        .await?;
    }
    // Keys first: losing a race to another node must be found before
    // anything else is written.
    if !w.idempotency.is_empty() {
        let inserted = sqlx::query(
            "INSERT INTO idempotency (user_id, key, request_hash, gift_id, error_code, created_at_ms) \
             SELECT v->>0, v->>1, v->>2, v->>3, v->>4, (v->>5)::bigint FROM jsonb_array_elements($1::jsonb) v \
             ON CONFLICT DO NOTHING",
        )
        .bind(&j.idempotency)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted != w.idempotency.len() as u64 {
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
        .bind(&j.receipts)
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
    if w.wallet_deltas.values().any(|d| *d > 0) {
        sqlx::query(
            "INSERT INTO wallets (user_id, channel, balance_minor) \
             SELECT v->>0, v->>1, (v->>2)::bigint FROM jsonb_array_elements($1::jsonb) v \
             ON CONFLICT (user_id, channel) DO UPDATE SET balance_minor = wallets.balance_minor + excluded.balance_minor",
        )
        .bind(&j.wallet_credits)
        .execute(&mut **tx)
        .await?;
    }
    if w.wallet_deltas.values().any(|d| *d < 0) {
        sqlx::query(
            "UPDATE wallets SET balance_minor = wallets.balance_minor + d.delta \
             FROM (SELECT v->>0 AS u, v->>1 AS c, (v->>2)::bigint AS delta FROM jsonb_array_elements($1::jsonb) v) AS d \
             WHERE wallets.user_id = d.u AND wallets.channel = d.c",
        )
        .bind(&j.wallet_debits)
        .execute(&mut **tx)
        .await?;
    }
    if !w.txns.is_empty() {
        sqlx::query(
            "INSERT INTO transactions (txn_id, kind, created_at_ms) \
             SELECT v->>0, v->>1, (v->>2)::bigint FROM jsonb_array_elements($1::jsonb) v",
        )
        .bind(&j.txns)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO entries (txn_id, account, amount_minor) \
             SELECT v->>0, v->>1, (v->>2)::bigint FROM jsonb_array_elements($1::jsonb) v",
        )
        .bind(&j.entries)
        .execute(&mut **tx)
        .await?;
    }
    if !w.gifts.is_empty() {
        sqlx::query(
            "INSERT INTO gifts (gift_id, room_id, broadcaster_id, sender_id, sender_name, sticker_id, quantity, \
             amount_minor, store_minor, broadcaster_minor, platform_minor, by_channel, message, balance_after_minor, \
             seq, epoch, created_at_ms) \
             SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, (v->>6)::bigint, (v->>7)::bigint, (v->>8)::bigint, \
             (v->>9)::bigint, (v->>10)::bigint, v->>11, v->>12, (v->>13)::bigint, (v->>14)::bigint, (v->>15)::bigint, \
             (v->>16)::bigint FROM jsonb_array_elements($1::jsonb) v",
        )
        .bind(&j.gifts)
        .execute(&mut **tx)
        .await?;
    }
    if !w.events.is_empty() {
        sqlx::query(
            "INSERT INTO room_events (room_id, seq, epoch, frame, broadcaster_frame, broadcaster_id, ends_room, created_at_ms, gift_id) \
             SELECT v->>0, (v->>1)::bigint, (v->>2)::bigint, v->>3, v->>4, v->>5, (v->>6)::boolean, (v->>7)::bigint, v->>8 \
             FROM jsonb_array_elements($1::jsonb) v",
        )
        .bind(&j.events)
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
        .bind(&j.packets)
        .execute(&mut **tx)
        .await?;
    }
    if !w.claims.is_empty() {
        sqlx::query(
            "INSERT INTO red_packet_claims (packet_id, user_id, user_name, idx, amount_minor, by_channel, created_at_ms) \
             SELECT v->>0, v->>1, v->>2, (v->>3)::bigint, (v->>4)::bigint, v->>5, (v->>6)::bigint \
             FROM jsonb_array_elements($1::jsonb) v",
        )
        .bind(&j.claims)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Backend for Pg {
    async fn migrate(&self) -> Result<(), LedgerError> {
        // Several nodes may start at once: serialize schema creation.
        let mut tx = self.writer.begin().await.map_err(error)?;
        tx.execute("SELECT pg_advisory_xact_lock(727274)")
            .await
            .map_err(error)?;
        tx.execute(SCHEMA).await.map_err(error)?;
        tx.execute(MONEY_SCHEMA).await.map_err(error)?;
        apply_migrations::<Postgres>(&mut tx).await.map_err(error)?;
        lost_commit::forget_old_marks(&mut tx)
            .await
            .map_err(error)?;
        tx.commit().await.map_err(error)?;
        Ok(())
    }

    async fn run_batch(&self, commands: &[Command], plan: PlanFn<'_>) -> Ran {
        let mut last = String::new();
        for _ in 0..BATCH_ATTEMPTS_MAX {
            match self.attempt(commands, plan).await {
                Ok(o) => return Ran::Done(Ok(o)),
                Err(Attempt::Fail(e)) => return Ran::Done(Err(e)),
                Err(Attempt::Retry(why)) => {
                    tracing::debug!(%why, "retrying ledger batch");
                    last = why;
                }
                Err(Attempt::Unanswered {
                    mark,
                    outcomes,
                    why,
                }) => {
                    let (pool, marks) = (self.reads.pool.clone(), self.marks.clone());
                    return Ran::Unanswered(Box::pin(lost_commit::settle(
                        pool, marks, mark, outcomes, why,
                    )));
                }
            }
        }
        Ran::Done(Err(LedgerError::Unavailable(format!(
            "batch kept conflicting: {last}"
        ))))
    }

    fn reads(&self) -> &dyn ReadQueries {
        &self.reads
    }
}
