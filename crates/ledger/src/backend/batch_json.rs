//! The rows of a batch's rare tables (receipts, red packets, claims) as JSON
//! arrays, for PostgreSQL: it expands them in SQL (`jsonb_array_elements`),
//! one statement per table. The hot tables go as column arrays instead
//! (`postgres_batch`); SQLite binds its rows as parameters (`sqlite_batch`).

use serde_json::{json, Value};

use crate::plan::WriteSet;

fn array(rows: Vec<Value>) -> String {
    Value::Array(rows).to_string()
}

/// The batch's top-up receipts.
pub(crate) fn receipts(w: &WriteSet) -> String {
    array(
        w.receipts
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
            .collect(),
    )
}

/// The batch's red-packet claims.
pub(crate) fn claims(w: &WriteSet) -> String {
    array(
        w.claims
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
            .collect(),
    )
}

/// New packets and the final state of changed ones (upserted).
pub(crate) fn packets(w: &WriteSet) -> String {
    array(
        w.new_packets
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
            .collect(),
    )
}
