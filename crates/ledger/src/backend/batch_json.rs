//! A batch's rows as JSON arrays, one per table, for PostgreSQL: it expands
//! them in SQL (`jsonb_array_elements`), so a batch costs one statement per
//! table however many gifts it holds. (SQLite binds the rows as parameters
//! instead: see `sqlite_write`.)

use crate::model::*;
use crate::plan::WriteSet;

/// JSON arrays of the rows a batch inserts, one array per table.
pub(crate) struct BatchJson {
    pub txns: String,
    pub entries: String,
    pub gifts: String,
    pub idempotency: String,
    pub receipts: String,
    pub events: String,
    /// Net credits per wallet row (upserted: the row may be new).
    pub wallet_credits: String,
    /// Net debits per wallet row (updated: the row exists, it was loaded).
    pub wallet_debits: String,
    pub claims: String,
    /// New packets and the final state of changed ones (upserted).
    pub packets: String,
}

impl BatchJson {
    pub fn of(w: &WriteSet) -> BatchJson {
        use serde_json::json;
        let txns: Vec<_> = w
            .txns
            .iter()
            .map(|t| json!([t.txn_id, t.kind, t.created_at_ms]))
            .collect();
        let entries: Vec<_> = w
            .entries
            .iter()
            .map(|e| json!([e.txn_id, e.account, e.amount_minor]))
            .collect();
        let gifts: Vec<_> = w
            .gifts
            .iter()
            .map(|g| {
                json!([
                    g.gift_id,
                    g.room_id,
                    g.broadcaster_id,
                    g.sender_id,
                    g.sender_name,
                    g.sticker_id,
                    g.quantity,
                    g.amount_minor,
                    g.split.store,
                    g.split.broadcaster,
                    g.split.platform,
                    serde_json::to_string(&g.split.by_channel).expect("array serializes"),
                    g.message,
                    g.balance_after_minor,
                    g.seq,
                    g.epoch,
                    g.created_at_ms
                ])
            })
            .collect();
        let idempotency: Vec<_> = w
            .idempotency
            .iter()
            .map(|i| {
                let (gift, code) = match &i.outcome {
                    StoredOutcome::Gift(g) => (Some(g.as_str()), None),
                    StoredOutcome::Rejected(c) => (None, Some(c.as_str())),
                };
                json!([
                    i.user_id,
                    i.key,
                    i.request_hash,
                    gift,
                    code,
                    i.created_at_ms
                ])
            })
            .collect();
        let receipts: Vec<_> = w
            .receipts
            .iter()
            .map(|r| {
                json!([
                    r.receipt_id,
                    r.user_id,
                    r.channel.as_str(),
                    r.amount_minor,
                    r.created_at_ms
                ])
            })
            .collect();
        let events: Vec<_> = w
            .events
            .iter()
            .map(|o| {
                let e = &o.envelope;
                json!([
                    e.room_id,
                    e.seq,
                    e.epoch,
                    e.frame,
                    e.broadcaster_frame,
                    e.broadcaster_id,
                    e.ends_room,
                    e.committed_at_ms,
                    o.gift_id
                ])
            })
            .collect();
        let wallet_rows = |debits: bool| -> Vec<serde_json::Value> {
            w.wallet_deltas
                .iter()
                .filter(|(_, d)| if debits { **d < 0 } else { **d > 0 })
                .map(|((user, channel), delta)| json!([user, channel.as_str(), delta]))
                .collect()
        };
        let claims: Vec<_> = w
            .claims
            .iter()
            .map(|c| {
                json!([
                    c.packet_id,
                    c.user_id,
                    c.user_name,
                    c.idx,
                    c.amount_minor,
                    serde_json::to_string(&c.by_channel).expect("array serializes"),
                    c.created_at_ms
                ])
            })
            .collect();
        let packets: Vec<_> = w
            .new_packets
            .iter()
            .chain(w.packet_updates.iter())
            .map(|p| {
                json!([
                    p.packet_id,
                    p.room_id,
                    p.sender_id,
                    p.sender_name,
                    p.mode,
                    p.total_minor,
                    p.count,
                    serde_json::to_string(&p.shares).expect("shares serialize"),
                    p.claimed_count,
                    p.claimed_minor,
                    p.escrow[0],
                    p.escrow[1],
                    p.escrow[2],
                    p.created_at_ms,
                    p.expires_at_ms,
                    p.settled_at_ms,
                    p.returned_minor
                ])
            })
            .collect();
        let s = |v: Vec<serde_json::Value>| serde_json::Value::Array(v).to_string();
        BatchJson {
            txns: s(txns),
            entries: s(entries),
            gifts: s(gifts),
            idempotency: s(idempotency),
            receipts: s(receipts),
            events: s(events),
            wallet_credits: s(wallet_rows(false)),
            wallet_debits: s(wallet_rows(true)),
            claims: s(claims),
            packets: s(packets),
        }
    }
}
