//! Resume through the binary: a viewer that disconnects and comes back with
//! `resume {epoch, since_seq}` gets exactly the events it missed, once, in
//! order, also while gifts keep arriving; a foreign epoch asks for a resync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use applause_core::Role;
use serde_json::{json, Value};

use crate::common::*;

/// Reads until no frame has come for `quiet` (leaderboard pushes settle).
async fn settle(v: &mut Viewer, quiet: Duration) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let more = v.read_until(quiet, |f| !f.is_empty()).await;
        if more.is_empty() {
            return all;
        }
        all.extend(more);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_exactly_the_missed_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::serve(dir.path(), &[]).await;
    let api = node.api();
    let star = token("star", Role::Broadcaster);
    let alice = token("alice", Role::Viewer);
    let room = api.open_room(&star).await;
    api.top_up("alice", "50.00").await;

    let mut v = Viewer::connect(&node.base, &room, None).await;
    let epoch = v.epoch();
    let mut before = Vec::new();
    for i in 0..4 {
        before.push(api.buy(&alice, &room, &format!("before-{i}"), "rose").await);
    }
    let frames = settle(&mut v, Duration::from_millis(800)).await;
    let last = assert_consecutive("first connection", &frames, v.welcome_seq());
    assert_all_gifts_once("first connection", &frames, &before);
    v.close().await;

    let mut missed = Vec::new();
    for i in 0..7 {
        missed.push(
            api.buy(&alice, &room, &format!("missed-{i}"), "heart")
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    let mut v = Viewer::connect(&node.base, &room, None).await;
    assert!(
        v.welcome_seq() > last,
        "the welcome is past the viewer's position"
    );
    v.send(json!({"type": "resume", "epoch": epoch, "since_seq": last}))
        .await;
    let frames = settle(&mut v, Duration::from_millis(800)).await;
    let end = assert_consecutive("resumed", &frames, last);
    assert!(
        end >= v.welcome_seq(),
        "replayed up to the welcome: {frames:?}"
    );
    assert_all_gifts_once("resumed", &frames, &missed);

    // Another room's epoch: the history is not this client's.
    let mut w = Viewer::connect(&node.base, &room, None).await;
    w.send(json!({"type": "resume", "epoch": epoch + 1, "since_seq": 1}))
        .await;
    let frames = w
        .read_until(Duration::from_secs(5), |f| !f.is_empty())
        .await;
    assert_eq!(
        frames.first().map(|f| &f["type"]),
        Some(&json!("resync_required")),
        "{frames:?}"
    );
}

/// A client resumes right after its welcome while gifts keep coming: the
/// events after the welcome arrive live, so the replay must stop at the
/// welcome's `seq` or they arrive twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_during_live_traffic_has_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::serve(dir.path(), &[]).await;
    let api = node.api();
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    let senders: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    for s in &senders {
        api.top_up(s, "100000.00").await;
    }
    let first = Viewer::connect(&node.base, &room, None).await;
    let epoch = first.epoch();
    first.close().await;

    // A steady stream of purchases from several senders.
    let stop = Arc::new(AtomicBool::new(false));
    let mut buyers = Vec::new();
    for s in senders.clone() {
        let (api, room, stop) = (api.clone(), room.clone(), stop.clone());
        buyers.push(tokio::spawn(async move {
            let tok = token(&s, Role::Viewer);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                api.buy(&tok, &room, &format!("{s}-{i}"), "rose").await;
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut failures = Vec::new();
    for attempt in 0..100 {
        // The client had seen all but the last few events before the welcome
        // (well inside the history), and resumes as soon as it is welcomed.
        let mut v = Viewer::connect(&node.base, &room, None).await;
        let since = v.welcome_seq().saturating_sub(10);
        v.send(json!({"type": "resume", "epoch": epoch, "since_seq": since}))
            .await;
        let frames = v
            .read_until(Duration::from_secs(5), |f| {
                events(f)
                    .last()
                    .and_then(|e| e["seq"].as_u64())
                    .unwrap_or(0)
                    >= v_target(f)
            })
            .await;
        let seqs: Vec<u64> = events(&frames)
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (since + 1..since + 1 + seqs.len() as u64).collect();
        if let Some(f) = frames.iter().find(|f| f["type"] == "resync_required") {
            failures.push(format!(
                "attempt {attempt}: unexpected {f} for a resume inside the history"
            ));
        } else if seqs != expected {
            failures.push(format!(
                "attempt {attempt}: welcome seq {}, resume since {since}: got {}",
                v.welcome_seq(),
                ranges(&seqs)
            ));
        }
        v.close().await;
    }
    stop.store(true, Ordering::Relaxed);
    for b in buyers {
        b.await.unwrap();
    }
    assert!(
        failures.is_empty(),
        "resume delivered events twice or out of order:\n{}",
        failures.join("\n")
    );
}

/// Reads until 30 events past the first one received.
fn v_target(frames: &[Value]) -> u64 {
    events(frames)
        .first()
        .and_then(|e| e["seq"].as_u64())
        .map_or(u64::MAX, |s| s + 30)
}

/// `1 2 3 7 8` → `1..=3 7..=8`.
fn ranges(seqs: &[u64]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        out.push(format!("{}..={}", seqs[i], seqs[j]));
        i = j + 1;
    }
    out.join(" ")
}
