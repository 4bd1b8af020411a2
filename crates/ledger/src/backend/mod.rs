//! The storage interface both backends implement: one batch transaction
//! (load and lock, plan, write, commit) and the read queries. Only the
//! modules under `backend/` know SQL: [`sqlite`] and [`postgres`] (schema,
//! batch load and write, error codes), [`shared`] (the reads both run),
//! [`rows`] (row decoding), [`schema`] (shared tables, migrations),
//! [`sqlite_batch`] (SQLite's batch keys and rows bound as parameters),
//! [`postgres_batch`] (PostgreSQL's batch rows as column arrays),
//! [`batch_json`] (PostgreSQL's rare tables as JSON arrays) and
//! [`lost_commit`] (what became of a PostgreSQL COMMIT whose answer was
//! lost).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::plan::{Command, Loaded, Outcome, PlanError, WriteSet};
use crate::LedgerError;

pub(crate) mod batch_json;
pub(crate) mod lost_commit;
pub(crate) mod postgres;
mod postgres_batch;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod shared;
pub(crate) mod sqlite;
mod sqlite_batch;

use shared::ReadQueries;

/// Plans a batch from loaded state; re-run when the backend retries.
pub(crate) type PlanFn<'a> =
    &'a (dyn Fn(Loaded) -> Result<(WriteSet, Vec<Outcome>), PlanError> + Send + Sync);

/// What running a batch came to.
pub(crate) enum Ran {
    /// Committed (its outcomes), or not (why).
    Done(Result<Vec<Outcome>, LedgerError>),
    /// Its COMMIT went unanswered: the database tells later whether it took
    /// effect, and this resolves to the outcomes or to why not (see
    /// [`lost_commit`]). Later batches need not wait for it.
    Unanswered(Pin<Box<dyn Future<Output = Result<Vec<Outcome>, LedgerError>> + Send>>),
}

#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    async fn migrate(&self) -> Result<(), LedgerError>;

    /// Runs one batch in one transaction: load (and lock) what `commands`
    /// touch, call `plan`, write the result, commit. Retries the whole batch
    /// on a serialization failure, a deadlock or a lost idempotency race.
    async fn run_batch(&self, commands: &[Command], plan: PlanFn<'_>) -> Ran;

    /// The reads, answered from the read pool.
    fn reads(&self) -> &dyn ReadQueries;
}

/// Connects to the backend `url` names (`sqlite:PATH` or `postgres://…`)
/// and brings its schema up to date.
pub(crate) async fn open(
    url: &str,
    read_connections: u32,
) -> Result<Arc<dyn Backend>, LedgerError> {
    let backend: Arc<dyn Backend> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(postgres::Pg::connect(url, read_connections).await?)
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            Arc::new(sqlite::Lite::open(path, read_connections).await?)
        } else {
            return Err(LedgerError::Config(format!(
                "{url:?} is neither sqlite:PATH nor postgres://…"
            )));
        };
    backend.migrate().await?;
    Ok(backend)
}
