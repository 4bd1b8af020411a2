//! The Applause ledger: double-entry accounts, wallets with per-channel
//! balances, top-ups, gift purchases, rooms and their event outbox, reports
//! and the ledger check.
//!
//! Every write goes through one **committer** task per process: requests
//! queue on a channel, the committer takes whatever has queued (up to
//! `batch_max`) and commits it as one database transaction — one fsync for many
//! gifts (group commit). The batch is planned in memory by [`plan`] against
//! the state the backend loaded and locked, so a wallet can never be overdrawn
//! and hot accounts (broadcaster, platform, store) are only appended to, never
//! updated per purchase. Two backends: SQLite (embedded default) and
//! PostgreSQL; only the backend modules know SQL.
//!
//! Refunds and red packets are commands like purchases. A refund reverses a
//! gift's entries in one transaction (once: the gift row is locked and
//! carries `refunded_at_ms`). A red packet's drop moves the total into the
//! `escrow:<packet>` account and the packet row remembers each channel's
//! part; claims draw from that escrow in the policy's draw order (lowest
//! store fee first, like purchases), so a claimed share carries the channels
//! it came from; the return at expiry is planned under the packet's lock and
//! only while the packet is unsettled, so it happens once.

mod backend;
pub mod model;
mod plan;
mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;
use std::time::{Duration, Instant};

use applause_core::{Currency, EventBody, SplitPolicy};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use tokio::sync::{mpsc, oneshot};

pub use model::*;
pub use plan::{accounts, RED_PACKET_KEY_PREFIX};

use backend::Backend;
use plan::{Command, Outcome};

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

struct Request {
    command: Command,
    reply: oneshot::Sender<Result<Outcome, Arc<LedgerError>>>,
}

struct Metrics {
    commit_seconds: Histogram,
    batch_size: Histogram,
    batches: IntCounterVec,
}

/// What one committed batch produced, in commit order: the room events to
/// publish and the gifts to count on the leaderboards.
#[derive(Debug, Clone, Default)]
pub struct CommitNotice {
    pub events: Vec<applause_core::EventEnvelope>,
    pub gifts: Vec<GiftRecord>,
    /// Gifts refunded by the batch (with `refunded_at_ms` set): the
    /// leaderboards subtract them.
    pub refunds: Vec<GiftRecord>,
}

/// How many commit notices may wait for the publisher. Past it notices are
/// dropped and counted: the events stay in the outbox (the relay publishes
/// them) and the leaderboards are rebuilt from the ledger.
const NOTICES_QUEUED_MAX: usize = 4_096;

/// A handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    backend: Arc<dyn Backend>,
    tx: mpsc::Sender<Request>,
    currency: Currency,
    policy: SplitPolicy,
    notices: Arc<std::sync::Mutex<Option<mpsc::Receiver<CommitNotice>>>>,
    notices_dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Ledger {
    /// Opens the ledger at `url` (`sqlite:PATH` or `postgres://…`), creates
    /// the schema if needed and starts the committer.
    pub async fn open(
        url: &str,
        options: LedgerOptions,
        registry: &Registry,
    ) -> Result<Ledger, LedgerError> {
        let backend: Arc<dyn Backend> =
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                Arc::new(postgres::Pg::connect(url, options.read_connections_max).await?)
            } else if let Some(path) = url.strip_prefix("sqlite:") {
                Arc::new(sqlite::Lite::open(path, options.read_connections_max).await?)
            } else {
                return Err(LedgerError::Config(format!(
                    "{url:?} is neither sqlite:PATH nor postgres://…"
                )));
            };
        backend.migrate().await?;
        let metrics = Metrics::register(registry);
        let (tx, rx) = mpsc::channel(options.queue_max.max(1));
        let (notice_tx, notice_rx) = mpsc::channel(NOTICES_QUEUED_MAX);
        let notices_dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(committer(
            backend.clone(),
            rx,
            Committer {
                batch_max: options.batch_max.max(1),
                currency: options.currency.clone(),
                policy: options.policy.clone(),
                metrics,
                notices: notice_tx,
                notices_dropped: notices_dropped.clone(),
            },
        ));
        Ok(Ledger {
            backend,
            tx,
            currency: options.currency,
            policy: options.policy,
            notices: Arc::new(std::sync::Mutex::new(Some(notice_rx))),
            notices_dropped,
        })
    }

    /// Takes the receiver of commit notices (once; `None` after).
    pub fn take_commit_notices(&self) -> Option<mpsc::Receiver<CommitNotice>> {
        self.notices.lock().ok()?.take()
    }

    /// How many commit notices were dropped because nobody kept up.
    pub fn notices_dropped(&self) -> u64 {
        self.notices_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
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
            Ok(Err(e)) => Err(match &*e {
                LedgerError::Unavailable(m) => LedgerError::Unavailable(m.clone()),
                LedgerError::Internal(m) => LedgerError::Internal(m.clone()),
                LedgerError::Config(m) => LedgerError::Config(m.clone()),
            }),
            Err(_) => Err(LedgerError::Unavailable("committer stopped".into())),
        }
    }

    /// Buys a gift: charges the sender, splits the price, appends the room
    /// event — or replays/refuses by the idempotency key.
    pub async fn purchase(&self, cmd: PurchaseCmd) -> Result<PurchaseOutcome, LedgerError> {
        match self.submit(Command::Purchase(cmd)).await? {
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
            .submit(Command::CreateRoom(cmd, plan::new_id('r'), epoch))
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
        match self.submit(Command::Drop(cmd, plan::new_id('p'))).await? {
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
        let due = self.backend.due_red_packets(now_ms, 500).await?;
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
        self.backend.red_packet(packet_id).await
    }

    /// Why and by whom a gift was refunded.
    pub async fn refund_of(&self, gift_id: &str) -> Result<Option<(String, String)>, LedgerError> {
        self.backend.refund_of(gift_id).await
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
        self.backend.room(room_id).await
    }

    pub async fn wallet(&self, user_id: &str) -> Result<Wallet, LedgerError> {
        self.backend.wallet(user_id).await
    }

    pub async fn gift(&self, gift_id: &str) -> Result<Option<GiftRecord>, LedgerError> {
        self.backend.gift(gift_id).await
    }

    pub async fn idempotency(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, LedgerError> {
        self.backend.idempotency(user_id, key).await
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
        self.backend.summary().await
    }

    pub async fn check(&self) -> Result<CheckReport, LedgerError> {
        self.backend.check().await
    }

    pub async fn unpublished_events(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, LedgerError> {
        self.backend.unpublished_events(before_ms, limit).await
    }

    pub async fn sweep_idempotency(&self, before_ms: i64) -> Result<u64, LedgerError> {
        self.backend.sweep_idempotency(before_ms).await
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), LedgerError> {
        self.backend.ping().await
    }
}

pub mod reports;

fn unexpected(o: Outcome) -> LedgerError {
    LedgerError::Internal(format!("committer answered with the wrong outcome: {o:?}"))
}

impl Metrics {
    fn register(registry: &Registry) -> Metrics {
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "applause_ledger_commit_seconds",
                "Time to commit one group-commit batch (load, write, fsync).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .expect("valid histogram");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "applause_ledger_batch_commands",
                "Commands per committed batch.",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
            ]),
        )
        .expect("valid histogram");
        let batches = IntCounterVec::new(
            Opts::new(
                "applause_ledger_batches_total",
                "Group-commit batches by result.",
            ),
            &["result"],
        )
        .expect("valid counter");
        // Registering twice (several ledgers in one test process) is harmless.
        let _ = registry.register(Box::new(commit_seconds.clone()));
        let _ = registry.register(Box::new(batch_size.clone()));
        let _ = registry.register(Box::new(batches.clone()));
        Metrics {
            commit_seconds,
            batch_size,
            batches,
        }
    }
}

struct Committer {
    batch_max: usize,
    currency: Currency,
    policy: SplitPolicy,
    metrics: Metrics,
    notices: mpsc::Sender<CommitNotice>,
    notices_dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// The committer: takes what has queued, commits it as one transaction,
/// announces what it committed, answers every request of the batch.
async fn committer(backend: Arc<dyn Backend>, mut rx: mpsc::Receiver<Request>, c: Committer) {
    let mut batch: Vec<Request> = Vec::with_capacity(c.batch_max);
    let mut last_ms = 0i64;
    loop {
        if rx.recv_many(&mut batch, c.batch_max).await == 0 {
            return;
        }
        let commands: Vec<Command> = batch.iter().map(|r| r.command.clone()).collect();
        // Commit times never go backwards, so seq order and time order agree.
        let now_ms = chrono::Utc::now().timestamp_millis().max(last_ms);
        last_ms = now_ms;
        let started = Instant::now();
        let plan_fn = |loaded| plan::plan(&commands, loaded, now_ms, &c.currency, &c.policy);
        let result = backend.run_batch(&commands, &plan_fn).await;
        c.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        c.metrics.batch_size.observe(commands.len() as f64);
        match result {
            Ok(outcomes) => {
                c.metrics.batches.with_label_values(&["ok"]).inc();
                let notice = notice_of(&outcomes);
                let any = !notice.events.is_empty() || !notice.refunds.is_empty();
                if any && c.notices.try_send(notice).is_err() {
                    c.notices_dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                for (req, o) in batch.drain(..).zip(outcomes) {
                    let _ = req.reply.send(Ok(o));
                }
            }
            Err(e) => {
                c.metrics.batches.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, commands = commands.len(), "ledger batch failed; nothing was written");
                let e = Arc::new(e);
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(e.clone()));
                }
                // Do not spin against a database that is down.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The events and gifts of a committed batch, in command (= seq) order.
fn notice_of(outcomes: &[Outcome]) -> CommitNotice {
    let mut n = CommitNotice::default();
    for o in outcomes {
        match o {
            Outcome::Purchase(PurchaseOutcome::Charged(gift, ev)) => {
                n.gifts.push((**gift).clone());
                n.events.extend(ev.iter().cloned());
            }
            Outcome::EndRoom(EndRoomOutcome::Ended(_, ev))
            | Outcome::Ack(AckOutcome::Acked(ev))
            | Outcome::Drop(DropOutcome::Dropped(_, ev))
            | Outcome::Claim(ClaimOutcome::Claimed(_, _, ev))
            | Outcome::Expire(ExpireOutcome::Returned(_, ev))
            | Outcome::Event(ev) => n.events.extend(ev.iter().cloned()),
            Outcome::Refund(RefundOutcome::Refunded(gift)) => n.refunds.push((**gift).clone()),
            _ => {}
        }
    }
    n
}
