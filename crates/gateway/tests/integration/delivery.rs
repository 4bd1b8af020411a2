//! Fan-out at scale: every viewer receives every event exactly once and in
//! `seq` order, while several publishers race to publish the room in order.

use std::sync::Arc;

use applause_bus::{EventBus, PublishOutcome};
use applause_core::Role;

use crate::common::*;

const VIEWERS: usize = 500;
const EVENTS: u64 = 300;
const PUBLISHERS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_gets_every_event_once_in_order() {
    let h = Harness::start().await;
    h.rooms.add("other");
    let mut clients = Vec::with_capacity(VIEWERS);
    for i in 0..VIEWERS {
        // A few signed-in viewers and the broadcaster among the anonymous crowd.
        let token = match i {
            0 => Some(h.token(BROADCASTER, Role::Broadcaster)),
            i if i % 50 == 1 => Some(h.token(&format!("v{i}"), Role::Viewer)),
            _ => None,
        };
        let (c, welcome) = h.connect(ROOM, token.as_deref()).await;
        assert_eq!(welcome["seq"], 0);
        clients.push(c);
    }
    let (mut other, _) = h.connect("other", None).await;

    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let seqs = c.seqs(EVENTS as usize).await;
                (i, seqs, c)
            })
        })
        .collect();

    // Publishers each own every PUBLISHERS-th seq and retry until the bus
    // takes it: concurrent publishing, one order.
    let bus = h.bus.clone();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|k| {
            let bus = Arc::clone(&bus);
            tokio::spawn(async move {
                let mut seq = k + 1;
                while seq <= EVENTS {
                    match bus.publish(&[gift(ROOM, seq)]).await.unwrap()[0] {
                        PublishOutcome::Published => seq += PUBLISHERS,
                        PublishOutcome::Gap { .. } => tokio::task::yield_now().await,
                        PublishOutcome::Duplicate => panic!("seq {seq} published twice"),
                    }
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    h.publish_range("other", 1..=3).await;

    let mut clients = Vec::with_capacity(VIEWERS);
    for r in readers {
        let (i, seqs, c) = r.await.unwrap();
        assert_eq!(seqs, range(1, EVENTS), "viewer {i}");
        clients.push(c);
    }
    assert_eq!(other.seqs(3).await, vec![1, 2, 3], "rooms do not mix");
    assert!(
        h.metric("applause_gateway_deliveries_total") >= (VIEWERS as u64 * EVENTS) as f64,
        "deliveries are counted"
    );
    assert_eq!(
        h.metric("applause_gateway_connections"),
        (VIEWERS + 1) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_writes_keep_every_event_in_order() {
    let h = Harness::with(
        config(|c| c.write_coalesce_ms = 5),
        applause_bus::HistoryBounds::default(),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(h.connect(ROOM, None).await.0);
    }
    for seq in 1..=100 {
        h.publish_range(ROOM, seq..=seq).await;
        if seq % 10 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    for c in &mut clients {
        assert_eq!(c.seqs(100).await, range(1, 100));
    }
}

/// The dispatcher as a task on the caller's runtime (`fanout_thread` off,
/// the comparison mode) delivers the same: every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_as_a_task_keeps_every_event_in_order() {
    let h = Harness::with(
        config(|c| c.fanout_thread = false),
        applause_bus::HistoryBounds::default(),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(h.connect(ROOM, None).await.0);
    }
    h.publish_range(ROOM, 1..=200).await;
    for c in &mut clients {
        assert_eq!(c.seqs(200).await, range(1, 200));
    }
}

/// A gateway on which every room with a delivery a second is heavy: once
/// its rate is known (after a second), its events pair, held for the whole
/// room or staggered across its halves, waiting up to 100 ms.
async fn heavy_rooms(stagger: bool) -> Harness {
    Harness::with(
        config(|c| {
            c.fanout_heavy_deliveries_min = 1;
            c.fanout_heavy_coalesce_ms = 100;
            c.fanout_heavy_stagger = stagger;
        }),
        applause_bus::HistoryBounds::default(),
    )
    .await
}

/// Publishes `seqs` one by one, 20 ms apart (50 events a second).
async fn publish_paced(h: &Harness, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        h.publish_range(ROOM, seq..=seq).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_room_pairing_keeps_every_event_in_order() {
    for stagger in [false, true] {
        let h = heavy_rooms(stagger).await;
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(h.connect(ROOM, None).await.0);
        }
        publish_paced(&h, 1..=80).await;
        for c in &mut clients {
            assert_eq!(c.seqs(80).await, range(1, 80), "stagger {stagger}");
        }
        assert!(
            h.metric("applause_gateway_fanout_window_waits_total") > 0.0,
            "the heavy room's events waited for pairs (stagger {stagger})"
        );
        let staggered = h.metric("applause_gateway_fanout_staggered_total");
        assert_eq!(staggered > 0.0, stagger, "{staggered} events staggered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staggered_room_gives_viewers_who_join_or_resume_meanwhile_each_event_once() {
    let h = heavy_rooms(true).await;
    let (mut keep, _) = h.connect(ROOM, None).await;
    let (mut leaves, _) = h.connect(ROOM, None).await;
    publish_paced(&h, 1..=60).await;
    assert_eq!(leaves.seqs(60).await, range(1, 60));
    drop(leaves);
    assert!(h.metric("applause_gateway_fanout_staggered_total") > 0.0);
    // Joiners while the room staggers, some while their half lags: each
    // gets every event after its welcome, once and in order.
    let mut joined = Vec::new();
    for seq in 61..=70 {
        let (c, welcome) = h.connect(ROOM, None).await;
        let from = welcome["seq"].as_u64().expect("a welcome seq");
        joined.push((c, from));
        publish_paced(&h, seq..=seq).await;
    }
    // The viewer who left comes back and resumes from 60 while the room
    // goes on: the replay, then live events, nothing twice.
    let (mut back, _) = h.connect(ROOM, None).await;
    back.send_json(serde_json::json!({"type": "resume", "epoch": EPOCH, "since_seq": 60}))
        .await;
    publish_paced(&h, 71..=100).await;
    assert_eq!(back.seqs(40).await, range(61, 100));
    for (c, from) in &mut joined {
        let n = usize::try_from(100 - *from).unwrap();
        assert_eq!(
            c.seqs(n).await,
            range(*from + 1, 100),
            "joined after {from}"
        );
    }
    assert_eq!(keep.seqs(100).await, range(1, 100));
    for c in std::iter::once(&mut back).chain(joined.iter_mut().map(|(c, _)| c)) {
        assert_eq!(
            c.maybe_json(std::time::Duration::from_millis(150)).await,
            None,
            "nothing after the last event"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_room_coalescing_keeps_every_event_in_order() {
    // Every room counts as busy: each fan-out round waits 5 ms for more.
    let h = Harness::with(
        config(|c| {
            c.fanout_coalesce_ms = 5;
            c.fanout_coalesce_rate_min = 0;
        }),
        applause_bus::HistoryBounds::default(),
    )
    .await;
    let (mut b, _) = h
        .connect(ROOM, Some(&h.token(BROADCASTER, Role::Broadcaster)))
        .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(h.connect(ROOM, None).await.0);
    }
    for seq in 1..=300 {
        h.publish_range(ROOM, seq..=seq).await;
        if seq % 25 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for c in &mut clients {
        assert_eq!(c.seqs(300).await, range(1, 300));
    }
    for seq in 1..=300u64 {
        let f = b.next_json().await;
        assert_eq!(f["seq"], seq);
        assert!(f.get("split").is_some(), "the broadcaster's own frames");
    }
}
