//! The Redis boards on a real three-master Redis Cluster: an update's parts
//! land on the masters of their own slots, and a lost keyspace is detected
//! and rebuilt exactly, the sweep of the old generations reaching every
//! master.

use applause_leaderboard::Leaderboard;

use crate::common;
use crate::rebuild::{random_ledger, read_times};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_spread_over_the_masters_and_rebuild_exactly_after_a_loss() {
    let prefix = common::random_prefix();
    let boards = common::cluster_boards(&prefix).await;
    let base = common::monday_ms();
    let (ledger, rooms) = random_ledger(11, 1_500, base);
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
    common::assert_same_tops(
        &common::board_tops(&boards, &rooms, &nows).await,
        &expected,
        "cluster",
    );
    let per_node = common::cluster_keys_under(&prefix).await;
    let holding = per_node.iter().filter(|keys| !keys.is_empty()).count();
    assert!(holding >= 2, "keys on {holding} masters only");

    // The cluster loses every key of ours.
    assert!(common::cluster_delete_prefix(&prefix).await > 0);
    assert!(
        boards.needs_rebuild().await.unwrap(),
        "the loss is detected"
    );
    // Writes into the dead generation meanwhile, on every master.
    boards.apply_batch(&ledger[..200]).await.unwrap();
    let report = boards.rebuild(&ledger, common::now_ms()).await.unwrap();
    assert!(report.removed > 0, "the stale generation was swept");
    let live = format!("{prefix}:{}:", report.generation);
    for (node, keys) in common::cluster_keys_under(&prefix).await.iter().enumerate() {
        let stale: Vec<&String> = keys
            .iter()
            .filter(|k| !k.starts_with(&live) && **k != format!("{prefix}:gen"))
            .collect();
        assert!(stale.is_empty(), "master {node} kept {stale:?}");
    }
    common::assert_same_tops(
        &common::board_tops(&boards, &rooms, &nows).await,
        &expected,
        "cluster after rebuild",
    );
    // A second process on the same cluster reads the same boards and counts
    // a replayed update once.
    let other = common::cluster_boards(&prefix).await;
    let recent: Vec<_> = ledger.iter().filter(|u| u.at_ms >= base).cloned().collect();
    assert_eq!(other.apply_batch(&recent).await.unwrap().applied, 0);
    common::assert_same_tops(
        &common::board_tops(&other, &rooms, &nows).await,
        &expected,
        "second process",
    );
    common::cluster_delete_prefix(&prefix).await;
}
