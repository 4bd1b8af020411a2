//! The batch planner: turns one group-commit batch of commands into the rows
//! to write, given the state the backend loaded (and locked) for them.
//!
//! Pure and synchronous: the same commands, state and commit time always give
//! the same writes — ids and the clock's reading come in with the commands
//! and the batch, nothing here reads a clock or a random source — so a
//! backend can retry a batch (a deadlock or a lost race on an idempotency
//! key) by loading again and planning again. Commands are applied one after
//! another to an in-memory copy of the loaded balances, so a batch can never
//! overdraw a wallet: each debit sees every debit before it.
//!
//! One module per command family: [`purchase`] (gifts, top-ups and the
//! expiry of idempotency records),
//! [`refund`], [`red_packet`], [`room`] (rooms, acks, plain events, publish
//! marks); [`keys`] is what a batch reads, [`writes`] what it writes.

pub mod accounts;
mod keys;
mod purchase;
mod red_packet;
mod refund;
mod room;
#[cfg(test)]
mod tests;
mod writes;

use std::collections::{BTreeSet, HashMap};

use applause_core::events::render_frame;
use applause_core::{Channel, Currency, EventBody, EventEnvelope, PerChannel, SplitPolicy};

use crate::model::*;

pub(crate) use keys::{add_ack_rooms, add_packet_keys, keys_of, GiftAckInfo, Loaded};
pub(crate) use writes::{EntryRow, OutboxEvent, TxnRow, WriteSet};

/// Red-packet idempotency keys share the `idempotency` table with gift
/// purchases under this prefix, so a packet key never replays a gift.
pub const RED_PACKET_KEY_PREFIX: &str = "red-packet:";

/// One command of a batch. Ids a command creates are chosen by the handle
/// and travel with it, so planning twice gives the same rows.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    /// A purchase with the gift id it gets if it is charged.
    Purchase(PurchaseCmd, String),
    TopUp(TopUpCmd),
    /// A new room with its id and epoch.
    CreateRoom(CreateRoomCmd, String, u64),
    EndRoom {
        room_id: String,
        broadcaster_id: String,
    },
    Ack(AckCmd),
    AppendEvent {
        room_id: String,
        body: EventBody,
    },
    MarkPublished {
        room_id: String,
        seq: u64,
    },
    Refund(RefundCmd),
    /// A drop with the packet id chosen by the handle.
    Drop(DropCmd, String),
    Claim(ClaimCmd),
    Expire(String),
    /// Forgets at most `limit` idempotency records created before
    /// `before_ms` (past their retention), oldest first.
    ExpireIdempotency {
        before_ms: i64,
        limit: u32,
    },
}

/// What each command came to, in command order.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Purchase(PurchaseOutcome),
    TopUp(TopUpOutcome),
    Room(Room),
    EndRoom(EndRoomOutcome),
    Ack(AckOutcome),
    Event(Option<EventEnvelope>),
    Done,
    Refund(RefundOutcome),
    Drop(DropOutcome),
    Claim(ClaimOutcome),
    Expire(ExpireOutcome),
    /// How many idempotency records the command forgot.
    IdempotencyExpired(u64),
}

/// Why a batch cannot be planned: each is a broken invariant, and the whole
/// batch is refused (nothing is written) rather than committing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("split of {amount_minor} does not sum to the price")]
    SplitMismatch { amount_minor: i64 },
    #[error("red packet {packet_id}: shares do not allocate the total")]
    BadAllocation { packet_id: String },
    #[error("red packet {packet_id} escrow is short of its shares")]
    EscrowShort { packet_id: String },
    #[error("red packet {packet_id} emptied with escrow left")]
    EscrowLeft { packet_id: String },
    #[error("wallet balance of {user_id} would overflow")]
    BalanceOverflow { user_id: String },
    #[error("room {room_id} was checked but is not loaded")]
    RoomMissing { room_id: String },
    #[error("transaction {txn_id} does not balance (off by {off_by})")]
    Unbalanced { txn_id: String, off_by: i64 },
}

/// Plans a batch. `now_ms` is the batch's commit time (the committer reads
/// it from the ledger's clock).
pub(crate) fn plan(
    commands: &[Command],
    mut state: Loaded,
    now_ms: i64,
    currency: &Currency,
    policy: &SplitPolicy,
) -> Result<(WriteSet, Vec<Outcome>), PlanError> {
    let mut p = Planner {
        w: WriteSet::default(),
        currency,
        policy,
        now_ms,
        created_at: rfc3339(now_ms),
        touched_rooms: BTreeSet::new(),
        touched_packets: BTreeSet::new(),
    };
    let mut outcomes = Vec::with_capacity(commands.len());
    for c in commands {
        let o = match c {
            Command::Purchase(cmd, gift_id) => {
                Outcome::Purchase(p.purchase(&mut state, cmd, gift_id)?)
            }
            Command::TopUp(cmd) => Outcome::TopUp(p.top_up(&mut state, cmd)?),
            Command::CreateRoom(cmd, room_id, epoch) => {
                Outcome::Room(p.create_room(cmd, room_id, *epoch))
            }
            Command::EndRoom {
                room_id,
                broadcaster_id,
            } => Outcome::EndRoom(p.end_room(&mut state, room_id, broadcaster_id)),
            Command::Ack(cmd) => Outcome::Ack(p.ack(&mut state, cmd)),
            Command::AppendEvent { room_id, body } => {
                Outcome::Event(p.append_event(&mut state, room_id, body))
            }
            Command::MarkPublished { room_id, seq } => {
                p.mark_published(&mut state, room_id, *seq);
                Outcome::Done
            }
            Command::Refund(cmd) => Outcome::Refund(p.refund(&mut state, cmd)?),
            Command::Drop(cmd, packet_id) => {
                Outcome::Drop(p.drop_packet(&mut state, cmd, packet_id)?)
            }
            Command::Claim(cmd) => Outcome::Claim(p.claim(&mut state, cmd)?),
            Command::Expire(packet_id) => Outcome::Expire(p.expire(&mut state, packet_id)?),
            Command::ExpireIdempotency { before_ms, limit } => {
                Outcome::IdempotencyExpired(p.expire_keys(&mut state, *before_ms, *limit))
            }
        };
        outcomes.push(o);
    }
    for room_id in &p.touched_rooms {
        if let Some(room) = state.rooms.get(room_id) {
            p.w.room_updates.push(room.clone());
        }
    }
    for packet_id in &p.touched_packets {
        if let Some(packet) = state.packets.get(packet_id) {
            // A packet dropped in this batch is written once, in its final state.
            match p
                .w
                .new_packets
                .iter_mut()
                .find(|n| n.packet_id == *packet_id)
            {
                Some(new) => *new = packet.clone(),
                None => p.w.packet_updates.push(packet.clone()),
            }
        }
    }
    p.check_balanced()?;
    Ok((p.w, outcomes))
}

/// A commit time as the wire shows it (RFC 3339, milliseconds, UTC).
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The planner of one batch: the writes so far and what they touched.
struct Planner<'a> {
    w: WriteSet,
    currency: &'a Currency,
    policy: &'a SplitPolicy,
    now_ms: i64,
    /// `now_ms` as the wire shows it.
    created_at: String,
    touched_rooms: BTreeSet<String>,
    touched_packets: BTreeSet<String>,
}

impl Planner<'_> {
    /// Starts a ledger transaction of `kind` at the batch's commit time.
    fn txn(&mut self, txn_id: &str, kind: &'static str) {
        self.w.txns.push(TxnRow {
            txn_id: txn_id.to_owned(),
            kind,
            created_at_ms: self.now_ms,
        });
    }

    /// Credits a wallet per channel (entries and balance deltas).
    fn credit(
        &mut self,
        state: &mut Loaded,
        txn_id: &str,
        user_id: &str,
        by_channel: &PerChannel,
    ) -> Result<(), PlanError> {
        let balances = state.wallets.entry(user_id.to_owned()).or_default();
        for c in Channel::ALL {
            let part = by_channel[c.index()];
            if part == 0 {
                continue;
            }
            balances[c.index()] = balances[c.index()]
                .checked_add(part)
                .filter(|b| *b <= applause_core::money::AMOUNT_MINOR_MAX)
                .ok_or_else(|| PlanError::BalanceOverflow {
                    user_id: user_id.to_owned(),
                })?;
            *self
                .w
                .wallet_deltas
                .entry((user_id.to_owned(), c))
                .or_default() += part;
            self.entry(txn_id, accounts::wallet(user_id, c), part);
        }
        Ok(())
    }

    /// Assigns the room's next `seq` to an event and records it in the outbox.
    fn event(
        &mut self,
        room: &mut Room,
        body: &EventBody,
        broadcaster_body: Option<&EventBody>,
    ) -> EventEnvelope {
        room.last_seq += 1;
        self.touched_rooms.insert(room.room_id.clone());
        let ev = EventEnvelope {
            room_id: room.room_id.clone(),
            epoch: room.epoch,
            seq: room.last_seq,
            frame: render_frame(&room.room_id, room.epoch, room.last_seq, body),
            broadcaster_frame: broadcaster_body
                .map(|b| render_frame(&room.room_id, room.epoch, room.last_seq, b)),
            broadcaster_id: room.broadcaster_id.clone(),
            committed_at_ms: self.now_ms,
            ends_room: false,
        };
        let gift_id = match body {
            EventBody::Gift { gift_id, .. } => Some(gift_id.clone()),
            _ => None,
        };
        self.w.events.push(OutboxEvent {
            envelope: ev.clone(),
            gift_id,
        });
        ev
    }

    fn entry(&mut self, txn_id: &str, account: String, amount_minor: i64) {
        self.w.entries.push(EntryRow {
            txn_id: txn_id.to_owned(),
            account,
            amount_minor,
        });
    }

    /// Paired assertion: every transaction of the batch sums to zero before
    /// anything is written. A violation rejects the whole batch.
    fn check_balanced(&self) -> Result<(), PlanError> {
        let mut sums: HashMap<&str, i64> = HashMap::new();
        for e in &self.w.entries {
            *sums.entry(e.txn_id.as_str()).or_default() += e.amount_minor;
        }
        match sums.iter().find(|(_, s)| **s != 0) {
            Some((txn, s)) => Err(PlanError::Unbalanced {
                txn_id: (*txn).to_owned(),
                off_by: *s,
            }),
            None => Ok(()),
        }
    }
}
