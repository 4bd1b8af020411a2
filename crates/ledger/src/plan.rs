//! The batch planner: turns one group-commit batch of commands into the rows
//! to write, given the state the backend loaded (and locked) for them.
//!
//! Pure and synchronous: the same commands and state always give the same
//! writes, so a backend can retry a batch (a deadlock or a lost race on an
//! idempotency key) by loading again and planning again. Commands are applied
//! one after another to an in-memory copy of the loaded balances, so a batch
//! can never overdraw a wallet: each debit sees every debit before it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use applause_core::events::{render_frame, SenderView, SplitView};
use applause_core::{
    Channel, Currency, ErrorCode, EventBody, EventEnvelope, PerChannel, SplitPolicy,
};

use crate::model::*;

/// Names of ledger accounts.
pub mod accounts {
    use applause_core::Channel;

    pub fn wallet(user_id: &str, channel: Channel) -> String {
        format!("wallet:{user_id}:{channel}")
    }
    pub fn store(channel: Channel) -> String {
        format!("store:{channel}")
    }
    pub fn broadcaster(id: &str) -> String {
        format!("broadcaster:{id}")
    }
    pub const PLATFORM: &str = "platform:revenue";
    /// The outside world's side of a top-up (money received through a store).
    pub fn funding(channel: Channel) -> String {
        format!("funding:{channel}")
    }
    /// A red packet's escrow: the drop's total in, claims and the return out.
    pub fn escrow(packet_id: &str) -> String {
        format!("escrow:{packet_id}")
    }
}

/// Red-packet idempotency keys share the `idempotency` table with gift
/// purchases under this prefix, so a packet key never replays a gift.
pub const RED_PACKET_KEY_PREFIX: &str = "red-packet:";

/// One command of a batch.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    Purchase(PurchaseCmd),
    TopUp(TopUpCmd),
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
}

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
}

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
    pub events: Vec<EventEnvelope>,
    pub acks: Vec<(String, String, i64)>,
    /// (gift id, reason, refunded by, at).
    pub refunds: Vec<(String, String, String, i64)>,
    pub new_packets: Vec<RedPacket>,
    /// Final state of every existing packet the batch changed.
    pub packet_updates: Vec<RedPacket>,
    pub claims: Vec<ClaimRecord>,
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
    }
}

pub(crate) fn keys_of(commands: &[Command]) -> BatchKeys {
    let mut k = BatchKeys::default();
    for c in commands {
        match c {
            Command::Purchase(p) => {
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

/// Plans a batch. `now_ms` is the batch's commit time.
pub(crate) fn plan(
    commands: &[Command],
    mut state: Loaded,
    now_ms: i64,
    currency: &Currency,
    policy: &SplitPolicy,
) -> Result<(WriteSet, Vec<Outcome>), String> {
    let mut p = Planner {
        w: WriteSet::default(),
        currency,
        policy,
        now_ms,
        created_at: applause_core_time(now_ms),
        touched_rooms: BTreeSet::new(),
        touched_packets: BTreeSet::new(),
    };
    let mut outcomes = Vec::with_capacity(commands.len());
    for c in commands {
        let o = match c {
            Command::Purchase(cmd) => Outcome::Purchase(p.purchase(&mut state, cmd)?),
            Command::TopUp(cmd) => Outcome::TopUp(p.top_up(&mut state, cmd)?),
            Command::CreateRoom(cmd, room_id, epoch) => {
                let room = Room {
                    room_id: room_id.clone(),
                    broadcaster_id: cmd.broadcaster_id.clone(),
                    title: cmd.title.clone(),
                    epoch: *epoch,
                    live: true,
                    last_seq: 0,
                    published_seq: 0,
                    created_at_ms: now_ms,
                    ended_at_ms: None,
                };
                p.w.new_rooms.push(room.clone());
                Outcome::Room(room)
            }
            Command::EndRoom {
                room_id,
                broadcaster_id,
            } => Outcome::EndRoom(p.end_room(&mut state, room_id, broadcaster_id)),
            Command::Ack(cmd) => Outcome::Ack(p.ack(&mut state, cmd)),
            Command::AppendEvent { room_id, body } => {
                let ev = state
                    .rooms
                    .get_mut(room_id)
                    .map(|room| p.event(room, body, None));
                Outcome::Event(ev)
            }
            Command::MarkPublished { room_id, seq } => {
                if let Some(room) = state.rooms.get_mut(room_id) {
                    let seq = (*seq).min(room.last_seq);
                    if seq > room.published_seq {
                        room.published_seq = seq;
                        p.touched_rooms.insert(room_id.clone());
                    }
                }
                Outcome::Done
            }
            Command::Refund(cmd) => Outcome::Refund(p.refund(&mut state, cmd)?),
            Command::Drop(cmd, packet_id) => {
                Outcome::Drop(p.drop_packet(&mut state, cmd, packet_id)?)
            }
            Command::Claim(cmd) => Outcome::Claim(p.claim(&mut state, cmd)?),
            Command::Expire(packet_id) => Outcome::Expire(p.expire(&mut state, packet_id)?),
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

fn applause_core_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct Planner<'a> {
    w: WriteSet,
    currency: &'a Currency,
    policy: &'a SplitPolicy,
    now_ms: i64,
    created_at: String,
    touched_rooms: BTreeSet<String>,
    touched_packets: BTreeSet<String>,
}

impl Planner<'_> {
    fn purchase(
        &mut self,
        state: &mut Loaded,
        cmd: &PurchaseCmd,
    ) -> Result<PurchaseOutcome, String> {
        let key = (cmd.sender_id.clone(), cmd.idempotency_key.clone());
        if let Some(existing) = state.idempotency.get(&key) {
            return Ok(if existing.request_hash == cmd.request_hash {
                PurchaseOutcome::Replay(existing.outcome.clone())
            } else {
                PurchaseOutcome::KeyReused
            });
        }
        let rejection = match state.rooms.get(&cmd.room_id) {
            None => Some(ErrorCode::RoomNotFound),
            Some(room) if room.broadcaster_id == cmd.sender_id => Some(ErrorCode::SelfGift),
            Some(room) if !room.live => Some(ErrorCode::RoomNotLive),
            Some(_) => None,
        };
        let balances = state.wallets.entry(cmd.sender_id.clone()).or_default();
        let draw = match rejection {
            Some(_) => None,
            None => self.policy.draw(balances, cmd.amount_minor),
        };
        let Some(paid) = draw else {
            let code = rejection.unwrap_or(ErrorCode::InsufficientFunds);
            self.remember(state, cmd, StoredOutcome::Rejected(code));
            return Ok(PurchaseOutcome::Rejected(code));
        };
        for c in Channel::ALL {
            balances[c.index()] -= paid[c.index()];
            if paid[c.index()] != 0 {
                *self
                    .w
                    .wallet_deltas
                    .entry((cmd.sender_id.clone(), c))
                    .or_default() -= paid[c.index()];
            }
        }
        let balance_after: i64 = balances.iter().sum();
        let room = state
            .rooms
            .get_mut(&cmd.room_id)
            .expect("room checked above");
        let split = self.policy.split(&room.broadcaster_id, &paid);
        if split.total() != cmd.amount_minor {
            return Err(format!(
                "split of {} does not sum to the price",
                cmd.amount_minor
            ));
        }
        let gift_id = new_id('g');
        self.w.txns.push(TxnRow {
            txn_id: gift_id.clone(),
            kind: "gift",
            created_at_ms: self.now_ms,
        });
        for c in Channel::ALL {
            if paid[c.index()] != 0 {
                self.entry(
                    &gift_id,
                    accounts::wallet(&cmd.sender_id, c),
                    -paid[c.index()],
                );
            }
            let store_c = split.by_channel[c.index()][0];
            if store_c != 0 {
                self.entry(&gift_id, accounts::store(c), store_c);
            }
        }
        if split.broadcaster != 0 {
            self.entry(
                &gift_id,
                accounts::broadcaster(&room.broadcaster_id),
                split.broadcaster,
            );
        }
        if split.platform != 0 {
            self.entry(&gift_id, accounts::PLATFORM.to_owned(), split.platform);
        }
        let mut gift = GiftRecord {
            gift_id: gift_id.clone(),
            room_id: cmd.room_id.clone(),
            broadcaster_id: room.broadcaster_id.clone(),
            sender_id: cmd.sender_id.clone(),
            sender_name: cmd.sender_name.clone(),
            sticker_id: cmd.sticker_id.clone(),
            quantity: cmd.quantity,
            amount_minor: cmd.amount_minor,
            paid,
            split,
            message: cmd.message.clone(),
            balance_after_minor: balance_after,
            seq: 0,
            epoch: room.epoch,
            created_at_ms: self.now_ms,
            ack_text: None,
            acked_at_ms: None,
            refunded_at_ms: None,
        };
        let body = gift_event_body(&gift, self.currency, &self.created_at, false);
        let broadcaster_body = gift_event_body(&gift, self.currency, &self.created_at, true);
        let ev = self.event(room, &body, Some(&broadcaster_body));
        gift.seq = ev.seq;
        self.w.gifts.push(gift.clone());
        self.remember(state, cmd, StoredOutcome::Gift(gift_id));
        Ok(PurchaseOutcome::Charged(Box::new(gift), Some(ev)))
    }

    fn remember(&mut self, state: &mut Loaded, cmd: &PurchaseCmd, outcome: StoredOutcome) {
        let rec = IdempotencyRecord {
            user_id: cmd.sender_id.clone(),
            key: cmd.idempotency_key.clone(),
            request_hash: cmd.request_hash.clone(),
            outcome,
            created_at_ms: self.now_ms,
        };
        state
            .idempotency
            .insert((rec.user_id.clone(), rec.key.clone()), rec.clone());
        self.w.idempotency.push(rec);
    }

    fn top_up(&mut self, state: &mut Loaded, cmd: &TopUpCmd) -> Result<TopUpOutcome, String> {
        if let Some(existing) = state.receipts.get(&cmd.receipt_id) {
            let same = existing.user_id == cmd.user_id
                && existing.channel == cmd.channel
                && existing.amount_minor == cmd.amount_minor;
            return Ok(if same {
                TopUpOutcome::Replay(existing.clone())
            } else {
                TopUpOutcome::KeyReused
            });
        }
        let balances = state.wallets.entry(cmd.user_id.clone()).or_default();
        // A credit past the largest amount refuses this top-up alone; it must
        // never fail the batch (and the innocent purchases in it).
        let Some(new_balance) = balances[cmd.channel.index()]
            .checked_add(cmd.amount_minor)
            .filter(|b| *b <= applause_core::money::AMOUNT_MINOR_MAX)
        else {
            return Ok(TopUpOutcome::TooLarge);
        };
        balances[cmd.channel.index()] = new_balance;
        *self
            .w
            .wallet_deltas
            .entry((cmd.user_id.clone(), cmd.channel))
            .or_default() += cmd.amount_minor;
        let txn_id = format!("topup:{}", cmd.receipt_id);
        self.w.txns.push(TxnRow {
            txn_id: txn_id.clone(),
            kind: "topup",
            created_at_ms: self.now_ms,
        });
        self.entry(
            &txn_id,
            accounts::wallet(&cmd.user_id, cmd.channel),
            cmd.amount_minor,
        );
        self.entry(&txn_id, accounts::funding(cmd.channel), -cmd.amount_minor);
        let rec = TopUpRecord {
            receipt_id: cmd.receipt_id.clone(),
            user_id: cmd.user_id.clone(),
            channel: cmd.channel,
            amount_minor: cmd.amount_minor,
            created_at_ms: self.now_ms,
        };
        state.receipts.insert(rec.receipt_id.clone(), rec.clone());
        self.w.receipts.push(rec.clone());
        Ok(TopUpOutcome::Credited(rec))
    }

    fn end_room(
        &mut self,
        state: &mut Loaded,
        room_id: &str,
        broadcaster_id: &str,
    ) -> EndRoomOutcome {
        let Some(room) = state.rooms.get_mut(room_id) else {
            return EndRoomOutcome::NotFound;
        };
        if room.broadcaster_id != broadcaster_id {
            return EndRoomOutcome::NotYours;
        }
        if !room.live {
            return EndRoomOutcome::AlreadyEnded(room.clone());
        }
        room.live = false;
        room.ended_at_ms = Some(self.now_ms);
        let body = EventBody::RoomEnded {
            ended_at: self.created_at.clone(),
        };
        let mut ev = self.event(room, &body, None);
        ev.ends_room = true;
        if let Some(last) = self.w.events.last_mut() {
            last.ends_room = true;
        }
        EndRoomOutcome::Ended(room.clone(), Some(ev))
    }

    fn ack(&mut self, state: &mut Loaded, cmd: &AckCmd) -> AckOutcome {
        let Some(info) = state.gifts.get_mut(&cmd.gift_id) else {
            return AckOutcome::NotFound;
        };
        if info.broadcaster_id != cmd.broadcaster_id {
            return AckOutcome::NotYours;
        }
        if info.acked {
            return AckOutcome::AlreadyAcked;
        }
        info.acked = true;
        let sender_id = info.sender_id.clone();
        self.w
            .acks
            .push((cmd.gift_id.clone(), cmd.text.clone(), self.now_ms));
        let body = EventBody::Ack {
            gift_id: cmd.gift_id.clone(),
            sender_id,
            text: cmd.text.clone(),
            created_at: self.created_at.clone(),
        };
        let ev = state
            .rooms
            .get_mut(&info.room_id)
            .map(|room| self.event(room, &body, None));
        AckOutcome::Acked(ev)
    }

    /// Reverses a gift: the sender's wallet gets each channel's portion back,
    /// each store's, the broadcaster's and the platform's part are debited.
    fn refund(&mut self, state: &mut Loaded, cmd: &RefundCmd) -> Result<RefundOutcome, String> {
        let Some(gift) = state.gift_records.get_mut(&cmd.gift_id) else {
            return Ok(RefundOutcome::NotFound);
        };
        if gift.refunded_at_ms.is_some() {
            return Ok(RefundOutcome::AlreadyRefunded(Box::new(gift.clone())));
        }
        gift.refunded_at_ms = Some(self.now_ms);
        let gift = gift.clone();
        let txn_id = format!("refund:{}", gift.gift_id);
        self.w.txns.push(TxnRow {
            txn_id: txn_id.clone(),
            kind: "refund",
            created_at_ms: self.now_ms,
        });
        let balances = state.wallets.entry(gift.sender_id.clone()).or_default();
        for c in Channel::ALL {
            let paid = gift.paid[c.index()];
            if paid != 0 {
                balances[c.index()] = balances[c.index()]
                    .checked_add(paid)
                    .ok_or("wallet balance would overflow")?;
                *self
                    .w
                    .wallet_deltas
                    .entry((gift.sender_id.clone(), c))
                    .or_default() += paid;
                self.entry(&txn_id, accounts::wallet(&gift.sender_id, c), paid);
            }
            let store_c = gift.split.by_channel[c.index()][0];
            if store_c != 0 {
                self.entry(&txn_id, accounts::store(c), -store_c);
            }
        }
        if gift.split.broadcaster != 0 {
            self.entry(
                &txn_id,
                accounts::broadcaster(&gift.broadcaster_id),
                -gift.split.broadcaster,
            );
        }
        if gift.split.platform != 0 {
            self.entry(&txn_id, accounts::PLATFORM.to_owned(), -gift.split.platform);
        }
        self.w.refunds.push((
            gift.gift_id.clone(),
            cmd.reason.clone(),
            cmd.refunded_by.clone(),
            self.now_ms,
        ));
        Ok(RefundOutcome::Refunded(Box::new(gift)))
    }

    /// Drops a red packet: the total leaves the sender's wallet (drawn like a
    /// purchase) into the packet's escrow, which remembers each channel's part.
    fn drop_packet(
        &mut self,
        state: &mut Loaded,
        cmd: &DropCmd,
        packet_id: &str,
    ) -> Result<DropOutcome, String> {
        let key = (
            cmd.sender_id.clone(),
            format!("{RED_PACKET_KEY_PREFIX}{}", cmd.idempotency_key),
        );
        if let Some(existing) = state.idempotency.get(&key) {
            return Ok(if existing.request_hash == cmd.request_hash {
                DropOutcome::Replay(existing.outcome.clone())
            } else {
                DropOutcome::KeyReused
            });
        }
        if !applause_core::redpacket::is_valid_allocation(cmd.total_minor, &cmd.shares) {
            return Err(format!(
                "red packet {packet_id}: shares do not allocate the total"
            ));
        }
        let rejection = match state.rooms.get(&cmd.room_id) {
            None => Some(ErrorCode::RoomNotFound),
            Some(room) if !room.live => Some(ErrorCode::RoomNotLive),
            Some(_) => None,
        };
        let balances = state.wallets.entry(cmd.sender_id.clone()).or_default();
        let draw = match rejection {
            Some(_) => None,
            None => self.policy.draw(balances, cmd.total_minor),
        };
        let Some(paid) = draw else {
            let code = rejection.unwrap_or(ErrorCode::InsufficientFunds);
            self.remember_key(state, key, &cmd.request_hash, StoredOutcome::Rejected(code));
            return Ok(DropOutcome::Rejected(code));
        };
        let txn_id = format!("red-packet:{packet_id}");
        self.w.txns.push(TxnRow {
            txn_id: txn_id.clone(),
            kind: "red_packet",
            created_at_ms: self.now_ms,
        });
        for c in Channel::ALL {
            let part = paid[c.index()];
            if part != 0 {
                balances[c.index()] -= part;
                *self
                    .w
                    .wallet_deltas
                    .entry((cmd.sender_id.clone(), c))
                    .or_default() -= part;
                self.entry(&txn_id, accounts::wallet(&cmd.sender_id, c), -part);
            }
        }
        self.entry(&txn_id, accounts::escrow(packet_id), cmd.total_minor);
        let packet = RedPacket {
            packet_id: packet_id.to_owned(),
            room_id: cmd.room_id.clone(),
            sender_id: cmd.sender_id.clone(),
            sender_name: cmd.sender_name.clone(),
            mode: cmd.mode.clone(),
            total_minor: cmd.total_minor,
            count: cmd.shares.len() as u32,
            shares: cmd.shares.clone(),
            claimed_count: 0,
            claimed_minor: 0,
            escrow: paid,
            created_at_ms: self.now_ms,
            expires_at_ms: self.now_ms.saturating_add(cmd.expires_in_ms),
            settled_at_ms: None,
            returned_minor: 0,
        };
        let body = EventBody::RedPacket {
            packet_id: packet_id.to_owned(),
            sender: SenderView {
                id: cmd.sender_id.clone(),
                name: cmd.sender_name.clone(),
            },
            total: self.currency.format(cmd.total_minor),
            count: packet.count,
            mode: cmd.mode.clone(),
            expires_at: applause_core_time(packet.expires_at_ms),
        };
        let room = state
            .rooms
            .get_mut(&cmd.room_id)
            .expect("room checked above");
        let ev = self.event(room, &body, None);
        // Claims later in this batch find the packet in the state.
        state.packets.insert(packet_id.to_owned(), packet.clone());
        self.w.new_packets.push(packet.clone());
        self.remember_key(
            state,
            key,
            &cmd.request_hash,
            StoredOutcome::Gift(packet_id.to_owned()),
        );
        Ok(DropOutcome::Dropped(Box::new(packet), Some(ev)))
    }

    fn remember_key(
        &mut self,
        state: &mut Loaded,
        key: (String, String),
        request_hash: &str,
        outcome: StoredOutcome,
    ) {
        let rec = IdempotencyRecord {
            user_id: key.0.clone(),
            key: key.1.clone(),
            request_hash: request_hash.to_owned(),
            outcome,
            created_at_ms: self.now_ms,
        };
        state.idempotency.insert(key, rec.clone());
        self.w.idempotency.push(rec);
    }

    /// One claim: the next share, taken from escrow channel by channel in
    /// the policy's draw order (lowest store fee first, as purchases draw),
    /// into the claimer's wallet on the same channels. Claims of one packet
    /// are applied one after another under the packet's lock, so they can
    /// never hand out more than `count` shares or more than the total.
    fn claim(&mut self, state: &mut Loaded, cmd: &ClaimCmd) -> Result<ClaimOutcome, String> {
        let Some(packet) = state.packets.get_mut(&cmd.packet_id) else {
            return Ok(ClaimOutcome::NotFound);
        };
        if packet.sender_id == cmd.user_id {
            return Ok(ClaimOutcome::OwnPacket);
        }
        let pair = (cmd.packet_id.clone(), cmd.user_id.clone());
        if state.claimed.contains(&pair) {
            return Ok(ClaimOutcome::AlreadyClaimed);
        }
        let live = state.rooms.get(&packet.room_id).is_some_and(|r| r.live);
        if packet.claimed_count >= packet.count
            || packet.settled_at_ms.is_some()
            || self.now_ms >= packet.expires_at_ms
            || !live
        {
            return Ok(ClaimOutcome::Gone);
        }
        let idx = packet.claimed_count;
        let amount = packet.shares[idx as usize];
        let by_channel = self.policy.draw(&packet.escrow, amount).ok_or_else(|| {
            format!(
                "red packet {} escrow is short of its shares",
                packet.packet_id
            )
        })?;
        for c in Channel::ALL {
            packet.escrow[c.index()] -= by_channel[c.index()];
        }
        packet.claimed_count += 1;
        packet.claimed_minor += amount;
        if packet.claimed_count == packet.count {
            if packet.remaining_minor() != 0 {
                return Err(format!(
                    "red packet {} emptied with escrow left",
                    packet.packet_id
                ));
            }
            packet.settled_at_ms = Some(self.now_ms);
        }
        let packet = packet.clone();
        self.touched_packets.insert(packet.packet_id.clone());
        state.claimed.insert(pair);
        let txn_id = format!("red-packet-claim:{}:{}", packet.packet_id, idx);
        self.w.txns.push(TxnRow {
            txn_id: txn_id.clone(),
            kind: "red_packet_claim",
            created_at_ms: self.now_ms,
        });
        self.entry(&txn_id, accounts::escrow(&packet.packet_id), -amount);
        self.credit(state, &txn_id, &cmd.user_id, &by_channel)?;
        let claim = ClaimRecord {
            packet_id: packet.packet_id.clone(),
            user_id: cmd.user_id.clone(),
            user_name: cmd.user_name.clone(),
            idx,
            amount_minor: amount,
            by_channel,
            created_at_ms: self.now_ms,
        };
        self.w.claims.push(claim.clone());
        let body = EventBody::RedPacketClaimed {
            packet_id: packet.packet_id.clone(),
            claimer: SenderView {
                id: cmd.user_id.clone(),
                name: cmd.user_name.clone(),
            },
            amount: self.currency.format(amount),
            remaining_count: packet.remaining_count(),
        };
        let ev = state
            .rooms
            .get_mut(&packet.room_id)
            .map(|room| self.event(room, &body, None));
        Ok(ClaimOutcome::Claimed(
            Box::new(claim),
            packet.remaining_count(),
            ev,
        ))
    }

    /// The return at expiry: whatever is still in escrow goes back to the
    /// sender on the channels it came from. Planned under the packet's lock
    /// and only while the packet is unsettled, so it happens once however
    /// many sweepers (nodes, restarts) ask for it.
    fn expire(&mut self, state: &mut Loaded, packet_id: &str) -> Result<ExpireOutcome, String> {
        let Some(packet) = state.packets.get_mut(packet_id) else {
            return Ok(ExpireOutcome::NotFound);
        };
        if packet.settled_at_ms.is_some() || packet.claimed_count >= packet.count {
            return Ok(ExpireOutcome::AlreadySettled);
        }
        if self.now_ms < packet.expires_at_ms {
            return Ok(ExpireOutcome::NotDue);
        }
        let rest = packet.escrow;
        let returned: i64 = rest.iter().sum();
        packet.escrow = [0; 3];
        packet.settled_at_ms = Some(self.now_ms);
        packet.returned_minor = returned;
        let packet = packet.clone();
        self.touched_packets.insert(packet.packet_id.clone());
        if returned != 0 {
            let txn_id = format!("red-packet-return:{packet_id}");
            self.w.txns.push(TxnRow {
                txn_id: txn_id.clone(),
                kind: "red_packet_return",
                created_at_ms: self.now_ms,
            });
            self.entry(&txn_id, accounts::escrow(packet_id), -returned);
            self.credit(state, &txn_id, &packet.sender_id, &rest)?;
        }
        let body = EventBody::RedPacketExpired {
            packet_id: packet_id.to_owned(),
            returned: self.currency.format(returned),
        };
        // An ended room gets no events after `room_ended`.
        let ev = state
            .rooms
            .get_mut(&packet.room_id)
            .filter(|r| r.live)
            .map(|room| self.event(room, &body, None));
        Ok(ExpireOutcome::Returned(returned, ev))
    }

    /// Credits a wallet per channel (entries and balance deltas).
    fn credit(
        &mut self,
        state: &mut Loaded,
        txn_id: &str,
        user_id: &str,
        by_channel: &PerChannel,
    ) -> Result<(), String> {
        let balances = state.wallets.entry(user_id.to_owned()).or_default();
        for c in Channel::ALL {
            let part = by_channel[c.index()];
            if part == 0 {
                continue;
            }
            balances[c.index()] = balances[c.index()]
                .checked_add(part)
                .filter(|b| *b <= applause_core::money::AMOUNT_MINOR_MAX)
                .ok_or_else(|| "wallet balance would overflow".to_owned())?;
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
        self.w.events.push(ev.clone());
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
    fn check_balanced(&self) -> Result<(), String> {
        let mut sums: HashMap<&str, i64> = HashMap::new();
        for e in &self.w.entries {
            *sums.entry(e.txn_id.as_str()).or_default() += e.amount_minor;
        }
        match sums.iter().find(|(_, s)| **s != 0) {
            Some((txn, s)) => Err(format!("transaction {txn} does not balance (off by {s})")),
            None => Ok(()),
        }
    }
}

/// The event body of a gift; `with_split` for the broadcaster's frame.
pub(crate) fn gift_event_body(
    gift: &GiftRecord,
    currency: &Currency,
    created_at: &str,
    with_split: bool,
) -> EventBody {
    EventBody::Gift {
        gift_id: gift.gift_id.clone(),
        sender: SenderView {
            id: gift.sender_id.clone(),
            name: gift.sender_name.clone(),
        },
        sticker_id: gift.sticker_id.clone(),
        quantity: gift.quantity,
        amount: currency.format(gift.amount_minor),
        message: gift.message.clone(),
        created_at: created_at.to_owned(),
        split: with_split.then(|| SplitView {
            store: currency.format(gift.split.store),
            broadcaster: currency.format(gift.split.broadcaster),
            platform: currency.format(gift.split.platform),
        }),
    }
}

/// A new time-ordered identifier: a one-letter kind and 32 hex digits.
pub(crate) fn new_id(kind: char) -> String {
    format!("{kind}{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str, broadcaster: &str) -> Room {
        Room {
            room_id: id.into(),
            broadcaster_id: broadcaster.into(),
            title: "t".into(),
            epoch: 1,
            live: true,
            last_seq: 0,
            published_seq: 0,
            created_at_ms: 0,
            ended_at_ms: None,
        }
    }

    fn purchase(user: &str, key: &str, amount: i64) -> Command {
        Command::Purchase(PurchaseCmd {
            sender_id: user.into(),
            sender_name: user.into(),
            room_id: "r".into(),
            sticker_id: "rose".into(),
            quantity: 1,
            amount_minor: amount,
            message: None,
            idempotency_key: key.into(),
            request_hash: format!("h{amount}"),
        })
    }

    #[test]
    fn a_batch_never_overdraws_and_assigns_consecutive_seqs() {
        let mut state = Loaded::default();
        state.rooms.insert("r".into(), room("r", "b"));
        state.wallets.insert("v".into(), [0, 0, 250]);
        let cmds: Vec<_> = (0..5)
            .map(|i| purchase("v", &format!("k{i}"), 100))
            .collect();
        let (w, out) = plan(&cmds, state, 1, &Currency::usd(), &SplitPolicy::default()).unwrap();
        let charged = out
            .iter()
            .filter(|o| matches!(o, Outcome::Purchase(PurchaseOutcome::Charged(..))))
            .count();
        assert_eq!(charged, 2);
        assert_eq!(w.wallet_deltas[&("v".to_string(), Channel::Web)], -200);
        assert_eq!(
            w.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(w.idempotency.len(), 5);
        assert_eq!(w.room_updates[0].last_seq, 2);
    }

    #[test]
    fn same_key_in_one_batch_replays_or_is_reused() {
        let mut state = Loaded::default();
        state.rooms.insert("r".into(), room("r", "b"));
        state.wallets.insert("v".into(), [1000, 0, 0]);
        let cmds = vec![
            purchase("v", "k", 100),
            purchase("v", "k", 100),
            purchase("v", "k", 200),
        ];
        let (w, out) = plan(&cmds, state, 1, &Currency::usd(), &SplitPolicy::default()).unwrap();
        assert!(matches!(
            out[1],
            Outcome::Purchase(PurchaseOutcome::Replay(StoredOutcome::Gift(_)))
        ));
        assert!(matches!(
            out[2],
            Outcome::Purchase(PurchaseOutcome::KeyReused)
        ));
        assert_eq!(w.gifts.len(), 1);
    }

    fn packet_batch(claimers: &[&str]) -> Vec<Command> {
        let mut cmds = vec![Command::Drop(
            DropCmd {
                sender_id: "s".into(),
                sender_name: "S".into(),
                room_id: "r".into(),
                mode: "fixed".into(),
                total_minor: 60,
                shares: vec![10, 20, 30],
                expires_in_ms: 1_000,
                idempotency_key: "k".into(),
                request_hash: "h".into(),
            },
            "p1".into(),
        )];
        for u in claimers {
            cmds.push(Command::Claim(ClaimCmd {
                packet_id: "p1".into(),
                user_id: (*u).into(),
                user_name: (*u).into(),
            }));
        }
        cmds
    }

    #[test]
    fn claims_in_one_batch_are_serialized() {
        let mut state = Loaded::default();
        state.rooms.insert("r".into(), room("r", "b"));
        // Apple then web in escrow: web (cheapest fee) is drawn first.
        state.wallets.insert("s".into(), [40, 0, 20]);
        let cmds = packet_batch(&["a", "a", "s", "c", "d", "e"]);
        let (w, out) = plan(&cmds, state, 1, &Currency::usd(), &SplitPolicy::default()).unwrap();
        let kinds: Vec<_> = out[1..]
            .iter()
            .map(|o| match o {
                Outcome::Claim(ClaimOutcome::Claimed(c, ..)) => {
                    format!("{}:{:?}", c.amount_minor, c.by_channel)
                }
                Outcome::Claim(other) => format!("{other:?}"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "10:[0, 0, 10]",
                "AlreadyClaimed",
                "OwnPacket",
                "20:[10, 0, 10]",
                "30:[30, 0, 0]",
                "Gone"
            ]
        );
        // Written once, in its final state: emptied and settled.
        assert_eq!(w.new_packets.len(), 1);
        assert!(w.packet_updates.is_empty());
        assert_eq!(w.new_packets[0].escrow, [0, 0, 0]);
        assert!(w.new_packets[0].settled_at_ms.is_some());
        assert_eq!(w.claims.len(), 3);
        assert_eq!(w.events.len(), 4, "the drop and three claims");
    }

    #[test]
    fn expiry_returns_the_rest_once_in_a_batch() {
        let fresh = || {
            let mut state = Loaded::default();
            state.rooms.insert("r".into(), room("r", "b"));
            state.wallets.insert("s".into(), [0, 0, 60]);
            state
        };
        let usd = Currency::usd();
        let policy = SplitPolicy::default();
        // Before its expiry a packet is not returned.
        let mut cmds = packet_batch(&["a"]);
        cmds.push(Command::Expire("p1".into()));
        let (dropped, out) = plan(&cmds, fresh(), 1, &usd, &policy).unwrap();
        assert!(matches!(out[2], Outcome::Expire(ExpireOutcome::NotDue)));
        // Past it, asked twice in one batch: returned once.
        let mut state = fresh();
        state
            .packets
            .insert("p1".into(), dropped.new_packets[0].clone());
        let cmds = vec![Command::Expire("p1".into()), Command::Expire("p1".into())];
        let (w, out) = plan(&cmds, state, 10_000, &usd, &policy).unwrap();
        assert!(matches!(
            out[0],
            Outcome::Expire(ExpireOutcome::Returned(50, _))
        ));
        assert!(matches!(
            out[1],
            Outcome::Expire(ExpireOutcome::AlreadySettled)
        ));
        assert_eq!(w.wallet_deltas[&("s".to_string(), Channel::Web)], 50);
        assert_eq!(w.packet_updates.len(), 1);
        assert_eq!(w.packet_updates[0].returned_minor, 50);
    }

    #[test]
    fn self_gifts_and_ended_rooms_are_refused_and_remembered() {
        let mut state = Loaded::default();
        state.rooms.insert("r".into(), room("r", "v"));
        state.wallets.insert("v".into(), [1000, 0, 0]);
        let (w, out) = plan(
            &[purchase("v", "k", 100)],
            state,
            1,
            &Currency::usd(),
            &SplitPolicy::default(),
        )
        .unwrap();
        assert!(matches!(
            out[0],
            Outcome::Purchase(PurchaseOutcome::Rejected(ErrorCode::SelfGift))
        ));
        assert!(w.entries.is_empty());
        assert_eq!(w.idempotency.len(), 1);
    }
}
