//! The ledger's error: what a caller can tell apart (unavailable, internal,
//! configuration). How database errors map onto it lives with the backends.

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database cannot be reached or cannot commit: nothing was written.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// A broken invariant or an unexpected database answer.
    #[error("ledger internal error: {0}")]
    Internal(String),
    #[error("invalid database url: {0}")]
    Config(String),
}

impl LedgerError {
    /// A copy of a shared error: one failed batch answers every caller in it.
    pub(crate) fn duplicate(&self) -> LedgerError {
        match self {
            LedgerError::Unavailable(m) => LedgerError::Unavailable(m.clone()),
            LedgerError::Internal(m) => LedgerError::Internal(m.clone()),
            LedgerError::Config(m) => LedgerError::Config(m.clone()),
        }
    }

    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => LedgerError::Unavailable(e.to_string()),
            sqlx::Error::Database(ref db) => {
                // PostgreSQL: class 08 connection, 57 operator intervention
                // (shutdown), 53 insufficient resources, 55000 "database is not
                // accepting connections" (recovery). SQLite: busy/locked/IO.
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if code.starts_with("08")
                    || code.starts_with("57")
                    || code.starts_with("53")
                    || code == "55000"
                    || ["5", "6", "10", "13", "14"].contains(&code.as_str())
                {
                    LedgerError::Unavailable(e.to_string())
                } else {
                    LedgerError::Internal(e.to_string())
                }
            }
            other => LedgerError::Internal(other.to_string()),
        }
    }
}
