//! The ledger's records and commands: rooms, wallets, gifts, top-ups,
//! idempotency outcomes and the events a commit produces. Amounts are integer
//! minor units of the deployment currency.

use applause_core::{Channel, ErrorCode, EventEnvelope, PerChannel, Split};

/// A live room (one stream session of a broadcaster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub room_id: String,
    pub broadcaster_id: String,
    pub title: String,
    pub epoch: u64,
    pub live: bool,
    /// The `seq` of the room's last committed event.
    pub last_seq: u64,
    /// Every event up to this `seq` is known to have been published.
    pub published_seq: u64,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
}

/// A viewer's wallet: one balance per funding channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wallet {
    pub by_channel: PerChannel,
}

impl Wallet {
    pub fn total(&self) -> i64 {
        self.by_channel.iter().sum()
    }
}

/// A committed gift purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftRecord {
    pub gift_id: String,
    pub room_id: String,
    pub broadcaster_id: String,
    pub sender_id: String,
    pub sender_name: String,
    pub sticker_id: String,
    pub quantity: u32,
    pub amount_minor: i64,
    /// What each channel paid.
    pub paid: PerChannel,
    pub split: Split,
    pub message: Option<String>,
    /// The sender's wallet total right after this purchase.
    pub balance_after_minor: i64,
    pub seq: u64,
    pub epoch: u64,
    pub created_at_ms: i64,
    pub ack_text: Option<String>,
    pub acked_at_ms: Option<i64>,
    pub refunded_at_ms: Option<i64>,
}

/// A purchase, as the gift service hands it to the ledger. Price and split
/// come from the server's catalog and policy only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseCmd {
    pub sender_id: String,
    pub sender_name: String,
    pub room_id: String,
    pub sticker_id: String,
    pub quantity: u32,
    pub amount_minor: i64,
    pub message: Option<String>,
    pub idempotency_key: String,
    /// Hash of the request (room, sticker, quantity, message): the same key
    /// with another hash is `idempotency_key_reused`.
    pub request_hash: String,
}

/// The stored outcome of an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user_id: String,
    pub key: String,
    pub request_hash: String,
    pub outcome: StoredOutcome,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredOutcome {
    Gift(String),
    Rejected(ErrorCode),
}

/// What a purchase came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseOutcome {
    /// Charged now.
    Charged(Box<GiftRecord>, Option<EventEnvelope>),
    /// Refused now, and the refusal is stored under the key.
    Rejected(ErrorCode),
    /// The key was used before with the same request: replay this.
    Replay(StoredOutcome),
    /// The key was used before with another request.
    KeyReused,
}

/// A credit from a store or payment integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpCmd {
    pub user_id: String,
    pub channel: Channel,
    pub amount_minor: i64,
    pub receipt_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpRecord {
    pub receipt_id: String,
    pub user_id: String,
    pub channel: Channel,
    pub amount_minor: i64,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopUpOutcome {
    Credited(TopUpRecord),
    /// The same receipt with the same fields: nothing credited again.
    Replay(TopUpRecord),
    /// The same receipt with other fields.
    KeyReused,
    /// The balance would exceed the largest amount a wallet may hold;
    /// nothing was credited and the receipt is not recorded.
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRoomCmd {
    pub broadcaster_id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndRoomOutcome {
    Ended(Room, Option<EventEnvelope>),
    AlreadyEnded(Room),
    NotFound,
    NotYours,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckCmd {
    pub gift_id: String,
    pub broadcaster_id: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    Acked(Option<EventEnvelope>),
    AlreadyAcked,
    NotFound,
    NotYours,
}

/// A room event stored in the outbox (for relaying after a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub envelope: EventEnvelope,
    /// The room's `published_seq` when the event was read: every event of
    /// the room up to this seq is recorded as having reached the bus.
    pub published_through: u64,
    /// The gift of a `gift` event (`None` for every other event): the relay
    /// reads the gift by it, without parsing the frame.
    pub gift_id: Option<String>,
}

/// How the revenue report groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Channel,
    Broadcaster,
    Sticker,
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "day" => Ok(GroupBy::Day),
            "channel" => Ok(GroupBy::Channel),
            "broadcaster" => Ok(GroupBy::Broadcaster),
            "sticker" => Ok(GroupBy::Sticker),
            other => Err(format!(
                "group_by {other:?} must be day, channel, broadcaster or sticker"
            )),
        }
    }
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Day => "day",
            GroupBy::Channel => "channel",
            GroupBy::Broadcaster => "broadcaster",
            GroupBy::Sticker => "sticker",
        }
    }
}

/// One row of the revenue report. On every row `gross = store_fees +
/// broadcaster_earnings + platform_revenue`; `refunds` is what was reversed
/// of those gifts and `net = gross - refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevenueRow {
    pub key: String,
    pub gifts: u64,
    pub gross: i64,
    pub store_fees: i64,
    pub broadcaster_earnings: i64,
    pub platform_revenue: i64,
    pub refunds: i64,
    /// `gross - refunds`: what the row's gifts came to after reversals.
    pub net: i64,
}

impl RevenueRow {
    pub fn add(&mut self, other: &RevenueRow) {
        self.gifts += other.gifts;
        self.gross += other.gross;
        self.store_fees += other.store_fees;
        self.broadcaster_earnings += other.broadcaster_earnings;
        self.platform_revenue += other.platform_revenue;
        self.refunds += other.refunds;
        self.net += other.net;
    }
}

/// The finance summary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    pub topups_by_channel: PerChannel,
    pub wallets_outstanding: i64,
    pub escrow_open: i64,
    pub gifts: u64,
    pub gross_gifts: i64,
    pub store_fees_by_channel: PerChannel,
    pub broadcaster_payable: i64,
    pub platform_revenue: i64,
    pub refunds: i64,
}

/// The result of `ledger check`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckReport {
    pub transactions: u64,
    pub entries: u64,
    /// Transactions whose entries do not sum to zero.
    pub unbalanced_transactions: Vec<String>,
    /// The sum of every account balance (must be zero).
    pub balance_sum: i64,
    /// Wallet rows whose stored balance differs from their entries.
    pub mismatched_wallets: Vec<String>,
    /// Wallet rows below zero.
    pub negative_wallets: Vec<String>,
    /// Gifts whose parts do not sum to their amount.
    pub bad_splits: Vec<String>,
    /// Red packets whose stored escrow differs from their escrow account.
    pub mismatched_escrow: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.unbalanced_transactions.is_empty()
            && self.balance_sum == 0
            && self.mismatched_wallets.is_empty()
            && self.negative_wallets.is_empty()
            && self.bad_splits.is_empty()
            && self.mismatched_escrow.is_empty()
    }
}

/// A refund of a gift, as finance asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundCmd {
    pub gift_id: String,
    pub reason: String,
    /// Who refunded (finance or admin user id), kept for the audit trail.
    pub refunded_by: String,
}

/// What a refund came to. A gift is refunded at most once: a second request
/// answers `AlreadyRefunded` with the gift as refunded the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Refunded(Box<GiftRecord>),
    AlreadyRefunded(Box<GiftRecord>),
    NotFound,
}

/// A red packet (SPEC §7). `shares` is the whole allocation, fixed at the
/// drop; claim `i` gets `shares[i]`. `escrow` is what is still in escrow per
/// funding channel (it always sums to the `escrow:<packet>` account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedPacket {
    pub packet_id: String,
    pub room_id: String,
    pub sender_id: String,
    pub sender_name: String,
    pub mode: String,
    pub total_minor: i64,
    pub count: u32,
    pub shares: Vec<i64>,
    pub claimed_count: u32,
    pub claimed_minor: i64,
    pub escrow: PerChannel,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// When the packet was emptied by its last claim or its rest returned.
    pub settled_at_ms: Option<i64>,
    /// What went back to the sender at expiry.
    pub returned_minor: i64,
}

impl RedPacket {
    pub fn remaining_minor(&self) -> i64 {
        self.escrow.iter().sum()
    }
    pub fn remaining_count(&self) -> u32 {
        self.count - self.claimed_count
    }
    /// `open`, `exhausted`, `expired` (rest not yet returned) or `returned`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if self.claimed_count == self.count {
            "exhausted"
        } else if self.settled_at_ms.is_some() {
            "returned"
        } else if now_ms >= self.expires_at_ms {
            "expired"
        } else {
            "open"
        }
    }
}

/// One claim of a red packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    pub packet_id: String,
    pub user_id: String,
    pub user_name: String,
    /// The claim's position (0-based): it got `shares[idx]`.
    pub idx: u32,
    pub amount_minor: i64,
    /// Which funding channels the share carried from escrow into the wallet.
    pub by_channel: PerChannel,
    pub created_at_ms: i64,
}

/// Dropping a red packet. The shares were allocated by the gift service
/// (`applause_core::redpacket`); the ledger re-checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCmd {
    pub sender_id: String,
    pub sender_name: String,
    pub room_id: String,
    pub mode: String,
    pub total_minor: i64,
    pub shares: Vec<i64>,
    pub expires_in_ms: i64,
    pub idempotency_key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropOutcome {
    Dropped(Box<RedPacket>, Option<EventEnvelope>),
    Rejected(ErrorCode),
    /// The key was used before with the same request (a packet id or a refusal).
    Replay(StoredOutcome),
    KeyReused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCmd {
    pub packet_id: String,
    pub user_id: String,
    pub user_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(Box<ClaimRecord>, u32, Option<EventEnvelope>),
    AlreadyClaimed,
    /// Exhausted, expired, or its room has ended.
    Gone,
    NotFound,
    /// Senders do not claim their own packets (a product decision).
    OwnPacket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpireOutcome {
    /// The rest went back to the sender.
    Returned(i64, Option<EventEnvelope>),
    /// Not expired yet.
    NotDue,
    /// Emptied or already returned: nothing to do (this is what makes the
    /// return happen once however many sweepers run).
    AlreadySettled,
    NotFound,
}
