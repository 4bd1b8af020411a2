//! The ledger check passes on honest data and catches each kind of damage.

use applause_core::Channel;
use applause_ledger::*;

use crate::both;
use crate::common::*;

async fn catches_damage(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Apple, 10_000).await;
    fund(&ledger, "v", Channel::Web, 55).await;
    for i in 0..10 {
        ledger
            .purchase(buy("v", &r.room_id, 199, &format!("k{i}")))
            .await
            .unwrap();
    }
    let c = assert_check(&ledger).await;
    assert_eq!(c.transactions, 12);
    // Each gift: wallet debits, store, broadcaster, platform — and zero-sum.
    assert!(c.entries >= 12 * 2);

    // A stored balance that no longer matches its entries.
    store
        .raw("UPDATE wallets SET balance_minor = balance_minor + 1 WHERE channel = 'apple'")
        .await;
    let c = ledger.check().await.unwrap();
    assert!(!c.ok());
    assert_eq!(c.mismatched_wallets, vec!["v:apple".to_string()]);
    assert_eq!(c.balance_sum, 1);
    store
        .raw("UPDATE wallets SET balance_minor = balance_minor - 1 WHERE channel = 'apple'")
        .await;
    assert_check(&ledger).await;

    // An entry that unbalances its transaction.
    store.raw("UPDATE entries SET amount_minor = amount_minor + 7 WHERE account = 'platform:revenue' AND entry_id = (SELECT MIN(entry_id) FROM entries WHERE account = 'platform:revenue')").await;
    let c = ledger.check().await.unwrap();
    assert_eq!(c.unbalanced_transactions.len(), 1);
    assert_eq!(c.balance_sum, 7);

    // A gift whose parts miss its price.
    store
        .raw("UPDATE gifts SET platform_minor = platform_minor + 1")
        .await;
    assert_eq!(ledger.check().await.unwrap().bad_splits.len(), 10);
}
both!(check_catches_damage, catches_damage);

async fn summary(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Apple, 1_000).await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    let PurchaseOutcome::Charged(g, _) = ledger
        .purchase(buy("v", &r.room_id, 1_500, "k"))
        .await
        .unwrap()
    else {
        panic!()
    };
    // Web (3%) is drawn first, then apple.
    assert_eq!(g.paid, [500, 0, 1_000]);
    let s = ledger.summary().await.unwrap();
    assert_eq!(s.topups_by_channel, [1_000, 0, 1_000]);
    assert_eq!(s.wallets_outstanding, 500);
    assert_eq!(s.gross_gifts, 1_500);
    assert_eq!(s.gifts, 1);
    assert_eq!(
        s.store_fees_by_channel.iter().sum::<i64>() + s.broadcaster_payable + s.platform_revenue,
        1_500
    );
    assert_eq!(s.store_fees_by_channel, g.split.store_by_channel());
    assert_eq!(s.broadcaster_payable, g.split.broadcaster);
}
both!(summary_adds_up, summary);

/// A batch's writes go to SQLite as one script with its COMMIT: when a
/// statement in the middle of it fails, nothing of the batch stays (the
/// wallet debit written before the failing gift row is rolled back), the
/// callers get the error, and the next batch commits normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_batch_that_fails_midway_leaves_nothing_and_the_next_commits() {
    let store = TestStore::new(Kind::Sqlite).await;
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    fund(&ledger, "w", Channel::Web, 1_000).await;
    store
        .raw(
            "CREATE TRIGGER refuse_w BEFORE INSERT ON gifts WHEN NEW.sender_id = 'w' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .await;
    let failed = ledger.purchase(buy("w", &r.room_id, 300, "k1")).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(ledger.wallet("w").await.unwrap().total(), 1_000);
    assert!(ledger.idempotency("w", "k1").await.unwrap().is_none());
    let ok = ledger
        .purchase(buy("v", &r.room_id, 300, "k1"))
        .await
        .unwrap();
    assert!(matches!(ok, PurchaseOutcome::Charged(..)), "{ok:?}");
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 700);
    store.raw("DROP TRIGGER refuse_w").await;
    assert!(matches!(
        ledger
            .purchase(buy("w", &r.room_id, 300, "k1"))
            .await
            .unwrap(),
        PurchaseOutcome::Charged(..)
    ));
    assert_eq!(ledger.wallet("w").await.unwrap().total(), 700);
    assert_check(&ledger).await;
    drop(ledger);
    store.finish().await;
}
