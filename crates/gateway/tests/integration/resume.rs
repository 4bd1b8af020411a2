//! Resume: a viewer that reconnects gets exactly the events it missed, from the
//! gateway's ring or the bus's history, or `resync_required` when they are gone.

use std::time::Duration;

use applause_bus::HistoryBounds;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn reconnect_and_resume_gets_exactly_the_missed_events() {
    let h = Harness::start().await;
    let (mut keep, _) = h.connect(ROOM, None).await;
    let (mut c, _) = h.connect(ROOM, None).await;
    h.publish_range(ROOM, 1..=10).await;
    assert_eq!(c.seqs(10).await, range(1, 10));
    drop(c);

    h.publish_range(ROOM, 11..=20).await;
    // Once the viewer that stayed has them, the gateway has applied them
    // (a busy room's round may wait for more events before it writes).
    assert_eq!(keep.seqs(20).await, range(1, 20));
    let (mut c, welcome) = h.connect(ROOM, None).await;
    assert_eq!(welcome["seq"], 20);
    c.send_json(json!({"type": "resume", "epoch": EPOCH, "since_seq": 10}))
        .await;
    assert_eq!(c.seqs(10).await, range(11, 20));
    h.publish_range(ROOM, 21..=21).await;
    assert_eq!(
        c.seqs(1).await,
        vec![21],
        "live events follow the replay, no duplicates"
    );
    assert_eq!(c.maybe_json(Duration::from_millis(200)).await, None);
    assert_eq!(keep.seqs(1).await, vec![21]);
    assert_eq!(
        h.metric_with("applause_gateway_resumes_total", "outcome", "replayed"),
        1.0
    );
}

#[tokio::test]
async fn resume_reaches_back_into_the_bus_history() {
    let h = Harness::start().await;
    // Published before this gateway joined the room: only the bus has them.
    h.publish_range(ROOM, 1..=10).await;
    let (mut c, welcome) = h.connect(ROOM, None).await;
    assert_eq!(welcome["seq"], 10);
    c.send_json(json!({"type": "resume", "epoch": EPOCH, "since_seq": 3}))
        .await;
    assert_eq!(c.seqs(7).await, range(4, 10));
    h.publish_range(ROOM, 11..=12).await;
    assert_eq!(c.seqs(2).await, vec![11, 12]);
}

#[tokio::test]
async fn resume_past_the_history_window_or_epoch_needs_a_resync() {
    let bounds = HistoryBounds {
        events_max: 5,
        age_ms_max: 60_000,
    };
    let h = Harness::with(config(|c| c.history_events_max = 5), bounds).await;
    let (mut c, _) = h.connect(ROOM, None).await;
    h.publish_range(ROOM, 1..=20).await;
    assert_eq!(c.seqs(20).await, range(1, 20));

    c.send_json(json!({"type": "resume", "epoch": EPOCH, "since_seq": 2}))
        .await;
    assert_eq!(c.next_json().await, json!({"type": "resync_required"}));

    c.send_json(json!({"type": "resume", "epoch": EPOCH, "since_seq": 16}))
        .await;
    assert_eq!(
        c.seqs(4).await,
        range(17, 20),
        "inside the window still replays"
    );

    c.send_json(json!({"type": "resume", "epoch": EPOCH + 1, "since_seq": 16}))
        .await;
    assert_eq!(c.next_json().await, json!({"type": "resync_required"}));
    assert_eq!(
        h.metric_with("applause_gateway_resumes_total", "outcome", "resync"),
        2.0
    );
}
