//! The schema both backends share: the tables added after the first
//! release (same DDL on SQLite and PostgreSQL) and the numbered migrations
//! (the same SQL on both, or each store's own where their storage differs).
//!
//! The first tables are created by each backend's own `SCHEMA` (`CREATE …
//! IF NOT EXISTS`, so that is version 1 on any store). Later changes are
//! migrations: numbered, applied once, in order, recorded in
//! `ledger_migrations`, in the same transaction as the change. A migration
//! is never edited once released; a new change is a new migration.

use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row, Type};

/// Tables added for refunds and red packets; the same DDL works on SQLite
/// and PostgreSQL. `red_packets` holds each packet's escrow per channel
/// (checked against the `escrow:<packet>` account by `ledger check`).
pub(crate) const MONEY_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS refunds (
    gift_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    refunded_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS red_packets (
    packet_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    mode TEXT NOT NULL,
    total_minor BIGINT NOT NULL,
    count BIGINT NOT NULL,
    shares TEXT NOT NULL,
    claimed_count BIGINT NOT NULL CHECK (claimed_count <= count),
    claimed_minor BIGINT NOT NULL CHECK (claimed_minor <= total_minor),
    escrow_apple BIGINT NOT NULL CHECK (escrow_apple >= 0),
    escrow_google BIGINT NOT NULL CHECK (escrow_google >= 0),
    escrow_web BIGINT NOT NULL CHECK (escrow_web >= 0),
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    settled_at_ms BIGINT,
    returned_minor BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS red_packets_due ON red_packets (expires_at_ms) WHERE settled_at_ms IS NULL;
CREATE TABLE IF NOT EXISTS red_packet_claims (
    packet_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    idx BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    by_channel TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (packet_id, user_id),
    UNIQUE (packet_id, idx)
);
"#;

/// The store a migration's SQL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// One schema change: its SQL on each store (empty: nothing to change
/// there, the version is only recorded).
struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

impl Migration {
    /// The same SQL on both stores.
    const fn both(version: i64, sql: &'static str) -> Migration {
        Migration {
            version,
            sqlite: sql,
            postgres: sql,
        }
    }

    fn sql(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

/// The migrations after version 1, in order.
const MIGRATIONS: &[Migration] = &[
    Migration::both(
        2,
        // The outbox row names its gift, so the relay reads the gift id instead
        // of parsing the rendered frame. Events not yet published get it from
        // their gift (same room, same seq); published ones are never read again.
        "ALTER TABLE room_events ADD COLUMN gift_id TEXT;
     UPDATE room_events SET gift_id = (
         SELECT g.gift_id FROM gifts g WHERE g.room_id = room_events.room_id AND g.seq = room_events.seq
     ) WHERE seq > (SELECT r.published_seq FROM rooms r WHERE r.room_id = room_events.room_id);",
    ),
    Migration::both(
        3,
        // One row per recent batch of each PostgreSQL committer, written in
        // the batch's transaction: whether a batch whose COMMIT went
        // unanswered took effect (`backend::lost_commit`). Unused on SQLite.
        "CREATE TABLE commit_marks (
             committer TEXT NOT NULL,
             batch BIGINT NOT NULL,
             created_at_ms BIGINT NOT NULL,
             PRIMARY KEY (committer, batch)
         );",
    ),
    Migration {
        version: 4,
        // SQLite's idempotency records leave their `WITHOUT ROWID` table
        // (rows and key in one B-tree, whose interior pages hold whole rows
        // too: 24 to a page) for a rowid table in the order they were made,
        // with the key in a unique index of its own (small entries, ~100
        // to a page) and the creation time in another (for the expiry
        // sweep, which scanned the whole table). Every purchase's random
        // key used to dirty about two 4 KiB pages, three quarters of each
        // batch's WAL (docs/benchmarks.md); now one small-entry leaf.
        // PostgreSQL's heap and primary-key index are that shape already.
        sqlite: "CREATE TABLE idempotency_v4 (
             user_id TEXT NOT NULL,
             key TEXT NOT NULL,
             request_hash TEXT NOT NULL,
             gift_id TEXT,
             error_code TEXT,
             created_at_ms INTEGER NOT NULL
         );
         INSERT INTO idempotency_v4 (user_id, key, request_hash, gift_id, error_code, created_at_ms)
             SELECT user_id, key, request_hash, gift_id, error_code, created_at_ms
             FROM idempotency ORDER BY created_at_ms;
         DROP TABLE idempotency;
         ALTER TABLE idempotency_v4 RENAME TO idempotency;
         CREATE UNIQUE INDEX idempotency_key ON idempotency (user_id, key);
         CREATE INDEX idempotency_by_time ON idempotency (created_at_ms);",
        postgres: "",
    },
    Migration {
        version: 5,
        // The expiry sweep (`created_at_ms < cutoff LIMIT n`, in a batch's
        // transaction) scanned the whole idempotency table on PostgreSQL
        // whenever fewer than `n` records were old enough, which is nearly
        // always: the purchases queued behind that batch waited for it.
        // SQLite got this index with migration 4.
        sqlite: "",
        postgres: "CREATE INDEX IF NOT EXISTS idempotency_by_time ON idempotency (created_at_ms);",
    },
];

/// Applies every migration the store has not recorded. The caller holds the
/// store's write lock in an open transaction (SQLite `BEGIN IMMEDIATE`,
/// PostgreSQL an advisory lock), so concurrent openers apply each once.
pub(crate) async fn apply_migrations<DB>(
    conn: &mut DB::Connection,
    dialect: Dialect,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    conn.execute("CREATE TABLE IF NOT EXISTS ledger_migrations (version BIGINT PRIMARY KEY)")
        .await?;
    let applied: i64 =
        sqlx::query("SELECT CAST(COALESCE(MAX(version), 1) AS BIGINT) FROM ledger_migrations")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        let sql = m.sql(dialect);
        if !sql.is_empty() {
            conn.execute(sql).await?;
        }
        sqlx::query("INSERT INTO ledger_migrations (version) VALUES ($1)")
            .bind(m.version)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
