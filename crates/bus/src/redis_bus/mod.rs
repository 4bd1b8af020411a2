//! The Redis bus for separate processes: a Lua script orders and appends each
//! event to the room's Stream and PUBLISHes it; a background task owns the
//! pub/sub connection and forwards the rooms this process joined.
//!
//! Key layout (all keys of a room share the Redis Cluster hash tag `{room}`,
//! so the script's keys land in one slot):
//! - `<prefix>{<room>}:seq` — the room's last published seq (string);
//! - `<prefix>{<room>}:events` — the room's history, a Stream with entry ids
//!   `<seq>-0` and fields `e` (envelope JSON) and `c` (committed_at_ms);
//! - `<prefix>{<room>}:ch` — the pub/sub channel carrying the envelope JSON.
//!
//! Both keys expire `key_ttl_ms` after the room's last event.
//!
//! Redis Cluster (`redis+cluster://` URLs, see [`applause_redis::RedisTarget`]):
//! the command connection routes each room's script and reads to the room's
//! slot; a publish batch is split into one pipeline per room, run
//! concurrently. Fan-out stays on classic PUBLISH, which a cluster forwards
//! to every node, so the subscriber keeps one plain pub/sub connection to any
//! seed node and moves to the next seed when it reconnects. Sharded pub/sub
//! (SPUBLISH/SSUBSCRIBE) was weighed and not taken: redis-rs 0.32 offers it
//! only through the cluster connection's RESP3 push channel, which
//! resubscribes behind the caller's back after a node is lost, so the bus
//! could no longer tell the gateway [`BusMessage::Reconnected`] (events lost
//! meanwhile would go unnoticed), and one room's subscription would follow
//! its slot's master, i.e. one pub/sub connection per master. Classic
//! PUBLISH costs cluster-bus traffic proportional to the node count, which
//! is fine for the handful of masters a bus needs.

mod subscriber;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use applause_core::EventEnvelope;
use applause_redis::{Conn, ConnOptions, RedisTarget};
use async_trait::async_trait;
use dashmap::DashSet;
use futures_util::future::try_join_all;
use parking_lot::Mutex;
use redis::aio::PubSubSink;
use redis::{ErrorKind, RedisError, Script};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::rules::answer_history;
use crate::{BusError, BusMessage, EventBus, History, HistoryBounds, PublishOutcome, RoomCursor};

/// Settings of a [`RedisBus`].
#[derive(Clone)]
pub struct RedisBusConfig {
    /// Prepended to every key and channel, e.g. `applause:`; no braces (they
    /// would change the Cluster hash tag).
    pub key_prefix: String,
    pub bounds: HistoryBounds,
    /// Capacity of the messages channel, in messages.
    pub messages_capacity_max: usize,
    /// A room's keys expire this long after its last event; longer than any
    /// publisher retry, so an old seq is never accepted as a room's first.
    pub key_ttl_ms: u64,
    /// Bound on every Redis round trip made on a caller's behalf.
    pub command_timeout_ms: u64,
    /// Bound on the PING of [`EventBus::ready`].
    pub ready_timeout_ms: u64,
    /// How often the subscriber PINGs its connection to notice a dead peer.
    pub ping_interval_ms: u64,
    /// Cap of the subscriber's exponential reconnect backoff.
    pub reconnect_backoff_ms_max: u64,
    /// How long the subscriber waits for room in a full messages channel
    /// before it drops events and later reports [`BusMessage::Reconnected`]
    /// (rather than buffering without bound).
    pub lag_grace_ms: u64,
    /// How event age is measured against `committed_at_ms`.
    pub clock: Arc<dyn Clock>,
}

impl RedisBusConfig {
    pub fn new(key_prefix: impl Into<String>, bounds: HistoryBounds) -> Self {
        Self {
            key_prefix: key_prefix.into(),
            bounds,
            messages_capacity_max: 16_384,
            key_ttl_ms: 24 * 60 * 60 * 1_000,
            command_timeout_ms: 2_000,
            ready_timeout_ms: 500,
            ping_interval_ms: 5_000,
            reconnect_backoff_ms_max: 5_000,
            lag_grace_ms: 1_000,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for RedisBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBusConfig")
            .field("key_prefix", &self.key_prefix)
            .field("bounds", &self.bounds)
            .field("messages_capacity_max", &self.messages_capacity_max)
            .field("key_ttl_ms", &self.key_ttl_ms)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("reconnect_backoff_ms_max", &self.reconnect_backoff_ms_max)
            .finish_non_exhaustive()
    }
}

/// State shared by the bus handle and its subscriber task.
struct Shared {
    /// One client per node the subscriber may use: the server, or every
    /// cluster seed (tried in turn from `next_node` when reconnecting).
    clients: Vec<redis::Client>,
    next_node: std::sync::atomic::AtomicUsize,
    config: RedisBusConfig,
    /// Rooms this process joined: resubscribed after every reconnect and used
    /// to drop messages still in flight for a room already left.
    joined: DashSet<String>,
    /// Serialises join, leave and resubscription, so a join never subscribes
    /// on a connection that a concurrent reconnect is replacing.
    membership: tokio::sync::Mutex<()>,
    /// The live pub/sub connection's command half; `None` while reconnecting.
    sink: Mutex<Option<PubSubSink>>,
}

impl Shared {
    fn key(&self, room_id: &str, suffix: &str) -> String {
        format!("{}{{{room_id}}}:{suffix}", self.config.key_prefix)
    }

    fn seq_key(&self, room_id: &str) -> String {
        self.key(room_id, "seq")
    }

    fn stream_key(&self, room_id: &str) -> String {
        self.key(room_id, "events")
    }

    fn channel(&self, room_id: &str) -> String {
        self.key(room_id, "ch")
    }

    fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.config.command_timeout_ms)
    }
}

/// The scaled-mode bus. Cheap to share behind an `Arc`; dropping it stops its
/// subscriber task.
pub struct RedisBus {
    shared: Arc<Shared>,
    conn: Conn,
    script: Script,
    rx: Mutex<Option<mpsc::Receiver<BusMessage>>>,
    subscriber: JoinHandle<()>,
}

impl RedisBus {
    /// Connects with default settings: `key_prefix` such as `applause:`.
    pub async fn connect(
        redis_url: &str,
        key_prefix: &str,
        bounds: HistoryBounds,
    ) -> Result<Self, BusError> {
        Self::connect_with(redis_url, RedisBusConfig::new(key_prefix, bounds)).await
    }

    /// Connects the command connection and the pub/sub connection; fails if
    /// Redis cannot be reached now (later outages are survived).
    pub async fn connect_with(redis_url: &str, config: RedisBusConfig) -> Result<Self, BusError> {
        if config.key_prefix.contains(['{', '}']) {
            return Err(BusError::Unavailable(
                "redis key prefix must not contain braces".into(),
            ));
        }
        let target = RedisTarget::parse(redis_url)
            .map_err(|e| BusError::Unavailable(format!("redis url {e}")))?;
        let clients = target
            .node_urls()
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let timeout = Duration::from_millis(config.command_timeout_ms);
        // Reconnects are paced from one second up by `retry_factor` (see
        // ConnOptions): capped at 500 ms, a Redis that is still down fails
        // fast and one that returned is found within a second, so publishes
        // do not queue behind a long backoff.
        let options = ConnOptions {
            connect_timeout: timeout,
            response_timeout: timeout,
            retries: 3,
            retry_factor: 2,
            retry_delay_max_ms: config.reconnect_backoff_ms_max.min(500),
        };
        let conn = Conn::connect(&target, &options)
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(config.messages_capacity_max.max(2));
        let shared = Arc::new(Shared {
            clients,
            next_node: std::sync::atomic::AtomicUsize::new(0),
            config,
            joined: DashSet::new(),
            membership: tokio::sync::Mutex::new(()),
            sink: Mutex::new(None),
        });
        let stream = subscriber::open(&shared).await.map_err(unavailable)?;
        let subscriber = tokio::spawn(subscriber::run(Arc::clone(&shared), stream, tx));
        Ok(Self {
            shared,
            conn,
            script: Script::new(include_str!("publish.lua")),
            rx: Mutex::new(Some(rx)),
            subscriber,
        })
    }

    fn publish_pipeline<'a>(
        &self,
        events: impl Iterator<Item = &'a EventEnvelope>,
        published_through: &HashMap<String, u64>,
        load_script: bool,
    ) -> Result<redis::Pipeline, BusError> {
        let shared = &self.shared;
        let mut pipe = redis::pipe();
        if load_script {
            pipe.load_script(&self.script).ignore();
        }
        for event in events {
            let json = serde_json::to_string(event)
                .map_err(|e| BusError::Unavailable(format!("event not encodable: {e}")))?;
            let mut invocation = self.script.prepare_invoke();
            invocation
                .key(shared.seq_key(&event.room_id))
                .key(shared.stream_key(&event.room_id))
                .arg(event.seq)
                .arg(json)
                .arg(event.committed_at_ms)
                .arg(shared.config.bounds.events_max.max(1))
                .arg(shared.channel(&event.room_id))
                .arg(shared.config.key_ttl_ms.max(1))
                .arg(
                    published_through
                        .get(&event.room_id)
                        // Lua numbers are doubles: seqs stay below 2^53.
                        .map_or(-1, |&p| i64::try_from(p).unwrap_or(-1)),
                );
            pipe.invoke_script(&invocation);
        }
        Ok(pipe)
    }

    /// One round trip, bounded by the command timeout. A connection found
    /// dropped (the first command after Redis came back, or after a network
    /// cut) is tried once more on the manager's new connection: both the
    /// publish script (ordered by seq) and history reads are safe to repeat,
    /// and without it a gateway would resync a room's viewers over a
    /// connection that had already been replaced.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let mut retried = false;
        loop {
            let result = tokio::time::timeout(
                self.shared.command_timeout(),
                self.conn.query_pipeline(pipe),
            )
            .await;
            match result {
                Ok(Err(e)) if !retried && (e.is_connection_dropped() || e.is_io_error()) => {
                    retried = true;
                }
                Ok(result) => return result,
                Err(_) => {
                    return Err(RedisError::from((
                        ErrorKind::IoError,
                        "redis command timed out",
                    )))
                }
            }
        }
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// Redis's `maxmemory-policy`, or `None` when the server does not say (some
/// managed services refuse `CONFIG GET`). Anything but `noeviction` lets Redis
/// drop a room's seq and history keys or the leaderboards' markers under
/// memory pressure: the outbox and the rebuild recover, but viewers resync
/// and boards are rebuilt, so operators should be told.
/// On a Redis Cluster every master is asked, and the first policy that is
/// not `noeviction` is the answer.
pub async fn eviction_policy(url: &str) -> Result<Option<String>, BusError> {
    let target =
        RedisTarget::parse(url).map_err(|e| BusError::Unavailable(format!("redis url {e}")))?;
    applause_redis::eviction_policy(&target)
        .await
        .map_err(unavailable)
}

fn unavailable(e: RedisError) -> BusError {
    BusError::Unavailable(e.to_string())
}

fn outcome((code, n): (i64, i64)) -> Result<PublishOutcome, BusError> {
    match code {
        0 => Ok(PublishOutcome::Duplicate),
        1 => Ok(PublishOutcome::Published),
        2 => Ok(PublishOutcome::Gap {
            expected: u64::try_from(n).unwrap_or(0),
        }),
        _ => Err(BusError::Unavailable(format!(
            "unexpected publish script reply {code}"
        ))),
    }
}

/// Decodes XRANGE entries; an undecodable entry ends the list, which the
/// history rules then answer with `Gone` (a resync rather than a stuck resume).
fn decode_entries(entries: Vec<(String, HashMap<String, String>)>) -> Vec<Arc<EventEnvelope>> {
    let mut out = Vec::with_capacity(entries.len());
    for (id, fields) in entries {
        let Some(event) = fields
            .get("e")
            .and_then(|json| serde_json::from_str::<EventEnvelope>(json).ok())
        else {
            tracing::warn!(stream_id = %id, "undecodable event in room history");
            break;
        };
        out.push(Arc::new(event));
    }
    out
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish_through(
        &self,
        events: &[EventEnvelope],
        published_through: &HashMap<String, u64>,
    ) -> Result<Vec<PublishOutcome>, BusError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // One round trip: EVALSHA per event, pipelined (on a cluster, one
        // pipeline per room's slot, concurrently; a room's events stay in
        // order in its pipeline). After a Redis restart the script cache is
        // empty; the retry loads it in the same pipeline. Events that did run
        // before a failure answer `Duplicate` on retry.
        let keys: Vec<String> = events
            .iter()
            .map(|e| self.shared.seq_key(&e.room_id))
            .collect();
        let groups = self.conn.slot_groups(keys.iter().map(String::as_str));
        let group_replies = try_join_all(groups.iter().map(|group| async move {
            let members = || group.iter().map(|&i| &events[i]);
            let pipe = self.publish_pipeline(members(), published_through, false)?;
            let replies: Vec<(i64, i64)> = match self.query(&pipe).await {
                Err(e) if e.kind() == ErrorKind::NoScriptError => {
                    let pipe = self.publish_pipeline(members(), published_through, true)?;
                    self.query(&pipe).await.map_err(unavailable)?
                }
                other => other.map_err(unavailable)?,
            };
            if replies.len() != group.len() {
                return Err(BusError::Unavailable(format!(
                    "{} publish replies for {} events",
                    replies.len(),
                    group.len()
                )));
            }
            Ok::<_, BusError>(replies)
        }))
        .await?;
        let mut outcomes: Vec<Option<PublishOutcome>> = vec![None; events.len()];
        for (group, replies) in groups.iter().zip(group_replies) {
            for (&i, reply) in group.iter().zip(replies) {
                outcomes[i] = Some(outcome(reply)?);
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| BusError::Unavailable("publish reply missing".into())))
            .collect()
    }

    async fn join(&self, room_id: &str) -> Result<RoomCursor, BusError> {
        let shared = &self.shared;
        {
            let _membership = shared.membership.lock().await;
            if !shared.joined.contains(room_id) {
                let sink = shared.sink.lock().clone();
                let Some(mut sink) = sink else {
                    return Err(BusError::Unavailable("redis pub/sub reconnecting".into()));
                };
                // redis-rs resolves this once Redis confirmed the subscription.
                tokio::time::timeout(
                    shared.command_timeout(),
                    sink.subscribe(shared.channel(room_id)),
                )
                .await
                .map_err(|_| BusError::Unavailable("redis subscribe timed out".into()))?
                .map_err(unavailable)?;
                shared.joined.insert(room_id.to_owned());
            }
        }
        // Read after subscribing: every event after this seq will arrive.
        let mut pipe = redis::pipe();
        pipe.get(shared.seq_key(room_id));
        let (last_seq,): (Option<u64>,) = self.query(&pipe).await.map_err(unavailable)?;
        Ok(RoomCursor {
            last_seq: last_seq.unwrap_or(0),
        })
    }

    async fn leave(&self, room_id: &str) -> Result<(), BusError> {
        let shared = &self.shared;
        let _membership = shared.membership.lock().await;
        if shared.joined.remove(room_id).is_none() {
            return Ok(());
        }
        let sink = shared.sink.lock().clone();
        if let Some(mut sink) = sink {
            // A failure leaves a subscription that dies with its connection
            // and whose messages are dropped as not joined.
            let unsubscribed = tokio::time::timeout(
                shared.command_timeout(),
                sink.unsubscribe(shared.channel(room_id)),
            )
            .await;
            if !matches!(unsubscribed, Ok(Ok(()))) {
                tracing::warn!(room_id, "redis unsubscribe failed");
            }
        }
        Ok(())
    }

    fn messages(&self) -> Option<mpsc::Receiver<BusMessage>> {
        self.rx.lock().take()
    }

    async fn history(
        &self,
        room_id: &str,
        since_seq: u64,
        max: usize,
    ) -> Result<History, BusError> {
        let shared = &self.shared;
        let bounds = shared.config.bounds;
        // Never read more than the kept window, whatever the caller asks.
        let count = max.min(bounds.events_max).max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .get(shared.seq_key(room_id))
            .cmd("XRANGE")
            .arg(shared.stream_key(room_id))
            .arg(format!("{}-0", since_seq.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(count);
        let (last_seq, entries): (Option<u64>, Vec<(String, HashMap<String, String>)>) =
            self.query(&pipe).await.map_err(unavailable)?;
        Ok(answer_history(
            last_seq,
            since_seq,
            max,
            decode_entries(entries),
            bounds,
            shared.config.clock.now_ms(),
        ))
    }

    async fn ready(&self) -> bool {
        let mut conn = self.conn.clone();
        // On a cluster redis-rs sends PING to every master and answers OK only
        // if all did: the bus is ready when every room's slot is served.
        let ping = redis::cmd("PING");
        let timeout = Duration::from_millis(self.shared.config.ready_timeout_ms);
        matches!(
            tokio::time::timeout(timeout, ping.query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        )
    }
}
