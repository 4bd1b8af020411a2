//! The dispatcher: one task takes bus messages in rounds and fans them out,
//! so events of a room are applied strictly in the order the bus delivers
//! them. A round is whatever has queued up (up to `fanout_batch_events_max`
//! messages); the events of one room in it go to each connection in one
//! write, whatever other rooms' events came between them (every connection
//! is in one room, so only each room's own order matters).
//!
//! Holds: a busy or heavy room's events may be held back a little so each
//! connection gets several frames per syscall ([`Holds`]). Each room has
//! its own hold and deadline; the other rooms' events of the round go out
//! at once, so one room's wait delays nobody else. It is adaptive and
//! bounded:
//! - a *busy* room (at least `fanout_coalesce_rate_min` events a second)
//!   is held as long as it needs, at its recent rate, to produce
//!   `fanout_coalesce_events` events in all, and never longer than
//!   `fanout_coalesce_ms`;
//! - a *heavy* room — one whose fan-out costs at least
//!   `fanout_heavy_deliveries_min` deliveries a second (events a second ×
//!   its connections), such as 1,000 viewers at 20 gifts a second — below
//!   the busy rate is held for its next event (a pair), when the room's rate
//!   says that event comes within `fanout_heavy_coalesce_ms`. Each of those
//!   sends costs the kernel the same whatever it carries, so a pair per
//!   write halves the fan-out's CPU, and the first event of a pair pays the
//!   gap to the second (at 20 events a second, about 50 ms) in latency;
//! - a hold ends early once it has that many events, and is counted from
//!   the earliest moment its first event can have arrived: when the round
//!   began if the dispatcher was idle, else the end of the previous round's
//!   gathering (the event came while that round was written). So no event
//!   waits longer than its window in all, and a backlog older than the
//!   window is never held: it is batched by the backlog itself. After a
//!   round cut short by the batch bound (a backlog), the next holds nothing.
//! - a bus reconnect releases every hold first: what came before it goes
//!   out before it.
//!
//! Staggered pairs (`fanout_heavy_stagger`, on by default): instead of
//! holding a heavy room's event for everyone, the room writes it at once to
//! half its connections (with what they lacked) and the other half *lags*
//! (it gets the event with the next one: [`crate::room::Room::apply_many`]).
//! Every connection still gets pairs, but each event costs half the room's
//! writes, so the first of a pair waits for its second and half a round
//! instead of a whole one, and nobody waits for the second. The dispatcher
//! keeps each lagging room's deadline (the hold's would-be deadline) and
//! brings the lagging half up to date ([`Step::CatchUp`]) when it passes
//! without a next event; a round with more than one event of the room, a
//! hold's release, a bus reconnect or the bus closing bring everyone up to
//! date too.

use std::sync::Arc;
use std::time::Duration;

use applause_bus::BusMessage;
use applause_core::EventEnvelope;
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
    /// A heavy room's pairs are staggered (half the room lags) rather than
    /// held for everyone.
    pub heavy_stagger: bool,
}

/// How long a room's events are held, and for how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub time: Duration,
    pub events: usize,
    /// Half the room waits (for `time`), not all of it.
    pub stagger: bool,
}

impl Wait {
    pub(crate) const NONE: Wait = Wait {
        time: Duration::ZERO,
        events: 1,
        stagger: false,
    };
}

impl Window {
    /// How long the events of a room producing `per_s` events and
    /// `deliveries_per_s` deliveries a second are held from its first, and
    /// how many a hold aims for.
    pub(crate) fn wait_for(&self, per_s: u32, deliveries_per_s: u32) -> Wait {
        if !self.max.is_zero() && per_s >= self.rate_min && self.events >= 2 {
            if per_s == 0 {
                return Wait {
                    time: self.max,
                    events: self.events,
                    stagger: false,
                };
            }
            let needed = Duration::from_secs_f64((self.events - 1) as f64 / f64::from(per_s));
            return Wait {
                time: needed.min(self.max),
                events: self.events,
                stagger: false,
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
            stagger: self.heavy_stagger,
        }
    }
}

/// How one round was gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    /// The earliest moment the round's messages can have arrived; `None`
    /// when the previous round was cut by the batch bound (a backlog: none
    /// of it is held).
    pub since: Option<Instant>,
    /// When the gathering ended; `None` when the round was cut by the
    /// batch bound (more may be waiting: the next round must not wait).
    pub ended: Option<Instant>,
}

/// Gathers the next round into `batch` (which must be empty): the first
/// message (waiting for it if none is queued, but only until `deadline`, a
/// hold's, if any: then the round is empty) and whatever else has queued
/// up. `previous` is the last round's [`Round::ended`] (`None` for the
/// first). `None` when the channel is closed and empty.
pub(crate) async fn gather(
    messages: &mut Receiver<BusMessage>,
    batch: &mut Vec<BusMessage>,
    batch_max: usize,
    previous: Option<Instant>,
    deadline: Option<Instant>,
) -> Option<Round> {
    let since = match messages.try_recv() {
        // It came while the previous round was written, or before (then
        // that round was full, and `previous` is `None`).
        Ok(m) => {
            batch.push(m);
            previous
        }
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => {
            let first = match deadline {
                Some(deadline) => tokio::select! {
                    biased;
                    m = messages.recv() => m,
                    _ = tokio::time::sleep_until(deadline) => {
                        let now = Instant::now();
                        return Some(Round { since: Some(now), ended: Some(now) });
                    }
                },
                None => messages.recv().await,
            };
            batch.push(first?);
            Some(Instant::now())
        }
    };
    while batch.len() < batch_max {
        match messages.try_recv() {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
    Some(Round {
        since,
        ended: (batch.len() < batch_max).then(Instant::now),
    })
}

/// One room's events held back for a write of several.
#[derive(Debug)]
struct Hold {
    room: String,
    events: Vec<Arc<EventEnvelope>>,
    /// Events it aims to hold.
    want: usize,
    deadline: Instant,
    /// When it began (for the wait metric).
    began: Instant,
}

/// A staggered room whose lagging half waits for the room's next event.
#[derive(Debug)]
struct Lag {
    room: String,
    deadline: Instant,
    began: Instant,
}

/// A round's events of one room going out now.
struct Run {
    events: Vec<Arc<EventEnvelope>>,
    /// Its lagging half's deadline, when it is one staggered event.
    lag_until: Option<Instant>,
}

/// The held rooms; [`Holds::route`] decides where each round's events go.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    /// Few at a time (only busy and heavy rooms): a list, searched.
    held: Vec<Hold>,
    /// The staggered rooms whose lagging half has not had their last event.
    lags: Vec<Lag>,
    /// How long each hold (or lagging half caught up by its room's next
    /// event) released since the last [`Holds::take_waits`] lasted.
    waits: Vec<Duration>,
}

impl Holds {
    /// The earliest deadline of a hold or lagging half.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let holds = self.held.iter().map(|h| h.deadline);
        holds.chain(self.lags.iter().map(|l| l.deadline)).min()
    }

    /// The durations of the holds released since the last call.
    pub(crate) fn take_waits(&mut self) -> std::vec::Drain<'_, Duration> {
        self.waits.drain(..)
    }

    /// Routes a round's messages at `now` (they arrived at `since` or later;
    /// `None`: a backlog, held nowhere) and answers what goes out now, room
    /// by room (each room's events in bus order): the events of rooms not
    /// held, every hold that is full or due, and every lagging half that is
    /// due. An event of a held room joins its hold; the first event of a
    /// room `window_of` gives a window (and not already going out in this
    /// round) begins one, ending at `since` + the window — or, for a
    /// staggered window, goes out at once to half the room while the other
    /// half lags until then (unless more of the room's events come in this
    /// round: then the whole room gets them).
    pub(crate) fn route(
        &mut self,
        round: impl Iterator<Item = BusMessage>,
        since: Option<Instant>,
        now: Instant,
        mut window_of: impl FnMut(&str) -> Wait,
    ) -> Vec<Step> {
        let mut out = Vec::new();
        // The round's runs going out now, rooms in first-event order.
        let mut runs: Vec<Run> = Vec::new();
        for msg in round {
            let env = match msg {
                BusMessage::Event(env) => env,
                BusMessage::Reconnected => {
                    out.extend(self.release_all(now));
                    out.extend(runs.drain(..).map(|r| Step::Events(r.events)));
                    out.push(Step::Reconnected);
                    continue;
                }
            };
            if let Some(i) = self.held.iter().position(|h| h.room == env.room_id) {
                let hold = &mut self.held[i];
                hold.events.push(env);
                if hold.events.len() >= hold.want {
                    // Full: out now, with what else of the room this round has.
                    let h = self.held.swap_remove(i);
                    let events = self.release(h, now);
                    runs.push(Run {
                        events,
                        lag_until: None,
                    });
                }
                continue;
            }
            if let Some(run) = runs.iter_mut().find(|r| r.events[0].room_id == env.room_id) {
                run.events.push(env);
                continue;
            }
            let wait = since.map_or(Wait::NONE, |_| window_of(&env.room_id));
            match since.map(|t| t + wait.time).filter(|d| *d > now) {
                Some(deadline) if wait.stagger => runs.push(Run {
                    events: vec![env],
                    lag_until: Some(deadline),
                }),
                Some(deadline) if wait.events >= 2 => self.held.push(Hold {
                    room: env.room_id.clone(),
                    events: vec![env],
                    want: wait.events,
                    deadline,
                    began: now,
                }),
                _ => runs.push(Run {
                    events: vec![env],
                    lag_until: None,
                }),
            }
        }
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].deadline <= now {
                let h = self.held.swap_remove(i);
                out.push(Step::Events(self.release(h, now)));
            } else {
                i += 1;
            }
        }
        let mut steps = Vec::with_capacity(runs.len());
        for run in runs {
            match (run.lag_until, run.events.as_slice()) {
                // A staggered event: the half that lagged gets it (it has
                // waited since the room's last one), the other half lags
                // until `deadline`.
                (Some(deadline), [env]) => {
                    match self.lags.iter_mut().find(|l| l.room == env.room_id) {
                        Some(lag) => {
                            self.waits.push(now.saturating_duration_since(lag.began));
                            lag.deadline = deadline;
                            lag.began = now;
                        }
                        None => self.lags.push(Lag {
                            room: env.room_id.clone(),
                            deadline,
                            began: now,
                        }),
                    }
                    steps.push(Step::Staggered(env.clone()));
                }
                // Brings the whole room up to date; a lag of it left here
                // ends at its deadline with nothing to do, so no lagging
                // half can be forgotten (say, if this run is a duplicate).
                _ => steps.push(Step::Events(run.events)),
            }
        }
        let mut i = 0;
        while i < self.lags.len() {
            if self.lags[i].deadline <= now {
                let lag = self.lags.swap_remove(i);
                out.push(Self::catch_up(lag, now));
            } else {
                i += 1;
            }
        }
        out.extend(steps);
        out
    }

    /// Releases every hold and lagging half (a bus reconnect, or the bus
    /// closed).
    pub(crate) fn release_all(&mut self, now: Instant) -> Vec<Step> {
        let held: Vec<_> = self.held.drain(..).collect();
        let mut out: Vec<Step> = held
            .into_iter()
            .map(|h| Step::Events(self.release(h, now)))
            .collect();
        let lags: Vec<_> = self.lags.drain(..).collect();
        out.extend(lags.into_iter().map(|l| Self::catch_up(l, now)));
        out
    }

    /// A hold's events, its wait recorded.
    fn release(&mut self, h: Hold, now: Instant) -> Vec<Arc<EventEnvelope>> {
        self.waits.push(now.saturating_duration_since(h.began));
        h.events
    }

    /// A lagging half due (its wait goes to the metric only if the room
    /// still lagged).
    fn catch_up(lag: Lag, now: Instant) -> Step {
        Step::CatchUp {
            room: lag.room,
            waited: now.saturating_duration_since(lag.began),
        }
    }
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
        heavy_stagger: config.fanout_heavy_stagger,
    };
    let window_of = |room: &str| {
        inner.rooms.get(room).map_or(Wait::NONE, |r| {
            window.wait_for(r.events_per_s(), r.deliveries_per_s())
        })
    };
    let batch_max = config.fanout_batch_events_max;
    let mut batch = Vec::with_capacity(batch_max);
    let mut previous = None;
    let mut holds = Holds::default();
    loop {
        let deadline = holds.next_deadline();
        let gathered = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            r = gather(&mut messages, &mut batch, batch_max, previous, deadline) => r,
        };
        let now = Instant::now();
        let out = match gathered {
            Some(round) => {
                previous = round.ended;
                if !batch.is_empty() {
                    inner.metrics.fanout_round(batch.len());
                }
                holds.route(batch.drain(..), round.since, now, &window_of)
            }
            None => holds.release_all(now),
        };
        for waited in holds.take_waits() {
            inner.metrics.fanout_held(waited);
        }
        for step in out {
            match step {
                // Outside tokio's cooperative budget: a task gets 128 I/O
                // operations per poll, after which every socket answers
                // `Pending`, so the direct writes of a round to thousands of
                // connections would fall back to their writer tasks after
                // the first 128.
                Step::Events(run) => {
                    tokio::task::unconstrained(inner.on_events(run, false)).await;
                }
                Step::Staggered(env) => {
                    inner.metrics.fanout_staggered.inc();
                    tokio::task::unconstrained(inner.on_events(vec![env], true)).await;
                }
                Step::CatchUp { room, waited } => {
                    if inner.on_catch_up(&room) {
                        inner.metrics.fanout_held(waited);
                    }
                }
                Step::Reconnected => inner.on_reconnected().await,
            }
        }
        if gathered.is_none() {
            tracing::warn!("event bus closed its message channel");
            return;
        }
    }
}

/// What the dispatcher does with a round, in order.
#[derive(Debug)]
pub(crate) enum Step {
    /// A room's events of the round, in bus order: each connection gets
    /// them (after what its half lagged) in one write.
    Events(Vec<Arc<applause_core::EventEnvelope>>),
    /// One event of a staggered room: to the half that lagged, with what
    /// it lagged; the other half lags with it.
    Staggered(Arc<applause_core::EventEnvelope>),
    /// A staggered room's lagging half is due: it gets what it lacks (if
    /// it still lags), having waited `waited`.
    CatchUp { room: String, waited: Duration },
    /// The bus reconnected: every room's gaps are filled.
    Reconnected,
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
