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
