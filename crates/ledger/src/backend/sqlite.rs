//! The SQLite backend (embedded default): one file in the data directory, WAL
//! journal, `synchronous=FULL` so a commit is on disk before any 201.
//!
//! SQLite has one writer at a time; the committer owns the single write
//! connection and opens every batch with `BEGIN IMMEDIATE`, so the state it
//! loads cannot change before it commits. Reads use a separate pool (WAL lets
//! them run beside the writer).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Executor, Row, SqliteConnection};
use tokio::sync::Mutex;

use super::batch_json::BatchJson;
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
    epoch INTEGER NOT NULL,
    live INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    published_seq INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS wallets (
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    balance_minor INTEGER NOT NULL CHECK (balance_minor >= 0),
    PRIMARY KEY (user_id, channel)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transactions (
    txn_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    entry_id INTEGER PRIMARY KEY,
    txn_id TEXT NOT NULL,
    account TEXT NOT NULL,
    amount_minor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gifts (
    gift_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    broadcaster_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    sticker_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    store_minor INTEGER NOT NULL,
    broadcaster_minor INTEGER NOT NULL,
    platform_minor INTEGER NOT NULL,
    by_channel TEXT NOT NULL,
    message TEXT,
    balance_after_minor INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    ack_text TEXT,
    acked_at_ms INTEGER,
    refunded_at_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gifts_by_time ON gifts (created_at_ms, gift_id);
CREATE INDEX IF NOT EXISTS gifts_by_broadcaster ON gifts (broadcaster_id, created_at_ms);
CREATE TABLE IF NOT EXISTS idempotency (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    gift_id TEXT,
    error_code TEXT,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    receipt_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS room_events (
    room_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    frame TEXT NOT NULL,
    broadcaster_frame TEXT,
    broadcaster_id TEXT NOT NULL,
    ends_room INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq)
) WITHOUT ROWID;
"#;

pub(crate) struct Lite {
    writer: Mutex<SqliteConnection>,
    reads: Reads<sqlx::Sqlite>,
}

/// SQLite's result codes that mean "cannot commit now" rather than a broken
/// answer: BUSY (5), LOCKED (6), IOERR (10), FULL (13), CANTOPEN (14).
fn unavailable_code(code: &str) -> bool {
    ["5", "6", "10", "13", "14"].contains(&code)
}

/// An SQLite error as the ledger reports it.
pub(crate) fn error(e: sqlx::Error) -> LedgerError {
    super::shared::ledger_error(e, unavailable_code)
}

impl Lite {
    pub async fn open(path: &str, read_connections: u32) -> Result<Lite, LedgerError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{path}"))
            .map_err(|e| LedgerError::Config(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .pragma("cache_size", "-65536")
            // Checkpoint every ~64 MiB of WAL instead of ~4 MiB: wallet and
            // idempotency pages rewritten by many batches are copied back to
            // the database once. Durability is unchanged (every commit still
            // fsyncs the WAL).
            .pragma("wal_autocheckpoint", "16384")
            .pragma("temp_store", "memory");
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(error)?;
        writer.execute(SCHEMA).await.map_err(error)?;
        writer.execute(MONEY_SCHEMA).await.map_err(error)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(read_connections.max(1))
            .connect_with(options.read_only(true))
            .await
            .map_err(error)?;
        Ok(Lite {
            writer: Mutex::new(writer),
            reads: Reads {
                pool: reader,
                error,
            },
        })
    }

    async fn load(
        conn: &mut SqliteConnection,
        commands: &[Command],
    ) -> Result<Loaded, sqlx::Error> {
        let mut keys = plan::keys_of(commands);
        let mut loaded = Loaded::default();
        if !keys.gifts.is_empty() {
            let ids = json_list(keys.gifts.iter());
            let q = format!(
                "SELECT {GIFT_COLUMNS} FROM gifts WHERE gift_id IN (SELECT value FROM json_each(?1))"
            );
            for r in sqlx::query(&q).bind(ids).fetch_all(&mut *conn).await? {
                let g = rows::gift(&r)?;
                loaded.gifts.insert(g.gift_id.clone(), GiftAckInfo::of(&g));
                loaded.gift_records.insert(g.gift_id.clone(), g);
            }
            plan::add_ack_rooms(&mut keys, &loaded.gifts);
        }
        if !keys.packets.is_empty() {
            let q = format!(
                "SELECT {PACKET_COLUMNS} FROM red_packets WHERE packet_id IN (SELECT value FROM json_each(?1))"
            );
            for r in sqlx::query(&q)
                .bind(json_list(keys.packets.iter()))
                .fetch_all(&mut *conn)
                .await?
            {
                let p = rows::packet(&r)?;
                loaded.packets.insert(p.packet_id.clone(), p);
            }
            plan::add_packet_keys(&mut keys, &loaded.packets);
            let pairs: Vec<_> = keys
                .claims
                .iter()
                .map(|(p, u)| serde_json::json!([p, u]))
                .collect();
            for r in sqlx::query(
                "SELECT packet_id, user_id FROM red_packet_claims \
                 WHERE (packet_id, user_id) IN (SELECT value->>0, value->>1 FROM json_each(?1))",
            )
            .bind(serde_json::Value::Array(pairs).to_string())
            .fetch_all(&mut *conn)
            .await?
            {
                loaded
                    .claimed
                    .insert((r.try_get("packet_id")?, r.try_get("user_id")?));
            }
        }
        if !keys.rooms.is_empty() {
            let q = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE room_id IN (SELECT value FROM json_each(?1))");
            for r in sqlx::query(&q)
                .bind(json_list(keys.rooms.iter()))
                .fetch_all(&mut *conn)
                .await?
            {
                let room = rows::room(&r)?;
                loaded.rooms.insert(room.room_id.clone(), room);
            }
        }
        if !keys.users.is_empty() {
            for r in sqlx::query(
                "SELECT user_id, channel, balance_minor FROM wallets \
                 WHERE user_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json_list(keys.users.iter()))
            .fetch_all(&mut *conn)
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
            let pairs: Vec<_> = keys
                .idempotency
                .iter()
                .map(|(u, k)| serde_json::json!([u, k]))
                .collect();
            for r in sqlx::query(
                "SELECT user_id, key, request_hash, gift_id, error_code, created_at_ms FROM idempotency \
                 WHERE (user_id, key) IN (SELECT value->>0, value->>1 FROM json_each(?1))",
            )
            .bind(serde_json::Value::Array(pairs).to_string())
            .fetch_all(&mut *conn)
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
                "SELECT receipt_id, user_id, channel, amount_minor, created_at_ms FROM receipts \
                 WHERE receipt_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json_list(keys.receipts.iter()))
            .fetch_all(&mut *conn)
            .await?
            {
                let rec = rows::receipt(&r)?;
                loaded.receipts.insert(rec.receipt_id.clone(), rec);
            }
        }
        if let Some((before_ms, limit)) = keys.expiry {
            // The single writer holds the lock: nobody else sweeps meanwhile.
            for r in sqlx::query(
                "SELECT user_id, key, created_at_ms FROM idempotency WHERE created_at_ms < ?1 LIMIT ?2",
            )
            .bind(before_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?
            {
                loaded
                    .expirable
                    .push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
            }
        }
        Ok(loaded)
    }

    async fn write(conn: &mut SqliteConnection, w: &plan::WriteSet) -> Result<(), sqlx::Error> {
        if !w.expired_keys.is_empty() {
            // Before the batch's new keys: a forgotten key may be used again.
            let pairs: Vec<_> = w
                .expired_keys
                .iter()
                .map(|(u, k)| serde_json::json!([u, k]))
                .collect();
            sqlx::query(
                "DELETE FROM idempotency WHERE (user_id, key) IN (SELECT value->>0, value->>1 FROM json_each(?1))",
            )
            .bind(serde_json::Value::Array(pairs).to_string())
            .execute(&mut *conn)
            .await?;
        }
        for room in &w.new_rooms {
            sqlx::query(
                "INSERT INTO rooms (room_id, broadcaster_id, title, epoch, live, last_seq, published_seq, created_at_ms, ended_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
            .execute(&mut *conn)
            .await?;
        }
        for room in &w.room_updates {
            sqlx::query(
                "UPDATE rooms SET live = ?2, last_seq = ?3, published_seq = ?4, ended_at_ms = ?5 WHERE room_id = ?1",
            )
            .bind(&room.room_id)
            .bind(room.live)
            .bind(room.last_seq as i64)
            .bind(room.published_seq as i64)
            .bind(room.ended_at_ms)
            .execute(&mut *conn)
            .await?;
        }
        let j = BatchJson::of(w);
        if w.wallet_deltas.values().any(|d| *d > 0) {
            sqlx::query(
                "INSERT INTO wallets (user_id, channel, balance_minor) \
                 SELECT value->>0, value->>1, value->>2 FROM json_each(?1) WHERE true \
                 ON CONFLICT (user_id, channel) DO UPDATE SET balance_minor = balance_minor + excluded.balance_minor",
            )
            .bind(&j.wallet_credits)
            .execute(&mut *conn)
            .await?;
        }
        if w.wallet_deltas.values().any(|d| *d < 0) {
            sqlx::query(
                "UPDATE wallets SET balance_minor = balance_minor + d.delta \
                 FROM (SELECT value->>0 AS u, value->>1 AS c, value->>2 AS delta FROM json_each(?1)) AS d \
                 WHERE wallets.user_id = d.u AND wallets.channel = d.c",
            )
            .bind(&j.wallet_debits)
            .execute(&mut *conn)
            .await?;
        }
        if !w.txns.is_empty() {
            sqlx::query(
                "INSERT INTO transactions (txn_id, kind, created_at_ms) \
                 SELECT value->>0, value->>1, value->>2 FROM json_each(?1)",
            )
            .bind(&j.txns)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO entries (txn_id, account, amount_minor) \
                 SELECT value->>0, value->>1, value->>2 FROM json_each(?1)",
            )
            .bind(&j.entries)
            .execute(&mut *conn)
            .await?;
        }
        if !w.gifts.is_empty() {
            sqlx::query(
                "INSERT INTO gifts (gift_id, room_id, broadcaster_id, sender_id, sender_name, sticker_id, quantity, \
                 amount_minor, store_minor, broadcaster_minor, platform_minor, by_channel, message, balance_after_minor, \
                 seq, epoch, created_at_ms) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, \
                 value->>8, value->>9, value->>10, value->>11, value->>12, value->>13, value->>14, value->>15, value->>16 \
                 FROM json_each(?1)",
            )
            .bind(&j.gifts)
            .execute(&mut *conn)
            .await?;
        }
        if !w.idempotency.is_empty() {
            sqlx::query(
                "INSERT INTO idempotency (user_id, key, request_hash, gift_id, error_code, created_at_ms) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM json_each(?1)",
            )
            .bind(&j.idempotency)
            .execute(&mut *conn)
            .await?;
        }
        if !w.receipts.is_empty() {
            sqlx::query(
                "INSERT INTO receipts (receipt_id, user_id, channel, amount_minor, created_at_ms) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?1)",
            )
            .bind(&j.receipts)
            .execute(&mut *conn)
            .await?;
        }
        if !w.events.is_empty() {
            sqlx::query(
                "INSERT INTO room_events (room_id, seq, epoch, frame, broadcaster_frame, broadcaster_id, ends_room, created_at_ms, gift_id) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8 FROM json_each(?1)",
            )
            .bind(&j.events)
            .execute(&mut *conn)
            .await?;
        }
        for (gift_id, text, at) in &w.acks {
            sqlx::query("UPDATE gifts SET ack_text = ?2, acked_at_ms = ?3 WHERE gift_id = ?1")
                .bind(gift_id)
                .bind(text)
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        for (gift_id, reason, by, at) in &w.refunds {
            sqlx::query("UPDATE gifts SET refunded_at_ms = ?2 WHERE gift_id = ?1")
                .bind(gift_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            sqlx::query("INSERT INTO refunds (gift_id, reason, refunded_by, created_at_ms) VALUES (?1, ?2, ?3, ?4)")
                .bind(gift_id)
                .bind(reason)
                .bind(by)
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        if !w.new_packets.is_empty() || !w.packet_updates.is_empty() {
            sqlx::query(
                "INSERT INTO red_packets (packet_id, room_id, sender_id, sender_name, mode, total_minor, count, shares, \
                 claimed_count, claimed_minor, escrow_apple, escrow_google, escrow_web, created_at_ms, expires_at_ms, \
                 settled_at_ms, returned_minor) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, \
                 value->>8, value->>9, value->>10, value->>11, value->>12, value->>13, value->>14, value->>15, value->>16 \
                 FROM json_each(?1) WHERE true \
                 ON CONFLICT (packet_id) DO UPDATE SET claimed_count = excluded.claimed_count, \
                 claimed_minor = excluded.claimed_minor, escrow_apple = excluded.escrow_apple, \
                 escrow_google = excluded.escrow_google, escrow_web = excluded.escrow_web, \
                 settled_at_ms = excluded.settled_at_ms, returned_minor = excluded.returned_minor",
            )
            .bind(&j.packets)
            .execute(&mut *conn)
            .await?;
        }
        if !w.claims.is_empty() {
            sqlx::query(
                "INSERT INTO red_packet_claims (packet_id, user_id, user_name, idx, amount_minor, by_channel, created_at_ms) \
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?1)",
            )
            .bind(&j.claims)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

fn json_list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    serde_json::Value::Array(
        items
            .map(|s| serde_json::Value::String(s.clone()))
            .collect(),
    )
    .to_string()
}

#[async_trait]
impl Backend for Lite {
    async fn migrate(&self) -> Result<(), LedgerError> {
        let mut w = self.writer.lock().await;
        w.execute(SCHEMA).await.map_err(error)?;
        w.execute(MONEY_SCHEMA).await.map_err(error)?;
        // Under the write lock, so two openers of one file migrate once.
        w.execute("BEGIN IMMEDIATE").await.map_err(error)?;
        match apply_migrations::<sqlx::Sqlite>(&mut w).await {
            Ok(()) => w.execute("COMMIT").await.map(|_| ()).map_err(error),
            Err(e) => {
                let _ = w.execute("ROLLBACK").await;
                Err(error(e))
            }
        }
    }

    async fn run_batch(&self, commands: &[Command], plan: PlanFn<'_>) -> Ran {
        // A local file: a failed COMMIT did not take effect.
        Ran::Done(self.batch(commands, plan).await)
    }

    fn reads(&self) -> &dyn ReadQueries {
        &self.reads
    }
}

impl Lite {
    async fn batch(
        &self,
        commands: &[Command],
        plan: PlanFn<'_>,
    ) -> Result<Vec<Outcome>, LedgerError> {
        let mut conn = self.writer.lock().await;
        conn.execute("BEGIN IMMEDIATE").await.map_err(error)?;
        let result = async {
            let loaded = Self::load(&mut conn, commands).await.map_err(error)?;
            let (writes, outcomes) =
                plan(loaded).map_err(|e| LedgerError::Internal(e.to_string()))?;
            if !writes.is_empty() {
                Self::write(&mut conn, &writes).await.map_err(error)?;
            }
            Ok::<_, LedgerError>(outcomes)
        }
        .await;
        match result {
            Ok(outcomes) => {
                conn.execute("COMMIT").await.map_err(error)?;
                Ok(outcomes)
            }
            Err(e) => {
                let _ = conn.execute("ROLLBACK").await;
                Err(e)
            }
        }
    }
}
