//! A COMMIT whose answer never came back (PostgreSQL). When the connection
//! dies after the COMMIT was sent — the server crashed or was stopped, the
//! network failed — the transaction may have committed or not, and the
//! error alone cannot tell. Answering "unavailable" then would break its
//! promise that nothing was charged whenever the commit did take effect.
//!
//! So a batch notes its transaction id before committing and, when the
//! COMMIT's answer is lost, asks the database over a new connection what
//! became of that transaction (`txid_status`, which PostgreSQL keeps for
//! exactly this), for as long as [`RESOLVE_WITHIN`]: committed, the batch's
//! outcomes stand; aborted, nothing was written. Only when the database does
//! not come back in time does the batch fail without knowing, and says so.
//! The committer goes on with later batches meanwhile (they load what the
//! database holds, whichever way this one went): only this batch's callers
//! wait for the answer.

use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use crate::plan::Outcome;
use crate::LedgerError;

/// How long a batch waits for the database to tell whether its commit took
/// effect: longer than a crash recovery usually takes, shorter than the time
/// clients usually wait for an answer.
pub(crate) const RESOLVE_WITHIN: Duration = Duration::from_secs(10);

/// Between two questions while the database is still away.
const ASK_EVERY: Duration = Duration::from_millis(100);

/// What became of a transaction whose COMMIT went unanswered.
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

/// Asks the database, on new connections of `pool`, what became of
/// transaction `xid` (from `txid_current_if_assigned()`), until it can tell
/// or `within` has passed.
pub(crate) async fn resolve(pool: &PgPool, xid: i64, within: Duration) -> Fate {
    let deadline = Instant::now() + within;
    loop {
        let why = match sqlx::query_scalar::<_, Option<String>>("SELECT txid_status($1)")
            .bind(xid)
            .fetch_one(pool)
            .await
        {
            Ok(Some(s)) if s == "committed" => return Fate::Committed,
            Ok(Some(s)) if s == "aborted" => return Fate::Aborted,
            // The old session has not finished yet (the network failed,
            // the server did not): ask again.
            Ok(Some(s)) => format!("transaction {xid} is {s}"),
            Ok(None) => return Fate::Unknown(format!("transaction {xid} is too old to tell")),
            Err(e) => e.to_string(),
        };
        if Instant::now() + ASK_EVERY >= deadline {
            return Fate::Unknown(why);
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

/// The answer to a batch whose COMMIT of transaction `xid` went unanswered
/// (`why`): its `outcomes` if it committed, else `Unavailable`.
pub(crate) async fn settle(
    pool: PgPool,
    xid: i64,
    outcomes: Vec<Outcome>,
    why: String,
) -> Result<Vec<Outcome>, LedgerError> {
    tracing::warn!(%why, xid, "a COMMIT went unanswered; asking the database whether it took effect");
    let fate = resolve(&pool, xid, RESOLVE_WITHIN).await;
    tracing::warn!(?fate, xid, "the unanswered COMMIT");
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
