//! Rebuild: Redis loses the test's keys, the loss is detected without an
//! operator, and a rebuild from the "ledger" restores exact boards.

use applause_leaderboard::{BoardUpdate, Leaderboard};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::common::{self, update, DAY_MS, HOUR_MS};

/// Random gifts and refunds over ten days around a week boundary.
pub fn random_ledger(seed: u64, n: usize, base: i64) -> (Vec<BoardUpdate>, Vec<(String, String)>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let rooms: Vec<(String, String)> = (0..8)
        .map(|i| (format!("room{i}"), format!("bc{}", i % 3)))
        .collect();
    let mut updates: Vec<BoardUpdate> = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 && rng.random_ratio(1, 10) {
            let gift = updates[rng.random_range(0..updates.len())].clone();
            if gift.amount_minor > 0 && !gift.update_id.starts_with("refund:") {
                let mut refund = gift.clone();
                refund.update_id = format!("refund:{}", gift.update_id);
                refund.amount_minor = -gift.amount_minor;
                updates.push(refund);
                continue;
            }
        }
        let (room, bc) = &rooms[rng.random_range(0..rooms.len())];
        let sender = format!("user{}", rng.random_range(0..40));
        let at = base - 3 * DAY_MS + rng.random_range(0..10 * DAY_MS);
        updates.push(update(
            &format!("gift-{seed}-{i}"),
            room,
            bc,
            &sender,
            [1, 99, 100, 499, 1999, 10_000][rng.random_range(0..6)],
            at,
        ));
    }
    (updates, rooms)
}

pub fn read_times(base: i64) -> Vec<i64> {
    (-3..7).map(|d| base + d * DAY_MS + 12 * HOUR_MS).collect()
}

#[tokio::test]
async fn a_lost_redis_is_detected_and_rebuilt_exactly() {
    let prefix = common::random_prefix();
    let boards = common::redis_boards(&prefix).await;
    let base = common::monday_ms();
    let (ledger, rooms) = random_ledger(7, 3_000, base);
    let nows = read_times(base);
    let mut model = common::Model::default();
    for u in &ledger {
        model.apply(u);
    }
    let expected = common::model_tops(&model, &rooms, &nows);

    assert!(boards.needs_rebuild().await.unwrap());
    boards.rebuild(&[], base).await.unwrap();
    for chunk in ledger.chunks(250) {
        boards.apply_batch(chunk).await.unwrap();
    }
    assert!(!boards.needs_rebuild().await.unwrap());
    common::assert_same_tops(
        &common::board_tops(&boards, &rooms, &nows).await,
        &expected,
        "redis",
    );

    // Redis loses everything of ours (not FLUSHDB: the server is shared).
    assert!(common::delete_prefix(&prefix).await > 0);
    assert!(
        boards.needs_rebuild().await.unwrap(),
        "the loss is detected"
    );
    // Meanwhile writes go on into the dead generation; the rebuild replaces it.
    boards.apply_batch(&ledger[..10]).await.unwrap();

    // `now` is the real clock: every board of the (future) ledger is alive.
    let report = boards.rebuild(&ledger, common::now_ms()).await.unwrap();
    assert_eq!(report.updates, ledger.len());
    let unique: std::collections::HashSet<&str> =
        ledger.iter().map(|u| u.update_id.as_str()).collect();
    assert_eq!(report.applied as usize, unique.len());
    assert_eq!((report.applied + report.duplicates) as usize, ledger.len());
    assert!(report.removed > 0, "the stale generation was swept");
    assert!(!boards.needs_rebuild().await.unwrap());
    common::assert_same_tops(
        &common::board_tops(&boards, &rooms, &nows).await,
        &expected,
        "redis",
    );
    // Names came back too.
    let first = boards
        .top("room0", "bc0", applause_leaderboard::Window::All, 1, base)
        .await
        .unwrap();
    assert_eq!(
        first[0].name.as_deref(),
        model.names.get(&first[0].user_id).map(String::as_str)
    );
    // Re-applying the ledger after a rebuild changes nothing: recent updates
    // are marked by the rebuild, the rest are the integrator's tail replay.
    let recent: Vec<_> = ledger.iter().filter(|u| u.at_ms >= base).cloned().collect();
    let replay = boards.apply_batch(&recent).await.unwrap();
    assert_eq!(replay.applied, 0, "{replay:?}");

    let memory = applause_leaderboard::MemoryBoards::new();
    memory.rebuild(&ledger, common::now_ms()).await.unwrap();
    common::assert_same_tops(
        &common::board_tops(&memory, &rooms, &nows).await,
        &expected,
        "memory",
    );
    let users: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    assert_eq!(
        common::snapshot(&memory, &rooms, &users, &nows[..3]).await,
        common::snapshot(&boards, &rooms, &users, &nows[..3]).await
    );
    common::delete_prefix(&prefix).await;
}

#[tokio::test]
async fn a_second_concurrent_rebuild_is_refused() {
    let prefix = common::random_prefix();
    let boards = common::redis_boards(&prefix).await;
    let mut con = common::raw().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:rebuild-lock"))
        .arg("someone-else")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(matches!(
        boards.rebuild(&[], common::monday_ms()).await,
        Err(applause_leaderboard::BoardError::RebuildInProgress)
    ));
    common::delete_prefix(&prefix).await;
}

/// A rebuild's sweep deletes only its own generations' keys, not those of a
/// deployment whose prefix merely starts with ours.
#[tokio::test]
async fn the_sweep_spares_a_nested_prefix() {
    let prefix = common::random_prefix();
    let nested = format!("{prefix}:other");
    let ours = common::redis_boards(&prefix).await;
    let theirs = common::redis_boards(&nested).await;
    let t = common::monday_ms() + HOUR_MS;
    theirs
        .rebuild(&[update("n1", "r", "bc", "ann", 5, t)], t)
        .await
        .unwrap();
    let before = common::keys_under(&nested).await.len();
    assert!(before > 0);
    ours.rebuild(&[update("o1", "r", "bc", "bob", 7, t)], t)
        .await
        .unwrap();
    ours.rebuild(&[update("o1", "r", "bc", "bob", 7, t)], t)
        .await
        .unwrap();
    assert_eq!(common::keys_under(&nested).await.len(), before);
    assert_eq!(
        common::top(&theirs, "r", "bc", applause_leaderboard::Window::Live, t).await,
        common::owned(&[("ann", 5)])
    );
    common::delete_prefix(&prefix).await;
}
