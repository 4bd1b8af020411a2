//! The Redis bus's subscriber task: owns the pub/sub connection, forwards the
//! joined rooms' events, and reconnects and resubscribes after a loss.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use applause_core::EventEnvelope;
use futures_util::future::try_join_all;
use futures_util::StreamExt;
use redis::aio::PubSubStream;
use redis::{ErrorKind, RedisError, RedisResult};
use tokio::sync::mpsc;

use super::Shared;
use crate::BusMessage;

/// Opens a pub/sub connection, subscribes every joined room on it, and makes
/// it the one joins use. Returns its message stream.
///
/// On a cluster any node will do (PUBLISH reaches every node): the seeds are
/// tried in turn, starting with the one that last worked, so losing that
/// node moves the subscriber to the next.
pub(super) async fn open(shared: &Shared) -> RedisResult<PubSubStream> {
    let timeout = shared.command_timeout();
    let nodes = shared.clients.len();
    let first = shared.next_node.load(Ordering::Relaxed);
    let mut failure = None;
    let mut pubsub = None;
    for attempt in 0..nodes {
        let node = (first + attempt) % nodes;
        match tokio::time::timeout(timeout, shared.clients[node].get_async_pubsub()).await {
            Ok(Ok(connected)) => {
                shared.next_node.store(node, Ordering::Relaxed);
                pubsub = Some(connected);
                break;
            }
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(timed_out()),
        }
    }
    let Some(pubsub) = pubsub else {
        return Err(failure.unwrap_or_else(timed_out));
    };
    let (sink, stream) = pubsub.split();
    let _membership = shared.membership.lock().await;
    let channels: Vec<String> = shared.joined.iter().map(|r| shared.channel(&r)).collect();
    // One SUBSCRIBE per channel: redis-rs 0.32 pairs one confirmation with one
    // request, so a multi-channel SUBSCRIBE would confirm too early. The
    // requests are still pipelined on the connection.
    let subscribes = channels.iter().map(|channel| {
        let mut sink = sink.clone();
        async move { sink.subscribe(channel).await }
    });
    let rooms_per_timeout = 1_000;
    let budget =
        timeout * u32::try_from(1 + channels.len() / rooms_per_timeout).unwrap_or(u32::MAX);
    tokio::time::timeout(budget, try_join_all(subscribes))
        .await
        .map_err(|_| timed_out())??;
    *shared.sink.lock() = Some(sink);
    Ok(stream)
}

fn timed_out() -> RedisError {
    RedisError::from((ErrorKind::IoError, "redis pub/sub timed out"))
}

/// The inputs of the subscriber loop.
enum Input {
    Message(Option<redis::Msg>),
    PingDue,
    Recovered(mpsc::OwnedPermit<BusMessage>),
}

/// Forwards messages until the connection is lost, then reconnects with
/// capped exponential backoff and announces [`BusMessage::Reconnected`].
pub(super) async fn run(
    shared: Arc<Shared>,
    mut stream: PubSubStream,
    tx: mpsc::Sender<BusMessage>,
) {
    let mut forwarder = Forwarder {
        tx,
        lagged: false,
        grace: Duration::from_millis(shared.config.lag_grace_ms),
    };
    let ping_interval = Duration::from_millis(shared.config.ping_interval_ms.max(1));
    loop {
        pump(&shared, &mut stream, &mut forwarder, ping_interval).await;
        *shared.sink.lock() = None;
        tracing::warn!("redis pub/sub connection lost; reconnecting");
        let mut backoff_ms: u64 = 50;
        // The next attempt starts with another node: a lost connection
        // usually means a lost node.
        let nodes = shared.clients.len().max(1);
        let next = (shared.next_node.load(Ordering::Relaxed) + 1) % nodes;
        shared.next_node.store(next, Ordering::Relaxed);
        stream = loop {
            match open(&shared).await {
                Ok(stream) => break stream,
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms, "redis pub/sub reconnect failed");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = backoff_ms
                        .saturating_mul(2)
                        .min(shared.config.reconnect_backoff_ms_max.max(1));
                }
            }
        };
        tracing::info!("redis pub/sub reconnected");
        forwarder.deliver(BusMessage::Reconnected).await;
    }
}

/// Runs one connection until it is lost (stream ended or PING failed).
async fn pump(
    shared: &Shared,
    stream: &mut PubSubStream,
    forwarder: &mut Forwarder,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval(ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        let input = tokio::select! {
            msg = stream.next() => Input::Message(msg),
            _ = ping.tick() => Input::PingDue,
            permit = forwarder.tx.clone().reserve_owned(), if forwarder.lagged => match permit {
                Ok(permit) => Input::Recovered(permit),
                // Nobody receives any more: there is nothing left to recover.
                Err(_) => { forwarder.lagged = false; continue }
            },
        };
        match input {
            Input::Message(None) => return,
            Input::Message(Some(msg)) => {
                if let Some(event) = decode(shared, &msg) {
                    forwarder.deliver(BusMessage::Event(Arc::new(event))).await;
                }
            }
            Input::PingDue => {
                let sink = shared.sink.lock().clone();
                let Some(mut sink) = sink else { return };
                let pong =
                    tokio::time::timeout(shared.command_timeout(), sink.ping::<redis::Value>())
                        .await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
            Input::Recovered(permit) => {
                permit.send(BusMessage::Reconnected);
                forwarder.lagged = false;
            }
        }
    }
}

/// An event of a joined room, or `None` (undecodable, or a room left while
/// its messages were in flight).
fn decode(shared: &Shared, msg: &redis::Msg) -> Option<EventEnvelope> {
    let payload: String = match msg.get_payload() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "non-text redis bus message");
            return None;
        }
    };
    let event: EventEnvelope = match serde_json::from_str(&payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, channel = msg.get_channel_name(), "undecodable redis bus message");
            return None;
        }
    };
    shared.joined.contains(&event.room_id).then_some(event)
}

/// Delivery into the bounded messages channel. A consumer that stays behind
/// for longer than the grace period makes the forwarder drop events (memory
/// stays bounded) until there is room again, then report `Reconnected` so the
/// gateway refills the gap from history.
struct Forwarder {
    tx: mpsc::Sender<BusMessage>,
    lagged: bool,
    grace: Duration,
}

impl Forwarder {
    async fn deliver(&mut self, msg: BusMessage) {
        if self.lagged {
            return;
        }
        match self.tx.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                if self.tx.send_timeout(msg, self.grace).await.is_err() && !self.tx.is_closed() {
                    tracing::warn!("bus consumer lagging; dropping events until it catches up");
                    self.lagged = true;
                }
            }
        }
    }
}
