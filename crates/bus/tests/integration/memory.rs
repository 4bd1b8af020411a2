//! In-process bus specifics: tokio-clock ageing, backpressure, forgetting rooms.

use std::sync::Arc;
use std::time::Duration;

use applause_bus::{
    Clock, EventBus, HistoryBounds, InProcessBus, InProcessBusConfig, PublishOutcome, TokioClock,
};

use crate::common::*;

fn bus_with(bounds: HistoryBounds, capacity: usize, clock: Arc<dyn Clock>) -> InProcessBus {
    InProcessBus::with_config(InProcessBusConfig {
        bounds,
        messages_capacity_max: capacity,
        clock,
        ..InProcessBusConfig::default()
    })
}

#[tokio::test(start_paused = true)]
async fn history_ages_out_with_tokio_time() {
    let clock = Arc::new(TokioClock::new());
    let bus = bus_with(HistoryBounds::default(), 16, clock.clone());
    let r = room();
    let batch: Vec<_> = (1..=3).map(|s| ev_at(&r, s, clock.now_ms())).collect();
    bus.publish(&batch).await.unwrap();
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(
        seqs(&bus.history(&r, 0, 10).await.unwrap()),
        Some(vec![1, 2, 3])
    );
    bus.publish(&[ev_at(&r, 4, clock.now_ms())]).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(seqs(&bus.history(&r, 0, 10).await.unwrap()), None);
    assert_eq!(seqs(&bus.history(&r, 3, 10).await.unwrap()), Some(vec![4]));
    // Ordering survives the history: the next seq is still 5.
    assert_eq!(
        bus.publish(&[ev_at(&r, 4, clock.now_ms())]).await.unwrap(),
        vec![PublishOutcome::Duplicate]
    );
}

#[tokio::test]
async fn a_full_channel_makes_the_publisher_wait() {
    let bus = Arc::new(bus_with(
        HistoryBounds::default(),
        2,
        Arc::new(TokioClock::new()),
    ));
    let mut rx = bus.messages().unwrap();
    let r = room();
    bus.join(&r).await.unwrap();
    let publisher = {
        let (bus, r) = (Arc::clone(&bus), r.clone());
        tokio::spawn(async move { bus.publish(&evs(&r, 1..=5)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !publisher.is_finished(),
        "the publisher waits for the gateway"
    );
    for seq in 1..=5 {
        assert_eq!(recv_event(&mut rx).await.seq, seq);
    }
    let out = publisher.await.unwrap();
    assert!(out.iter().all(|o| *o == PublishOutcome::Published));
}

#[tokio::test]
async fn a_dropped_receiver_does_not_block_publishers() {
    let bus = bus_with(HistoryBounds::default(), 1, Arc::new(TokioClock::new()));
    drop(bus.messages().unwrap());
    let r = room();
    bus.join(&r).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(5), bus.publish(&evs(&r, 1..=10)))
        .await
        .expect("publish does not hang")
        .unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(
        seqs(&bus.history(&r, 8, 10).await.unwrap()),
        Some(vec![9, 10])
    );
}

#[tokio::test(start_paused = true)]
async fn ended_rooms_are_forgotten_after_their_history_ages_out() {
    let clock = Arc::new(TokioClock::new());
    let bus = bus_with(HistoryBounds::default(), 16, clock.clone());
    let (ended, live) = (room(), room());
    let mut last = ev_at(&ended, 1, clock.now_ms());
    last.ends_room = true;
    bus.publish(&[last]).await.unwrap();
    bus.publish(&[ev_at(&live, 1, clock.now_ms())])
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(301)).await;
    // Sweeps run every few thousand publishes.
    let other = room();
    let batch: Vec<_> = (1..=5_000)
        .map(|s| ev_at(&other, s, clock.now_ms()))
        .collect();
    bus.publish(&batch).await.unwrap();
    assert_eq!(
        bus.rooms_len(),
        2,
        "the ended room is gone, the live one stays"
    );
    assert_eq!(
        bus.publish(&[ev_at(&live, 1, clock.now_ms())])
            .await
            .unwrap(),
        vec![PublishOutcome::Duplicate]
    );
}
