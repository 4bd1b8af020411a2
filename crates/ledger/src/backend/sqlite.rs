//! The SQLite backend (embedded default): one file in the data directory, WAL
//! journal, `synchronous=FULL` so a commit is on disk before any 201.
//!
//! SQLite has one writer at a time; the committer owns the single write
//! connection and opens every batch with `BEGIN IMMEDIATE`, so the state it
//! loads cannot change before it commits. Reads use a separate pool (WAL lets
//! them run beside the writer).
//!
//! Checkpoints (copying the WAL's pages back into the database file) run on
//! a connection of their own, every [`CHECKPOINT_EVERY`]: left to the writer
//! (SQLite's auto-checkpoint), one COMMIT in every few hundred would also
//! copy tens of megabytes and fsync the database before it returned, and
//! every purchase queued behind it would wait. The checkpointer copies the
//! bulk while the writer goes on committing, then takes the writer's lock
//! between two batches for a last short checkpoint of what those committed
//! meanwhile: a WAL wholly copied when the writer's next transaction begins
//! starts over from its beginning instead of growing. The writer still
//! checkpoints by itself past [`WAL_PAGES_BACKSTOP`] pages, should the
//! checkpointer fall behind.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Executor, QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::Mutex;

use super::rows::{self, GIFT_COLUMNS, PACKET_COLUMNS, ROOM_COLUMNS};
use super::schema::{apply_migrations, Dialect, MONEY_SCHEMA};
use super::shared::{ReadQueries, Reads};
use super::sqlite_batch::{bind_one, bind_pair, select_in, write_and_commit, STATEMENT_CACHE};
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

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Checkpoints in a row, at most, while the writer keeps adding to the WAL.
const CHECKPOINT_CATCH_UP_MAX: usize = 8;
/// Rows the writer's worker thread hands over before it waits for them to
/// be taken. sqlx's default, 50, made a batch's load of some 250 wallet
/// rows five round trips between that thread and the committer.
const ROW_CHANNEL: usize = 4096;

/// WAL pages (4 KiB) past which the writer checkpoints by itself (1 GiB).
const WAL_PAGES_BACKSTOP: &str = "262144";

pub(crate) struct Lite {
    writer: Arc<Mutex<SqliteConnection>>,
    reads: Reads<sqlx::Sqlite>,
    /// Dropped with the backend: the checkpointer then stops and closes its
    /// connection.
    _checkpoints: tokio::sync::oneshot::Sender<()>,
    /// Checkpoints that left the WAL wholly copied between two batches.
    #[cfg_attr(not(test), allow(dead_code))]
    caught_up: Arc<AtomicU64>,
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
            .pragma("temp_store", "memory");
        // The checkpointer keeps the WAL short; the writer's own
        // auto-checkpoint is only the backstop. Durability is unchanged:
        // every commit still fsyncs the WAL.
        let mut writer = SqliteConnection::connect_with(
            &options
                .clone()
                .pragma("wal_autocheckpoint", WAL_PAGES_BACKSTOP)
                .statement_cache_capacity(STATEMENT_CACHE)
                .row_buffer_size(ROW_CHANNEL),
        )
        .await
        .map_err(error)?;
        writer.execute(SCHEMA).await.map_err(error)?;
        writer.execute(MONEY_SCHEMA).await.map_err(error)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(read_connections.max(1))
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(error)?;
        let checkpointer = SqliteConnection::connect_with(&options)
            .await
            .map_err(error)?;
        let writer = Arc::new(Mutex::new(writer));
        let (checkpoints, stop) = tokio::sync::oneshot::channel();
        let caught_up = Arc::new(AtomicU64::new(0));
        tokio::spawn(checkpoint_loop(
            checkpointer,
            Arc::downgrade(&writer),
            caught_up.clone(),
            stop,
        ));
        Ok(Lite {
            writer,
            reads: Reads {
                pool: reader,
                error,
            },
            _checkpoints: checkpoints,
            caught_up,
        })
    }

    /// Begins the batch's transaction and loads what its commands read,
    /// in one round trip to the writer's worker thread (each statement used
    /// to be one, and under load each waited for a core). Acks, refunds
    /// and red packets name rooms and users only known once their gift or
    /// packet is loaded: those batches take a trip for those first.
    async fn begin_and_load(
        conn: &mut SqliteConnection,
        commands: &[Command],
    ) -> Result<Loaded, sqlx::Error> {
        let mut keys = plan::keys_of(commands);
        let mut loaded = Loaded::default();
        let dependent = !keys.gifts.is_empty() || !keys.packets.is_empty();
        if dependent {
            let gift_ids: Vec<&String> = keys.gifts.iter().collect();
            let packet_ids: Vec<&String> = keys.packets.iter().collect();
            let gift_q = format!("{GIFT_COLUMNS} FROM gifts WHERE gift_id");
            let packet_q = format!("{PACKET_COLUMNS} FROM red_packets WHERE packet_id");
            let mut script = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
            select_in(&mut script, Read::GIFTS, &gift_q, 1, &gift_ids, bind_one);
            select_in(
                &mut script,
                Read::PACKETS,
                &packet_q,
                1,
                &packet_ids,
                bind_one,
            );
            let rows = script
                .build()
                .persistent(true)
                .fetch_all(&mut *conn)
                .await?;
            take_all(&mut loaded, rows)?;
            plan::add_ack_rooms(&mut keys, &loaded.gifts);
            plan::add_packet_keys(&mut keys, &loaded.packets);
        }
        let claims: Vec<&(String, String)> = keys.claims.iter().collect();
        let room_ids: Vec<&String> = keys.rooms.iter().collect();
        let users: Vec<&String> = keys.users.iter().collect();
        let idempotency: Vec<&(String, String)> = keys.idempotency.iter().collect();
        let receipts: Vec<&String> = keys.receipts.iter().collect();
        let room_q = format!("{ROOM_COLUMNS} FROM rooms WHERE room_id");
        let mut script =
            QueryBuilder::<Sqlite>::new(if dependent { "" } else { "BEGIN IMMEDIATE; " });
        select_in(
            &mut script,
            Read::CLAIMS,
            "packet_id, user_id FROM red_packet_claims WHERE (packet_id, user_id)",
            2,
            &claims,
            bind_pair,
        );
        select_in(&mut script, Read::ROOMS, &room_q, 1, &room_ids, bind_one);
        select_in(
            &mut script,
            Read::WALLETS,
            "user_id, channel, balance_minor FROM wallets WHERE user_id",
            1,
            &users,
            bind_one,
        );
        select_in(
            &mut script,
            Read::IDEMPOTENCY,
            "user_id, key, request_hash, gift_id, error_code, created_at_ms FROM idempotency \
             WHERE (user_id, key)",
            2,
            &idempotency,
            bind_pair,
        );
        select_in(
            &mut script,
            Read::RECEIPTS,
            "receipt_id, user_id, channel, amount_minor, created_at_ms FROM receipts WHERE receipt_id",
            1,
            &receipts,
            bind_one,
        );
        if let Some((before_ms, limit)) = keys.expiry {
            // The single writer holds the lock: nobody else sweeps meanwhile.
            script.push(format_args!(
                "SELECT {}, user_id, key, created_at_ms FROM idempotency WHERE created_at_ms < ",
                Read::EXPIRABLE
            ));
            script.push_bind(before_ms);
            script.push(" ORDER BY created_at_ms LIMIT ");
            script.push_bind(i64::from(limit));
            script.push("; ");
        }
        if !script.sql().is_empty() {
            let rows = script
                .build()
                .persistent(true)
                .fetch_all(&mut *conn)
                .await?;
            take_all(&mut loaded, rows)?;
        }
        Ok(loaded)
    }
}

/// Checkpoints every [`CHECKPOINT_EVERY`] until `stop` resolves (its
/// sender, the backend, is dropped): `PASSIVE` checkpoints, which copy what
/// no reader still needs and never wait for the writer, repeated while the
/// writer adds to the WAL, each with only what was committed during the
/// last; then one more under the writer's lock, so the WAL is wholly copied
/// when the next transaction begins (and that one starts it over). A
/// failure is logged and the next tick tries again.
async fn checkpoint_loop(
    mut conn: SqliteConnection,
    writer: Weak<Mutex<SqliteConnection>>,
    caught_up: Arc<AtomicU64>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The WAL as the last tick left it: nothing committed since, nothing to do.
    let mut left = (0, 0);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let result = async {
            let mut wal = checkpoint(&mut conn).await?;
            if wal == left || wal.1 == 0 {
                return Ok(()); // unchanged, or empty (just started over)
            }
            for _ in 1..CHECKPOINT_CATCH_UP_MAX {
                if wal.1 >= wal.0 {
                    break;
                }
                wal = checkpoint(&mut conn).await?;
            }
            let Some(writer) = writer.upgrade() else {
                return Ok(());
            };
            let _between_batches = writer.lock().await;
            left = checkpoint(&mut conn).await?;
            if left.1 >= left.0 {
                caught_up.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "SQLite checkpoint failed; retrying at the next tick");
        }
    }
    let _ = conn.close().await;
}

/// Checkpoints passively: the frames in the WAL and how many of them are
/// now in the database (`wal_checkpoint` answers busy, log, checkpointed;
/// -1 and -1 when the database is not in WAL mode).
async fn checkpoint(conn: &mut SqliteConnection) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await?;
    let (log, done): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
    tracing::debug!(log, done, "SQLite checkpoint");
    Ok((log, done))
}

#[async_trait]
impl Backend for Lite {
    async fn migrate(&self) -> Result<(), LedgerError> {
        let mut w = self.writer.lock().await;
        w.execute(SCHEMA).await.map_err(error)?;
        w.execute(MONEY_SCHEMA).await.map_err(error)?;
        // Under the write lock, so two openers of one file migrate once.
        w.execute("BEGIN IMMEDIATE").await.map_err(error)?;
        match apply_migrations::<sqlx::Sqlite>(&mut w, Dialect::Sqlite).await {
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

/// What a row of a load script is: its first column, the tag its
/// statement selects.
struct Read;

impl Read {
    const GIFTS: i64 = 1;
    const PACKETS: i64 = 2;
    const CLAIMS: i64 = 3;
    const ROOMS: i64 = 4;
    const WALLETS: i64 = 5;
    const IDEMPOTENCY: i64 = 6;
    const RECEIPTS: i64 = 7;
    const EXPIRABLE: i64 = 8;
}

/// Takes the rows of a load script into `loaded`, each by its tag.
fn take_all(loaded: &mut Loaded, rows: Vec<SqliteRow>) -> Result<(), sqlx::Error> {
    for r in rows {
        match r.try_get::<i64, _>(0)? {
            Read::GIFTS => {
                let g = rows::gift(&r)?;
                loaded.gifts.insert(g.gift_id.clone(), GiftAckInfo::of(&g));
                loaded.gift_records.insert(g.gift_id.clone(), g);
            }
            Read::PACKETS => {
                let p = rows::packet(&r)?;
                loaded.packets.insert(p.packet_id.clone(), p);
            }
            Read::CLAIMS => {
                loaded
                    .claimed
                    .insert((r.try_get("packet_id")?, r.try_get("user_id")?));
            }
            Read::ROOMS => {
                let room = rows::room(&r)?;
                loaded.rooms.insert(room.room_id.clone(), room);
            }
            Read::WALLETS => {
                rows::wallet_into(&r, &mut loaded.wallets)?;
            }
            Read::IDEMPOTENCY => {
                let rec = rows::idempotency(&r)?;
                loaded
                    .idempotency
                    .insert((rec.user_id.clone(), rec.key.clone()), rec);
            }
            Read::RECEIPTS => {
                let rec = rows::receipt(&r)?;
                loaded.receipts.insert(rec.receipt_id.clone(), rec);
            }
            Read::EXPIRABLE => {
                loaded
                    .expirable
                    .push((r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
            }
            tag => return Err(sqlx::Error::Protocol(format!("a row tagged {tag}"))),
        }
    }
    Ok(())
}

impl Lite {
    async fn batch(
        &self,
        commands: &[Command],
        plan: PlanFn<'_>,
    ) -> Result<Vec<Outcome>, LedgerError> {
        let mut conn = self.writer.lock().await;
        let result = async {
            let loaded = Self::begin_and_load(&mut conn, commands)
                .await
                .map_err(error)?;
            let (writes, outcomes) =
                plan(loaded).map_err(|e| LedgerError::Internal(e.to_string()))?;
            write_and_commit(&mut conn, &writes).await.map_err(error)?;
            Ok::<_, LedgerError>(outcomes)
        }
        .await;
        if result.is_err() {
            // Whatever failed (BEGIN, a statement, COMMIT), no transaction
            // is left open for the next batch.
            let _ = conn.execute("ROLLBACK").await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits `n` rows under the writer's lock and answers how many times
    /// the checkpointer had caught up when the last one committed: it
    /// counts only under that lock, so every later count is of a
    /// checkpoint that began after this round.
    async fn commit_rounds(lite: &Lite, first: i64, n: i64) -> u64 {
        let mut w = lite.writer.lock().await;
        for i in first..first + n {
            sqlx::query("INSERT INTO scratch (id, body) VALUES (?1, zeroblob(8000))")
                .bind(i)
                .execute(&mut *w)
                .await
                .unwrap();
        }
        lite.caught_up.load(Ordering::Relaxed)
    }

    /// Waits (generously: the machine may be busy) until the checkpointer has
    /// caught up more than `seen` times.
    async fn caught_up_after(lite: &Lite, seen: u64) -> u64 {
        for _ in 0..600 {
            let n = lite.caught_up.load(Ordering::Relaxed);
            if n > seen {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the checkpointer never caught up");
    }

    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_back_and_it_starts_over_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let lite = Lite::open(path.to_str().unwrap(), 1).await.unwrap();
        lite.writer
            .lock()
            .await
            .execute("CREATE TABLE scratch (id INTEGER PRIMARY KEY, body BLOB)")
            .await
            .unwrap();
        let wal = || {
            std::fs::metadata(dir.path().join("ledger.db-wal"))
                .unwrap()
                .len()
        };
        // 300 commits of two or three pages each: ~3 MB of WAL, far below
        // the writer's own auto-checkpoint (1 GiB).
        let seen = commit_rounds(&lite, 0, 300).await;
        let one_round = wal();
        assert!(
            one_round > 2_000_000,
            "the WAL holds the round: {one_round}"
        );
        caught_up_after(&lite, seen).await;
        // Copied back: the next round overwrites the WAL from its start.
        let seen = commit_rounds(&lite, 300, 300).await;
        caught_up_after(&lite, seen).await;
        commit_rounds(&lite, 600, 300).await;
        let three_rounds = wal();
        assert!(
            three_rounds < one_round * 3 / 2,
            "the WAL grew from {one_round} to {three_rounds} bytes over three rounds"
        );
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM scratch")
            .fetch_one(&mut *lite.writer.lock().await)
            .await
            .unwrap();
        assert_eq!(n, 900);
    }
}
