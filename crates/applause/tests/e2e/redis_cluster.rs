//! The scaled suite's main tests on a real Redis Cluster: three masters
//! started by the test (`applause_redis::test_cluster`), the nodes of
//! `deploy/local-cluster.sh` given its `redis+cluster://` URL. Viewers on
//! both gateways see every gift, and `kill -9` of the gifts node loses and
//! repeats nothing, with the bus and the boards spread over the masters;
//! stopping the nodes sweeps their keys from every master.

use applause_redis::test_cluster::TestCluster;

use applause_core::Role;

use crate::common::{token, Api, Cluster};
use crate::scaled::{both_gateways_see_every_gift, kill_9_of_gifts_loses_nothing};

/// Each test has its own Redis Cluster, killed when the test ends.
fn start() -> (TestCluster, Cluster) {
    let redis = TestCluster::start();
    let nodes = Cluster::start_on(2, 1, &redis.url(), None);
    (redis, nodes)
}

/// How many keys under `prefix` each master holds.
async fn keys_per_master(redis: &TestCluster, prefix: &str) -> Vec<usize> {
    let mut per_master = Vec::new();
    for i in 0..redis.ports().len() {
        let mut con = redis::Client::open(redis.node_url(i))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut con)
            .await
            .unwrap();
        per_master.push(keys.len());
    }
    per_master
}

/// Rooms' and boards' keys ended up on more than one master. A few more
/// rooms with a gift each first: one room's keys share one slot by design,
/// so a single room could sit on one master by chance.
async fn assert_spread(redis: &TestCluster, nodes: &Cluster) {
    let prefix = nodes.redis_prefix();
    let api = Api::new(nodes.gifts().last().expect("a gifts node"));
    let star = token("spread-star", Role::Broadcaster);
    api.top_up("spread-fan", "100.00").await;
    let fan = token("spread-fan", Role::Viewer);
    for i in 0..8 {
        let room = api.open_room(&star).await;
        api.buy(&fan, &room, &format!("spread-{i}"), "rose").await;
    }
    // The bus and the boards write just after the commit: give them a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let per_master = keys_per_master(redis, &prefix).await;
        let holding = per_master.iter().filter(|&&n| n > 0).count();
        if holding >= 2 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "keys of {prefix} per master: {per_master:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Stops the nodes; `local-cluster.sh stop` must sweep the keys of their
/// prefix from every master, then the Redis Cluster goes.
async fn stop(redis: TestCluster, nodes: Cluster) {
    let prefix = nodes.redis_prefix();
    drop(nodes);
    let left = keys_per_master(&redis, &prefix).await;
    assert!(
        left.iter().all(|&n| n == 0),
        "keys left per master: {left:?}"
    );
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_both_gateways_see_every_gift_on_a_redis_cluster() {
    let (redis, nodes) = start();
    both_gateways_see_every_gift(&nodes).await;
    assert_spread(&redis, &nodes).await;
    stop(redis, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_gifts_node_loses_nothing_on_a_redis_cluster() {
    let (redis, mut nodes) = start();
    kill_9_of_gifts_loses_nothing(&mut nodes).await;
    assert_spread(&redis, &nodes).await;
    stop(redis, nodes).await;
}
