//! The event outbox: every committed event keeps its seq; the ones not yet
//! published are found again (after a crash) until they are marked.

use applause_core::Channel;
use applause_ledger::*;

use crate::both;
use crate::common::*;

async fn outbox(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 10_000).await;
    let mut gift_ids = Vec::new();
    for i in 0..5 {
        let PurchaseOutcome::Charged(g, _) = ledger
            .purchase(buy("v", &r.room_id, 10, &format!("k{i}")))
            .await
            .unwrap()
        else {
            panic!("not charged")
        };
        gift_ids.push(Some(g.gift_id));
    }
    let far_future = i64::MAX;
    let pending = ledger.unpublished_events(far_future, 100).await.unwrap();
    assert_eq!(
        pending.iter().map(|e| e.envelope.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // Each gift event's row names its gift.
    assert_eq!(
        pending
            .iter()
            .map(|e| e.gift_id.clone())
            .collect::<Vec<_>>(),
        gift_ids
    );
    // Events newer than the cutoff are left to the normal publisher.
    assert!(ledger.unpublished_events(0, 100).await.unwrap().is_empty());
    ledger.mark_published(&r.room_id, 3).await.unwrap();
    let pending = ledger.unpublished_events(far_future, 100).await.unwrap();
    assert_eq!(
        pending.iter().map(|e| e.envelope.seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    // Marks never go past the last event nor backwards.
    ledger.mark_published(&r.room_id, 99).await.unwrap();
    ledger.mark_published(&r.room_id, 1).await.unwrap();
    assert!(ledger
        .unpublished_events(far_future, 100)
        .await
        .unwrap()
        .is_empty());
    let room = ledger.room(&r.room_id).await.unwrap().unwrap();
    assert_eq!((room.last_seq, room.published_seq), (5, 5));
}
both!(outbox_tracks_unpublished_events, outbox);

/// Only `gift` events carry a gift id; an ack of that gift does not.
async fn gift_ids(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 100).await;
    let PurchaseOutcome::Charged(g, _) = ledger
        .purchase(buy("v", &r.room_id, 10, "k"))
        .await
        .unwrap()
    else {
        panic!("not charged")
    };
    let acked = ledger
        .ack(AckCmd {
            gift_id: g.gift_id.clone(),
            broadcaster_id: "b".into(),
            text: "thanks".into(),
        })
        .await
        .unwrap();
    assert!(matches!(acked, AckOutcome::Acked(Some(_))));
    let pending = ledger.unpublished_events(i64::MAX, 100).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|e| e.gift_id.clone())
            .collect::<Vec<_>>(),
        vec![Some(g.gift_id.clone()), None]
    );
}
both!(only_gift_events_carry_a_gift_id, gift_ids);

/// A store from before the outbox named its gifts: opening it adds the
/// column and fills it for the events not yet published.
async fn migration(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 100).await;
    let mut ids = Vec::new();
    for k in ["k1", "k2"] {
        let PurchaseOutcome::Charged(g, _) =
            ledger.purchase(buy("v", &r.room_id, 10, k)).await.unwrap()
        else {
            panic!("not charged")
        };
        ids.push(Some(g.gift_id));
    }
    ledger.mark_published(&r.room_id, 1).await.unwrap();
    drop(ledger);
    // Back to the old shape (version 1): no column, no commit marks, no
    // record of the migrations.
    store
        .raw("ALTER TABLE room_events DROP COLUMN gift_id")
        .await;
    store.raw("DROP TABLE commit_marks").await;
    store
        .raw("DELETE FROM ledger_migrations WHERE version >= 2")
        .await;
    let reopened = store.open().await;
    let pending = reopened.unpublished_events(i64::MAX, 100).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].envelope.seq, 2);
    assert_eq!(pending[0].gift_id, ids[1]);
    // Opened again: the migration is not applied twice.
    drop(reopened);
    let again = store.open().await;
    assert_eq!(
        again.unpublished_events(i64::MAX, 100).await.unwrap()[0].gift_id,
        ids[1]
    );
}
both!(opening_an_old_store_names_the_unpublished_gifts, migration);
