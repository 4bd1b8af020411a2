//! One Redis command connection for the bus and the leaderboards, over a
//! single server or a Redis Cluster, chosen by the URL ([`RedisTarget`]).
//!
//! What cluster mode asks of callers, and what this crate gives them:
//! - every script and every pipeline must stay in one hash slot: redis-rs
//!   routes a pipeline by its first keyed command and fails with `CROSSSLOT`
//!   otherwise. Callers put a hash tag (`{room}`) in every key a script or
//!   pipeline touches and split their batches with [`Conn::slot_groups`]
//!   (one group on a server, one per hash tag on a cluster);
//! - keyless per-server commands (SCAN, CONFIG GET) must run on every master:
//!   [`Conn::nodes`] lists them and [`Conn::query_node`] sends to one.

mod target;
#[cfg(feature = "test-cluster")]
pub mod test_cluster;

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

pub use target::{RedisTarget, CLUSTER_SCHEME};

/// Timeouts and reconnect pacing of a [`Conn`].
#[derive(Clone, Copy, Debug)]
pub struct ConnOptions {
    /// Bound on establishing a connection (and on [`Conn::connect`]).
    pub connect_timeout: Duration,
    /// Bound on one reply.
    pub response_timeout: Duration,
    /// Retries of a command after a dropped connection (single server) or a
    /// redirect / lost node (cluster) before the error reaches the caller.
    pub retries: usize,
    /// Growth of the wait between reconnect attempts of a single-server
    /// connection: redis-rs 0.32 multiplies a one-second base by it, so its
    /// default of 100 would leave a reconnect that failed once waiting the
    /// whole cap before the next attempt, every command behind it.
    pub retry_factor: u64,
    /// Cap of the wait between reconnect attempts, in ms.
    pub retry_delay_max_ms: u64,
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            retries: 3,
            retry_factor: 2,
            retry_delay_max_ms: 500,
        }
    }
}

/// A reconnecting, multiplexed command connection; cheap to clone (clones
/// share the connection).
#[derive(Clone)]
pub enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// One server to send a keyless command to (see [`Conn::nodes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// The single server.
    Server,
    /// A cluster master, as the cluster announces it.
    Master { host: String, port: u16 },
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server => f.write_str("server"),
            Self::Master { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Conn {
    /// Connects to `target`; fails if it cannot be reached now (later
    /// outages are survived by reconnecting).
    pub async fn connect(target: &RedisTarget, options: &ConnOptions) -> RedisResult<Self> {
        let connecting = async {
            match target {
                RedisTarget::Server(url) => {
                    let client = redis::Client::open(url.as_str())?;
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(options.connect_timeout)
                        .set_response_timeout(options.response_timeout)
                        .set_number_of_retries(options.retries)
                        .set_factor(options.retry_factor)
                        .set_max_delay(options.retry_delay_max_ms);
                    Ok(Self::Server(
                        client.get_connection_manager_with_config(config).await?,
                    ))
                }
                RedisTarget::Cluster(seeds) => {
                    let client = ClusterClientBuilder::new(seeds.clone())
                        .connection_timeout(options.connect_timeout)
                        .response_timeout(options.response_timeout)
                        .retries(u32::try_from(options.retries).unwrap_or(u32::MAX))
                        .max_retry_wait(options.retry_delay_max_ms)
                        .build()?;
                    Ok(Self::Cluster(client.get_async_connection().await?))
                }
            }
        };
        tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| RedisError::from((ErrorKind::IoError, "redis connect timed out")))?
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Splits items, each named by the key that routes it, into the groups
    /// one pipeline (or one script) may carry: everything on a server; per
    /// hash tag on a cluster (keys with one tag share a slot; two tags that
    /// happen to share a slot just make two pipelines). Groups keep the
    /// items' order, and come in the order of their first item.
    pub fn slot_groups<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<Vec<usize>> {
        if !self.is_cluster() {
            let all: Vec<usize> = keys.into_iter().enumerate().map(|(i, _)| i).collect();
            return if all.is_empty() {
                Vec::new()
            } else {
                vec![all]
            };
        }
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_tag: HashMap<&str, usize> = HashMap::new();
        for (i, key) in keys.into_iter().enumerate() {
            let group = *by_tag.entry(hash_tag(key)).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[group].push(i);
        }
        groups
    }

    /// The servers a keyless command (SCAN, CONFIG GET) must reach to cover
    /// every key: the server, or every master serving slots now.
    pub async fn nodes(&self) -> RedisResult<Vec<Node>> {
        let Self::Cluster(_) = self else {
            return Ok(vec![Node::Server]);
        };
        let mut conn = self.clone();
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await?;
        let mut masters = Vec::new();
        let Value::Array(ranges) = slots else {
            return Err(protocol("CLUSTER SLOTS reply is not an array"));
        };
        for range in ranges {
            // [start, end, [host, port, id, …] of the master, replicas…]
            let Value::Array(range) = range else {
                return Err(protocol("CLUSTER SLOTS range is not an array"));
            };
            let Some(Value::Array(master)) = range.get(2) else {
                return Err(protocol("CLUSTER SLOTS range without a master"));
            };
            let (host, port): (String, u16) = match (master.first(), master.get(1)) {
                (Some(host), Some(port)) => (
                    String::from_redis_value(host)?,
                    u16::from_redis_value(port)?,
                ),
                _ => return Err(protocol("CLUSTER SLOTS master without host and port")),
            };
            let node = Node::Master { host, port };
            if !masters.contains(&node) {
                masters.push(node);
            }
        }
        Ok(masters)
    }

    /// Sends `cmd` to one node of [`Conn::nodes`].
    pub async fn query_node<T: FromRedisValue>(&self, node: &Node, cmd: &Cmd) -> RedisResult<T> {
        let mut conn = self.clone();
        match (&mut conn, node) {
            (Self::Cluster(cluster), Node::Master { host, port }) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = cluster.route_command(cmd, routing).await?;
                T::from_redis_value(&value)
            }
            (Self::Server(_), Node::Server) => cmd.query_async(&mut conn).await,
            _ => Err(RedisError::from((
                ErrorKind::ClientError,
                "node does not belong to this connection",
                node.to_string(),
            ))),
        }
    }

    /// Runs one pipeline; on a cluster, all its keyed commands must share a
    /// slot (see [`Conn::slot_groups`]).
    pub async fn query_pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        let mut conn = self.clone();
        pipe.query_async(&mut conn).await
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The part of `key` that Redis Cluster hashes: the text between the first
/// `{` and the next `}` when that is not empty, else the whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// Redis's `maxmemory-policy`, or `None` when a server does not say (some
/// managed services refuse `CONFIG GET`). On a cluster every master is asked;
/// the answer is the first policy that is not `noeviction`, else
/// `noeviction`, else `None` if any master refused.
pub async fn eviction_policy(target: &RedisTarget) -> RedisResult<Option<String>> {
    let conn = Conn::connect(target, &ConnOptions::default()).await?;
    let mut get = redis::cmd("CONFIG");
    get.arg("GET").arg("maxmemory-policy");
    let mut answer = Some("noeviction".to_owned());
    for node in conn.nodes().await? {
        let reply: RedisResult<Vec<String>> = conn.query_node(&node, &get).await;
        match reply.ok().and_then(|v| v.get(1).cloned()) {
            Some(policy) if policy != "noeviction" => return Ok(Some(policy)),
            Some(_) => {}
            None => answer = None,
        }
    }
    Ok(answer)
}

fn protocol(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::ParseError, what))
}

#[cfg(test)]
mod tests {
    use super::hash_tag;

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag("p:{room-1}:seq"), "room-1");
        assert_eq!(hash_tag("p:{room-1}:{x}"), "room-1");
        assert_eq!(hash_tag("p:{}:seq"), "p:{}:seq");
        assert_eq!(hash_tag("p:{open"), "p:{open");
        assert_eq!(hash_tag("plain"), "plain");
    }
}
