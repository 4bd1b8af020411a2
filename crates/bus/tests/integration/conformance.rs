//! The contract every bus keeps, run against each implementation.

use std::sync::Arc;

use applause_bus::{system_now_ms, EventBus, HistoryBounds, InProcessBus, PublishOutcome};

use crate::common::*;

mod cases {
    use super::*;

    pub async fn ordering_outcomes(make: MakeBus) {
        let bus = make(HistoryBounds::default()).await;
        let r = room();
        // An unknown room goes on where the ledger vouches for every earlier seq.
        let out = bus
            .publish_through(&evs(&r, [5, 6, 6, 9, 7]), &through(&r, 4))
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![
                PublishOutcome::Published,
                PublishOutcome::Published,
                PublishOutcome::Duplicate,
                PublishOutcome::Gap { expected: 7 },
                PublishOutcome::Published,
            ]
        );
        let out = bus.publish(&evs(&r, [3, 7, 8])).await.unwrap();
        assert_eq!(
            out,
            vec![
                PublishOutcome::Duplicate,
                PublishOutcome::Duplicate,
                PublishOutcome::Published
            ]
        );
        assert_eq!(bus.publish(&[]).await.unwrap(), vec![]);
        // Seq 0 means "nothing yet" and is never published.
        let fresh = room();
        assert_eq!(
            bus.publish(&evs(&fresh, [0, 1])).await.unwrap(),
            vec![PublishOutcome::Duplicate, PublishOutcome::Published]
        );
    }

    /// Two publishers racing on a new room: the later seq arriving first
    /// must not make the earlier one look like a duplicate.
    pub async fn a_room_starts_at_one_or_where_the_ledger_vouches(make: MakeBus) {
        use PublishOutcome::*;
        let bus = make(HistoryBounds::default()).await;
        let mut rx = bus.messages().unwrap();
        let r = room();
        bus.join(&r).await.unwrap();
        assert_eq!(
            bus.publish(&evs(&r, [2])).await.unwrap(),
            vec![Gap { expected: 1 }]
        );
        // The ledger's word must name the seq right before.
        assert_eq!(
            bus.publish_through(&evs(&r, [3]), &through(&r, 1))
                .await
                .unwrap(),
            vec![Gap { expected: 1 }]
        );
        assert_eq!(
            bus.publish(&evs(&r, [1, 2])).await.unwrap(),
            vec![Published, Published]
        );
        assert_eq!(recv_event(&mut rx).await.seq, 1);
        assert_eq!(recv_event(&mut rx).await.seq, 2);
        // Another room's word does not count for this one.
        let other = room();
        assert_eq!(
            bus.publish_through(&evs(&r, [4]), &through(&other, 3))
                .await
                .unwrap(),
            vec![Gap { expected: 3 }]
        );
        // A record older than the ledger's word (Redis back from an old
        // snapshot) goes on from the word, and its history starts over there.
        assert_eq!(
            bus.publish_through(&evs(&r, [6, 7]), &through(&r, 5))
                .await
                .unwrap(),
            vec![Published, Published]
        );
        assert_eq!(recv_event(&mut rx).await.seq, 6);
        assert_eq!(recv_event(&mut rx).await.seq, 7);
        assert_eq!(seqs(&bus.history(&r, 1, 10).await.unwrap()), None);
        assert_eq!(
            seqs(&bus.history(&r, 5, 10).await.unwrap()),
            Some(vec![6, 7])
        );
        // The word never brings back a seq the bus already has.
        assert_eq!(
            bus.publish_through(&evs(&r, [7]), &through(&r, 6))
                .await
                .unwrap(),
            vec![Duplicate]
        );
        assert_quiet(&mut rx).await;
    }

    pub async fn rooms_are_independent_in_one_batch(make: MakeBus) {
        let bus = make(HistoryBounds::default()).await;
        let (a, b) = (room(), room());
        let batch = vec![ev(&a, 1), ev(&b, 1), ev(&a, 2), ev(&b, 3), ev(&b, 2)];
        let out = bus.publish(&batch).await.unwrap();
        use PublishOutcome::*;
        assert_eq!(
            out,
            vec![
                Published,
                Published,
                Published,
                Gap { expected: 2 },
                Published
            ]
        );
        assert_eq!(
            seqs(&bus.history(&a, 0, 10).await.unwrap()),
            Some(vec![1, 2])
        );
        assert_eq!(
            seqs(&bus.history(&b, 0, 10).await.unwrap()),
            Some(vec![1, 2])
        );
    }

    pub async fn join_cursor_and_delivery(make: MakeBus) {
        let bus = make(HistoryBounds::default()).await;
        let mut rx = bus.messages().expect("the receiver is taken once");
        assert!(bus.messages().is_none());
        let (joined, other) = (room(), room());
        assert_eq!(bus.join(&joined).await.unwrap().last_seq, 0);
        bus.publish(&evs(&joined, 1..=3)).await.unwrap();
        bus.publish(&evs(&other, 1..=3)).await.unwrap();
        for seq in 1..=3 {
            let e = recv_event(&mut rx).await;
            assert_eq!((e.room_id.as_str(), e.seq), (joined.as_str(), seq));
            assert_eq!(
                *e,
                ev_at(&joined, seq, e.committed_at_ms),
                "the envelope is intact"
            );
        }
        // A duplicate is not delivered again.
        bus.publish(&evs(&joined, [3])).await.unwrap();
        assert_quiet(&mut rx).await;
        // Joining again is cheap and reports the current cursor.
        assert_eq!(bus.join(&joined).await.unwrap().last_seq, 3);
        assert_eq!(bus.join(&other).await.unwrap().last_seq, 3);
        bus.publish(&evs(&other, [4])).await.unwrap();
        assert_eq!(recv_event(&mut rx).await.seq, 4);
        bus.leave(&other).await.unwrap();
        bus.publish(&evs(&other, [5])).await.unwrap();
        bus.publish(&evs(&joined, [4])).await.unwrap();
        let e = recv_event(&mut rx).await;
        assert_eq!((e.room_id.as_str(), e.seq), (joined.as_str(), 4));
        assert_quiet(&mut rx).await;
        // A left room still keeps its history.
        assert_eq!(
            seqs(&bus.history(&other, 3, 10).await.unwrap()),
            Some(vec![4, 5])
        );
    }

    pub async fn history_of_a_never_joined_room(make: MakeBus) {
        let bus = make(HistoryBounds::default()).await;
        let r = room();
        bus.publish(&evs(&r, 1..=5)).await.unwrap();
        let h = bus.history(&r, 0, 10).await.unwrap();
        assert_eq!(seqs(&h), Some(vec![1, 2, 3, 4, 5]));
        if let applause_bus::History::Events(v) = &h {
            assert_eq!(*v[1], ev_at(&r, 2, v[1].committed_at_ms));
        }
        assert_eq!(
            seqs(&bus.history(&r, 2, 2).await.unwrap()),
            Some(vec![3, 4])
        );
        assert_eq!(seqs(&bus.history(&r, 4, 0).await.unwrap()), Some(vec![]));
        assert_eq!(seqs(&bus.history(&r, 5, 10).await.unwrap()), Some(vec![]));
        assert_eq!(seqs(&bus.history(&r, 6, 10).await.unwrap()), None);
        // A room that started at a later seq has nothing before it.
        let late = room();
        bus.publish_through(&evs(&late, [10, 11]), &through(&late, 9))
            .await
            .unwrap();
        assert_eq!(seqs(&bus.history(&late, 0, 10).await.unwrap()), None);
        assert_eq!(
            seqs(&bus.history(&late, 9, 10).await.unwrap()),
            Some(vec![10, 11])
        );
    }

    pub async fn history_of_an_unknown_room(make: MakeBus) {
        let bus = make(HistoryBounds::default()).await;
        let r = room();
        assert_eq!(seqs(&bus.history(&r, 0, 10).await.unwrap()), Some(vec![]));
        assert_eq!(seqs(&bus.history(&r, 3, 10).await.unwrap()), None);
    }

    pub async fn history_count_bound(make: MakeBus) {
        let bus = make(HistoryBounds {
            events_max: 5,
            age_ms_max: 60_000,
        })
        .await;
        let r = room();
        for seq in 1..=20 {
            bus.publish(&evs(&r, [seq])).await.unwrap();
        }
        assert_eq!(seqs(&bus.history(&r, 0, 100).await.unwrap()), None);
        assert_eq!(seqs(&bus.history(&r, 14, 100).await.unwrap()), None);
        assert_eq!(
            seqs(&bus.history(&r, 15, 100).await.unwrap()),
            Some(vec![16, 17, 18, 19, 20])
        );
        assert_eq!(
            seqs(&bus.history(&r, 18, 100).await.unwrap()),
            Some(vec![19, 20])
        );
    }

    pub async fn history_age_bound(make: MakeBus) {
        let bus = make(HistoryBounds {
            events_max: 1_000,
            age_ms_max: 60_000,
        })
        .await;
        let r = room();
        let old = system_now_ms() - 120_000;
        let batch: Vec<_> = (1..=3)
            .map(|s| ev_at(&r, s, old))
            .chain((4..=5).map(|s| ev(&r, s)))
            .collect();
        let out = bus.publish(&batch).await.unwrap();
        assert!(
            out.iter().all(|o| *o == PublishOutcome::Published),
            "{out:?}"
        );
        assert_eq!(seqs(&bus.history(&r, 0, 100).await.unwrap()), None);
        assert_eq!(seqs(&bus.history(&r, 2, 100).await.unwrap()), None);
        assert_eq!(
            seqs(&bus.history(&r, 3, 100).await.unwrap()),
            Some(vec![4, 5])
        );
    }

    /// Publishers racing on one room (retries of the same outbox) deliver
    /// every event exactly once and in order.
    pub async fn concurrent_publishers_keep_order(make: MakeBus) {
        let bus = make(HistoryBounds::default()).await;
        let mut rx = bus.messages().unwrap();
        let r = room();
        bus.join(&r).await.unwrap();
        let n = 200u64;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (bus, r) = (Arc::clone(&bus), r.clone());
            tasks.push(tokio::spawn(async move {
                for seq in 1..=n {
                    let out = bus.publish(&evs(&r, [seq])).await.unwrap();
                    assert!(
                        matches!(
                            out[0],
                            PublishOutcome::Published | PublishOutcome::Duplicate
                        ),
                        "{out:?}"
                    );
                }
            }));
        }
        for seq in 1..=n {
            assert_eq!(recv_event(&mut rx).await.seq, seq);
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_quiet(&mut rx).await;
    }
}

/// Generates one test per conformance case for a bus constructor.
macro_rules! conformance_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;

            const MAKE: MakeBus = $make;

            #[tokio::test]
            async fn ordering_outcomes() {
                cases::ordering_outcomes(MAKE).await
            }
            #[tokio::test]
            async fn a_room_starts_at_one_or_where_the_ledger_vouches() {
                cases::a_room_starts_at_one_or_where_the_ledger_vouches(MAKE).await
            }
            #[tokio::test]
            async fn rooms_are_independent_in_one_batch() {
                cases::rooms_are_independent_in_one_batch(MAKE).await
            }
            #[tokio::test]
            async fn join_cursor_and_delivery() {
                cases::join_cursor_and_delivery(MAKE).await
            }
            #[tokio::test]
            async fn history_of_a_never_joined_room() {
                cases::history_of_a_never_joined_room(MAKE).await
            }
            #[tokio::test]
            async fn history_of_an_unknown_room() {
                cases::history_of_an_unknown_room(MAKE).await
            }
            #[tokio::test]
            async fn history_count_bound() {
                cases::history_count_bound(MAKE).await
            }
            #[tokio::test]
            async fn history_age_bound() {
                cases::history_age_bound(MAKE).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_publishers_keep_order() {
                cases::concurrent_publishers_keep_order(MAKE).await
            }
        }
    };
}

conformance_suite!(in_process, |bounds| Box::pin(async move {
    Arc::new(InProcessBus::new(bounds)) as Arc<dyn EventBus>
}));

conformance_suite!(redis, |bounds| Box::pin(async move {
    Arc::new(redis_bus(bounds).await) as Arc<dyn EventBus>
}));

conformance_suite!(redis_cluster, |bounds| Box::pin(async move {
    Arc::new(cluster_bus(bounds).await) as Arc<dyn EventBus>
}));
