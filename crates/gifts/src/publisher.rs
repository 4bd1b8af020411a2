//! From the ledger to everyone else: publishes committed room events to the
//! bus in `seq` order, counts committed gifts on the leaderboards, pushes a
//! room's live top 10 when it changes, and repairs what a crash or an outage
//! left behind.
//!
//! - Events: the committer announces each batch (a [`CommitNotice`]); they are
//!   published in order and then marked published in the ledger. Whatever is
//!   still unmarked a couple of seconds after its commit (a crash between
//!   commit and publish, a bus outage, a dropped notice, a `Gap` answer) is
//!   published again by the **relay** from the ledger's outbox. The bus drops
//!   an already published `seq`, so a relayed event is never shown twice.
//! - Leaderboards: updates are idempotent by gift id. A failed update marks
//!   the boards dirty, and a lost Redis has no generation marker: either way
//!   the boards are **rebuilt** from the ledger, while purchases go on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use applause_bus::{EventBus, PublishOutcome};
use applause_core::events::LeaderboardEntryView;
use applause_core::{EventBody, EventEnvelope};
use applause_leaderboard::{BoardUpdate, Leaderboard, Window};
use applause_ledger::{CommitNotice, GiftRecord, Ledger};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// How long after its commit an unpublished event is left to the normal
/// publisher before the relay takes it.
const RELAY_AFTER_MS: i64 = 2_000;
/// Events relayed per pass.
const RELAY_EVENTS_MAX: u32 = 2_000;
/// How far before a rebuild's start gifts are applied again, in case they
/// were committed while the rebuild read the ledger.
const REBUILD_OVERLAP_MS: i64 = 10_000;

struct Shared {
    ledger: Ledger,
    bus: Arc<dyn EventBus>,
    boards: Arc<dyn Leaderboard>,
    metrics: Metrics,
    relay_now: Notify,
    boards_dirty: AtomicBool,
    touched_rooms: Mutex<HashSet<String>>,
}

/// Handle to the publishing tasks.
#[derive(Clone)]
pub struct Publisher(Arc<Shared>);

impl Publisher {
    pub(crate) fn start(
        ledger: Ledger,
        bus: Arc<dyn EventBus>,
        boards: Arc<dyn Leaderboard>,
        metrics: Metrics,
        push_interval: Duration,
        rebuild_boards: bool,
    ) -> Publisher {
        let shared = Arc::new(Shared {
            ledger,
            bus,
            boards,
            metrics,
            relay_now: Notify::new(),
            boards_dirty: AtomicBool::new(true),
            touched_rooms: Mutex::new(HashSet::new()),
        });
        if let Some(rx) = shared.ledger.take_commit_notices() {
            tokio::spawn(notice_loop(shared.clone(), rx));
        }
        tokio::spawn(relay_loop(shared.clone()));
        if rebuild_boards {
            tokio::spawn(boards_loop(shared.clone()));
        }
        tokio::spawn(push_loop(shared.clone(), push_interval));
        Publisher(shared)
    }

    /// Waits until every committed event is published, at most `timeout`.
    pub(crate) async fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.0.ledger.unpublished_events(i64::MAX, 1).await {
                Ok(v) if v.is_empty() => return,
                _ => {
                    self.0.relay_now.notify_one();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

async fn notice_loop(s: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<CommitNotice>) {
    let mut notices = Vec::new();
    while rx.recv_many(&mut notices, 64).await > 0 {
        let mut events = Vec::new();
        let mut gifts = Vec::new();
        let mut refunds = Vec::new();
        for n in notices.drain(..) {
            events.extend(n.events);
            gifts.extend(n.gifts);
            refunds.extend(n.refunds);
        }
        // The boards are updated before the events are marked published: a
        // crash in between leaves the events to the relay, which counts
        // their gifts again (idempotent), so no committed gift is missed.
        let fresh = HashMap::new();
        let (reached, (), ()) = tokio::join!(
            publish(&s, &events, &fresh),
            count_gifts(&s, &gifts),
            subtract_refunds(&s, &refunds),
        );
        mark_published(&s, reached);
    }
}

/// Publishes events (in order); returns the last `seq` per room that reached
/// the bus, for [`mark_published`]. The relay passes what the ledger records
/// as published per room (`published_through`, empty for fresh commits): the
/// bus accepts a seq after a gap only on that word.
async fn publish(
    s: &Shared,
    events: &[EventEnvelope],
    published_through: &HashMap<String, u64>,
) -> BTreeMap<String, u64> {
    let relayed = !published_through.is_empty();
    let mut reached: BTreeMap<String, u64> = BTreeMap::new();
    if events.is_empty() {
        return reached;
    }
    match s.bus.publish_through(events, published_through).await {
        Ok(outcomes) => {
            let now = applause_web::now_ms();
            for (ev, o) in events.iter().zip(outcomes) {
                match o {
                    PublishOutcome::Published | PublishOutcome::Duplicate => {
                        if o == PublishOutcome::Published {
                            s.metrics.published.inc();
                            if relayed {
                                s.metrics.relayed.inc();
                            }
                            s.metrics
                                .publish_lag_seconds
                                .observe((now - ev.committed_at_ms).max(0) as f64 / 1000.0);
                        }
                        let e = reached.entry(ev.room_id.clone()).or_default();
                        *e = (*e).max(ev.seq);
                    }
                    PublishOutcome::Gap { .. } => s.relay_now.notify_one(),
                }
            }
        }
        Err(e) => {
            s.metrics.publish_errors.inc();
            tracing::warn!(error = %e, events = events.len(), "publish failed; events stay in the outbox");
        }
    }
    reached
}

/// Records in the ledger what reached the bus, so the relay leaves it alone.
fn mark_published(s: &Shared, reached: BTreeMap<String, u64>) {
    for (room, seq) in reached {
        let ledger = s.ledger.clone();
        // Marks are monotonic in the ledger, so their order does not matter.
        tokio::spawn(async move {
            if let Err(e) = ledger.mark_published(&room, seq).await {
                tracing::debug!(error = %e, "mark published failed; the relay will retry");
            }
        });
    }
}

/// The gifts of relayed gift events, read back from the ledger: the process
/// that committed them may have died before counting them.
async fn gifts_of(s: &Shared, events: &[EventEnvelope]) -> Vec<GiftRecord> {
    let mut gifts = Vec::new();
    for ev in events {
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(&ev.frame) else {
            continue;
        };
        let Some(gift_id) = frame
            .get("gift_id")
            .and_then(|g| g.as_str())
            .filter(|_| frame["type"] == "gift")
        else {
            continue;
        };
        match s.ledger.gift(gift_id).await {
            Ok(Some(g)) => gifts.push(g),
            Ok(None) => {}
            Err(e) => {
                // Cannot tell what is counted: recompute the boards instead.
                s.boards_dirty.store(true, Ordering::Relaxed);
                tracing::warn!(error = %e, "relay could not read a gift; boards will be rebuilt");
            }
        }
    }
    gifts
}

async fn relay_loop(s: Arc<Shared>) {
    loop {
        let forced = tokio::select! {
            _ = s.relay_now.notified() => true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        };
        let cutoff = if forced {
            i64::MAX
        } else {
            applause_web::now_ms() - RELAY_AFTER_MS
        };
        match s.ledger.unpublished_events(cutoff, RELAY_EVENTS_MAX).await {
            Ok(stored) if !stored.is_empty() => {
                let mut through = HashMap::new();
                let events: Vec<_> = stored
                    .into_iter()
                    .map(|e| {
                        through.insert(e.envelope.room_id.clone(), e.published_through);
                        e.envelope
                    })
                    .collect();
                let gifts = gifts_of(&s, &events).await;
                let (reached, ()) =
                    tokio::join!(publish(&s, &events, &through), count_gifts(&s, &gifts));
                mark_published(&s, reached);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "relay could not read the outbox"),
        }
        if forced {
            // A burst of Gap answers should not become a busy loop.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn update_of(g: &GiftRecord) -> BoardUpdate {
    BoardUpdate {
        update_id: g.gift_id.clone(),
        room_id: g.room_id.clone(),
        broadcaster_id: g.broadcaster_id.clone(),
        sender_id: g.sender_id.clone(),
        sender_name: g.sender_name.clone(),
        amount_minor: g.amount_minor,
        at_ms: g.created_at_ms,
    }
}

fn updates_of(gifts: &[GiftRecord]) -> Vec<BoardUpdate> {
    let mut out = Vec::with_capacity(gifts.len());
    for g in gifts {
        out.push(update_of(g));
        if g.refunded_at_ms.is_some() {
            out.push(BoardUpdate {
                update_id: format!("refund:{}", g.gift_id),
                amount_minor: -g.amount_minor,
                ..update_of(g)
            });
        }
    }
    out
}

async fn count_gifts(s: &Shared, gifts: &[GiftRecord]) {
    if gifts.is_empty() {
        return;
    }
    if let Err(e) = s.boards.apply_batch(&updates_of(gifts)).await {
        s.metrics.board_errors.inc();
        s.boards_dirty.store(true, Ordering::Relaxed);
        tracing::warn!(error = %e, "leaderboard update failed; boards will be rebuilt from the ledger");
        return;
    }
    let mut touched = s.touched_rooms.lock().unwrap_or_else(|p| p.into_inner());
    for g in gifts {
        touched.insert(g.room_id.clone());
    }
}

/// Subtracts refunded gifts (`refund:<gift id>` updates, idempotent), so a
/// refund leaves the boards as if the gift had not been bought.
async fn subtract_refunds(s: &Shared, refunded: &[GiftRecord]) {
    if refunded.is_empty() {
        return;
    }
    let updates: Vec<BoardUpdate> = updates_of(refunded)
        .into_iter()
        .filter(|u| u.update_id.starts_with("refund:"))
        .collect();
    if let Err(e) = s.boards.apply_batch(&updates).await {
        s.metrics.board_errors.inc();
        s.boards_dirty.store(true, Ordering::Relaxed);
        tracing::warn!(error = %e, "leaderboard refund failed; boards will be rebuilt from the ledger");
        return;
    }
    let mut touched = s.touched_rooms.lock().unwrap_or_else(|p| p.into_inner());
    for g in refunded {
        touched.insert(g.room_id.clone());
    }
}

/// Recomputes every board from the ledger: each gift, and each refund as its
/// `refund:<gift>` subtraction, exactly as the live updates count them. The
/// nodes' automatic rebuild and `applause leaderboard rebuild` both call this.
pub async fn rebuild(
    ledger: &Ledger,
    boards: &dyn Leaderboard,
) -> Result<applause_leaderboard::RebuildReport, String> {
    let started_ms = applause_web::now_ms();
    let gifts = ledger
        .gifts_between(0, i64::MAX, None)
        .await
        .map_err(|e| e.to_string())?;
    let report = boards
        .rebuild(&updates_of(&gifts), applause_web::now_ms())
        .await
        .map_err(|e| e.to_string())?;
    // Gifts committed while the ledger was being read may have been applied
    // to the old boards only: apply the recent ones again (idempotent).
    let recent = ledger
        .gifts_between(started_ms - REBUILD_OVERLAP_MS, i64::MAX, None)
        .await
        .map_err(|e| e.to_string())?;
    if !recent.is_empty() {
        boards
            .apply_batch(&updates_of(&recent))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(report)
}

async fn boards_loop(s: Arc<Shared>) {
    loop {
        let dirty = s.boards_dirty.load(Ordering::Relaxed);
        let lost = s.boards.needs_rebuild().await.unwrap_or(false);
        if dirty || lost {
            s.boards_dirty.store(false, Ordering::Relaxed);
            match rebuild(&s.ledger, s.boards.as_ref()).await {
                Ok(r) => {
                    // The boards count their own rebuilds (applause_leaderboard_rebuilds_total).
                    tracing::info!(
                        updates = r.updates,
                        lost,
                        "leaderboards rebuilt from the ledger"
                    );
                }
                Err(e) => {
                    s.boards_dirty.store(true, Ordering::Relaxed);
                    s.metrics.board_errors.inc();
                    tracing::warn!(error = %e, "leaderboard rebuild failed; will retry");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Pushes a room's live top 10 when it changed, at most once per interval per
/// room; the last push of a burst always carries the latest state because
/// every room touched since the previous tick is looked at again.
async fn push_loop(s: Arc<Shared>, interval: Duration) {
    let mut last: HashMap<String, (Vec<LeaderboardEntryView>, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let rooms: Vec<String> = {
            let mut t = s.touched_rooms.lock().unwrap_or_else(|p| p.into_inner());
            t.drain().collect()
        };
        for room_id in rooms {
            let Ok(Some(room)) = s.ledger.room(&room_id).await else {
                continue;
            };
            if !room.live {
                last.remove(&room_id);
                continue;
            }
            let Ok(top) = s
                .boards
                .top(
                    &room_id,
                    &room.broadcaster_id,
                    Window::Live,
                    10,
                    applause_web::now_ms(),
                )
                .await
            else {
                continue;
            };
            let currency = s.ledger.currency();
            let entries: Vec<LeaderboardEntryView> = top
                .iter()
                .map(|e| LeaderboardEntryView {
                    rank: e.rank,
                    user_id: e.user_id.clone(),
                    name: e.name.clone().unwrap_or_else(|| e.user_id.clone()),
                    amount: currency.format(e.amount_minor),
                })
                .collect();
            if last.get(&room_id).is_some_and(|(prev, _)| *prev == entries) {
                continue;
            }
            let body = EventBody::Leaderboard {
                window: "live".into(),
                entries: entries.clone(),
            };
            if s.ledger.append_event(&room_id, body).await.is_ok() {
                last.insert(room_id, (entries, Instant::now()));
            }
        }
        // Forget rooms that have been quiet for a while.
        last.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(600));
    }
}
