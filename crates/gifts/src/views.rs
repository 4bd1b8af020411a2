//! The response bodies of the gift service, as types: the handlers serialize
//! exactly these, and the OpenAPI description is generated from them.
//!
//! Fields are declared in alphabetical order where a body was once a
//! `serde_json::json!` map (whose keys serde_json sorts), so the bytes on
//! the wire are what they always were.

use std::borrow::Cow;

use applause_core::{Channel, Currency, PerChannel};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// An amount of the deployment's currency as decimal text, with exactly the
/// currency's decimals in responses (`"1.99"`); never a JSON number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Amount(pub String);

/// The amount text a request may carry: digits, optionally a point and at
/// most the currency's decimals (USD: 2), positive, as a JSON string.
pub const AMOUNT_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?$";

impl Amount {
    pub fn of(c: &Currency, minor: i64) -> Amount {
        Amount(c.format(minor))
    }
}

impl utoipa::PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(AMOUNT_PATTERN))
            .max_length(Some(40))
            .description(Some(
                "An exact amount of the deployment's currency as a decimal string \
                 (never a JSON number); at most the currency's decimals.",
            ))
            .examples(["1.99"])
            .into()
    }
}

impl ToSchema for Amount {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Amount")
    }
}

/// An amount per funding channel.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ByChannel {
    pub apple: Amount,
    pub google: Amount,
    pub web: Amount,
}

impl ByChannel {
    pub fn of(c: &Currency, v: &PerChannel) -> ByChannel {
        let at = |ch: Channel| Amount::of(c, v[ch.index()]);
        ByChannel {
            apple: at(Channel::Apple),
            google: at(Channel::Google),
            web: at(Channel::Web),
        }
    }
}

/// How a gift's price was split; `store + broadcaster + platform` is the price.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Split {
    pub store: Amount,
    pub broadcaster: Amount,
    pub platform: Amount,
}

/// One sticker of the catalog.
#[derive(Serialize, ToSchema)]
pub struct StickerView<'a> {
    /// A hint for clients: which animation or asset to play.
    pub animation: &'a str,
    pub id: &'a str,
    pub name: &'a str,
    pub price: Amount,
}

/// `GET /v1/stickers`.
#[derive(Serialize, ToSchema)]
pub struct Stickers<'a> {
    /// The settlement currency's code, e.g. `USD`.
    pub currency: &'a str,
    pub stickers: Vec<StickerView<'a>>,
}

/// A room (a stream session).
#[derive(Serialize, ToSchema)]
pub struct RoomView<'a> {
    pub broadcaster_id: &'a str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    /// The room's event epoch (WebSocket `seq`s count within it).
    pub epoch: u64,
    pub live: bool,
    pub room_id: &'a str,
    /// The room's last event `seq`.
    pub seq: u64,
    pub title: &'a str,
}

/// The `201` of a purchase, and of each of its replays (byte-identical).
#[derive(Serialize, ToSchema)]
pub struct GiftCreated<'a> {
    pub gift_id: &'a str,
    pub room_id: &'a str,
    pub sender_id: &'a str,
    pub sticker_id: &'a str,
    pub quantity: u32,
    /// Price × quantity, from the catalog.
    pub amount: Amount,
    pub message: Option<&'a str>,
    pub split: Split,
    /// The sender's balance after the purchase.
    pub balance: Amount,
    /// The gift's event `seq` in its room.
    pub seq: u64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A gift's acknowledgement by its room's broadcaster.
#[derive(Serialize, ToSchema)]
pub struct AckView<'a> {
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    pub text: &'a str,
}

/// `GET /v1/gifts/{gift_id}`: the gift with its acknowledgement and refund.
#[derive(Serialize, ToSchema)]
pub struct GiftView<'a> {
    pub ack: Option<AckView<'a>>,
    pub amount: Amount,
    pub broadcaster_id: &'a str,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub gift_id: &'a str,
    pub message: Option<&'a str>,
    pub quantity: u32,
    #[schema(format = DateTime)]
    pub refunded_at: Option<String>,
    pub room_id: &'a str,
    pub sender_id: &'a str,
    pub sender_name: &'a str,
    pub seq: u64,
    pub split: Split,
    pub sticker_id: &'a str,
}

/// The answer to an acknowledgement.
#[derive(Serialize, ToSchema)]
pub struct Acked<'a> {
    pub gift_id: &'a str,
    pub text: &'a str,
}

/// `GET /v1/wallet`.
#[derive(Serialize, ToSchema)]
pub struct WalletView<'a> {
    pub balance: Amount,
    pub by_channel: ByChannel,
    pub currency: &'a str,
    pub user_id: &'a str,
}

/// The `201` of a top-up (and of its replays).
#[derive(Serialize, ToSchema)]
pub struct TopUpView<'a> {
    pub receipt_id: &'a str,
    pub user_id: &'a str,
    /// `apple`, `google` or `web`.
    pub channel: &'a str,
    pub amount: Amount,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// One row of a leaderboard.
#[derive(Serialize, ToSchema)]
pub struct BoardEntry {
    pub amount: Amount,
    pub name: String,
    /// 1-based: totals descending, then user id ascending.
    pub rank: u32,
    pub user_id: String,
}

/// `GET /v1/rooms/{room_id}/leaderboard`.
#[derive(Serialize, ToSchema)]
pub struct RoomBoard<'a> {
    pub entries: Vec<BoardEntry>,
    pub room_id: &'a str,
    pub window: &'a str,
}

/// `GET /v1/rooms/{room_id}/leaderboard/me`.
#[derive(Serialize, ToSchema)]
pub struct MyRank<'a> {
    /// What the user gave in the window (`"0.00"` when nothing).
    pub amount: Amount,
    /// `null` when the user gave nothing in the window.
    pub rank: Option<u32>,
    pub room_id: &'a str,
    pub user_id: &'a str,
    pub window: &'a str,
}

/// `GET /v1/leaderboards/broadcasters`.
#[derive(Serialize, ToSchema)]
pub struct BroadcasterBoard<'a> {
    pub entries: Vec<BoardEntry>,
    pub window: &'a str,
}

/// The reversal of a refunded gift's split.
#[derive(Serialize, ToSchema)]
pub struct RefundView<'a> {
    pub amount: Amount,
    pub broadcaster_id: &'a str,
    pub gift_id: &'a str,
    pub reason: &'a str,
    #[schema(format = DateTime)]
    pub refunded_at: Option<String>,
    pub refunded_by: &'a str,
    /// What went back to the sender's wallet, per channel.
    pub returned_by_channel: ByChannel,
    pub reversed: Split,
    pub sender_id: &'a str,
}

/// The `201` of a red-packet drop (and of its replays: byte-identical).
#[derive(Serialize, ToSchema)]
pub struct Dropped<'a> {
    pub count: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// `equal`, `random` or `fixed`.
    pub mode: &'a str,
    pub packet_id: &'a str,
    pub room_id: &'a str,
    pub sender_id: &'a str,
    pub total: Amount,
}

/// One claim of a red packet.
#[derive(Serialize, ToSchema)]
pub struct ClaimView<'a> {
    pub amount: Amount,
    /// Where the share came from, per channel (it keeps its provenance).
    pub by_channel: ByChannel,
    #[schema(format = DateTime)]
    pub claimed_at: String,
    pub name: &'a str,
    pub packet_id: &'a str,
    pub user_id: &'a str,
}

/// The answer to a claim: the claim and how many shares are left.
#[derive(Serialize, ToSchema)]
pub struct Claimed<'a> {
    pub amount: Amount,
    pub by_channel: ByChannel,
    #[schema(format = DateTime)]
    pub claimed_at: String,
    pub name: &'a str,
    pub packet_id: &'a str,
    pub remaining_count: u32,
    pub user_id: &'a str,
}

/// `GET /v1/red-packets/{packet_id}`: state and claims so far.
#[derive(Serialize, ToSchema)]
pub struct PacketView<'a> {
    pub claimed: Amount,
    pub claimed_count: u32,
    pub claims: Vec<ClaimView<'a>>,
    pub count: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub mode: &'a str,
    pub packet_id: &'a str,
    pub remaining: Amount,
    pub remaining_count: u32,
    pub returned: Amount,
    pub room_id: &'a str,
    pub sender_id: &'a str,
    pub sender_name: &'a str,
    #[schema(format = DateTime)]
    pub settled_at: Option<String>,
    /// `open`, `exhausted`, `expired` or `returned`.
    pub state: &'a str,
    pub total: Amount,
}

/// One row of the revenue report; the row's key is the field named by
/// `group_by` (`day`, `channel`, `broadcaster` or `sticker`), absent on the
/// totals row. `gross = store_fees + broadcaster_earnings + platform_revenue`.
#[derive(Serialize, ToSchema)]
pub struct RevenueRowView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcaster: Option<&'a str>,
    pub broadcaster_earnings: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<&'a str>,
    pub gifts: u64,
    pub gross: Amount,
    /// `gross - refunds`.
    pub net: Amount,
    pub platform_revenue: Amount,
    pub refunds: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticker: Option<&'a str>,
    pub store_fees: Amount,
}

/// `GET /v1/finance/revenue` as JSON: the half-open UTC interval `[from, to)`.
#[derive(Serialize, ToSchema)]
pub struct RevenueReport<'a> {
    pub currency: &'a str,
    pub from: &'a str,
    pub group_by: &'a str,
    pub rows: Vec<RevenueRowView<'a>>,
    pub to: &'a str,
    pub totals: RevenueRowView<'a>,
}

/// The ledger check (also printed by `applause ledger check`): `ok` when
/// every invariant holds; each list names the records that break one.
#[derive(Serialize, ToSchema)]
pub struct LedgerCheck<'a> {
    pub bad_splits: &'a [String],
    /// The sum of every balance: `"0.00"` when the books balance.
    #[schema(value_type = String)]
    pub balance_sum: String,
    pub entries: u64,
    pub mismatched_escrow: &'a [String],
    pub mismatched_wallets: &'a [String],
    pub negative_wallets: &'a [String],
    pub ok: bool,
    pub transactions: u64,
    pub unbalanced_transactions: &'a [String],
}

/// `GET /v1/finance/summary`.
#[derive(Serialize, ToSchema)]
pub struct Summary<'a> {
    pub broadcaster_payable: Amount,
    pub currency: &'a str,
    /// Held in open red packets (never revenue).
    pub escrow_open: Amount,
    pub gifts: u64,
    pub gross_gifts: Amount,
    pub ledger_check: LedgerCheck<'a>,
    pub platform_revenue: Amount,
    pub refunds: Amount,
    pub store_fees: Amount,
    pub store_fees_by_channel: ByChannel,
    pub topups: Amount,
    pub topups_by_channel: ByChannel,
    /// What the platform owes viewers.
    pub wallets_outstanding: Amount,
}

/// One gift of a statement, with its split and refund.
#[derive(Serialize, ToSchema)]
pub struct StatementGift<'a> {
    pub amount: Amount,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub gift_id: &'a str,
    pub quantity: u32,
    /// The amount refunded (`"0.00"` when not refunded).
    pub refund: Amount,
    #[schema(format = DateTime)]
    pub refunded_at: Option<String>,
    pub room_id: &'a str,
    pub sender_id: &'a str,
    pub split: Split,
    pub sticker_id: &'a str,
}

/// A statement's totals; `broadcaster_net = broadcaster_earnings − broadcaster_refunded`.
#[derive(Serialize, ToSchema)]
pub struct StatementTotalsView {
    pub broadcaster_earnings: Amount,
    pub broadcaster_net: Amount,
    pub broadcaster_refunded: Amount,
    pub gifts: u64,
    pub gross: Amount,
    pub net: Amount,
    pub platform_revenue: Amount,
    pub refunds: Amount,
    pub store_fees: Amount,
}

/// `GET /v1/finance/broadcasters/{broadcaster_id}/statement` as JSON.
#[derive(Serialize, ToSchema)]
pub struct Statement<'a> {
    pub broadcaster_id: &'a str,
    pub currency: &'a str,
    pub from: &'a str,
    pub gifts: Vec<StatementGift<'a>>,
    pub to: &'a str,
    pub totals: StatementTotalsView,
}
