//! What a batch writes: the rows the planner decided on, which the backend
//! writes in one transaction.

use std::collections::BTreeMap;

use applause_core::{Channel, EventEnvelope};

use crate::model::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnRow {
    pub txn_id: String,
    pub kind: &'static str,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryRow {
    pub txn_id: String,
    pub account: String,
    pub amount_minor: i64,
}

/// A room event as the outbox stores it: the envelope and, for a `gift`
/// event, its gift (so the relay need not parse the frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxEvent {
    pub envelope: EventEnvelope,
    pub gift_id: Option<String>,
}

/// Everything a batch writes.
#[derive(Debug, Default)]
pub(crate) struct WriteSet {
    pub new_rooms: Vec<Room>,
    /// Final state of every existing room the batch changed.
    pub room_updates: Vec<Room>,
    /// Balance changes per (user, channel), applied as deltas.
    pub wallet_deltas: BTreeMap<(String, Channel), i64>,
    pub txns: Vec<TxnRow>,
    pub entries: Vec<EntryRow>,
    pub gifts: Vec<GiftRecord>,
    pub idempotency: Vec<IdempotencyRecord>,
    pub receipts: Vec<TopUpRecord>,
    pub events: Vec<OutboxEvent>,
    pub acks: Vec<(String, String, i64)>,
    /// (gift id, reason, refunded by, at).
    pub refunds: Vec<(String, String, String, i64)>,
    pub new_packets: Vec<RedPacket>,
    /// Final state of every existing packet the batch changed.
    pub packet_updates: Vec<RedPacket>,
    pub claims: Vec<ClaimRecord>,
    /// Idempotency records to forget (user, key); deleted before the
    /// batch's new keys are inserted, so a forgotten key can be used again
    /// in the same batch.
    pub expired_keys: Vec<(String, String)>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.new_rooms.is_empty()
            && self.room_updates.is_empty()
            && self.wallet_deltas.is_empty()
            && self.txns.is_empty()
            && self.idempotency.is_empty()
            && self.events.is_empty()
            && self.acks.is_empty()
            && self.refunds.is_empty()
            && self.new_packets.is_empty()
            && self.packet_updates.is_empty()
            && self.claims.is_empty()
            && self.expired_keys.is_empty()
    }
}
