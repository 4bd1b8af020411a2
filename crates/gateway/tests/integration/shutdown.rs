//! Shutdown closes every socket with 1001 and refuses new connections.

use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001() {
    let h = Harness::start().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(h.connect(ROOM, None).await.0);
    }
    h.publish_range(ROOM, 1..=2).await;
    let (got, mut all_got) = tokio::sync::mpsc::channel(3);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let got = got.clone();
            tokio::spawn(async move {
                assert_eq!(c.seqs(2).await, vec![1, 2]);
                got.send(()).await.unwrap();
                c.until_close().await.1
            })
        })
        .collect();
    for _ in 0..3 {
        all_got.recv().await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), h.gw.shutdown())
        .await
        .expect("shutdown finishes");
    for r in readers {
        let closed = r.await.unwrap();
        assert_eq!(
            closed,
            Closed {
                code: 1001,
                reason: "going_away".into()
            }
        );
    }
    assert_eq!(h.gw.connections(), 0);
    assert_eq!(h.refused(h.url(ROOM, None)).await.0, 503);
}

/// On a process's tracker, every task of the gateway — dispatcher, sweeper,
/// each connection's reader and writer — is there, and after shutdown they
/// have all ended, so the owner's wait returns.
#[tokio::test]
async fn every_task_runs_on_the_given_tracker_and_ends_at_shutdown() {
    let tracker = tokio_util::task::TaskTracker::new();
    let process = tokio_util::sync::CancellationToken::new();
    let h = Harness::on(
        applause_gateway::GatewayConfig::default(),
        applause_bus::HistoryBounds::default(),
        applause_gateway::Spawner {
            tracker: tracker.clone(),
            shutdown: process.child_token(),
        },
    )
    .await;
    assert_eq!(tracker.len(), 2, "the dispatcher and the sweeper");
    let mut clients = Vec::new();
    for _ in 0..3 {
        // `connect` returns once the welcome has arrived.
        clients.push(h.connect(ROOM, None).await.0);
    }
    // Each connection: one task reading (it also runs the session) and one writing.
    assert_eq!(tracker.len(), 2 + 3 * 2);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.until_close().await.1 }))
        .collect();
    // The process's token stops the gateway as its own shutdown would.
    process.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .expect("every gateway task ended");
    for r in readers {
        assert_eq!(r.await.unwrap().code, 1001);
    }
    assert_eq!(h.gw.connections(), 0);
}
