//! The storage interface both backends implement: one batch transaction
//! (load and lock, plan, write, commit) and the read queries.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::*;
use crate::plan::{Command, Loaded, Outcome, PlanError, WriteSet};
use crate::LedgerError;

/// Plans a batch from loaded state; re-run when the backend retries.
pub(crate) type PlanFn<'a> =
    &'a (dyn Fn(Loaded) -> Result<(WriteSet, Vec<Outcome>), PlanError> + Send + Sync);

#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    async fn migrate(&self) -> Result<(), LedgerError>;

    /// Runs one batch in one transaction: load (and lock) what `commands`
    /// touch, call `plan`, write the result, commit. Retries the whole batch
    /// on a serialization failure, a deadlock or a lost idempotency race.
    async fn run_batch(
        &self,
        commands: &[Command],
        plan: PlanFn<'_>,
    ) -> Result<Vec<Outcome>, LedgerError>;

    async fn room(&self, room_id: &str) -> Result<Option<Room>, LedgerError>;
    async fn wallet(&self, user_id: &str) -> Result<Wallet, LedgerError>;
    async fn gift(&self, gift_id: &str) -> Result<Option<GiftRecord>, LedgerError>;
    async fn idempotency(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, LedgerError>;
    /// Gifts created in `[from_ms, to_ms)`, oldest first, at most `limit`
    /// after `after_gift_id` (keyset pagination for reports and rebuilds).
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
    /// Deletes idempotency records created before `before_ms`.
    async fn sweep_idempotency(&self, before_ms: i64) -> Result<u64, LedgerError>;
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

/// Connects to the backend `url` names (`sqlite:PATH` or `postgres://…`)
/// and brings its schema up to date.
pub(crate) async fn open(
    url: &str,
    read_connections: u32,
) -> Result<Arc<dyn Backend>, LedgerError> {
    let backend: Arc<dyn Backend> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(crate::postgres::Pg::connect(url, read_connections).await?)
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            Arc::new(crate::sqlite::Lite::open(path, read_connections).await?)
        } else {
            return Err(LedgerError::Config(format!(
                "{url:?} is neither sqlite:PATH nor postgres://…"
            )));
        };
    backend.migrate().await?;
    Ok(backend)
}
