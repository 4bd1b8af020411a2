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

use super::lost_commit;
use super::postgres_batch::write;
use super::rows::{self, GIFT_COLUMNS, PACKET_COLUMNS, ROOM_COLUMNS};
use super::schema::{apply_migrations, Dialect, MONEY_SCHEMA};
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
pub(super) enum Attempt {
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

/// `persistent(false)` for the joins of a batch's key pairs against a
/// growing table (idempotency keys, claims): a kept statement runs a generic
/// plan made when the table was small — a hash join over a sequential scan —
/// and keeps it until the next ANALYZE, so every batch scanned the whole
/// idempotency table (`pg_stat_user_tables`: one sequential scan per batch).
/// Planned each time, the planner sees the real table size and the number of
/// keys and probes the primary key.
pub(super) const PLANNED_EACH_TIME: bool = false;

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
        .persistent(PLANNED_EACH_TIME)
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
            rows::wallet_into(&r, &mut loaded.wallets)?;
        }
    }
    if !keys.idempotency.is_empty() {
        let (users, ks): (Vec<String>, Vec<String>) = keys.idempotency.iter().cloned().unzip();
        for r in sqlx::query(
            "SELECT i.user_id, i.key, i.request_hash, i.gift_id, i.error_code, i.created_at_ms \
             FROM idempotency i JOIN UNNEST($1::text[], $2::text[]) AS k(u, k) ON i.user_id = k.u AND i.key = k.k",
        )
        .persistent(PLANNED_EACH_TIME)
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
        apply_migrations::<Postgres>(&mut tx, Dialect::Postgres)
            .await
            .map_err(error)?;
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
