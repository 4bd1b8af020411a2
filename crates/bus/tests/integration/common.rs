//! Shared test helpers: events, unique room names, receiving with a deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use applause_bus::{system_now_ms, BusMessage, EventBus, History, HistoryBounds};
use applause_core::EventEnvelope;
use tokio::sync::mpsc::Receiver;

/// Builds a fresh bus (own key space) with the given history bounds.
pub type MakeBus = fn(HistoryBounds) -> Pin<Box<dyn Future<Output = Arc<dyn EventBus>> + Send>>;

pub fn room() -> String {
    format!("room-{}", uuid::Uuid::new_v4().simple())
}

pub fn ev(room: &str, seq: u64) -> EventEnvelope {
    ev_at(room, seq, system_now_ms())
}

pub fn ev_at(room: &str, seq: u64, committed_at_ms: i64) -> EventEnvelope {
    EventEnvelope {
        room_id: room.to_owned(),
        epoch: 1,
        seq,
        frame: format!(r#"{{"type":"gift","room_id":"{room}","seq":{seq}}}"#),
        broadcaster_frame: (seq % 2 == 0).then(|| format!(r#"{{"seq":{seq},"split":{{}}}}"#)),
        broadcaster_id: "bc".to_owned(),
        committed_at_ms,
        ends_room: false,
    }
}

/// The ledger's word that every event of `room` up to `seq` was published.
pub fn through(room: &str, seq: u64) -> std::collections::HashMap<String, u64> {
    std::collections::HashMap::from([(room.to_owned(), seq)])
}

pub fn evs(room: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<EventEnvelope> {
    seqs.into_iter().map(|s| ev(room, s)).collect()
}

/// The seqs of a history answer, `None` for `Gone`.
pub fn seqs(h: &History) -> Option<Vec<u64>> {
    match h {
        History::Events(v) => Some(v.iter().map(|e| e.seq).collect()),
        History::Gone => None,
    }
}

pub async fn recv(rx: &mut Receiver<BusMessage>) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a bus message within 10 s")
        .expect("the bus channel is open")
}

/// The next event, failing on anything else.
pub async fn recv_event(rx: &mut Receiver<BusMessage>) -> Arc<EventEnvelope> {
    match recv(rx).await {
        BusMessage::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Asserts nothing arrives for a short while.
pub async fn assert_quiet(rx: &mut Receiver<BusMessage>) {
    if let Ok(msg) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("expected no message, got {msg:?}");
    }
}

/// The Redis the tests talk to (a real server; see the crate's test notes).
pub fn redis_url() -> String {
    std::env::var("APPLAUSE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test run shares.
pub fn prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

pub async fn redis_bus(bounds: HistoryBounds) -> applause_bus::RedisBus {
    applause_bus::RedisBus::connect(&redis_url(), &prefix(), bounds)
        .await
        .expect("redis at APPLAUSE_TEST_REDIS_URL or 127.0.0.1:6379 (start redis-server)")
}

/// A Redis bus on the test binary's own three-master Redis Cluster.
pub async fn cluster_bus(bounds: HistoryBounds) -> applause_bus::RedisBus {
    let url = tokio::task::spawn_blocking(|| applause_redis::test_cluster::shared().url())
        .await
        .expect("test cluster started");
    applause_bus::RedisBus::connect(&url, &prefix(), bounds)
        .await
        .expect("the test cluster is reachable")
}
