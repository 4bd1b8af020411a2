//! Metrics: lag is observed per applied update (not per duplicate), and
//! rebuilds are counted, on a registry the caller passes.

use applause_leaderboard::{Leaderboard, MemoryBoards, Metrics};

use crate::common::{self, update, HOUR_MS};

async fn exercise(b: &dyn Leaderboard, metrics: &Metrics) {
    let t = common::now_ms() - HOUR_MS;
    b.rebuild(&[], t).await.unwrap();
    let gift = update("m1", "r", "bc", "ann", 5, t);
    b.apply(&gift).await.unwrap();
    b.apply(&gift).await.unwrap();
    assert_eq!(metrics.rebuilds.get(), 1);
    assert_eq!(metrics.update_lag.get_sample_count(), 1);
    // Committed an hour ago: the lag says so.
    assert!(metrics.update_lag.get_sample_sum() >= 3_599.0);
}

#[tokio::test]
async fn lag_and_rebuilds_are_recorded() {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    exercise(&MemoryBoards::new().with_metrics(metrics.clone()), &metrics).await;
    assert!(
        Metrics::register(&registry).is_err(),
        "registering twice on one registry is refused"
    );

    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).unwrap();
    let prefix = common::random_prefix();
    let redis = common::redis_boards(&prefix)
        .await
        .with_metrics(metrics.clone());
    exercise(&redis, &metrics).await;
    assert_eq!(metrics.redis_errors.get(), 0);
    let names: Vec<String> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert!(
        names.contains(&"applause_leaderboard_update_lag_seconds".to_owned()),
        "{names:?}"
    );
    common::delete_prefix(&prefix).await;
}
