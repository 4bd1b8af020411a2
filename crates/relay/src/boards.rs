//! Leaderboard upkeep: committed gifts and refunds become idempotent board
//! updates; a failed update marks the boards dirty, and dirty or lost boards
//! are rebuilt from the ledger.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use applause_core::clock::Clock;
use applause_leaderboard::{BoardUpdate, Leaderboard, RebuildReport};
use applause_ledger::{GiftRecord, Ledger};

use crate::Shared;

/// How far before a rebuild's start gifts are applied again, in case they
/// were committed while the rebuild read the ledger.
const REBUILD_OVERLAP_MS: i64 = 10_000;

fn update_of(g: &GiftRecord) -> BoardUpdate {
    BoardUpdate {
        update_id: g.gift_id.clone(),
        room_id: g.room_id.clone(),
        broadcaster_id: g.broadcaster_id.clone(),
        sender_id: g.sender_id.clone(),
        sender_name: g.sender_name.clone(),
        amount_minor: g.amount_minor,
        at_ms: g.created_at_ms,
    }
}

/// Each gift, and each refunded gift's `refund:<gift>` subtraction.
fn updates_of(gifts: &[GiftRecord]) -> Vec<BoardUpdate> {
    let mut out = Vec::with_capacity(gifts.len());
    for g in gifts {
        out.push(update_of(g));
        if g.refunded_at_ms.is_some() {
            out.push(BoardUpdate {
                update_id: format!("refund:{}", g.gift_id),
                amount_minor: -g.amount_minor,
                ..update_of(g)
            });
        }
    }
    out
}

pub(crate) async fn count_gifts(s: &Shared, gifts: &[GiftRecord]) {
    if gifts.is_empty() {
        return;
    }
    apply(s, gifts, updates_of(gifts), "leaderboard update failed").await;
}

/// Subtracts refunded gifts (`refund:<gift id>` updates, idempotent), so a
/// refund leaves the boards as if the gift had not been bought.
pub(crate) async fn subtract_refunds(s: &Shared, refunded: &[GiftRecord]) {
    if refunded.is_empty() {
        return;
    }
    let updates: Vec<BoardUpdate> = updates_of(refunded)
        .into_iter()
        .filter(|u| u.update_id.starts_with("refund:"))
        .collect();
    apply(s, refunded, updates, "leaderboard refund failed").await;
}

async fn apply(s: &Shared, gifts: &[GiftRecord], updates: Vec<BoardUpdate>, what: &str) {
    if let Err(e) = s.boards.apply_batch(&updates).await {
        s.metrics.board_errors.inc();
        s.boards_dirty.store(true, Ordering::Relaxed);
        tracing::warn!(error = %e, "{what}; boards will be rebuilt from the ledger");
        return;
    }
    let mut touched = s.touched_rooms.lock().unwrap_or_else(|p| p.into_inner());
    for g in gifts {
        touched.insert(g.room_id.clone());
    }
}

/// Recomputes every board from the ledger: each gift, and each refund as its
/// `refund:<gift>` subtraction, exactly as the live updates count them. The
/// nodes' automatic rebuild and `applause leaderboard rebuild` both call this.
pub async fn rebuild_boards(
    ledger: &Ledger,
    boards: &dyn Leaderboard,
    clock: &dyn Clock,
) -> Result<RebuildReport, String> {
    let started_ms = clock.now_ms();
    let gifts = ledger
        .gifts_between(0, i64::MAX, None)
        .await
        .map_err(|e| e.to_string())?;
    let report = boards
        .rebuild(&updates_of(&gifts), clock.now_ms())
        .await
        .map_err(|e| e.to_string())?;
    // Gifts committed while the ledger was being read may have been applied
    // to the old boards only: apply the recent ones again (idempotent).
    let recent = ledger
        .gifts_between(started_ms - REBUILD_OVERLAP_MS, i64::MAX, None)
        .await
        .map_err(|e| e.to_string())?;
    if !recent.is_empty() {
        boards
            .apply_batch(&updates_of(&recent))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(report)
}

pub(crate) async fn boards_loop(s: Arc<Shared>) {
    loop {
        let dirty = s.boards_dirty.load(Ordering::Relaxed);
        let lost = s.boards.needs_rebuild().await.unwrap_or(false);
        if dirty || lost {
            s.boards_dirty.store(false, Ordering::Relaxed);
            match rebuild_boards(&s.ledger, s.boards.as_ref(), s.clock.as_ref()).await {
                Ok(r) => {
                    // The boards count their own rebuilds (applause_leaderboard_rebuilds_total).
                    tracing::info!(
                        updates = r.updates,
                        lost,
                        "leaderboards rebuilt from the ledger"
                    );
                }
                Err(e) => {
                    s.boards_dirty.store(true, Ordering::Relaxed);
                    s.metrics.board_errors.inc();
                    tracing::warn!(error = %e, "leaderboard rebuild failed; will retry");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{funded_room, ledger};
    use applause_core::clock::{system_now_ms, ManualClock};
    use applause_leaderboard::{MemoryBoards, Window};
    use applause_ledger::{PurchaseCmd, PurchaseOutcome, RefundCmd};

    async fn buy(ledger: &Ledger, room_id: &str, sender: &str, amount_minor: i64) -> String {
        let outcome = ledger
            .purchase(PurchaseCmd {
                sender_id: sender.into(),
                sender_name: sender.into(),
                room_id: room_id.into(),
                sticker_id: "rose".into(),
                quantity: 1,
                amount_minor,
                message: None,
                idempotency_key: format!("k-{sender}-{amount_minor}"),
                request_hash: "h".into(),
            })
            .await
            .unwrap();
        let PurchaseOutcome::Charged(gift, _) = outcome else {
            panic!("purchase refused: {outcome:?}");
        };
        gift.gift_id
    }

    #[tokio::test]
    async fn a_rebuild_counts_gifts_and_subtracts_refunds() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger(&dir).await;
        let room_id = funded_room(&ledger, "ann").await;
        funded_room(&ledger, "ben").await;
        buy(&ledger, &room_id, "ann", 300).await;
        buy(&ledger, &room_id, "ann", 200).await;
        let refunded = buy(&ledger, &room_id, "ben", 900).await;
        ledger
            .refund(RefundCmd {
                gift_id: refunded,
                reason: "chargeback".into(),
                refunded_by: "fin".into(),
            })
            .await
            .unwrap();

        let boards = MemoryBoards::new();
        let clock = ManualClock::new(system_now_ms());
        let report = rebuild_boards(&ledger, &boards, &clock).await.unwrap();
        // Three gifts and one refund's subtraction.
        assert_eq!(report.updates, 4);
        let top = boards
            .top(&room_id, "star", Window::Live, 10, clock.now_ms())
            .await
            .unwrap();
        let lines: Vec<(&str, i64)> = top
            .iter()
            .map(|e| (e.user_id.as_str(), e.amount_minor))
            .collect();
        assert_eq!(lines, [("ann", 500)], "the refunded gift still counts");
    }
}
