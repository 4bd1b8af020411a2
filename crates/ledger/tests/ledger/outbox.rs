//! The event outbox: every committed event keeps its seq; the ones not yet
//! published are found again (after a crash) until they are marked.

use applause_core::Channel;

use crate::both;
use crate::common::*;

async fn outbox(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 10_000).await;
    for i in 0..5 {
        ledger
            .purchase(buy("v", &r.room_id, 10, &format!("k{i}")))
            .await
            .unwrap();
    }
    let far_future = i64::MAX;
    let pending = ledger.unpublished_events(far_future, 100).await.unwrap();
    assert_eq!(
        pending.iter().map(|e| e.envelope.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
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
