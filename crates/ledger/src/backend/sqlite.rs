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

use super::rows::{self, GIFT_COLUMNS, PACKET_COLUMNS, ROOM_COLUMNS};
use super::schema::{apply_migrations, MONEY_SCHEMA};
use super::shared::{ReadQueries, Reads};
use super::sqlite_batch::{bind_one, bind_pair, select_in, write, STATEMENT_CACHE};
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
        let mut writer = SqliteConnection::connect_with(
            &options.clone().statement_cache_capacity(STATEMENT_CACHE),
        )
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
            let ids: Vec<&String> = keys.gifts.iter().collect();
            let q = format!("SELECT {GIFT_COLUMNS} FROM gifts WHERE gift_id");
            for r in select_in(conn, &q, 1, &ids, bind_one).await? {
                let g = rows::gift(&r)?;
                loaded.gifts.insert(g.gift_id.clone(), GiftAckInfo::of(&g));
                loaded.gift_records.insert(g.gift_id.clone(), g);
            }
            plan::add_ack_rooms(&mut keys, &loaded.gifts);
        }
        if !keys.packets.is_empty() {
            let ids: Vec<&String> = keys.packets.iter().collect();
            let q = format!("SELECT {PACKET_COLUMNS} FROM red_packets WHERE packet_id");
            for r in select_in(conn, &q, 1, &ids, bind_one).await? {
                let p = rows::packet(&r)?;
                loaded.packets.insert(p.packet_id.clone(), p);
            }
            plan::add_packet_keys(&mut keys, &loaded.packets);
            let pairs: Vec<&(String, String)> = keys.claims.iter().collect();
            let q = "SELECT packet_id, user_id FROM red_packet_claims WHERE (packet_id, user_id)";
            for r in select_in(conn, q, 2, &pairs, bind_pair).await? {
                loaded
                    .claimed
                    .insert((r.try_get("packet_id")?, r.try_get("user_id")?));
            }
        }
        if !keys.rooms.is_empty() {
            let ids: Vec<&String> = keys.rooms.iter().collect();
            let q = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE room_id");
            for r in select_in(conn, &q, 1, &ids, bind_one).await? {
                let room = rows::room(&r)?;
                loaded.rooms.insert(room.room_id.clone(), room);
            }
        }
        if !keys.users.is_empty() {
            let ids: Vec<&String> = keys.users.iter().collect();
            let q = "SELECT user_id, channel, balance_minor FROM wallets WHERE user_id";
            for r in select_in(conn, q, 1, &ids, bind_one).await? {
                let channel: String = r.try_get("channel")?;
                let channel: applause_core::Channel = channel
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
                loaded.wallets.entry(r.try_get("user_id")?).or_default()[channel.index()] =
                    r.try_get("balance_minor")?;
            }
        }
        if !keys.idempotency.is_empty() {
            let pairs: Vec<&(String, String)> = keys.idempotency.iter().collect();
            let q = "SELECT user_id, key, request_hash, gift_id, error_code, created_at_ms FROM idempotency \
                     WHERE (user_id, key)";
            for r in select_in(conn, q, 2, &pairs, bind_pair).await? {
                let rec = rows::idempotency(&r)?;
                loaded
                    .idempotency
                    .insert((rec.user_id.clone(), rec.key.clone()), rec);
            }
        }
        if !keys.receipts.is_empty() {
            let ids: Vec<&String> = keys.receipts.iter().collect();
            let q = "SELECT receipt_id, user_id, channel, amount_minor, created_at_ms FROM receipts WHERE receipt_id";
            for r in select_in(conn, q, 1, &ids, bind_one).await? {
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
                write(&mut conn, &writes).await.map_err(error)?;
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
