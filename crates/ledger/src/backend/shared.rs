//! The read queries both backends share, written once.
//!
//! Why generic functions and not a macro: every query here is the same SQL
//! text on SQLite and PostgreSQL (positional `$N` parameters, `CAST(… AS
//! BIGINT)`, standard `CAST(… AS TEXT)`), so the only differences are the
//! database type and how its errors map onto [`LedgerError`]. Both are
//! passed in: the type as `DB`, the mapping as [`Reads::error`]. The bounds
//! below say what a database must decode and bind; they are stated once, on
//! the `impl` block. The batch writes are not here: they differ per backend
//! (JSON expansion, row locks, conflict handling) and live in each backend.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::rows::{self, GIFT_COLUMNS, ROOM_COLUMNS};
use crate::model::*;
use crate::LedgerError;

/// The reads of the handle, answered from a backend's read pool.
#[async_trait]
pub(crate) trait ReadQueries: Send + Sync {
    async fn room(&self, room_id: &str) -> Result<Option<Room>, LedgerError>;
    async fn wallet(&self, user_id: &str) -> Result<Wallet, LedgerError>;
    async fn gift(&self, gift_id: &str) -> Result<Option<GiftRecord>, LedgerError>;
    async fn idempotency(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, LedgerError>;
    /// Gifts created in `[from_ms, to_ms)`, oldest first, at most `limit`
    /// after `after` (keyset pagination for reports and rebuilds).
    async fn gifts_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        broadcaster_id: Option<&str>,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<GiftRecord>, LedgerError>;
    async fn summary(&self) -> Result<Summary, LedgerError>;
    async fn check(&self) -> Result<CheckReport, LedgerError>;
    /// Committed events not yet known to be published, oldest first per room,
    /// for rooms whose newest unpublished event is older than `before_ms`.
    async fn unpublished_events(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, LedgerError>;
    async fn ping(&self) -> Result<(), LedgerError>;
    async fn red_packet(
        &self,
        packet_id: &str,
    ) -> Result<Option<(RedPacket, Vec<ClaimRecord>)>, LedgerError>;
    /// Ids of packets still unsettled at `now_ms` past their expiry.
    async fn due_red_packets(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, LedgerError>;
    /// (reason, refunded by) of a refunded gift.
    async fn refund_of(&self, gift_id: &str) -> Result<Option<(String, String)>, LedgerError>;
}

/// The shared reads over one backend's read pool.
pub(crate) struct Reads<DB: Database> {
    pub pool: Pool<DB>,
    /// The backend's mapping of its errors (SQLSTATE / SQLite result codes).
    pub error: fn(sqlx::Error) -> LedgerError,
}

/// Maps what every sqlx backend reports alike; `unavailable_code` tells which
/// of the database's own codes mean "cannot commit now" (the backends know).
pub(crate) fn ledger_error(e: sqlx::Error, unavailable_code: fn(&str) -> bool) -> LedgerError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => LedgerError::Unavailable(e.to_string()),
        sqlx::Error::Database(ref db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if unavailable_code(&code) {
                LedgerError::Unavailable(e.to_string())
            } else {
                LedgerError::Internal(e.to_string())
            }
        }
        other => LedgerError::Internal(other.to_string()),
    }
}

pub(crate) fn wallet_of(rows: impl Iterator<Item = (String, i64)>) -> Result<Wallet, LedgerError> {
    let mut w = Wallet::default();
    for (channel, balance) in rows {
        let c: applause_core::Channel = channel.parse().map_err(LedgerError::Internal)?;
        w.by_channel[c.index()] = balance;
    }
    Ok(w)
}

impl<DB> Reads<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn room(&self, room_id: &str) -> Result<Option<Room>, sqlx::Error> {
        let q = format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE room_id = $1");
        let row = sqlx::query(&q)
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::room(&r)).transpose()
    }

    async fn wallet(&self, user_id: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query("SELECT channel, balance_minor FROM wallets WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn gift(&self, gift_id: &str) -> Result<Option<GiftRecord>, sqlx::Error> {
        let q = format!("SELECT {GIFT_COLUMNS} FROM gifts WHERE gift_id = $1");
        let row = sqlx::query(&q)
            .bind(gift_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::gift(&r)).transpose()
    }

    async fn idempotency(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT user_id, key, request_hash, gift_id, error_code, created_at_ms FROM idempotency \
             WHERE user_id = $1 AND key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| rows::idempotency(&r)).transpose()
    }

    async fn gifts_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        broadcaster_id: Option<&str>,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<GiftRecord>, sqlx::Error> {
        let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
        // `CAST($3 AS TEXT)` gives PostgreSQL the parameter's type where it
        // is only tested for NULL; SQLite reads it the same.
        let q = format!(
            "SELECT {GIFT_COLUMNS} FROM gifts WHERE created_at_ms >= $1 AND created_at_ms < $2 \
             AND (CAST($3 AS TEXT) IS NULL OR broadcaster_id = $3) AND (created_at_ms, gift_id) > ($4, $5) \
             ORDER BY created_at_ms, gift_id LIMIT $6"
        );
        sqlx::query(&q)
            .bind(from_ms)
            .bind(to_ms)
            .bind(broadcaster_id)
            .bind(after_ms)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::gift)
            .collect()
    }

    async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Each room's events after its `published_seq` (committed before
    /// `before_ms`), room by room, at most `limit` in all. Rooms first,
    /// then each room's unpublished range by primary key: a join would
    /// scan every stored event (wide rows) on each pass.
    async fn unpublished_events(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let pool = &self.pool;
        let rooms = sqlx::query(
            "SELECT room_id, published_seq FROM rooms WHERE last_seq > published_seq ORDER BY room_id",
        )
        .fetch_all(pool)
        .await?;
        let mut out: Vec<StoredEvent> = Vec::new();
        for room in rooms {
            let left = i64::from(limit) - out.len() as i64;
            if left <= 0 {
                break;
            }
            let room_id: String = room.try_get(0)?;
            let published: i64 = room.try_get(1)?;
            let events = sqlx::query(
                "SELECT room_id, seq, epoch, frame, broadcaster_frame, broadcaster_id, ends_room, created_at_ms, gift_id \
                 FROM room_events WHERE room_id = $1 AND seq > $2 AND created_at_ms < $3 ORDER BY seq LIMIT $4",
            )
            .bind(&room_id)
            .bind(published)
            .bind(before_ms)
            .bind(left)
            .fetch_all(pool)
            .await?;
            for r in &events {
                out.push(rows::event(r, published as u64)?);
            }
        }
        Ok(out)
    }

    async fn summary(&self) -> Result<Summary, sqlx::Error> {
        let pool = &self.pool;
        let mut s = Summary::default();
        for r in sqlx::query(
            "SELECT channel, CAST(SUM(amount_minor) AS BIGINT) FROM receipts GROUP BY channel",
        )
        .fetch_all(pool)
        .await?
        {
            let c: String = r.try_get(0)?;
            if let Ok(c) = c.parse::<applause_core::Channel>() {
                s.topups_by_channel[c.index()] = r.try_get::<Option<i64>, _>(1)?.unwrap_or(0);
            }
        }
        s.wallets_outstanding =
            sqlx::query("SELECT CAST(COALESCE(SUM(balance_minor), 0) AS BIGINT) FROM wallets")
                .fetch_one(pool)
                .await?
                .try_get(0)?;
        let g = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN refunded_at_ms IS NULL THEN 0 ELSE amount_minor END), 0) AS BIGINT) FROM gifts",
        )
        .fetch_one(pool)
        .await?;
        s.gifts = g.try_get::<i64, _>(0)? as u64;
        s.gross_gifts = g.try_get(1)?;
        s.refunds = g.try_get(2)?;
        for r in sqlx::query(
            "SELECT account, CAST(SUM(amount_minor) AS BIGINT) FROM entries \
             WHERE account LIKE 'store:%' OR account LIKE 'broadcaster:%' OR account = 'platform:revenue' OR account LIKE 'escrow:%' \
             GROUP BY account",
        )
        .fetch_all(pool)
        .await?
        {
            let account: String = r.try_get(0)?;
            let sum: i64 = r.try_get::<Option<i64>, _>(1)?.unwrap_or(0);
            if let Some(c) = account.strip_prefix("store:") {
                if let Ok(c) = c.parse::<applause_core::Channel>() {
                    s.store_fees_by_channel[c.index()] += sum;
                }
            } else if account.starts_with("broadcaster:") {
                s.broadcaster_payable += sum;
            } else if account.starts_with("escrow:") {
                s.escrow_open += sum;
            } else {
                s.platform_revenue += sum;
            }
        }
        Ok(s)
    }

    async fn red_packet(
        &self,
        packet_id: &str,
    ) -> Result<Option<(RedPacket, Vec<ClaimRecord>)>, sqlx::Error> {
        let pool = &self.pool;
        let q = format!(
            "SELECT {} FROM red_packets WHERE packet_id = $1",
            rows::PACKET_COLUMNS
        );
        let Some(row) = sqlx::query(&q).bind(packet_id).fetch_optional(pool).await? else {
            return Ok(None);
        };
        let packet = rows::packet(&row)?;
        let q = format!(
            "SELECT {} FROM red_packet_claims WHERE packet_id = $1 ORDER BY idx",
            rows::CLAIM_COLUMNS
        );
        let claims = sqlx::query(&q)
            .bind(packet_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(rows::claim)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((packet, claims)))
    }

    async fn due_red_packets(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, sqlx::Error> {
        let pool = &self.pool;
        sqlx::query(
            "SELECT packet_id FROM red_packets WHERE settled_at_ms IS NULL AND expires_at_ms <= $1 \
             ORDER BY expires_at_ms, packet_id LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect()
    }

    async fn refund_of(&self, gift_id: &str) -> Result<Option<(String, String)>, sqlx::Error> {
        let pool = &self.pool;
        let row = sqlx::query("SELECT reason, refunded_by FROM refunds WHERE gift_id = $1")
            .bind(gift_id)
            .fetch_optional(pool)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    async fn check(&self) -> Result<CheckReport, sqlx::Error> {
        let pool = &self.pool;
        let transactions = sqlx::query("SELECT COUNT(*) FROM transactions")
            .fetch_one(pool)
            .await?
            .try_get::<i64, _>(0)? as u64;
        let entries = sqlx::query("SELECT COUNT(*) FROM entries")
            .fetch_one(pool)
            .await?
            .try_get::<i64, _>(0)? as u64;
        let mut c = CheckReport {
            transactions,
            entries,
            ..CheckReport::default()
        };
        for r in sqlx::query(
            "SELECT txn_id FROM entries GROUP BY txn_id HAVING SUM(amount_minor) <> 0 ORDER BY txn_id LIMIT 20",
        )
        .fetch_all(pool)
        .await?
        {
            c.unbalanced_transactions.push(r.try_get(0)?);
        }
        // Transactions with no entries at all are as wrong as unbalanced ones.
        for r in sqlx::query(
            // A set difference, not NOT EXISTS per row: entries has no
            // txn_id index, and a correlated scan is quadratic.
            "SELECT txn_id FROM transactions EXCEPT SELECT txn_id FROM entries LIMIT 20",
        )
        .fetch_all(pool)
        .await?
        {
            c.unbalanced_transactions.push(r.try_get(0)?);
        }
        let wallets: i64 =
            sqlx::query("SELECT CAST(COALESCE(SUM(balance_minor), 0) AS BIGINT) FROM wallets")
                .fetch_one(pool)
                .await?
                .try_get(0)?;
        let others: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM entries WHERE account NOT LIKE 'wallet:%'",
        )
        .fetch_one(pool)
        .await?
        .try_get(0)?;
        c.balance_sum = wallets + others;
        for r in sqlx::query(
            "SELECT w.user_id || ':' || w.channel FROM wallets w LEFT JOIN \
             (SELECT account, SUM(amount_minor) AS s FROM entries WHERE account LIKE 'wallet:%' GROUP BY account) e \
             ON e.account = 'wallet:' || w.user_id || ':' || w.channel \
             WHERE COALESCE(e.s, 0) <> w.balance_minor LIMIT 20",
        )
        .fetch_all(pool)
        .await?
        {
            c.mismatched_wallets.push(r.try_get(0)?);
        }
        // Entries on a wallet account that has no balance row.
        for r in sqlx::query(
            "SELECT account FROM (SELECT account, SUM(amount_minor) AS s FROM entries \
             WHERE account LIKE 'wallet:%' GROUP BY account) e \
             WHERE e.s <> 0 AND e.account NOT IN (SELECT 'wallet:' || user_id || ':' || channel FROM wallets) \
             LIMIT 20",
        )
        .fetch_all(pool)
        .await?
        {
            c.mismatched_wallets.push(r.try_get(0)?);
        }
        for r in sqlx::query(
            "SELECT user_id || ':' || channel FROM wallets WHERE balance_minor < 0 LIMIT 20",
        )
        .fetch_all(pool)
        .await?
        {
            c.negative_wallets.push(r.try_get(0)?);
        }
        for r in sqlx::query(
            "SELECT gift_id FROM gifts WHERE store_minor + broadcaster_minor + platform_minor <> amount_minor LIMIT 20",
        )
        .fetch_all(pool)
        .await?
        {
            c.bad_splits.push(r.try_get(0)?);
        }
        // Each packet's stored escrow equals its escrow account.
        for r in sqlx::query(
            "SELECT p.packet_id FROM red_packets p LEFT JOIN \
             (SELECT account, SUM(amount_minor) AS s FROM entries WHERE account LIKE 'escrow:%' GROUP BY account) e \
             ON e.account = 'escrow:' || p.packet_id \
             WHERE COALESCE(e.s, 0) <> p.escrow_apple + p.escrow_google + p.escrow_web LIMIT 20",
        )
        .fetch_all(pool)
        .await?
        {
            c.mismatched_escrow.push(r.try_get(0)?);
        }
        Ok(c)
    }
}

#[async_trait]
impl<DB> ReadQueries for Reads<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> Option<i64>: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB>,
    for<'r> Option<String>: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    async fn room(&self, room_id: &str) -> Result<Option<Room>, LedgerError> {
        Reads::room(self, room_id).await.map_err(self.error)
    }
    async fn wallet(&self, user_id: &str) -> Result<Wallet, LedgerError> {
        wallet_of(
            Reads::wallet(self, user_id)
                .await
                .map_err(self.error)?
                .into_iter(),
        )
    }
    async fn gift(&self, gift_id: &str) -> Result<Option<GiftRecord>, LedgerError> {
        Reads::gift(self, gift_id).await.map_err(self.error)
    }
    async fn idempotency(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, LedgerError> {
        Reads::idempotency(self, user_id, key)
            .await
            .map_err(self.error)
    }
    async fn gifts_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        broadcaster_id: Option<&str>,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<GiftRecord>, LedgerError> {
        Reads::gifts_between(self, from_ms, to_ms, broadcaster_id, after, limit)
            .await
            .map_err(self.error)
    }
    async fn summary(&self) -> Result<Summary, LedgerError> {
        Reads::summary(self).await.map_err(self.error)
    }
    async fn check(&self) -> Result<CheckReport, LedgerError> {
        Reads::check(self).await.map_err(self.error)
    }
    async fn unpublished_events(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, LedgerError> {
        Reads::unpublished_events(self, before_ms, limit)
            .await
            .map_err(self.error)
    }
    async fn ping(&self) -> Result<(), LedgerError> {
        Reads::ping(self).await.map_err(self.error)
    }
    async fn red_packet(
        &self,
        packet_id: &str,
    ) -> Result<Option<(RedPacket, Vec<ClaimRecord>)>, LedgerError> {
        Reads::red_packet(self, packet_id).await.map_err(self.error)
    }
    async fn due_red_packets(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, LedgerError> {
        Reads::due_red_packets(self, now_ms, limit)
            .await
            .map_err(self.error)
    }
    async fn refund_of(&self, gift_id: &str) -> Result<Option<(String, String)>, LedgerError> {
        Reads::refund_of(self, gift_id).await.map_err(self.error)
    }
}
