//! Exactly-once: an update applied twice, in one batch or in many concurrent
//! tasks, and across a generation switch by another process, counts once.

use std::sync::Arc;

use applause_leaderboard::{Leaderboard, MemoryBoards, Window};
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};

use crate::common::{self, owned, top, update, HOUR_MS};

async fn same_update_twice(b: &dyn Leaderboard, t: i64) {
    let gift = update("once-1", "r", "bc", "ann", 250, t);
    let first = b.apply(&gift).await.unwrap();
    let second = b.apply(&gift).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (1, 0));
    assert_eq!((second.applied, second.duplicates), (0, 1));
    // A duplicate inside one batch, too.
    let other = update("once-2", "r", "bc", "bob", 10, t);
    let report = b
        .apply_batch(&[other.clone(), gift.clone(), other])
        .await
        .unwrap();
    assert_eq!((report.applied, report.duplicates), (1, 2));
    for w in Window::ALL {
        assert_eq!(
            top(b, "r", "bc", w, t).await,
            owned(&[("ann", 250), ("bob", 10)])
        );
    }
    assert_eq!(
        common::global(b, Window::All, t).await,
        owned(&[("bc", 260)])
    );
}

#[tokio::test]
async fn the_same_update_applied_twice_counts_once() {
    let (memory, redis) = common::twins().await;
    let t = common::monday_ms() + HOUR_MS;
    same_update_twice(&memory, t).await;
    same_update_twice(&redis, t).await;
    common::delete_prefix(redis.key_prefix()).await;
}

/// 32 tasks each apply the same 200 updates in their own shuffled batches.
async fn concurrent_duplicates(b: Arc<dyn Leaderboard>, t: i64) {
    let updates: Vec<_> = (0..200)
        .map(|i| {
            update(
                &format!("c{i}"),
                &format!("r{}", i % 3),
                &format!("bc{}", i % 2),
                &format!("u{}", i % 17),
                1 + i % 7,
                t + i,
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for seed in 0..32u64 {
        let b = Arc::clone(&b);
        let mut mine = updates.clone();
        mine.shuffle(&mut StdRng::seed_from_u64(seed));
        tasks.push(tokio::spawn(async move {
            let mut applied = 0;
            for chunk in mine.chunks(1 + seed as usize % 40) {
                applied += b.apply_batch(chunk).await.unwrap().applied;
            }
            applied
        }));
    }
    let mut applied = 0;
    for task in tasks {
        applied += task.await.unwrap();
    }
    assert_eq!(applied, 200, "each update is applied by exactly one task");
    let mut model = common::Model::default();
    for u in &updates {
        model.apply(u);
    }
    let rooms: Vec<(String, String)> = (0..6)
        .map(|i| (format!("r{}", i % 3), format!("bc{}", i % 2)))
        .collect();
    assert_eq!(
        common::board_tops(b.as_ref(), &rooms, &[t]).await,
        common::model_tops(&model, &rooms, &[t])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_applications_count_once() {
    let t = common::monday_ms() + HOUR_MS;
    concurrent_duplicates(Arc::new(MemoryBoards::new()), t).await;
    let prefix = common::random_prefix();
    concurrent_duplicates(Arc::new(common::redis_boards(&prefix).await), t).await;
    common::delete_prefix(&prefix).await;
}

/// Two processes share a prefix; one rebuilds. The other's next write and
/// read follow the moved pointer, and its retries stay exactly-once.
#[tokio::test]
async fn writers_follow_a_rebuild_by_another_process() {
    let prefix = common::random_prefix();
    let a = common::redis_boards(&prefix).await;
    let b = common::redis_boards(&prefix).await;
    let t = common::monday_ms() + HOUR_MS;
    a.rebuild(&[], t).await.unwrap();
    b.apply(&update("x1", "r", "bc", "ann", 5, t))
        .await
        .unwrap();
    assert_eq!(
        top(&a, "r", "bc", Window::Live, t).await,
        owned(&[("ann", 5)])
    );
    let old = b.generation();
    // `a` rebuilds from a ledger that has x1; `b` still holds the old pointer.
    a.rebuild(&[update("x1", "r", "bc", "ann", 5, t)], t)
        .await
        .unwrap();
    assert_eq!(b.generation(), old);
    let report = b
        .apply_batch(&[
            update("x1", "r", "bc", "ann", 5, t),
            update("x2", "r", "bc", "bob", 7, t),
        ])
        .await
        .unwrap();
    assert_eq!(b.generation(), a.generation());
    assert_eq!((report.applied, report.duplicates), (1, 1));
    for boards in [&a, &b] {
        assert_eq!(
            top(boards, "r", "bc", Window::Live, t).await,
            owned(&[("bob", 7), ("ann", 5)])
        );
    }
    // Only the current generation (and the pointer) is left under the prefix.
    let generation_prefix = format!("{prefix}:{}:", a.generation());
    for key in common::keys_under(&prefix).await {
        assert!(
            key.starts_with(&generation_prefix) || key == format!("{prefix}:gen"),
            "stray key {key}"
        );
    }
    common::delete_prefix(&prefix).await;
}
