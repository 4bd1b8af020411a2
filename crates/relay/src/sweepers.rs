//! The sweepers: expired red packets return their rest to the sender, and
//! idempotency records past their retention are deleted. Each is one step
//! (a public function, testable with a `ManualClock`) and a loop that runs
//! it on an interval. Any number of nodes may sweep at once: the ledger
//! re-checks each packet under its lock, and deleting an old record twice
//! deletes it once.

use std::sync::Arc;
use std::time::Duration;

use applause_core::clock::Clock;
use applause_ledger::{Ledger, LedgerError};

use crate::Shared;

/// How often this node looks for expired packets.
const RED_PACKET_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often this node deletes old idempotency records.
const IDEMPOTENCY_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// One red-packet sweep as of `clock`: returns how many packets' rests this
/// call returned.
pub async fn sweep_red_packets(ledger: &Ledger, clock: &dyn Clock) -> Result<u64, LedgerError> {
    ledger.sweep_red_packets(clock.now_ms()).await
}

/// One idempotency sweep: deletes the records created more than `retention`
/// before `clock`'s now; returns how many.
pub async fn sweep_idempotency(
    ledger: &Ledger,
    clock: &dyn Clock,
    retention: Duration,
) -> Result<u64, LedgerError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    ledger
        .sweep_idempotency(clock.now_ms().saturating_sub(retention_ms))
        .await
}

pub(crate) async fn red_packet_loop(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(RED_PACKET_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep_red_packets(&s.ledger, s.clock.as_ref()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(returned = n, "expired red packets returned to senders"),
            Err(e) => tracing::warn!(error = %e, "red packet sweep failed; will retry"),
        }
    }
}

pub(crate) async fn idempotency_loop(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(IDEMPOTENCY_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let retention = s.config.idempotency_retention;
        if let Err(e) = sweep_idempotency(&s.ledger, s.clock.as_ref(), retention).await {
            tracing::warn!(error = %e, "idempotency sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{funded_room, ledger, ledger_on};
    use applause_core::clock::ManualClock;
    use applause_ledger::{DropCmd, DropOutcome, PurchaseCmd, PurchaseOutcome};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_red_packet_returns_once_when_the_clock_passes_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        // One clock for the ledger (which re-checks expiry under the
        // packet's lock) and the sweep, moved by the test.
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let ledger = ledger_on(&dir, clock.clone()).await;
        let room_id = funded_room(&ledger, "alice").await;
        let outcome = ledger
            .drop_red_packet(DropCmd {
                sender_id: "alice".into(),
                sender_name: "Alice".into(),
                room_id,
                mode: "equal".into(),
                total_minor: 3_000,
                shares: vec![1_000; 3],
                expires_in_ms: 60_000,
                idempotency_key: "k1".into(),
                request_hash: "h1".into(),
            })
            .await
            .unwrap();
        let DropOutcome::Dropped(packet, _) = outcome else {
            panic!("drop refused: {outcome:?}");
        };
        assert_eq!(ledger.wallet("alice").await.unwrap().total(), 7_000);

        assert_eq!(packet.expires_at_ms, 1_800_000_060_000);
        clock.set_ms(packet.expires_at_ms - 1);
        assert_eq!(sweep_red_packets(&ledger, &*clock).await.unwrap(), 0);
        assert_eq!(ledger.wallet("alice").await.unwrap().total(), 7_000);

        clock.advance_ms(1);
        assert_eq!(sweep_red_packets(&ledger, &*clock).await.unwrap(), 1);
        assert_eq!(ledger.wallet("alice").await.unwrap().total(), 10_000);

        clock.advance_ms(60_000);
        assert_eq!(sweep_red_packets(&ledger, &*clock).await.unwrap(), 0);
        assert_eq!(ledger.wallet("alice").await.unwrap().total(), 10_000);
    }

    #[tokio::test]
    async fn idempotency_records_go_only_after_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger(&dir).await;
        let room_id = funded_room(&ledger, "bob").await;
        let outcome = ledger
            .purchase(PurchaseCmd {
                sender_id: "bob".into(),
                sender_name: "Bob".into(),
                room_id,
                sticker_id: "rose".into(),
                quantity: 1,
                amount_minor: 100,
                message: None,
                idempotency_key: "key-1".into(),
                request_hash: "hash-1".into(),
            })
            .await
            .unwrap();
        assert!(
            matches!(outcome, PurchaseOutcome::Charged(..)),
            "{outcome:?}"
        );
        let created = ledger
            .idempotency("bob", "key-1")
            .await
            .unwrap()
            .expect("the key is recorded")
            .created_at_ms;
        let retention = Duration::from_secs(24 * 3600);
        let retention_ms = retention.as_millis() as i64;

        // Exactly at the retention the record is still kept.
        let clock = ManualClock::new(created + retention_ms);
        assert_eq!(
            sweep_idempotency(&ledger, &clock, retention).await.unwrap(),
            0
        );
        assert!(ledger.idempotency("bob", "key-1").await.unwrap().is_some());

        clock.advance_ms(1);
        assert_eq!(
            sweep_idempotency(&ledger, &clock, retention).await.unwrap(),
            1
        );
        assert!(ledger.idempotency("bob", "key-1").await.unwrap().is_none());
    }
}
