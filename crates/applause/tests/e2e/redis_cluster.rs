//! The scaled suite's main tests on a real Redis Cluster: three masters
//! started by the test (`applause_redis::test_cluster`), the nodes of
//! `deploy/local-cluster.sh` given its `redis+cluster://` URL. Viewers on
//! both gateways see every gift, and `kill -9` of the gifts node loses and
//! repeats nothing, with the bus and the boards spread over the masters;
//! stopping the nodes sweeps their keys from every master.

use applause_redis::test_cluster::TestCluster;

use crate::common::Cluster;
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

/// Rooms' and boards' keys ended up on more than one master.
async fn assert_spread(redis: &TestCluster, prefix: &str) {
    let per_master = keys_per_master(redis, prefix).await;
    let holding = per_master.iter().filter(|&&n| n > 0).count();
    assert!(holding >= 2, "keys of {prefix} per master: {per_master:?}");
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
    assert_spread(&redis, &nodes.redis_prefix()).await;
    stop(redis, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_gifts_node_loses_nothing_on_a_redis_cluster() {
    let (redis, mut nodes) = start();
    kill_9_of_gifts_loses_nothing(&mut nodes).await;
    assert_spread(&redis, &nodes.redis_prefix()).await;
    stop(redis, nodes).await;
}
