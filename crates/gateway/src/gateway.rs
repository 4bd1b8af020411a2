//! The gateway itself: the sharded room registry, the task that takes bus
//! messages and fans them out (filling gaps from the bus's history), the task
//! that retires empty rooms, and shutdown.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use applause_bus::{EventBus, History};
use applause_core::EventEnvelope;
use applause_web::{ApiError, Authenticator};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::GatewayConfig;
use crate::limits::IpLimiter;
use crate::metrics::Metrics;
use crate::ports::{AckHandler, RoomDirectory, RoomInfo};
use crate::room::{Delivered, Room};

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    #[error("the event bus's message receiver was already taken")]
    BusTaken,
    #[error("cannot register gateway metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the fan-out thread: {0}")]
    Thread(#[from] std::io::Error),
}

pub(crate) struct Inner {
    pub config: GatewayConfig,
    pub auth: Authenticator,
    pub bus: Arc<dyn EventBus>,
    pub directory: Arc<dyn RoomDirectory>,
    pub acks: Arc<dyn AckHandler>,
    pub metrics: Metrics,
    /// Sharded, so rooms on different shards never contend.
    pub rooms: DashMap<String, Arc<Room>>,
    pub shutdown: CancellationToken,
    /// Every task of the gateway runs here (the process's tracker when it
    /// was given one), so whoever owns it can wait for them to end.
    pub tasks: TaskTracker,
    pub connections: AtomicUsize,
    pub next_id: AtomicU64,
    pub limiter: IpLimiter,
    /// Serialises bus joins and leaves, so a leave of a retired room can never
    /// land after the join of its successor.
    membership: tokio::sync::Mutex<()>,
    /// The fan-out's own thread (`fanout_thread`), kept so a test can see
    /// it end; nobody joins it (it ends with the dispatcher).
    pub fanout_thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The WebSocket fan-out. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

/// Where a gateway runs its tasks — the bus dispatcher, the room sweeper
/// and a reader and a writer per connection — and the token that stops
/// them. A process passes its own tracker and a child of its own token, so
/// its shutdown cancels and awaits the gateway's tasks with all the others.
#[derive(Clone, Default)]
pub struct Spawner {
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// Builds the gateway and spawns its bus dispatcher and room sweeper on
    /// the current tokio runtime (so call it inside one), on a tracker of
    /// its own.
    pub fn new(
        config: GatewayConfig,
        auth: Authenticator,
        bus: Arc<dyn EventBus>,
        rooms: Arc<dyn RoomDirectory>,
        acks: Arc<dyn AckHandler>,
        registry: &prometheus::Registry,
    ) -> Result<Self, GatewayError> {
        Self::new_on(config, auth, bus, rooms, acks, registry, Spawner::default())
    }

    /// Like [`Gateway::new`], with every task spawned on `spawner`.
    pub fn new_on(
        config: GatewayConfig,
        auth: Authenticator,
        bus: Arc<dyn EventBus>,
        rooms: Arc<dyn RoomDirectory>,
        acks: Arc<dyn AckHandler>,
        registry: &prometheus::Registry,
        spawner: Spawner,
    ) -> Result<Self, GatewayError> {
        config.validate().map_err(GatewayError::Config)?;
        let messages = bus.messages().ok_or(GatewayError::BusTaken)?;
        let metrics = Metrics::new(registry)?;
        let inner = Arc::new(Inner {
            limiter: IpLimiter::new(config.connects_per_ip_per_s, config.connects_per_ip_burst),
            config,
            auth,
            bus,
            directory: rooms,
            acks,
            metrics,
            rooms: DashMap::new(),
            shutdown: spawner.shutdown,
            tasks: spawner.tracker,
            connections: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            membership: tokio::sync::Mutex::new(()),
            fanout_thread: parking_lot::Mutex::new(None),
        });
        if inner.config.fanout_thread {
            let thread = crate::dispatch::spawn_thread(inner.clone(), messages)?;
            *inner.fanout_thread.lock() = Some(thread);
        } else {
            inner
                .tasks
                .spawn(crate::dispatch::dispatch(inner.clone(), messages));
        }
        inner.tasks.spawn(sweep(inner.clone()));
        Ok(Self { inner })
    }

    /// Closes every connection with 1001, stops the background tasks and
    /// refuses new connections; waits up to `shutdown_grace_ms` for the
    /// connections to finish closing.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.inner.config.shutdown_grace_ms);
        while self.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tasks of this gateway that have not ended (dispatcher, sweeper,
    /// connections' readers and writers; with a shared tracker, the other
    /// tasks on it too).
    pub fn tasks_running(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Rooms this gateway is subscribed to.
    pub fn rooms(&self) -> usize {
        self.inner.rooms.len()
    }
}

impl Inner {
    /// The room's entry on this gateway, joined on the bus.
    pub(crate) async fn joined_room(&self, info: &RoomInfo) -> Result<Arc<Room>, ApiError> {
        let room = self
            .rooms
            .entry(info.room_id.clone())
            .or_insert_with(|| {
                Arc::new(Room::new(
                    info,
                    self.config.history_events_max,
                    self.config.history_age(),
                ))
            })
            .clone();
        room.joined
            .get_or_try_init(|| async {
                let _m = self.membership.lock().await;
                let cursor = self
                    .bus
                    .join(&room.id)
                    .await
                    .map_err(ApiError::unavailable)?;
                room.set_cursor(cursor.last_seq.max(info.published_seq));
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(room)
    }

    fn apply(&self, room: &Room, ev: Arc<Delivered>) -> bool {
        match room.apply(ev) {
            Some(f) => {
                self.metrics.slow_consumer_closes.inc_by(f.slow_consumers);
                true
            }
            None => false,
        }
    }

    /// Consecutive events of one room: fanned out together as far as they
    /// continue the room's `seq`; the rest one by one (gaps, duplicates).
    /// `stagger`: to one half of the room now and the other half with the
    /// room's next event ([`Room::apply_many`]).
    pub(crate) async fn on_events(&self, run: Vec<Arc<EventEnvelope>>, stagger: bool) {
        if run.len() == 1 && !stagger {
            let env = run.into_iter().next().expect("one event");
            return self.on_event(env).await;
        }
        let Some(room) = self.rooms.get(run[0].room_id.as_str()).map(|r| r.clone()) else {
            return;
        };
        let mut envs = run.into_iter().filter(|env| {
            let ours = env.epoch == room.epoch;
            if !ours {
                tracing::warn!(room = %env.room_id, epoch = env.epoch, "event of another epoch dropped");
            }
            ours
        });
        let delivered: Vec<(Arc<EventEnvelope>, Arc<Delivered>)> = envs
            .by_ref()
            .map(|env| {
                let d = Arc::new(Delivered::new(&env));
                (env, d)
            })
            .collect();
        let evs: Vec<Arc<Delivered>> = delivered.iter().map(|(_, d)| d.clone()).collect();
        let (applied, out) = room.apply_many(&evs, stagger);
        self.metrics.slow_consumer_closes.inc_by(out.slow_consumers);
        for (env, _) in delivered.into_iter().skip(applied) {
            self.on_event(env).await;
        }
    }

    /// A staggered room's lagging half is due: it gets what it lacks.
    /// Whether anything lagged.
    pub(crate) fn on_catch_up(&self, room_id: &str) -> bool {
        let Some(room) = self.rooms.get(room_id).map(|r| r.clone()) else {
            return false;
        };
        room.catch_up().is_some_and(|out| {
            self.metrics.slow_consumer_closes.inc_by(out.slow_consumers);
            true
        })
    }

    async fn on_event(&self, env: Arc<EventEnvelope>) {
        let Some(room) = self.rooms.get(env.room_id.as_str()).map(|r| r.clone()) else {
            return;
        };
        if env.epoch != room.epoch {
            tracing::warn!(room = %env.room_id, epoch = env.epoch, "event of another epoch dropped");
            return;
        }
        let ev = Arc::new(Delivered::new(&env));
        if self.apply(&room, ev.clone()) {
            return;
        }
        match room.last_seq() {
            Some(last) if env.seq > last => self.fill_gap(&room, last, Some(ev)).await,
            _ => {} // A duplicate.
        }
    }

    /// Fetches the events after `last` from the bus and fans them out, then
    /// `then` (the event that revealed the gap). Events lost for good reset
    /// the room: its connections are told to resync.
    async fn fill_gap(&self, room: &Room, last: u64, then: Option<Arc<Delivered>>) {
        let want = then.as_ref().map_or(self.config.history_events_max, |e| {
            usize::try_from(e.seq - last).unwrap_or(usize::MAX)
        });
        let mut lost = false;
        let mut since = last;
        loop {
            match self.bus.history(&room.id, since, want).await {
                Ok(History::Events(events)) => {
                    let n = events.len();
                    for e in events.iter().filter(|e| e.epoch == room.epoch) {
                        self.apply(room, Arc::new(Delivered::new(e)));
                    }
                    // After a reconnect the gap has no known end: keep paging.
                    match room.last_seq() {
                        Some(l) if then.is_none() && n == want && l > since => since = l,
                        _ => break,
                    }
                }
                Ok(History::Gone) => {
                    // After a reconnect, a bus that forgot the room (Redis
                    // restarted or flushed) has lost nothing of ours if the
                    // ledger says nothing past our position was published.
                    lost = then.is_some() || !self.nothing_published_after(room, since).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(room = %room.id, error = %e, "bus history unavailable; room resyncs");
                    lost = true;
                    break;
                }
            }
        }
        if let Some(ev) = then {
            if !self.apply(room, ev.clone()) && room.last_seq().is_none_or(|l| l < ev.seq) {
                lost = true;
            }
            if lost {
                tracing::warn!(room = %room.id, seq = ev.seq, "events lost; connections resync");
                room.reset();
                self.apply(room, ev);
            }
        } else if lost {
            room.reset();
        }
    }

    /// Whether the ledger vouches that no event of `room` after `seq` has
    /// reached the bus. A mark that lags a publish only makes this say no.
    async fn nothing_published_after(&self, room: &Room, seq: u64) -> bool {
        matches!(
            self.directory.room(&room.id).await,
            Ok(Some(info)) if info.published_seq <= seq
        )
    }

    pub(crate) async fn on_reconnected(&self) {
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.value().clone()).collect();
        for room in rooms {
            if let Some(last) = room.last_seq() {
                self.fill_gap(&room, last, None).await;
            }
        }
    }
}

/// Retires rooms that have had no connection for `room_linger_ms` and leaves
/// them on the bus; forgets idle per-IP rate limit entries.
async fn sweep(inner: Arc<Inner>) {
    let linger = inner.config.room_linger();
    let period = linger.clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        inner.limiter.forget_idle();
        let candidates: Vec<Arc<Room>> = inner
            .rooms
            .iter()
            .filter(|r| r.joined.initialized() && r.member_count() == 0)
            .map(|r| r.value().clone())
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let _m = inner.membership.lock().await;
        for room in candidates {
            if !room.retire_if_idle(linger) {
                continue;
            }
            inner
                .rooms
                .remove_if(&*room.id, |_, r| Arc::ptr_eq(r, &room));
            if let Err(e) = inner.bus.leave(&room.id).await {
                tracing::warn!(room = %room.id, error = %e, "bus leave failed");
            }
        }
    }
}
