//! Embedded fan-out: 500 viewers in one room and concurrent purchases by
//! several senders; every viewer gets every gift exactly once, in strictly
//! consecutive `seq` order, and only the broadcaster sees the split.

use std::time::Duration;

use applause_core::Role;
use futures_util::StreamExt;
use serde_json::Value;

use crate::common::*;

const VIEWERS: usize = 500;
const SENDERS: usize = 6;
const GIFTS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_gets_every_gift_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::serve(dir.path(), &[]).await;
    let api = node.api();
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    let senders: Vec<String> = (0..SENDERS).map(|i| format!("fan{i}")).collect();
    for s in &senders {
        api.top_up(s, "500.00").await;
    }

    let viewers: Vec<Viewer> = futures_util::stream::iter(0..VIEWERS)
        .map(|i| {
            let (base, room) = (node.base.clone(), room.clone());
            async move {
                // Some viewers watch anonymously, the others signed in.
                let tok = (i % 2 == 0).then(|| token(&format!("viewer{i}"), Role::Viewer));
                Viewer::connect(&base, &room, tok.as_deref()).await
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let broadcaster = Viewer::connect(&node.base, &room, Some(&star)).await;

    let readers: Vec<_> = viewers
        .into_iter()
        .chain(std::iter::once(broadcaster))
        .map(|mut v| {
            tokio::spawn(async move {
                let frames = v
                    .read_until(Duration::from_secs(60), |f| gift_count(f) >= GIFTS)
                    .await;
                // Anything arriving after the last gift must not be a gift.
                let late = v.drain(Duration::from_millis(300)).await;
                (v.welcome_seq(), frames, late)
            })
        })
        .collect();

    let buys: Vec<_> = (0..GIFTS)
        .map(|i| {
            let api = api.clone();
            let room = room.clone();
            let tok = token(&senders[i % SENDERS], Role::Viewer);
            let sticker = ["rose", "heart", "rose"][i % 3];
            tokio::spawn(async move { api.buy(&tok, &room, &format!("buy-{i}"), sticker).await })
        })
        .collect();
    let mut bodies: Vec<Value> = Vec::new();
    for b in buys {
        bodies.push(b.await.unwrap());
    }
    let mut seqs: Vec<u64> = bodies.iter().map(|b| b["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), GIFTS, "every purchase has a seq of its own");

    let n = readers.len();
    for (i, r) in readers.into_iter().enumerate() {
        let (welcome, mut frames, late) = r.await.unwrap();
        let who = if i == n - 1 {
            "broadcaster".to_owned()
        } else {
            format!("viewer {i}")
        };
        assert_eq!(
            gift_count(&late),
            0,
            "{who}: gifts after the last one: {late:?}"
        );
        frames.extend(late);
        assert_consecutive(&who, &frames, welcome);
        assert_all_gifts_once(&who, &frames, &bodies);
        for f in frames.iter().filter(|f| f["type"] == "gift") {
            if i == n - 1 {
                let body = bodies
                    .iter()
                    .find(|b| b["gift_id"] == f["gift_id"])
                    .unwrap();
                assert_eq!(f["split"], body["split"], "{who}: split of {f}");
            } else {
                assert!(
                    f.get("split").is_none(),
                    "{who}: a viewer sees the split: {f}"
                );
            }
        }
    }
}

/// After a restart the in-process bus has no record of the room. A viewer who
/// connects then is welcomed at the room's real `seq` (the ledger's published
/// position), and the next gift follows it directly: no resync, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_new_viewer_starts_at_the_rooms_seq() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::serve(dir.path(), &[]).await;
    let api = node.api();
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    api.top_up("fan0", "50.00").await;
    let fan = token("fan0", Role::Viewer);
    let mut v = Viewer::connect(&node.base, &room, None).await;
    for i in 0..3 {
        api.buy(&fan, &room, &format!("before-{i}"), "rose").await;
    }
    let mut frames = v
        .read_until(Duration::from_secs(10), |f| gift_count(f) >= 3)
        .await;
    // Whatever else the room sent belongs to its seq too: its live top 10 is
    // pushed at most once a second, so after 2.5 s of quiet nothing follows.
    frames.extend(v.drain(Duration::from_millis(2_500)).await);
    let last = assert_consecutive("before the restart", &frames, v.welcome_seq());
    v.close().await;
    drop(node);

    let node = Node::serve(dir.path(), &[]).await;
    let api = node.api();
    let mut v = Viewer::connect(&node.base, &room, None).await;
    assert_eq!(v.welcome_seq(), last, "the welcome carries the room's seq");
    let after = api.buy(&fan, &room, "after", "rose").await;
    let mut frames = v
        .read_until(Duration::from_secs(10), |f| gift_count(f) >= 1)
        .await;
    frames.extend(v.drain(Duration::from_millis(300)).await);
    assert!(
        !frames.iter().any(|f| f["type"] == "resync_required"),
        "{frames:?}"
    );
    assert_consecutive("after the restart", &frames, last);
    assert_eq!(
        gift_ids(&frames),
        vec![after["gift_id"].as_str().unwrap().to_owned()]
    );
}
