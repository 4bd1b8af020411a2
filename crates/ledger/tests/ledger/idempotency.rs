//! Idempotency keys and receipts: replays charge nothing, other bodies are
//! refused, refusals replay as refusals, and all of it survives a restart.

use std::sync::Arc;

use applause_core::{Channel, ErrorCode};
use applause_ledger::*;

use crate::both;
use crate::common::*;

async fn replays(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    let first = ledger
        .purchase(buy("v", &r.room_id, 300, "k1"))
        .await
        .unwrap();
    let PurchaseOutcome::Charged(gift, _) = first else {
        panic!("{first:?}")
    };
    // Same key, same body: the stored gift.
    let again = ledger
        .purchase(buy("v", &r.room_id, 300, "k1"))
        .await
        .unwrap();
    assert_eq!(
        again,
        PurchaseOutcome::Replay(StoredOutcome::Gift(gift.gift_id.clone()))
    );
    // Same key, other body.
    let other = ledger
        .purchase(buy("v", &r.room_id, 200, "k1"))
        .await
        .unwrap();
    assert_eq!(other, PurchaseOutcome::KeyReused);
    // 100 concurrent replays charge nothing more.
    let ledger2 = Arc::new(ledger.clone());
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let l = ledger2.clone();
            let cmd = buy("v", &r.room_id, 300, "k1");
            tokio::spawn(async move { l.purchase(cmd).await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            PurchaseOutcome::Replay(StoredOutcome::Gift(gift.gift_id.clone()))
        );
    }
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 700);
    // An insufficient-funds refusal is remembered and replayed as a refusal,
    // even after the wallet is funded.
    let poor = ledger
        .purchase(buy("v", &r.room_id, 5_000, "k2"))
        .await
        .unwrap();
    assert_eq!(
        poor,
        PurchaseOutcome::Rejected(ErrorCode::InsufficientFunds)
    );
    fund(&ledger, "v", Channel::Apple, 10_000).await;
    let poor_again = ledger
        .purchase(buy("v", &r.room_id, 5_000, "k2"))
        .await
        .unwrap();
    assert_eq!(
        poor_again,
        PurchaseOutcome::Replay(StoredOutcome::Rejected(ErrorCode::InsufficientFunds))
    );
    // Keys belong to their user: another user's identical key is a new purchase.
    fund(&ledger, "w", Channel::Web, 1_000).await;
    let theirs = ledger
        .purchase(buy("w", &r.room_id, 300, "k1"))
        .await
        .unwrap();
    assert!(matches!(theirs, PurchaseOutcome::Charged(..)));
    drop(ledger);
    drop(ledger2);

    // After a restart the records are still there.
    let reopened = store.open().await;
    let stored = reopened.idempotency("v", "k1").await.unwrap().unwrap();
    assert_eq!(stored.outcome, StoredOutcome::Gift(gift.gift_id.clone()));
    let after = reopened
        .purchase(buy("v", &r.room_id, 300, "k1"))
        .await
        .unwrap();
    assert_eq!(
        after,
        PurchaseOutcome::Replay(StoredOutcome::Gift(gift.gift_id.clone()))
    );
    let g = reopened.gift(&gift.gift_id).await.unwrap().unwrap();
    assert_eq!(&g, gift.as_ref());
    assert_check(&reopened).await;
}
both!(replays_charge_once_and_survive_restart, replays);

async fn receipts(store: &TestStore) {
    let ledger = store.open().await;
    let cmd = TopUpCmd {
        user_id: "v".into(),
        channel: Channel::Google,
        amount_minor: 999,
        receipt_id: "rcpt-1".into(),
    };
    assert!(matches!(
        ledger.top_up(cmd.clone()).await.unwrap(),
        TopUpOutcome::Credited(_)
    ));
    assert!(matches!(
        ledger.top_up(cmd.clone()).await.unwrap(),
        TopUpOutcome::Replay(_)
    ));
    let other = TopUpCmd {
        amount_minor: 1_000,
        ..cmd.clone()
    };
    assert_eq!(ledger.top_up(other).await.unwrap(), TopUpOutcome::KeyReused);
    let w = ledger.wallet("v").await.unwrap();
    assert_eq!(w.by_channel, [0, 999, 0]);
    assert_check(&ledger).await;
}
both!(receipts_credit_once, receipts);

async fn sweep(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    ledger
        .purchase(buy("v", &r.room_id, 100, "old"))
        .await
        .unwrap();
    assert_eq!(ledger.sweep_idempotency(0).await.unwrap(), 0);
    let removed = ledger.sweep_idempotency(i64::MAX).await.unwrap();
    assert_eq!(removed, 1);
    assert!(ledger.idempotency("v", "old").await.unwrap().is_none());
    assert_eq!(ledger.sweep_idempotency(i64::MAX).await.unwrap(), 0);
    // A forgotten key is a new purchase again.
    let again = ledger
        .purchase(buy("v", &r.room_id, 100, "old"))
        .await
        .unwrap();
    assert!(matches!(again, PurchaseOutcome::Charged(..)));
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 800);
    assert_check(&ledger).await;
}
both!(sweeping_forgets_only_old_keys, sweep);

/// Keys are forgotten by their stamped time: with a manual clock, a sweep
/// at the retention cutoff keeps the key made at it and forgets older ones.
async fn sweep_by_clock(store: &TestStore) {
    let clock = manual_clock();
    let ledger = store.open_with_clock(&clock).await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    let t0 = applause_core::Clock::now_ms(&*clock);
    ledger
        .purchase(buy("v", &r.room_id, 100, "k0"))
        .await
        .unwrap();
    clock.advance_ms(1_000);
    ledger
        .purchase(buy("v", &r.room_id, 100, "k1"))
        .await
        .unwrap();
    assert_eq!(ledger.sweep_idempotency(t0).await.unwrap(), 0);
    assert_eq!(ledger.sweep_idempotency(t0 + 1_000).await.unwrap(), 1);
    assert!(ledger.idempotency("v", "k0").await.unwrap().is_none());
    assert!(ledger.idempotency("v", "k1").await.unwrap().is_some());
}
both!(sweeping_uses_the_stamped_times, sweep_by_clock);

/// Two nodes sweeping at once forget each record once.
async fn concurrent_sweeps(store: &TestStore) {
    let a = store.open().await;
    let b = store.open().await;
    let r = room(&a, "b").await;
    fund(&a, "v", Channel::Web, 10_000).await;
    for i in 0..30 {
        a.purchase(buy("v", &r.room_id, 10, &format!("k{i}")))
            .await
            .unwrap();
    }
    let (x, y) = tokio::join!(a.sweep_idempotency(i64::MAX), b.sweep_idempotency(i64::MAX));
    assert_eq!(x.unwrap() + y.unwrap(), 30);
    assert!(a.idempotency("v", "k7").await.unwrap().is_none());
}
both!(concurrent_sweeps_forget_each_key_once, concurrent_sweeps);

/// An SQLite store from before migration 4 (idempotency records in a
/// `WITHOUT ROWID` table keyed by user and key): opening it moves the
/// records into the rowid table with its key and time indexes, and every
/// key answers as before — a replay, a reused key, a remembered refusal —
/// while new keys charge and old ones are swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_store_keeps_its_keys_through_the_idempotency_migration() {
    let store = TestStore::new(Kind::Sqlite).await;
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    let PurchaseOutcome::Charged(gift, _) = ledger
        .purchase(buy("v", &r.room_id, 300, "k1"))
        .await
        .unwrap()
    else {
        panic!("not charged")
    };
    let refused = ledger
        .purchase(buy("v", &r.room_id, 5_000, "k2"))
        .await
        .unwrap();
    assert_eq!(
        refused,
        PurchaseOutcome::Rejected(ErrorCode::InsufficientFunds)
    );
    drop(ledger);
    // Back to the shape of version 3.
    store
        .raw(
            "CREATE TABLE idempotency_old (
                 user_id TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL,
                 gift_id TEXT, error_code TEXT, created_at_ms INTEGER NOT NULL,
                 PRIMARY KEY (user_id, key)
             ) WITHOUT ROWID;
             INSERT INTO idempotency_old SELECT user_id, key, request_hash, gift_id, error_code, created_at_ms
                 FROM idempotency;
             DROP TABLE idempotency;
             ALTER TABLE idempotency_old RENAME TO idempotency;
             DELETE FROM ledger_migrations WHERE version >= 4;",
        )
        .await;
    let ledger = store.open().await;
    let pool = sqlx::SqlitePool::connect(&store.url).await.unwrap();
    let schema: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_schema WHERE tbl_name = 'idempotency' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["idempotency", "idempotency_by_time", "idempotency_key"]
    );
    assert!(!schema[0].1.contains("WITHOUT ROWID"), "{}", schema[0].1);
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT gift_id FROM idempotency WHERE (user_id, key) IN (VALUES ('v', 'k1'))",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|p| p.3.contains("idempotency_key")),
        "{plan:?}"
    );
    pool.close().await;
    assert_eq!(
        ledger
            .purchase(buy("v", &r.room_id, 300, "k1"))
            .await
            .unwrap(),
        PurchaseOutcome::Replay(StoredOutcome::Gift(gift.gift_id.clone()))
    );
    assert_eq!(
        ledger
            .purchase(buy("v", &r.room_id, 200, "k1"))
            .await
            .unwrap(),
        PurchaseOutcome::KeyReused
    );
    assert_eq!(
        ledger
            .purchase(buy("v", &r.room_id, 5_000, "k2"))
            .await
            .unwrap(),
        PurchaseOutcome::Replay(StoredOutcome::Rejected(ErrorCode::InsufficientFunds))
    );
    assert!(matches!(
        ledger
            .purchase(buy("v", &r.room_id, 100, "k3"))
            .await
            .unwrap(),
        PurchaseOutcome::Charged(..)
    ));
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 600);
    assert_eq!(ledger.sweep_idempotency(i64::MAX).await.unwrap(), 3);
    assert!(ledger.idempotency("v", "k1").await.unwrap().is_none());
    assert_check(&ledger).await;
    drop(ledger);
    store.finish().await;
}

/// The expiry sweep reads old records by their time, through an index, on
/// either store (it used to scan the whole table on PostgreSQL).
async fn sweep_index(store: &TestStore) {
    let ledger = store.open().await;
    let sql = match store.kind {
        Kind::Sqlite => {
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' \
                         AND name = 'idempotency_by_time' AND tbl_name = 'idempotency'"
        }
        Kind::Postgres => {
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'idempotency_by_time' \
                           AND tablename = 'idempotency' AND indexdef LIKE '%(created_at_ms)%'"
        }
    };
    let found: i64 = match store.kind {
        Kind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&store.url).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(&store.url).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    };
    assert_eq!(found, 1);
    drop(ledger);
}
both!(the_expiry_sweep_has_a_time_index, sweep_index);
