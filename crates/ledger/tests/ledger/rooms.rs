//! Rooms: gifts only into live rooms, never into one's own, acks once.

use applause_core::{Channel, ErrorCode};
use applause_ledger::*;

use crate::both;
use crate::common::*;

async fn lifecycle(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    assert!(r.live);
    fund(&ledger, "v", Channel::Web, 1_000).await;
    fund(&ledger, "b", Channel::Web, 1_000).await;
    let own = ledger
        .purchase(buy("b", &r.room_id, 100, "k"))
        .await
        .unwrap();
    assert_eq!(own, PurchaseOutcome::Rejected(ErrorCode::SelfGift));
    let missing = ledger
        .purchase(buy("v", "r-nope", 100, "k0"))
        .await
        .unwrap();
    assert_eq!(missing, PurchaseOutcome::Rejected(ErrorCode::RoomNotFound));
    let PurchaseOutcome::Charged(g, Some(ev)) = ledger
        .purchase(buy("v", &r.room_id, 100, "k1"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(ev.seq, 1);
    assert!(ev
        .broadcaster_frame
        .as_deref()
        .unwrap()
        .contains("\"split\""));
    assert!(!ev.frame.contains("\"split\""));

    // Acks: only the room's broadcaster, only once.
    let ack = |who: &str| AckCmd {
        gift_id: g.gift_id.clone(),
        broadcaster_id: who.into(),
        text: "thanks!".into(),
    };
    assert_eq!(ledger.ack(ack("x")).await.unwrap(), AckOutcome::NotYours);
    let AckOutcome::Acked(Some(ack_ev)) = ledger.ack(ack("b")).await.unwrap() else {
        panic!()
    };
    assert_eq!(ack_ev.seq, 2);
    assert!(ack_ev.frame.contains("\"type\":\"ack\""));
    assert_eq!(
        ledger.ack(ack("b")).await.unwrap(),
        AckOutcome::AlreadyAcked
    );
    let missing_ack = AckCmd {
        gift_id: "gnope".into(),
        broadcaster_id: "b".into(),
        text: "x".into(),
    };
    assert_eq!(ledger.ack(missing_ack).await.unwrap(), AckOutcome::NotFound);
    assert_eq!(
        ledger
            .gift(&g.gift_id)
            .await
            .unwrap()
            .unwrap()
            .ack_text
            .as_deref(),
        Some("thanks!")
    );

    assert_eq!(
        ledger.end_room(&r.room_id, "x").await.unwrap(),
        EndRoomOutcome::NotYours
    );
    let EndRoomOutcome::Ended(ended, Some(end_ev)) =
        ledger.end_room(&r.room_id, "b").await.unwrap()
    else {
        panic!()
    };
    assert!(!ended.live && end_ev.ends_room && end_ev.seq == 3);
    assert!(matches!(
        ledger.end_room(&r.room_id, "b").await.unwrap(),
        EndRoomOutcome::AlreadyEnded(_)
    ));
    let late = ledger
        .purchase(buy("v", &r.room_id, 100, "k2"))
        .await
        .unwrap();
    assert_eq!(late, PurchaseOutcome::Rejected(ErrorCode::RoomNotLive));
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 900);
    assert_check(&ledger).await;
}
both!(room_lifecycle, lifecycle);
