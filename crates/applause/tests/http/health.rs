//! Operator endpoints: liveness, readiness and the Prometheus metrics.

use crate::common::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let s = Server::start(&[]).await;
    let r = s.get("/healthz", None).await;
    r.expect_status(200);

    let r = s.get("/readyz", None).await;
    r.expect_status(200);
    assert_eq!(r.json["ready"], true, "{}", r.body);
    assert_eq!(r.json["ledger"], true, "{}", r.body);
    assert_eq!(r.json["bus"], true, "{}", r.body);

    // One purchase so that the purchase and commit series have samples.
    let room = s.open_room("star-h").await;
    s.top_up("fan-h", "web", "5.00").await;
    s.gift(&s.viewer("fan-h"), &room, "rose", 1)
        .await
        .expect_status(201);

    let r = s.get("/metrics", None).await;
    r.expect_status(200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    for name in ["applause_purchases_total", "applause_ledger_commit_seconds"] {
        assert!(r.body.contains(name), "/metrics lacks {name}:\n{}", r.body);
    }
    assert!(
        r.body
            .lines()
            .any(|l| l.starts_with("applause_purchases_total{") && l.contains("created")),
        "the created purchase is counted:\n{}",
        r.body
    );
    s.shutdown().await;
}
