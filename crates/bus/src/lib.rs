//! The event bus between gift services and gateways: publishes room events in
//! `seq` order, keeps each room's recent history for resume, and delivers
//! events to the gateways subscribed to a room.
//!
//! Two implementations behind [`EventBus`]: an in-process bus for the embedded
//! `applause serve`, and Redis pub/sub + Streams for separate processes. Only
//! the Redis module here knows Redis.
//!
//! Ordering contract: `seq` values are assigned by the ledger when an event is
//! committed. The bus accepts, per room, only the next `seq` after the last one
//! it published ([`PublishOutcome::Published`]); an already published `seq` is
//! a [`PublishOutcome::Duplicate`] (so a retried publish never shows an event
//! twice) and a `seq` beyond the next one is a [`PublishOutcome::Gap`]: the
//! publisher must first publish the missing events (from the ledger's outbox).
//! A room the bus has no record of accepts seq 1, or the seq right after the
//! one the ledger vouches for ([`EventBus::publish_through`]): a bus that lost
//! a room's record goes on from there, and a racing publisher of a later seq
//! cannot make an earlier one look like a duplicate.
//!
//! Delivery after [`EventBus::join`]: every event with `seq` above the returned
//! cursor arrives on the messages receiver, in order, once per publish. The
//! Redis bus subscribes before it reads the cursor, so it may also deliver a
//! few events at or below the cursor: a gateway drops any `seq` it already
//! delivered. After [`BusMessage::Reconnected`] events may be missing and the
//! gateway fills them from [`EventBus::history`].

use std::collections::HashMap;
use std::sync::Arc;

mod clock;
mod memory;
mod redis_bus;
mod rules;

pub use clock::{system_now_ms, Clock, SystemClock, TokioClock};
pub use memory::{InProcessBus, InProcessBusConfig};
pub use redis_bus::{eviction_policy, RedisBus, RedisBusConfig};

use applause_core::EventEnvelope;
use async_trait::async_trait;

/// The result of publishing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Appended to the room's history and sent to its subscribers.
    Published,
    /// This `seq` was already published; nothing was sent.
    Duplicate,
    /// The bus expects `expected` first; nothing was sent.
    Gap { expected: u64 },
}

/// What a gateway receives from the bus.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A room event, in `seq` order per room.
    Event(Arc<EventEnvelope>),
    /// The bus connection was lost and restored: events may have been missed
    /// meanwhile; the gateway fills gaps from [`EventBus::history`].
    Reconnected,
}

/// A room's position on the bus when a gateway joins it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomCursor {
    /// The last published `seq`, 0 when none.
    pub last_seq: u64,
}

/// The answer to a history request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// Every event with `seq > since_seq`, in order (possibly empty).
    Events(Vec<Arc<EventEnvelope>>),
    /// Some events after `since_seq` are no longer kept (count or age bound).
    Gone,
}

/// Bounds of each room's kept history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBounds {
    pub events_max: usize,
    pub age_ms_max: u64,
}

impl Default for HistoryBounds {
    /// The last 1,000 events or 5 minutes, whichever is less.
    fn default() -> Self {
        Self {
            events_max: 1_000,
            age_ms_max: 5 * 60 * 1_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

/// The bus, shared by publishers (gift services) and subscribers (gateways).
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes events in order (see the ordering contract above); one outcome
    /// per event. Implementations batch the round trips.
    async fn publish(&self, events: &[EventEnvelope]) -> Result<Vec<PublishOutcome>, BusError> {
        self.publish_through(events, &HashMap::new()).await
    }

    /// [`EventBus::publish`] with what the ledger knows: for each room in
    /// `published_through`, every event up to that seq has reached the bus,
    /// so a bus with no (or an older) record of the room accepts the next seq.
    async fn publish_through(
        &self,
        events: &[EventEnvelope],
        published_through: &HashMap<String, u64>,
    ) -> Result<Vec<PublishOutcome>, BusError>;

    /// Subscribes this process to a room. Events of the room published after
    /// the returned cursor arrive on the [`EventBus::messages`] receiver. Joining
    /// a room already joined is cheap and returns the current cursor.
    async fn join(&self, room_id: &str) -> Result<RoomCursor, BusError>;

    /// Unsubscribes this process from a room (no viewers left here).
    async fn leave(&self, room_id: &str) -> Result<(), BusError>;

    /// Takes the receiver of this process's bus messages (once; `None` after).
    fn messages(&self) -> Option<tokio::sync::mpsc::Receiver<BusMessage>>;

    /// The room's kept events after `since_seq`, at most `max` of them.
    async fn history(&self, room_id: &str, since_seq: u64, max: usize)
        -> Result<History, BusError>;

    /// Whether the bus's backing store is reachable (for `/readyz`).
    async fn ready(&self) -> bool;
}
