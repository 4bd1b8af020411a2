//! No double spend: N concurrent purchases of x from a wallet holding B
//! succeed exactly ⌊B/x⌋ times, on one node and across two nodes.

use std::sync::Arc;

use applause_core::Channel;
use applause_ledger::*;
use rand::{Rng, SeedableRng};

use crate::both;
use crate::common::*;

async fn run(ledgers: &[Ledger], seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let x: i64 = rng.random_range(1..500);
    let n: usize = rng.random_range(50..120);
    let b: i64 = rng.random_range(0..(x * n as i64));
    let viewer = format!("v{seed}-{}", uuid_like());
    let r = room(&ledgers[0], "b").await;
    // Spread the balance over channels so the draw order matters too.
    let web = b / 3;
    let apple = b - web;
    if web > 0 {
        fund(&ledgers[0], &viewer, Channel::Web, web).await;
    }
    if apple > 0 {
        fund(&ledgers[0], &viewer, Channel::Apple, apple).await;
    }
    let ledgers: Arc<Vec<Ledger>> = Arc::new(ledgers.to_vec());
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let ledgers = ledgers.clone();
            let cmd = buy(&viewer, &r.room_id, x, &format!("k{i}"));
            tokio::spawn(async move { ledgers[i % ledgers.len()].purchase(cmd).await.unwrap() })
        })
        .collect();
    let mut charged = 0i64;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            PurchaseOutcome::Charged(..) => charged += 1,
            PurchaseOutcome::Rejected(applause_core::ErrorCode::InsufficientFunds) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(charged, b / x, "seed {seed}: B={b} x={x} n={n}");
    assert_eq!(charged + refused, n as i64);
    let w = ledgers[0].wallet(&viewer).await.unwrap();
    assert_eq!(w.total(), b - (b / x) * x, "seed {seed}");
    assert_check(&ledgers[0]).await;
}

async fn exactly_floor(store: &TestStore) {
    let ledger = store.open().await;
    for seed in 0..8 {
        run(std::slice::from_ref(&ledger), seed).await;
    }
}
both!(exactly_floor_b_over_x_succeed, exactly_floor);

/// Two committers on one database (two gift-service nodes): PostgreSQL only,
/// SQLite is single-process by design.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_overdraw_postgres() {
    let store = TestStore::new(Kind::Postgres).await;
    let a = store.open().await;
    let b = store.open().await;
    for seed in 100..106 {
        run(&[a.clone(), b.clone()], seed).await;
    }
    store.finish().await;
}

/// The same idempotency key sent to two nodes at once charges once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_same_key_charge_once_postgres() {
    let store = TestStore::new(Kind::Postgres).await;
    let a = store.open().await;
    let b = store.open().await;
    let r = room(&a, "b").await;
    fund(&a, "v", Channel::Google, 100_000).await;
    for round in 0..20 {
        let key = format!("same-{round}");
        let (x, y) = tokio::join!(
            a.purchase(buy("v", &r.room_id, 100, &key)),
            b.purchase(buy("v", &r.room_id, 100, &key))
        );
        let outs = [x.unwrap(), y.unwrap()];
        let charged = outs
            .iter()
            .filter(|o| matches!(o, PurchaseOutcome::Charged(..)))
            .count();
        let replays = outs
            .iter()
            .filter(|o| matches!(o, PurchaseOutcome::Replay(StoredOutcome::Gift(_))))
            .count();
        assert_eq!((charged, replays), (1, 1), "round {round}: {outs:?}");
    }
    assert_eq!(a.wallet("v").await.unwrap().total(), 100_000 - 20 * 100);
    assert_check(&a).await;
    store.finish().await;
}

/// Shutdown stops the committer of every clone: each purchase queued before
/// it is committed and answered, the ones after it are refused with
/// `unavailable`, and nothing is half written. On a current-thread runtime
/// one yield lets every spawned purchase reach the committer's queue before
/// the stop, so "queued before" is exact here.
async fn shutdown_commits_what_is_queued(store: &TestStore) {
    let ledger = store.open().await;
    let viewer = format!("v-{}", uuid_like());
    let r = room(&ledger, "b").await;
    fund(&ledger, &viewer, Channel::Web, 10_000).await;
    let queued: Vec<_> = (0..40)
        .map(|i| {
            let l = ledger.clone();
            let cmd = buy(&viewer, &r.room_id, 10, &format!("k{i}"));
            tokio::spawn(async move { l.purchase(cmd).await })
        })
        .collect();
    tokio::task::yield_now().await;
    ledger.shutdown().await;
    for t in queued {
        match t.await.unwrap() {
            Ok(PurchaseOutcome::Charged(..)) => {}
            other => panic!("a purchase queued before shutdown got {other:?}"),
        }
    }
    let late = ledger
        .purchase(buy(&viewer, &r.room_id, 10, "late"))
        .await
        .expect_err("the committer has stopped");
    assert!(matches!(late, LedgerError::Unavailable(_)), "{late:?}");
    // A second shutdown returns at once; reads still work.
    ledger.shutdown().await;
    assert_eq!(ledger.wallet(&viewer).await.unwrap().total(), 10_000 - 400);
    assert_check(&ledger).await;
}

mod shutdown_commits_queued_and_refuses_later {
    use super::*;
    #[tokio::test]
    async fn sqlite() {
        let store = TestStore::new(Kind::Sqlite).await;
        shutdown_commits_what_is_queued(&store).await;
        store.finish().await;
    }
    #[tokio::test]
    async fn postgres() {
        let store = TestStore::new(Kind::Postgres).await;
        shutdown_commits_what_is_queued(&store).await;
        store.finish().await;
    }
}
