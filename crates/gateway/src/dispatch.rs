//! The dispatcher: one task takes bus messages in rounds and fans them out,
//! so events of a room are applied strictly in the order the bus delivers
//! them. A round is whatever has queued up (up to `fanout_batch_events_max`
//! messages); the events of one room in it go to each connection in one
//! write, whatever other rooms' events came between them ([`steps`]).
//!
//! The coalescing window: a round that begins while the dispatcher was idle
//! with an event of a busy room (at least `fanout_coalesce_rate_min`
//! events a second) waits a little for that room's next events, so each connection
//! gets several frames per syscall. It is adaptive and bounded:
//! - it is as long as the room needs, at its recent rate, to produce
//!   `fanout_coalesce_events` events in all, and never longer than
//!   `fanout_coalesce_ms`;
//! - it ends early once the round holds that many events of the room;
//! - it is taken once per round and counted from the earliest moment the
//!   round's first event can have arrived: now when the dispatcher was
//!   idle, else the end of the previous round's gathering (the event came
//!   while that round was written). So no event waits longer than the
//!   window in all, and a backlog older than the window never waits: it
//!   is batched by the backlog itself. After a round cut short by the
//!   batch bound (a backlog), the next one does not wait either.
//!
//! A *heavy* room — one whose fan-out costs at least
//! `fanout_heavy_deliveries_min` deliveries a second (events a second ×
//! its connections), such as 1,000 viewers at 20 gifts a second — waits
//! too when it is below the busy rate: for its next event (one pair per
//! round), when the room's rate says that event comes within
//! `fanout_heavy_coalesce_ms`. Each of those sends costs the kernel the same
//! whatever it carries, so a pair per write halves the fan-out's CPU, and
//! the first event of a pair pays the gap to the second (at 20 events a
//! second, about 50 ms) in latency.

use std::sync::Arc;
use std::time::Duration;

use applause_bus::BusMessage;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

use crate::gateway::Inner;

/// The coalescing window's bounds (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// The longest wait of a busy room; zero turns that window off.
    pub max: Duration,
    /// Rooms below this many events a second are not busy.
    pub rate_min: u32,
    /// Events of a busy room a round aims to hold.
    pub events: usize,
    /// Deliveries a second from which a room is heavy; 0: none is.
    pub heavy_deliveries_min: u32,
    /// The longest wait of a heavy room (for its next event); zero turns
    /// that window off.
    pub heavy_max: Duration,
}

/// How long a round waits, and for how many events of its first room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub time: Duration,
    pub events: usize,
}

impl Wait {
    pub(crate) const NONE: Wait = Wait {
        time: Duration::ZERO,
        events: 1,
    };
}

impl Window {
    /// How long a round that starts with an event of a room producing
    /// `per_s` events and `deliveries_per_s` deliveries a second waits for
    /// more of its events, and how many it aims to hold.
    pub(crate) fn wait_for(&self, per_s: u32, deliveries_per_s: u32) -> Wait {
        if !self.max.is_zero() && per_s >= self.rate_min && self.events >= 2 {
            if per_s == 0 {
                return Wait {
                    time: self.max,
                    events: self.events,
                };
            }
            let needed = Duration::from_secs_f64((self.events - 1) as f64 / f64::from(per_s));
            return Wait {
                time: needed.min(self.max),
                events: self.events,
            };
        }
        let heavy = self.heavy_deliveries_min > 0 && deliveries_per_s >= self.heavy_deliveries_min;
        if !heavy || self.heavy_max.is_zero() || per_s == 0 {
            return Wait::NONE;
        }
        // The next event is due in one period; a round waits only when that
        // is within the bound, and up to half a period late (jitter) within
        // it. It ends as soon as the pair is there.
        let period = Duration::from_secs_f64(1.0 / f64::from(per_s));
        if period > self.heavy_max {
            return Wait::NONE;
        }
        Wait {
            time: (period * 3 / 2).min(self.heavy_max),
            events: 2,
        }
    }
}

/// How one round was gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    /// Messages were already waiting when the round began.
    pub behind: bool,
    /// How long the round waited for more events.
    pub waited: Duration,
    /// When the gathering ended; `None` when the round was cut by the
    /// batch bound (more may be waiting: the next round must not wait).
    pub ended: Option<Instant>,
}

/// Gathers the next round into `batch` (which must be empty): the first
/// message (waiting for it if none is queued), whatever else has queued up,
/// and, when `window_of` gives the first message's room a window, that
/// room's next events until the window closes or the round holds the
/// window's `events` of them. `previous` is the last round's [`Round::ended`] (`None` for
/// the first). `None` when the channel is closed and empty.
pub(crate) async fn gather(
    messages: &mut Receiver<BusMessage>,
    batch: &mut Vec<BusMessage>,
    batch_max: usize,
    previous: Option<Instant>,
    window_of: impl FnOnce(&BusMessage) -> Wait,
) -> Option<Round> {
    let (first, since, behind) = match messages.try_recv() {
        // It came while the previous round was written, or before (then
        // that round was full, and `previous` is `None`).
        Ok(m) => (m, previous, true),
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => (messages.recv().await?, Some(Instant::now()), false),
    };
    let mut round = Round {
        behind,
        waited: Duration::ZERO,
        ended: None,
    };
    let start = Instant::now();
    let wait = since.map_or(Wait::NONE, |_| window_of(&first));
    let deadline = since.map(|t| t + wait.time).filter(|d| *d > start);
    let events = wait.events;
    let window = deadline.map_or(Duration::ZERO, |d| d - start);
    let room = match &first {
        BusMessage::Event(env) if !window.is_zero() => Some(env.room_id.clone()),
        _ => None,
    };
    batch.push(first);
    let of_room = |m: &BusMessage| match (m, &room) {
        (BusMessage::Event(env), Some(r)) => env.room_id == *r,
        _ => false,
    };
    let mut held = 1;
    while batch.len() < batch_max {
        match messages.try_recv() {
            Ok(m) => {
                held += usize::from(of_room(&m));
                batch.push(m);
            }
            Err(_) => break,
        }
    }
    if let (Some(_), Some(deadline)) = (&room, deadline) {
        while batch.len() < batch_max && held < events {
            let next = tokio::select! {
                biased;
                m = messages.recv() => m,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            let Some(m) = next else { break };
            held += usize::from(of_room(&m));
            batch.push(m);
        }
        round.waited = start.elapsed();
    }
    round.ended = (batch.len() < batch_max).then(Instant::now);
    Some(round)
}

/// Runs [`dispatch`] on a thread of its own (`fanout_thread`), driven there
/// with [`tokio::runtime::Handle::block_on`] of the caller's runtime: the
/// future is polled on the new thread, but everything it touches belongs to
/// the caller's runtime — the sockets its direct writes go to, the timer of
/// the coalescing window (paused clocks included), and whatever it spawns or
/// connects while filling a gap (a Redis reconnect, a new database
/// connection), which the runtime's workers then drive, not this thread.
/// A task on the gateway's tracker stands for the thread: it ends when the
/// dispatcher does, so whoever waits for the gateway's tasks waits for it,
/// and when the caller's runtime drops it (shut down without cancelling),
/// the thread stops too instead of outliving its process's runtime.
pub(crate) fn spawn_thread(
    inner: Arc<Inner>,
    messages: Receiver<BusMessage>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::current();
    let (ended, on_end) = tokio::sync::oneshot::channel::<()>();
    let (alive, dropped) = tokio::sync::oneshot::channel::<()>();
    let tasks = inner.tasks.clone();
    let thread = std::thread::Builder::new()
        .name("applause-fanout".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    biased;
                    _ = dropped => {}
                    () = dispatch(inner, messages) => {}
                }
            });
            let _ = ended.send(());
        })?;
    tasks.spawn(async move {
        let _alive = alive;
        let _ = on_end.await;
    });
    Ok(thread)
}

/// The dispatcher task: rounds until shutdown or the bus closes.
pub(crate) async fn dispatch(inner: Arc<Inner>, mut messages: Receiver<BusMessage>) {
    let config = &inner.config;
    let window = Window {
        max: Duration::from_millis(config.fanout_coalesce_ms),
        rate_min: config.fanout_coalesce_rate_min,
        events: config.fanout_coalesce_events,
        heavy_deliveries_min: config.fanout_heavy_deliveries_min,
        heavy_max: Duration::from_millis(config.fanout_heavy_coalesce_ms),
    };
    let batch_max = config.fanout_batch_events_max;
    let mut batch = Vec::with_capacity(batch_max);
    let mut previous = None;
    loop {
        let gathered = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            r = gather(&mut messages, &mut batch, batch_max, previous, |m| match m {
                BusMessage::Event(env) => inner
                    .rooms
                    .get(env.room_id.as_str())
                    .map_or(Wait::NONE, |r| window.wait_for(r.events_per_s(), r.deliveries_per_s())),
                BusMessage::Reconnected => Wait::NONE,
            }) => r,
        };
        let Some(round) = gathered else {
            tracing::warn!("event bus closed its message channel");
            return;
        };
        previous = round.ended;
        inner.metrics.fanout_round(batch.len(), round.waited);
        for step in steps(batch.drain(..)) {
            match step {
                // Outside tokio's cooperative budget: a task gets 128 I/O
                // operations per poll, after which every socket answers
                // `Pending`, so the direct writes of a round to thousands of
                // connections would fall back to their writer tasks after
                // the first 128.
                Step::Events(run) => tokio::task::unconstrained(inner.on_events(run)).await,
                Step::Reconnected => inner.on_reconnected().await,
            }
        }
    }
}

/// What the dispatcher does with a round, in order.
#[derive(Debug)]
pub(crate) enum Step {
    /// A room's events of the round, in bus order: each connection gets
    /// them in one write.
    Events(Vec<Arc<applause_core::EventEnvelope>>),
    /// The bus reconnected: every room's gaps are filled.
    Reconnected,
}

/// Groups a round by room: each room's events in bus order, the rooms in
/// the order of their first event, so a room's events go to its
/// connections in one write even when other rooms' events came between
/// them (every connection is in one room, so only each room's own order
/// matters). A reconnect stays where it was against every room: what came
/// before it is fanned out before it.
pub(crate) fn steps(round: impl Iterator<Item = BusMessage>) -> Vec<Step> {
    let mut out = Vec::new();
    // Each room's run since the last reconnect, rooms in first-event order.
    let mut runs: Vec<Vec<Arc<applause_core::EventEnvelope>>> = Vec::new();
    for msg in round {
        match msg {
            BusMessage::Event(env) => match runs.iter_mut().find(|r| r[0].room_id == env.room_id) {
                Some(run) => run.push(env),
                None => runs.push(vec![env]),
            },
            BusMessage::Reconnected => {
                out.extend(runs.drain(..).map(Step::Events));
                out.push(Step::Reconnected);
            }
        }
    }
    out.extend(runs.into_iter().map(Step::Events));
    out
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
