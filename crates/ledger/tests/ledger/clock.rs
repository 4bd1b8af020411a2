//! One clock: commit times, expiries, ids and the times in frames all come
//! from the clock the ledger was opened with, and commit times never go
//! backwards even when that clock does.

use applause_core::{Channel, Clock};
use applause_ledger::*;

use crate::both;
use crate::common::*;

/// The Unix milliseconds in the time part of an id (`g` + UUIDv7 hex).
fn id_ms(id: &str) -> i64 {
    let uuid = uuid::Uuid::parse_str(&id[1..]).unwrap();
    let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
    (secs * 1_000 + u64::from(nanos / 1_000_000)) as i64
}

async fn stamped(store: &TestStore) {
    let clock = manual_clock();
    let t0 = clock.now_ms();
    let ledger = store.open_with_clock(&clock).await;
    let r = room(&ledger, "b").await;
    assert_eq!(r.created_at_ms, t0);
    assert_eq!(id_ms(&r.room_id), t0);
    fund(&ledger, "v", Channel::Web, 1_000).await;
    clock.advance_ms(86_400_000);
    let PurchaseOutcome::Charged(gift, Some(ev)) = ledger
        .purchase(buy("v", &r.room_id, 100, "k1"))
        .await
        .unwrap()
    else {
        panic!("not charged")
    };
    let t1 = t0 + 86_400_000;
    assert_eq!((gift.created_at_ms, ev.committed_at_ms), (t1, t1));
    assert_eq!(id_ms(&gift.gift_id), t1);
    let frame: serde_json::Value = serde_json::from_str(&ev.frame).unwrap();
    assert_eq!(frame["created_at"], "2023-11-15T22:13:20.000Z");
    let key = ledger.idempotency("v", "k1").await.unwrap().unwrap();
    assert_eq!(key.created_at_ms, t1);
    // The clock goes back an hour: commits keep the later time.
    clock.set_ms(t1 - 3_600_000);
    let PurchaseOutcome::Charged(later, _) = ledger
        .purchase(buy("v", &r.room_id, 100, "k2"))
        .await
        .unwrap()
    else {
        panic!("not charged")
    };
    assert_eq!(later.created_at_ms, t1);
    // Reports window by the stamped times.
    let mut day: Vec<_> = ledger
        .gifts_between(t1, t1 + 1, None)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.gift_id)
        .collect();
    day.sort();
    let mut both_gifts = vec![gift.gift_id.clone(), later.gift_id.clone()];
    both_gifts.sort();
    assert_eq!(day, both_gifts);
    assert!(ledger.gifts_between(t0, t1, None).await.unwrap().is_empty());
    // ... and by broadcaster.
    let theirs = ledger.gifts_between(t1, t1 + 1, Some("b")).await.unwrap();
    assert_eq!(theirs.len(), 2);
    let others = ledger.gifts_between(t1, t1 + 1, Some("x")).await.unwrap();
    assert!(others.is_empty());
    assert_check(&ledger).await;
}
both!(commits_ids_and_frames_use_the_injected_clock, stamped);
