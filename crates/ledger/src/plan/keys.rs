//! What a batch reads: the keys the backend loads (and in PostgreSQL locks)
//! before planning, and the state it hands the planner.

use std::collections::{BTreeSet, HashMap};

use applause_core::PerChannel;

use super::{Command, RED_PACKET_KEY_PREFIX};
use crate::model::*;

/// The keys a batch reads; the backend loads (and in PostgreSQL locks) them
/// in sorted order, so concurrent batches on several nodes cannot deadlock.
#[derive(Debug, Default)]
pub(crate) struct BatchKeys {
    pub rooms: BTreeSet<String>,
    pub users: BTreeSet<String>,
    pub idempotency: BTreeSet<(String, String)>,
    pub receipts: BTreeSet<String>,
    pub gifts: BTreeSet<String>,
    /// The gifts being refunded (their senders' wallets are credited).
    pub refunds: BTreeSet<String>,
    pub packets: BTreeSet<String>,
    /// (packet, user) pairs whose earlier claim must be known.
    pub claims: BTreeSet<(String, String)>,
    /// Idempotency expiry: records created before this time, at most this
    /// many (the latest cutoff and the sum of the limits of the batch's
    /// expiry commands).
    pub expiry: Option<(i64, u32)>,
}

/// What an ack needs to know about its gift.
#[derive(Debug, Clone)]
pub(crate) struct GiftAckInfo {
    pub room_id: String,
    pub broadcaster_id: String,
    pub sender_id: String,
    pub acked: bool,
}

impl GiftAckInfo {
    pub fn of(g: &GiftRecord) -> GiftAckInfo {
        GiftAckInfo {
            room_id: g.room_id.clone(),
            broadcaster_id: g.broadcaster_id.clone(),
            sender_id: g.sender_id.clone(),
            acked: g.ack_text.is_some(),
        }
    }
}

/// The state loaded for a batch.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub rooms: HashMap<String, Room>,
    pub wallets: HashMap<String, PerChannel>,
    pub idempotency: HashMap<(String, String), IdempotencyRecord>,
    pub receipts: HashMap<String, TopUpRecord>,
    pub gifts: HashMap<String, GiftAckInfo>,
    /// The full records of the batch's gifts (for refunds).
    pub gift_records: HashMap<String, GiftRecord>,
    pub packets: HashMap<String, RedPacket>,
    /// (packet, user) pairs that have claimed already.
    pub claimed: BTreeSet<(String, String)>,
    /// Idempotency records old enough to expire (user, key, created at),
    /// oldest first; PostgreSQL locks them, skipping rows another node's
    /// sweep holds.
    pub expirable: Vec<(String, String, i64)>,
}

/// The keys the commands of a batch read, before anything is loaded.
pub(crate) fn keys_of(commands: &[Command]) -> BatchKeys {
    let mut k = BatchKeys::default();
    for c in commands {
        match c {
            Command::Purchase(p, _) => {
                k.rooms.insert(p.room_id.clone());
                k.users.insert(p.sender_id.clone());
                k.idempotency
                    .insert((p.sender_id.clone(), p.idempotency_key.clone()));
            }
            Command::TopUp(t) => {
                k.users.insert(t.user_id.clone());
                k.receipts.insert(t.receipt_id.clone());
            }
            Command::CreateRoom(..) => {}
            Command::EndRoom { room_id, .. }
            | Command::AppendEvent { room_id, .. }
            | Command::MarkPublished { room_id, .. } => {
                k.rooms.insert(room_id.clone());
            }
            Command::Ack(a) => {
                k.gifts.insert(a.gift_id.clone());
            }
            Command::Refund(r) => {
                k.gifts.insert(r.gift_id.clone());
                k.refunds.insert(r.gift_id.clone());
            }
            Command::Drop(d, _) => {
                k.rooms.insert(d.room_id.clone());
                k.users.insert(d.sender_id.clone());
                k.idempotency.insert((
                    d.sender_id.clone(),
                    format!("{RED_PACKET_KEY_PREFIX}{}", d.idempotency_key),
                ));
            }
            Command::Claim(c) => {
                k.packets.insert(c.packet_id.clone());
                k.users.insert(c.user_id.clone());
                k.claims.insert((c.packet_id.clone(), c.user_id.clone()));
            }
            Command::Expire(packet_id) => {
                k.packets.insert(packet_id.clone());
            }
            Command::ExpireIdempotency { before_ms, limit } => {
                let (before, total) = k.expiry.unwrap_or((i64::MIN, 0));
                k.expiry = Some(((*before_ms).max(before), total.saturating_add(*limit)));
            }
        }
    }
    k
}

/// Acks name a gift whose room is only known once the gift is loaded; the
/// backend calls this to add those rooms before locking rooms.
pub(crate) fn add_ack_rooms(keys: &mut BatchKeys, gifts: &HashMap<String, GiftAckInfo>) {
    for (id, g) in gifts {
        keys.rooms.insert(g.room_id.clone());
        // A refund credits the sender's wallet: lock it with the others.
        if keys.refunds.contains(id) {
            keys.users.insert(g.sender_id.clone());
        }
    }
}

/// Likewise, packets name their room (for events) and their sender (the
/// return at expiry); the backend adds them after loading the packets and
/// before locking rooms and wallets.
pub(crate) fn add_packet_keys(keys: &mut BatchKeys, packets: &HashMap<String, RedPacket>) {
    for p in packets.values() {
        keys.rooms.insert(p.room_id.clone());
        keys.users.insert(p.sender_id.clone());
    }
}
