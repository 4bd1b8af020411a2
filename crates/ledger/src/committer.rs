//! The committer: the one task per process that writes. Requests queue on a
//! channel; it takes whatever has queued (up to `batch_max`), has the backend
//! load and lock what they touch, plans them in memory and commits them as one
//! transaction — one fsync for many gifts (group commit) — then announces what
//! it committed and answers every request of the batch. A batch whose COMMIT
//! went unanswered (PostgreSQL gone mid-commit) is answered once the database
//! tells whether it took effect, while the committer goes on with the next.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use applause_core::{Currency, SplitPolicy};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, Ran};
use crate::model::*;
use crate::plan::{self, Command, Outcome};
use crate::LedgerError;

/// One queued command and where its outcome goes.
pub(crate) struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Outcome, Arc<LedgerError>>>,
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
pub(crate) const NOTICES_QUEUED_MAX: usize = 4_096;

#[derive(Clone)]
struct Metrics {
    commit_seconds: Histogram,
    batch_size: Histogram,
    batches: IntCounterVec,
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

/// The committer's settings and outputs.
#[derive(Clone)]
pub(crate) struct Committer {
    pub batch_max: usize,
    pub currency: Currency,
    pub policy: SplitPolicy,
    pub clock: applause_core::SharedClock,
    pub notices: mpsc::Sender<CommitNotice>,
    pub notices_dropped: Arc<AtomicU64>,
}

impl Committer {
    /// Starts the committer task. It ends when every handle is dropped or
    /// when `stop` is cancelled; then it refuses new commands, commits every
    /// one already queued, and returns.
    pub fn spawn(
        self,
        backend: Arc<dyn Backend>,
        rx: mpsc::Receiver<Request>,
        stop: CancellationToken,
        registry: &Registry,
    ) -> JoinHandle<()> {
        let metrics = Metrics::register(registry);
        tokio::spawn(run(backend, rx, stop, self, metrics))
    }
}

async fn run(
    backend: Arc<dyn Backend>,
    mut rx: mpsc::Receiver<Request>,
    stop: CancellationToken,
    c: Committer,
    metrics: Metrics,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(c.batch_max);
    let mut commands: Vec<Command> = Vec::with_capacity(c.batch_max);
    let mut replies = Vec::with_capacity(c.batch_max);
    let mut last_ms = 0i64;
    let mut stopping = false;
    // Batches whose COMMIT went unanswered, answered once the database
    // tells what became of them (while later batches go on).
    let mut unanswered: JoinSet<()> = JoinSet::new();
    loop {
        while unanswered.try_join_next().is_some() {}
        let taken = if stopping {
            rx.recv_many(&mut batch, c.batch_max).await
        } else {
            // `recv_many` is cancel safe: when the stop wins, nothing was taken.
            tokio::select! {
                n = rx.recv_many(&mut batch, c.batch_max) => n,
                _ = stop.cancelled() => {
                    // New sends fail from here; what is queued still commits.
                    rx.close();
                    stopping = true;
                    continue;
                }
            }
        };
        if taken == 0 {
            // Their callers are answered before the committer ends.
            while unanswered.join_next().await.is_some() {}
            return;
        }
        // Moved out, not cloned: the commands go to the planner, the
        // replies wait for the outcome.
        for r in batch.drain(..) {
            commands.push(r.command);
            replies.push(r.reply);
        }
        // The batch's commit time, from the injected clock. Commit times
        // never go backwards (a wall clock may), so seq order and time order
        // agree.
        let now_ms = c.clock.now_ms().max(last_ms);
        last_ms = now_ms;
        let started = Instant::now();
        let plan_fn = |loaded| plan::plan(&commands, loaded, now_ms, &c.currency, &c.policy);
        let ran = backend.run_batch(&commands, &plan_fn).await;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_size.observe(commands.len() as f64);
        commands.clear();
        let failed = match ran {
            Ran::Done(result) => {
                let failed = result.is_err();
                answer(&c, &metrics, std::mem::take(&mut replies), result);
                failed
            }
            Ran::Unanswered(fate) => {
                metrics.batches.with_label_values(&["unanswered"]).inc();
                let (c, metrics) = (c.clone(), metrics.clone());
                let waiting = std::mem::take(&mut replies);
                unanswered.spawn(async move { answer(&c, &metrics, waiting, fate.await) });
                true
            }
        };
        if failed {
            // Do not spin against a database that is down.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where one request's outcome goes.
type Reply = oneshot::Sender<Result<Outcome, Arc<LedgerError>>>;

/// Announces what a batch committed and answers each of its requests.
fn answer(
    c: &Committer,
    metrics: &Metrics,
    replies: Vec<Reply>,
    result: Result<Vec<Outcome>, LedgerError>,
) {
    match result {
        Ok(outcomes) => {
            metrics.batches.with_label_values(&["ok"]).inc();
            let notice = notice_of(&outcomes);
            let any = !notice.events.is_empty() || !notice.refunds.is_empty();
            if any && c.notices.try_send(notice).is_err() {
                c.notices_dropped.fetch_add(1, Ordering::Relaxed);
            }
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
        }
        Err(e) => {
            metrics.batches.with_label_values(&["error"]).inc();
            tracing::warn!(error = %e, commands = replies.len(), "ledger batch failed");
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
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
