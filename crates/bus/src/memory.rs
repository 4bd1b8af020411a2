//! The in-process bus of the embedded `applause serve`: per-room order, history
//! rings and delivery to this process's gateway, without Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use applause_core::EventEnvelope;
use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::clock::{Clock, TokioClock};
use crate::rules::{answer_history, check_order, restarts_history};
use crate::{BusError, BusMessage, EventBus, History, HistoryBounds, PublishOutcome, RoomCursor};

/// Settings of an [`InProcessBus`].
#[derive(Clone)]
pub struct InProcessBusConfig {
    pub bounds: HistoryBounds,
    /// Capacity of the messages channel, in messages; a publisher waits while
    /// it is full rather than letting memory grow.
    pub messages_capacity_max: usize,
    /// A room that ended, or saw no event for this long, and that no gateway
    /// joined is forgotten once its history has aged out.
    pub room_idle_ms_max: u64,
    /// How event age is measured (tests pass a paused-tokio clock).
    pub clock: Arc<dyn Clock>,
}

impl Default for InProcessBusConfig {
    fn default() -> Self {
        Self {
            bounds: HistoryBounds::default(),
            messages_capacity_max: 16_384,
            room_idle_ms_max: 24 * 60 * 60 * 1_000,
            clock: Arc::new(TokioClock::new()),
        }
    }
}

impl std::fmt::Debug for InProcessBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBusConfig")
            .field("bounds", &self.bounds)
            .field("messages_capacity_max", &self.messages_capacity_max)
            .field("room_idle_ms_max", &self.room_idle_ms_max)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Room {
    /// `None` until the first event (see `check_order` for what it accepts).
    last_seq: Option<u64>,
    /// Contiguous by seq, oldest first, at most `bounds.events_max` long.
    ring: VecDeque<Arc<EventEnvelope>>,
    joined: bool,
    ended: bool,
    last_publish_ms: i64,
}

impl Room {
    fn prune(&mut self, bounds: HistoryBounds, now_ms: i64) {
        while self.ring.len() > bounds.events_max {
            self.ring.pop_front();
        }
        let age_ms_max = i64::try_from(bounds.age_ms_max).unwrap_or(i64::MAX);
        while self
            .ring
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.committed_at_ms) > age_ms_max)
        {
            self.ring.pop_front();
        }
    }
}

/// How many publishes pass between sweeps of forgotten rooms.
const SWEEP_EVERY_PUBLISHES: u64 = 4_096;

/// The embedded bus. Room state lives in a sharded map, so publishers of
/// different rooms rarely contend; no lock is ever held across an `.await`.
pub struct InProcessBus {
    rooms: DashMap<String, Room>,
    tx: mpsc::Sender<BusMessage>,
    rx: Mutex<Option<mpsc::Receiver<BusMessage>>>,
    config: InProcessBusConfig,
    publishes: AtomicU64,
}

impl InProcessBus {
    /// A bus with the given history bounds and default settings otherwise.
    pub fn new(bounds: HistoryBounds) -> Self {
        Self::with_config(InProcessBusConfig {
            bounds,
            ..InProcessBusConfig::default()
        })
    }

    pub fn with_config(config: InProcessBusConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.messages_capacity_max.max(1));
        Self {
            rooms: DashMap::new(),
            tx,
            rx: Mutex::new(Some(rx)),
            config,
            publishes: AtomicU64::new(0),
        }
    }

    /// Publishes one event. The delivery permit is reserved before the room's
    /// state changes, and the event is sent while the room's shard is locked,
    /// so concurrent publishers of a room reach the channel in seq order.
    async fn publish_one(
        &self,
        event: &EventEnvelope,
        published_through: Option<u64>,
    ) -> PublishOutcome {
        let mut permit: Option<mpsc::Permit<'_, BusMessage>> = None;
        loop {
            let now_ms = self.config.clock.now_ms();
            let mut room = self.rooms.entry(event.room_id.clone()).or_default();
            let outcome = check_order(room.last_seq, event.seq, published_through);
            if outcome != PublishOutcome::Published {
                return outcome;
            }
            if room.joined && permit.is_none() {
                match self.tx.try_reserve() {
                    Ok(p) => permit = Some(p),
                    Err(mpsc::error::TrySendError::Full(())) => {
                        // Backpressure: wait for the gateway outside the lock,
                        // then check the order again (another publisher may
                        // have published this seq meanwhile). A closed
                        // receiver yields no permit, and the retry then takes
                        // the `Closed` arm below.
                        drop(room);
                        permit = self.tx.reserve().await.ok();
                        continue;
                    }
                    // Nobody receives any more; history is still kept.
                    Err(mpsc::error::TrySendError::Closed(())) => {}
                }
            }
            let event = Arc::new(event.clone());
            if restarts_history(room.last_seq, event.seq) {
                room.ring.clear();
            }
            room.last_seq = Some(event.seq);
            room.ended |= event.ends_room;
            room.last_publish_ms = now_ms;
            room.ring.push_back(Arc::clone(&event));
            room.prune(self.config.bounds, now_ms);
            if room.joined {
                if let Some(p) = permit.take() {
                    p.send(BusMessage::Event(event));
                }
            }
            return PublishOutcome::Published;
        }
    }

    /// Forgets rooms nobody can still need: not joined, history aged out, and
    /// ended or idle. A forgotten room goes on only from where the ledger
    /// vouches for it (see [`check_order`]); the idle bound keeps that rare.
    fn sweep(&self) {
        let now_ms = self.config.clock.now_ms();
        let bounds = self.config.bounds;
        let idle_ms_max = i64::try_from(self.config.room_idle_ms_max).unwrap_or(i64::MAX);
        self.rooms.retain(|_, room| {
            room.prune(bounds, now_ms);
            let idle = now_ms.saturating_sub(room.last_publish_ms) > idle_ms_max;
            room.joined || !room.ring.is_empty() || !(room.ended || idle)
        });
    }

    /// Number of rooms the bus holds state for (for metrics and tests).
    pub fn rooms_len(&self) -> usize {
        self.rooms.len()
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::with_config(InProcessBusConfig::default())
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish_through(
        &self,
        events: &[EventEnvelope],
        published_through: &HashMap<String, u64>,
    ) -> Result<Vec<PublishOutcome>, BusError> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let through = published_through.get(&event.room_id).copied();
            outcomes.push(self.publish_one(event, through).await);
        }
        let before = self
            .publishes
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        if before / SWEEP_EVERY_PUBLISHES != (before + events.len() as u64) / SWEEP_EVERY_PUBLISHES
        {
            self.sweep();
        }
        Ok(outcomes)
    }

    async fn join(&self, room_id: &str) -> Result<RoomCursor, BusError> {
        // Under the room's lock no publish of this room is in between: every
        // event after the cursor is delivered, none before it.
        let mut room = self.rooms.entry(room_id.to_owned()).or_default();
        room.joined = true;
        Ok(RoomCursor {
            last_seq: room.last_seq.unwrap_or(0),
        })
    }

    async fn leave(&self, room_id: &str) -> Result<(), BusError> {
        if let Some(mut room) = self.rooms.get_mut(room_id) {
            room.joined = false;
        }
        Ok(())
    }

    fn messages(&self) -> Option<mpsc::Receiver<BusMessage>> {
        self.rx.lock().take()
    }

    async fn history(
        &self,
        room_id: &str,
        since_seq: u64,
        max: usize,
    ) -> Result<History, BusError> {
        let now_ms = self.config.clock.now_ms();
        let Some(room) = self.rooms.get(room_id) else {
            return Ok(answer_history(
                None,
                since_seq,
                max,
                Vec::new(),
                self.config.bounds,
                now_ms,
            ));
        };
        // The ring is contiguous, so the first wanted event is found by offset.
        let skip = match room.ring.front() {
            Some(first) if since_seq >= first.seq => {
                usize::try_from(since_seq - first.seq + 1).unwrap_or(usize::MAX)
            }
            _ => 0,
        };
        let kept: Vec<Arc<EventEnvelope>> =
            room.ring.iter().skip(skip).take(max).cloned().collect();
        let last_seq = room.last_seq;
        drop(room);
        Ok(answer_history(
            last_seq,
            since_seq,
            max,
            kept,
            self.config.bounds,
            now_ms,
        ))
    }

    async fn ready(&self) -> bool {
        true
    }
}
