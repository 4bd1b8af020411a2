//! The ledger's error: what a caller can tell apart (unavailable, internal,
//! configuration). How database errors map onto it lives with the backends
//! (`backend::sqlite::error`, `backend::postgres::error`).

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database cannot be reached or cannot commit: nothing was written.
    /// (One exception, which the message names: a PostgreSQL COMMIT whose
    /// answer was lost and whose fate the database could not tell within
    /// `backend::lost_commit::RESOLVE_WITHIN`; a retry with the same
    /// idempotency key then tells.)
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
}
