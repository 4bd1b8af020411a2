//! The Redis bus on a real Redis Cluster (three masters started by the
//! test): rooms of one batch spread over every master, fan-out reaches a
//! subscriber on any node, the subscriber moves to another seed when its
//! connection is lost, and the eviction warning asks every master.

use applause_bus::{BusMessage, EventBus, HistoryBounds, PublishOutcome, RedisBus, RedisBusConfig};
use applause_redis::test_cluster::{shared, TestCluster};

use crate::common::*;

async fn node(url: String) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("cluster node reachable")
}

async fn start_own_cluster() -> TestCluster {
    tokio::task::spawn_blocking(TestCluster::start)
        .await
        .expect("test cluster started")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_of_one_batch_land_on_every_master_and_reach_a_subscriber_on_one_node() {
    let cluster = tokio::task::spawn_blocking(shared).await.unwrap();
    let prefix = prefix();
    let bounds = HistoryBounds::default();
    let publisher = RedisBus::connect(&cluster.url(), &prefix, bounds)
        .await
        .unwrap();
    let gateway = RedisBus::connect(&cluster.url(), &prefix, bounds)
        .await
        .unwrap();
    let mut rx = gateway.messages().unwrap();
    let rooms: Vec<String> = (0..24).map(|_| room()).collect();
    for r in &rooms {
        assert_eq!(gateway.join(r).await.unwrap().last_seq, 0);
    }
    // One batch interleaving every room: split per slot, each room in order.
    let batch: Vec<_> = (1..=3)
        .flat_map(|seq| rooms.iter().map(move |r| ev(r, seq)))
        .collect();
    let out = publisher.publish(&batch).await.unwrap();
    assert!(
        out.iter().all(|o| *o == PublishOutcome::Published),
        "{out:?}"
    );
    let mut seen: std::collections::HashMap<String, u64> = Default::default();
    for _ in 0..batch.len() {
        let e = recv_event(&mut rx).await;
        let last = seen.entry(e.room_id.clone()).or_default();
        assert_eq!(e.seq, *last + 1, "room {} in order", e.room_id);
        *last = e.seq;
    }
    assert!(seen.values().all(|&s| s == 3) && seen.len() == rooms.len());
    assert_quiet(&mut rx).await;
    // Every master holds some of the rooms, each room's keys on one node.
    let mut rooms_per_master = Vec::new();
    for i in 0..cluster.ports().len() {
        let mut conn = node(cluster.node_url(i)).await;
        let mut held = 0;
        for r in &rooms {
            let exists: (bool, bool) = redis::pipe()
                .exists(format!("{prefix}{{{r}}}:seq"))
                .exists(format!("{prefix}{{{r}}}:events"))
                .query_async(&mut conn)
                .await
                // A key of another node's slot answers MOVED.
                .unwrap_or((false, false));
            assert_eq!(exists.0, exists.1, "both keys of {r} on one node");
            held += usize::from(exists.0);
        }
        rooms_per_master.push(held);
    }
    assert_eq!(rooms_per_master.iter().sum::<usize>(), rooms.len());
    assert!(
        rooms_per_master.iter().all(|&n| n > 0),
        "{rooms_per_master:?}"
    );
    for r in &rooms {
        assert_eq!(
            seqs(&gateway.history(r, 1, 10).await.unwrap()),
            Some(vec![2, 3])
        );
    }
    assert!(publisher.ready().await);
}

/// On a cluster of its own: killing the pub/sub connections of one node
/// must not disturb the tests sharing the other cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscriber_moves_to_the_next_seed_and_resubscribes() {
    let cluster = start_own_cluster().await;
    let prefix = prefix();
    let bounds = HistoryBounds::default();
    let publisher = RedisBus::connect(&cluster.url(), &prefix, bounds)
        .await
        .unwrap();
    let mut config = RedisBusConfig::new(prefix.clone(), bounds);
    config.reconnect_backoff_ms_max = 200;
    let gateway = RedisBus::connect_with(&cluster.url(), config)
        .await
        .unwrap();
    let mut rx = gateway.messages().unwrap();
    let r = room();
    gateway.join(&r).await.unwrap();
    let channel = format!("{prefix}{{{r}}}:ch");
    let channels_on = |i: usize| {
        let url = cluster.node_url(i);
        let channel = channel.clone();
        async move {
            let mut conn = node(url).await;
            let listed: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            listed.len()
        }
    };
    assert_eq!((channels_on(0).await, channels_on(1).await), (1, 0));
    publisher.publish(&evs(&r, 1..=2)).await.unwrap();
    for seq in 1..=2 {
        assert_eq!(recv_event(&mut rx).await.seq, seq);
    }

    let mut first = node(cluster.node_url(0)).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut first)
        .await
        .unwrap();
    assert_eq!(killed, 1, "the gateway's pub/sub connection");
    match recv(&mut rx).await {
        BusMessage::Reconnected => {}
        other => panic!("expected Reconnected, got {other:?}"),
    }
    assert_eq!((channels_on(0).await, channels_on(1).await), (0, 1));
    publisher.publish(&evs(&r, 3..=4)).await.unwrap();
    for seq in 3..=4 {
        assert_eq!(recv_event(&mut rx).await.seq, seq);
    }
    assert_quiet(&mut rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eviction_policy_of_every_master_is_checked() {
    let cluster = start_own_cluster().await;
    assert_eq!(
        applause_bus::eviction_policy(&cluster.url()).await.unwrap(),
        Some("noeviction".into())
    );
    let mut last = node(cluster.node_url(2)).await;
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "allkeys-lru"])
        .query_async(&mut last)
        .await
        .unwrap();
    assert_eq!(
        applause_bus::eviction_policy(&cluster.url()).await.unwrap(),
        Some("allkeys-lru".into())
    );
    assert!(
        applause_bus::eviction_policy("redis+cluster://127.0.0.1:1/")
            .await
            .is_err()
    );
}
