//! Redis bus specifics: separate processes (two bus instances), key layout,
//! reconnection after the pub/sub connection is killed, readiness.

use std::sync::Arc;
use std::time::Duration;

use applause_bus::{BusMessage, EventBus, HistoryBounds, PublishOutcome, RedisBus, RedisBusConfig};
use redis::AsyncCommands;

use crate::common::*;

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis reachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_receives_every_event_once_in_order() {
    let prefix = prefix();
    let bounds = HistoryBounds::default();
    let publisher = Arc::new(
        RedisBus::connect(&redis_url(), &prefix, bounds)
            .await
            .unwrap(),
    );
    let gateway_a = RedisBus::connect(&redis_url(), &prefix, bounds)
        .await
        .unwrap();
    let gateway_b = RedisBus::connect(&redis_url(), &prefix, bounds)
        .await
        .unwrap();
    let (mut rx_a, mut rx_b) = (gateway_a.messages().unwrap(), gateway_b.messages().unwrap());
    let (r, quiet_room) = (room(), room());
    assert_eq!(gateway_a.join(&r).await.unwrap().last_seq, 0);
    assert_eq!(gateway_b.join(&r).await.unwrap().last_seq, 0);

    // Two racing publishers (a retrying outbox) in batches of varying size.
    let n = 300u64;
    let mut tasks = Vec::new();
    for batch_len in [7u64, 13] {
        let (publisher, r, q) = (Arc::clone(&publisher), r.clone(), quiet_room.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = 1;
            while next <= n {
                let end = (next + batch_len - 1).min(n);
                let mut batch = evs(&r, next..=end);
                batch.push(ev(&q, next));
                let out = publisher.publish(&batch).await.unwrap();
                for (e, o) in batch.iter().zip(&out) {
                    if e.room_id == r {
                        assert!(
                            matches!(o, PublishOutcome::Published | PublishOutcome::Duplicate),
                            "{o:?}"
                        );
                    }
                }
                next = end + 1;
            }
        }));
    }
    for seq in 1..=n {
        let (a, b) = (recv_event(&mut rx_a).await, recv_event(&mut rx_b).await);
        assert_eq!((a.room_id.as_str(), a.seq), (r.as_str(), seq));
        assert_eq!((b.room_id.as_str(), b.seq), (r.as_str(), seq));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_quiet(&mut rx_a).await;
    assert_quiet(&mut rx_b).await;
    // A bus that joins later starts at the current cursor, from any process;
    // of the never-joined room only seq 1 was in order.
    assert_eq!(gateway_b.join(&quiet_room).await.unwrap().last_seq, 1);
    let late = RedisBus::connect(&redis_url(), &prefix, bounds)
        .await
        .unwrap();
    assert_eq!(late.join(&r).await.unwrap().last_seq, n);
    assert_eq!(
        seqs(&late.history(&r, n - 3, 10).await.unwrap()),
        Some(vec![n - 2, n - 1, n])
    );
}

#[tokio::test]
async fn keys_of_a_room_share_one_hash_tag_and_expire() {
    let prefix = prefix();
    let mut config = RedisBusConfig::new(prefix.clone(), HistoryBounds::default());
    config.key_ttl_ms = 60_000;
    let bus = RedisBus::connect_with(&redis_url(), config).await.unwrap();
    let r = room();
    bus.publish_through(&evs(&r, [41, 42]), &through(&r, 40))
        .await
        .unwrap();
    let mut conn = admin().await;
    let seq: u64 = conn.get(format!("{prefix}{{{r}}}:seq")).await.unwrap();
    assert_eq!(seq, 42);
    let stream = format!("{prefix}{{{r}}}:events");
    let len: u64 = conn.xlen(&stream).await.unwrap();
    assert_eq!(len, 2);
    let ttl: i64 = conn.pttl(&stream).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "stream ttl {ttl}");
    let ttl: i64 = conn.pttl(format!("{prefix}{{{r}}}:seq")).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "seq ttl {ttl}");
    let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids[0].0, "41-0");
    assert_eq!(ids[1].0, "42-0");
}

#[tokio::test]
async fn a_room_whose_seq_key_expired_starts_over() {
    let prefix = prefix();
    let bus = RedisBus::connect(&redis_url(), &prefix, HistoryBounds::default())
        .await
        .unwrap();
    let r = room();
    bus.publish(&evs(&r, 1..=5)).await.unwrap();
    let mut conn = admin().await;
    let _: () = conn.del(format!("{prefix}{{{r}}}:seq")).await.unwrap();
    // The stream still holds ids up to 5-0; an unknown room accepts seq 1.
    assert_eq!(
        bus.publish(&evs(&r, [1, 2])).await.unwrap(),
        vec![PublishOutcome::Published, PublishOutcome::Published]
    );
    assert_eq!(
        seqs(&bus.history(&r, 0, 10).await.unwrap()),
        Some(vec![1, 2])
    );
    // The same with the ledger's word: the stream (now up to 2-0) is dropped
    // and the room goes on at the vouched seq.
    let _: () = conn.del(format!("{prefix}{{{r}}}:seq")).await.unwrap();
    assert_eq!(
        bus.publish_through(&evs(&r, [8, 9]), &through(&r, 7))
            .await
            .unwrap(),
        vec![PublishOutcome::Published, PublishOutcome::Published]
    );
    assert_eq!(
        seqs(&bus.history(&r, 7, 10).await.unwrap()),
        Some(vec![8, 9])
    );
}

/// Runs on a dedicated ACL user so that `CLIENT KILL USER … TYPE pubsub`
/// hits only this test's subscriber, not those of tests running alongside.
#[tokio::test]
async fn a_killed_subscriber_reconnects_and_receives_later_events() {
    let mut conn = admin().await;
    let user = format!("bus-test-{}", uuid::Uuid::new_v4().simple());
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", ">bus-test-pw", "~*", "&*", "+@all"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = prefix();
    let bounds = HistoryBounds::default();
    let publisher = RedisBus::connect(&redis_url(), &prefix, bounds)
        .await
        .unwrap();
    let url = redis_url().replacen("redis://", &format!("redis://{user}:bus-test-pw@"), 1);
    let mut config = RedisBusConfig::new(prefix.clone(), bounds);
    config.reconnect_backoff_ms_max = 200;
    let gateway = RedisBus::connect_with(&url, config).await.unwrap();
    let mut rx = gateway.messages().unwrap();
    let r = room();
    gateway.join(&r).await.unwrap();
    publisher.publish(&evs(&r, 1..=3)).await.unwrap();
    for seq in 1..=3 {
        assert_eq!(recv_event(&mut rx).await.seq, seq);
    }

    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", &user, "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1, "exactly the gateway's pub/sub connection");
    match recv(&mut rx).await {
        BusMessage::Reconnected => {}
        other => panic!("expected Reconnected, got {other:?}"),
    }
    // Resubscribed before announcing: events published now arrive.
    publisher.publish(&evs(&r, 4..=6)).await.unwrap();
    for seq in 4..=6 {
        assert_eq!(recv_event(&mut rx).await.seq, seq);
    }
    assert_eq!(
        seqs(&gateway.history(&r, 3, 10).await.unwrap()),
        Some(vec![4, 5, 6])
    );
    // Joins work on the new connection too.
    let r2 = room();
    assert_eq!(gateway.join(&r2).await.unwrap().last_seq, 0);
    publisher.publish(&evs(&r2, [1])).await.unwrap();
    assert_eq!(recv_event(&mut rx).await.room_id, r2);
    assert!(gateway.ready().await);
    let _: () = redis::cmd("ACL")
        .arg(&["DELUSER", &user])
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_not_a_panic() {
    // Port 1 on loopback refuses connections.
    let result =
        RedisBus::connect("redis://127.0.0.1:1", &prefix(), HistoryBounds::default()).await;
    assert!(matches!(
        result,
        Err(applause_bus::BusError::Unavailable(_))
    ));
    assert!(redis_bus(HistoryBounds::default()).await.ready().await);
}

#[tokio::test]
async fn a_lagging_consumer_gets_reconnected_instead_of_unbounded_buffering() {
    let prefix = prefix();
    let bounds = HistoryBounds::default();
    let publisher = RedisBus::connect(&redis_url(), &prefix, bounds)
        .await
        .unwrap();
    let mut config = RedisBusConfig::new(prefix.clone(), bounds);
    config.messages_capacity_max = 4;
    config.lag_grace_ms = 100;
    let gateway = RedisBus::connect_with(&redis_url(), config).await.unwrap();
    let mut rx = gateway.messages().unwrap();
    let r = room();
    gateway.join(&r).await.unwrap();
    publisher.publish(&evs(&r, 1..=50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The first events fill the channel; the rest are dropped and replaced by
    // one Reconnected once there is room again.
    let mut seen = Vec::new();
    while let BusMessage::Event(e) = recv(&mut rx).await {
        seen.push(e.seq);
    }
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
    assert!(seen.len() < 50, "some events were dropped: {seen:?}");
    let last = *seen.last().unwrap_or(&0);
    let refill = gateway.history(&r, last, 100).await.unwrap();
    assert_eq!(seqs(&refill), Some((last + 1..=50).collect()));
    publisher.publish(&evs(&r, [51])).await.unwrap();
    assert_eq!(recv_event(&mut rx).await.seq, 51);
}

#[tokio::test]
async fn the_eviction_policy_is_read_for_the_operators_warning() {
    let default = PrivateRedis::start(free_port()).await;
    assert_eq!(
        applause_bus::eviction_policy(&default.url()).await.unwrap(),
        Some("noeviction".to_owned())
    );
    let lru = PrivateRedis::start_with(
        free_port(),
        &["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
    )
    .await;
    assert_eq!(
        applause_bus::eviction_policy(&lru.url()).await.unwrap(),
        Some("allkeys-lru".to_owned())
    );
    assert!(applause_bus::eviction_policy("redis://127.0.0.1:1")
        .await
        .is_err());
}

/// A private redis-server on a free port, killed when dropped: lets a test
/// take Redis away without disturbing the shared server other tests use.
struct PrivateRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    async fn start(port: u16) -> Self {
        Self::start_with(port, &[]).await
    }

    async fn start_with(port: u16, extra: &[&str]) -> Self {
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on PATH");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let client = redis::Client::open(url.as_str()).unwrap();
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "private redis did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            port,
            child: Some(child),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill private redis");
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Redis goes away and comes back empty (a restart without persistence):
/// calls fail with `Unavailable` meanwhile, then the subscriber resubscribes
/// by itself and publishing works again (the script cache is reloaded).
#[tokio::test]
async fn a_redis_restart_is_survived() {
    let mut server = PrivateRedis::start(free_port()).await;
    let mut config = RedisBusConfig::new(prefix(), HistoryBounds::default());
    config.reconnect_backoff_ms_max = 200;
    config.command_timeout_ms = 500;
    let bus = RedisBus::connect_with(&server.url(), config).await.unwrap();
    let mut rx = bus.messages().unwrap();
    let r = room();
    bus.join(&r).await.unwrap();
    bus.publish(&evs(&r, [1])).await.unwrap();
    assert_eq!(recv_event(&mut rx).await.seq, 1);

    server.stop().await;
    assert!(matches!(
        bus.publish(&evs(&r, [2])).await,
        Err(applause_bus::BusError::Unavailable(_))
    ));
    assert!(!bus.ready().await);
    assert!(bus.history(&r, 0, 10).await.is_err());

    let server = PrivateRedis::start(server.port).await;
    match recv(&mut rx).await {
        BusMessage::Reconnected => {}
        other => panic!("expected Reconnected, got {other:?}"),
    }
    // The command connection reconnects on its own schedule; retry briefly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let out = loop {
        match bus.publish_through(&evs(&r, [2]), &through(&r, 1)).await {
            Ok(out) => break out,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // The restarted Redis has no record of the room: it goes on where the
    // ledger vouches for the earlier events.
    assert_eq!(out, vec![PublishOutcome::Published]);
    assert_eq!(recv_event(&mut rx).await.seq, 2);
    assert!(bus.ready().await);
    // The empty script cache answered NOSCRIPT and the bus loaded the script.
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(stats.contains("cmdstat_script|load:calls=1"), "{stats}");
    drop(server);
}
