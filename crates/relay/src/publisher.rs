//! Committed events to the bus: the notice loop publishes each committed
//! batch at once; the relay loop republishes what is still unmarked in the
//! outbox a couple of seconds after its commit (or at once after a `Gap`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use applause_bus::PublishOutcome;
use applause_core::EventEnvelope;
use applause_ledger::{CommitNotice, GiftRecord, StoredEvent};

use crate::boards::{count_gifts, subtract_refunds};
use crate::Shared;

/// How long after its commit an unpublished event is left to the normal
/// publisher before the relay takes it.
const RELAY_AFTER_MS: i64 = 2_000;
/// Events relayed per pass.
const RELAY_EVENTS_MAX: u32 = 2_000;

pub(crate) async fn notice_loop(s: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<CommitNotice>) {
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
            let now = s.clock.now_ms();
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
        // Shutdown waits for them: a lost mark would only cost a republish.
        s.tasks.spawn_to_end(async move {
            if let Err(e) = ledger.mark_published(&room, seq).await {
                tracing::debug!(error = %e, "mark published failed; the relay will retry");
            }
        });
    }
}

/// The gifts of relayed gift events, read back from the ledger: the process
/// that committed them may have died before counting them.
async fn gifts_of(s: &Shared, stored: &[StoredEvent]) -> Vec<GiftRecord> {
    let mut gifts = Vec::new();
    for gift_id in stored.iter().filter_map(|ev| ev.gift_id.as_deref()) {
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

pub(crate) async fn relay_loop(s: Arc<Shared>) {
    loop {
        let forced = tokio::select! {
            _ = s.relay_now.notified() => true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        };
        let cutoff = if forced {
            i64::MAX
        } else {
            s.clock.now_ms() - RELAY_AFTER_MS
        };
        match s.ledger.unpublished_events(cutoff, RELAY_EVENTS_MAX).await {
            Ok(stored) if !stored.is_empty() => {
                let gifts = gifts_of(&s, &stored).await;
                let mut through = HashMap::new();
                let events: Vec<_> = stored
                    .into_iter()
                    .map(|e| {
                        through.insert(e.envelope.room_id.clone(), e.published_through);
                        e.envelope
                    })
                    .collect();
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
