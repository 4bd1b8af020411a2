//! The ledger handle: the public API. Writes become commands for the
//! committer; reads go straight to the backend's read pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use applause_core::{Currency, EventBody, SharedClock, SplitPolicy, SystemClock};
use prometheus::Registry;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{self, Backend};
use crate::committer::{CommitNotice, Committer, Request, NOTICES_QUEUED_MAX};
use crate::ids::Ids;
use crate::model::*;
use crate::plan::{Command, Outcome};
use crate::{reports, LedgerError};

/// Ledger settings.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    pub currency: Currency,
    pub policy: SplitPolicy,
    /// The most commands committed in one transaction.
    pub batch_max: usize,
    /// The most commands waiting for the committer; past it callers wait.
    pub queue_max: usize,
    /// Read connections in the pool.
    pub read_connections_max: u32,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            currency: Currency::usd(),
            policy: SplitPolicy::default(),
            batch_max: 2_048,
            queue_max: 65_536,
            read_connections_max: 8,
        }
    }
}

/// The most idempotency records one expiry command forgets.
const IDEMPOTENCY_SWEEP_CHUNK: u32 = 10_000;

/// A handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    backend: Arc<dyn Backend>,
    tx: mpsc::Sender<Request>,
    currency: Currency,
    policy: SplitPolicy,
    clock: SharedClock,
    ids: Arc<Ids>,
    notices: Arc<Mutex<Option<mpsc::Receiver<CommitNotice>>>>,
    notices_dropped: Arc<AtomicU64>,
    /// Stops the committer ([`Ledger::shutdown`]).
    stop: CancellationToken,
    committer: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Ledger {
    /// Opens the ledger at `url` (`sqlite:PATH` or `postgres://…`) on the
    /// system clock, creates the schema if needed and starts the committer.
    pub async fn open(
        url: &str,
        options: LedgerOptions,
        registry: &Registry,
    ) -> Result<Ledger, LedgerError> {
        Self::open_with_clock(url, options, registry, Arc::new(SystemClock)).await
    }

    /// Like [`Ledger::open`], with the clock that stamps commits, expiries
    /// and ids (tests pass a `ManualClock` instead of sleeping).
    pub async fn open_with_clock(
        url: &str,
        options: LedgerOptions,
        registry: &Registry,
        clock: SharedClock,
    ) -> Result<Ledger, LedgerError> {
        let backend = backend::open(url, options.read_connections_max).await?;
        let (tx, rx) = mpsc::channel(options.queue_max.max(1));
        let (notice_tx, notice_rx) = mpsc::channel(NOTICES_QUEUED_MAX);
        let notices_dropped = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let committer = Committer {
            batch_max: options.batch_max.max(1),
            currency: options.currency.clone(),
            policy: options.policy.clone(),
            clock: clock.clone(),
            notices: notice_tx,
            notices_dropped: notices_dropped.clone(),
        }
        .spawn(backend.clone(), rx, stop.clone(), registry);
        Ok(Ledger {
            backend,
            tx,
            currency: options.currency,
            policy: options.policy,
            ids: Arc::new(Ids::new(clock.clone())),
            clock,
            notices: Arc::new(Mutex::new(Some(notice_rx))),
            notices_dropped,
            stop,
            committer: Arc::new(tokio::sync::Mutex::new(Some(committer))),
        })
    }

    /// Stops the committer of this ledger (every clone's): commands already
    /// queued are committed and answered, later ones fail with
    /// `unavailable`. Returns when the committer has ended; a process calls
    /// it last in its shutdown, after everything that writes has stopped.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let mut committer = self.committer.lock().await;
        if let Some(task) = committer.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the ledger's committer failed");
            }
        }
    }

    /// The clock the ledger stamps commits with (the relay and sweepers can
    /// share it).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Takes the receiver of commit notices (once; `None` after).
    pub fn take_commit_notices(&self) -> Option<mpsc::Receiver<CommitNotice>> {
        self.notices.lock().ok()?.take()
    }

    /// How many commit notices were dropped because nobody kept up.
    pub fn notices_dropped(&self) -> u64 {
        self.notices_dropped.load(Ordering::Relaxed)
    }

    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    pub fn policy(&self) -> &SplitPolicy {
        &self.policy
    }

    async fn submit(&self, command: Command) -> Result<Outcome, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { command, reply })
            .await
            .map_err(|_| LedgerError::Unavailable("committer stopped".into()))?;
        match rx.await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(e.duplicate()),
            Err(_) => Err(LedgerError::Unavailable("committer stopped".into())),
        }
    }

    /// Buys a gift: charges the sender, splits the price, appends the room
    /// event — or replays/refuses by the idempotency key.
    pub async fn purchase(&self, cmd: PurchaseCmd) -> Result<PurchaseOutcome, LedgerError> {
        match self
            .submit(Command::Purchase(cmd, self.ids.next('g')))
            .await?
        {
            Outcome::Purchase(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    pub async fn top_up(&self, cmd: TopUpCmd) -> Result<TopUpOutcome, LedgerError> {
        match self.submit(Command::TopUp(cmd)).await? {
            Outcome::TopUp(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    pub async fn create_room(&self, cmd: CreateRoomCmd) -> Result<Room, LedgerError> {
        // A room's epoch names its event history; it never changes, so any
        // non-zero value works. A random one keeps rooms from being confused.
        let epoch = 1 + (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as u64;
        match self
            .submit(Command::CreateRoom(cmd, self.ids.next('r'), epoch))
            .await?
        {
            Outcome::Room(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn end_room(
        &self,
        room_id: &str,
        broadcaster_id: &str,
    ) -> Result<EndRoomOutcome, LedgerError> {
        match self
            .submit(Command::EndRoom {
                room_id: room_id.to_owned(),
                broadcaster_id: broadcaster_id.to_owned(),
            })
            .await?
        {
            Outcome::EndRoom(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    pub async fn ack(&self, cmd: AckCmd) -> Result<AckOutcome, LedgerError> {
        match self.submit(Command::Ack(cmd)).await? {
            Outcome::Ack(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Appends a room event that moves no money (e.g. a leaderboard push);
    /// `None` when the room does not exist.
    pub async fn append_event(
        &self,
        room_id: &str,
        body: EventBody,
    ) -> Result<Option<applause_core::EventEnvelope>, LedgerError> {
        match self
            .submit(Command::AppendEvent {
                room_id: room_id.to_owned(),
                body,
            })
            .await?
        {
            Outcome::Event(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Refunds a gift once: reversal entries in one transaction.
    pub async fn refund(&self, cmd: RefundCmd) -> Result<RefundOutcome, LedgerError> {
        match self.submit(Command::Refund(cmd)).await? {
            Outcome::Refund(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Drops a red packet: the total moves from the sender's wallet to escrow.
    pub async fn drop_red_packet(&self, cmd: DropCmd) -> Result<DropOutcome, LedgerError> {
        match self.submit(Command::Drop(cmd, self.ids.next('p'))).await? {
            Outcome::Drop(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Claims the next share of a red packet for a user.
    pub async fn claim_red_packet(&self, cmd: ClaimCmd) -> Result<ClaimOutcome, LedgerError> {
        match self.submit(Command::Claim(cmd)).await? {
            Outcome::Claim(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Returns an expired packet's rest to its sender (once; see [`ExpireOutcome`]).
    pub async fn expire_red_packet(&self, packet_id: &str) -> Result<ExpireOutcome, LedgerError> {
        match self.submit(Command::Expire(packet_id.to_owned())).await? {
            Outcome::Expire(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// One sweep: every packet unsettled past its expiry (as of `now_ms`) is
    /// asked to return its rest. Safe to run on any number of nodes at once:
    /// the committer re-checks each packet under its lock. Returns how many
    /// returns this call committed.
    pub async fn sweep_red_packets(&self, now_ms: i64) -> Result<u64, LedgerError> {
        let due = self.backend.reads().due_red_packets(now_ms, 500).await?;
        let mut returned = 0;
        for id in due {
            if matches!(
                self.expire_red_packet(&id).await?,
                ExpireOutcome::Returned(..)
            ) {
                returned += 1;
            }
        }
        Ok(returned)
    }

    /// A red packet and its claims so far (in claim order).
    pub async fn red_packet(
        &self,
        packet_id: &str,
    ) -> Result<Option<(RedPacket, Vec<ClaimRecord>)>, LedgerError> {
        self.backend.reads().red_packet(packet_id).await
    }

    /// Why and by whom a gift was refunded.
    pub async fn refund_of(&self, gift_id: &str) -> Result<Option<(String, String)>, LedgerError> {
        self.backend.reads().refund_of(gift_id).await
    }

    /// Records that a room's events up to `seq` reached the bus.
    pub async fn mark_published(&self, room_id: &str, seq: u64) -> Result<(), LedgerError> {
        self.submit(Command::MarkPublished {
            room_id: room_id.to_owned(),
            seq,
        })
        .await
        .map(|_| ())
    }

    pub async fn room(&self, room_id: &str) -> Result<Option<Room>, LedgerError> {
        self.backend.reads().room(room_id).await
    }

    pub async fn wallet(&self, user_id: &str) -> Result<Wallet, LedgerError> {
        self.backend.reads().wallet(user_id).await
    }

    pub async fn gift(&self, gift_id: &str) -> Result<Option<GiftRecord>, LedgerError> {
        self.backend.reads().gift(gift_id).await
    }

    pub async fn idempotency(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, LedgerError> {
        self.backend.reads().idempotency(user_id, key).await
    }

    /// Every gift created in `[from_ms, to_ms)` (optionally of one
    /// broadcaster), oldest first, fetched page by page.
    pub async fn gifts_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        broadcaster_id: Option<&str>,
    ) -> Result<Vec<GiftRecord>, LedgerError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .backend
                .reads()
                .gifts_between(from_ms, to_ms, broadcaster_id, after.clone(), 5_000)
                .await?;
            let done = page.len() < 5_000;
            after = page.last().map(|g| (g.created_at_ms, g.gift_id.clone()));
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// The revenue report over `[from_ms, to_ms)` and its totals row.
    pub async fn revenue(
        &self,
        from_ms: i64,
        to_ms: i64,
        group_by: GroupBy,
    ) -> Result<(Vec<RevenueRow>, RevenueRow), LedgerError> {
        let gifts = self.gifts_between(from_ms, to_ms, None).await?;
        Ok(reports::revenue(&gifts, group_by))
    }

    pub async fn summary(&self) -> Result<Summary, LedgerError> {
        self.backend.reads().summary().await
    }

    pub async fn check(&self) -> Result<CheckReport, LedgerError> {
        self.backend.reads().check().await
    }

    pub async fn unpublished_events(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, LedgerError> {
        self.backend
            .reads()
            .unpublished_events(before_ms, limit)
            .await
    }

    /// Forgets the idempotency records created before `before_ms` (past
    /// their retention); returns how many. A write like any other, so it
    /// goes through the committer, in chunks: one sweep never holds the
    /// write lock (and the purchases queued behind it) for long.
    pub async fn sweep_idempotency(&self, before_ms: i64) -> Result<u64, LedgerError> {
        let mut forgotten = 0;
        loop {
            let n = match self
                .submit(Command::ExpireIdempotency {
                    before_ms,
                    limit: IDEMPOTENCY_SWEEP_CHUNK,
                })
                .await?
            {
                Outcome::IdempotencyExpired(n) => n,
                other => return Err(unexpected(other)),
            };
            forgotten += n;
            if n < u64::from(IDEMPOTENCY_SWEEP_CHUNK) {
                return Ok(forgotten);
            }
        }
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), LedgerError> {
        self.backend.reads().ping().await
    }
}

fn unexpected(o: Outcome) -> LedgerError {
    LedgerError::Internal(format!("committer answered with the wrong outcome: {o:?}"))
}
