//! A COMMIT whose answer never came back (PostgreSQL). When the connection
//! dies after the COMMIT was sent — the server crashed or was stopped, the
//! network failed — the transaction may have committed or not, and the
//! error alone cannot tell. Answering "unavailable" then would break its
//! promise that nothing was charged whenever the commit did take effect.
//!
//! So every batch that writes also writes a *commit mark*, a row of its own
//! in `commit_marks` (this committer's id, the batch's number), and when its
//! COMMIT goes unanswered the ledger asks the database, over a new
//! connection, whether that row exists — by inserting it again with `ON
//! CONFLICT DO NOTHING` and rolling back. That insert waits for a batch
//! still in progress (the network failed, the server did not) and then
//! conflicts exactly when the batch committed, so the answer is exact; it is
//! asked until the database answers or [`RESOLVE_WITHIN`] has passed.
//! Committed, the batch's outcomes stand; not, nothing was written. Only when
//! the database does not come back in time does the batch fail without
//! knowing, and it says so.
//!
//! (Not the transaction id and `txid_status`: after a crash, the id of a
//! transaction none of whose WAL reached the disk is given again to a new
//! transaction, whose fate `txid_status` then reports — a chaos run saw a
//! lost purchase reported committed that way, its seq sold twice.)
//!
//! The committer goes on with later batches meanwhile (they load what the
//! database holds, whichever way this one went): only this batch's callers
//! wait for the answer. Each batch forgets this committer's marks older than
//! [`MARKS_KEPT`] batches; opening the ledger forgets every mark older than a
//! day (those of processes long gone).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::time::Instant;

use crate::plan::Outcome;
use crate::LedgerError;

/// How long a batch waits for the database to tell whether its commit took
/// effect: longer than a crash recovery usually takes, shorter than the time
/// clients usually wait for an answer.
pub(crate) const RESOLVE_WITHIN: Duration = Duration::from_secs(10);

/// Between two questions while the database is still away.
const ASK_EVERY: Duration = Duration::from_millis(100);

/// How many of its latest batches' marks a committer keeps: far more than
/// can be unresolved at once (one batch at a time, each resolved within
/// [`RESOLVE_WITHIN`]).
const MARKS_KEPT: i64 = 100_000;

/// This committer's commit marks: its id (one per process) and the number
/// of its last batch.
#[derive(Clone)]
pub(crate) struct Marks {
    committer: Arc<str>,
    last: Arc<AtomicI64>,
}

impl Marks {
    pub(crate) fn new() -> Marks {
        Marks {
            committer: uuid::Uuid::new_v4().simple().to_string().into(),
            last: Arc::default(),
        }
    }

    /// Writes the next mark in `tx` (the batch's transaction), forgetting
    /// the marks long behind it; returns its number.
    pub(crate) async fn next(
        &self,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<i64, sqlx::Error> {
        let batch = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        sqlx::query(
            "WITH gone AS (DELETE FROM commit_marks WHERE committer = $1 AND batch <= $2 - $3) \
             INSERT INTO commit_marks (committer, batch, created_at_ms) \
             VALUES ($1, $2, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint)",
        )
        .bind(&*self.committer)
        .bind(batch)
        .bind(MARKS_KEPT)
        .execute(&mut **tx)
        .await?;
        Ok(batch)
    }
}

/// Forgets the marks older than a day (at open, in the migration's
/// transaction).
pub(crate) async fn forget_old_marks(
    tx: &mut Transaction<'static, Postgres>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM commit_marks \
         WHERE created_at_ms < (EXTRACT(EPOCH FROM now()) * 1000)::bigint - 86400000",
    )
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// What became of a batch whose COMMIT went unanswered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    Committed,
    Aborted,
    /// The database did not tell within the time allowed (why not).
    Unknown(String),
}

/// Whether a failed COMMIT may still have taken effect: its answer was lost
/// with the connection (I/O, a broken protocol stream, the server shutting
/// down or gone) rather than the commit refused.
pub(crate) fn outcome_unknown(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// Whether mark `batch` of `marks` was committed: inserts it again, on a new
/// transaction of `pool`, and rolls back. `Ok(true)` when it conflicts.
async fn committed(pool: &PgPool, marks: &Marks, batch: i64) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A batch still in progress holds the row: wait for it, not forever.
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO commit_marks (committer, batch, created_at_ms) VALUES ($1, $2, 0) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&*marks.committer)
    .bind(batch)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.rollback().await?;
    Ok(inserted == 0)
}

/// Asks the database, on new connections of `pool`, whether the batch of
/// mark `batch` committed, until it can tell or `within` has passed.
pub(crate) async fn resolve(pool: &PgPool, marks: &Marks, batch: i64, within: Duration) -> Fate {
    let deadline = Instant::now() + within;
    loop {
        let why = match committed(pool, marks, batch).await {
            Ok(true) => return Fate::Committed,
            Ok(false) => return Fate::Aborted,
            Err(e) => e.to_string(),
        };
        if Instant::now() + ASK_EVERY >= deadline {
            return Fate::Unknown(why);
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

/// The answer to a batch whose COMMIT went unanswered (`why`): its
/// `outcomes` if it committed, else `Unavailable`.
pub(crate) async fn settle(
    pool: PgPool,
    marks: Marks,
    batch: i64,
    outcomes: Vec<Outcome>,
    why: String,
) -> Result<Vec<Outcome>, LedgerError> {
    tracing::warn!(%why, batch, "a COMMIT went unanswered; asking the database whether it took effect");
    let fate = resolve(&pool, &marks, batch, RESOLVE_WITHIN).await;
    tracing::warn!(?fate, batch, "the unanswered COMMIT");
    match fate {
        Fate::Committed => Ok(outcomes),
        Fate::Aborted => Err(LedgerError::Unavailable(format!(
            "{why} (the transaction did not commit)"
        ))),
        Fate::Unknown(still) => Err(LedgerError::Unavailable(format!(
            "{why}; whether the transaction committed is unknown ({still}): \
             a retry with the same idempotency key tells"
        ))),
    }
}
