//! One room on this gateway: its connections, its last delivered `seq` and a
//! ring of recent events for resume. Everything that orders frames for a
//! connection (welcome, live events, replays) happens under the room's lock,
//! so each connection sees one gap-free, duplicate-free sequence.
//!
//! Staggered fan-out (a heavy room's pairs, `fanout_heavy_stagger`): the
//! connections are in two halves, and an event applied *staggered* goes at
//! once to one half, together with what that half still lacks, while the
//! other half *lags*: it gets the event with the next one (or when the
//! dispatcher's deadline says so, [`Room::catch_up`]). So every connection
//! still gets two frames per write, but each event sends only half the
//! room's writes and the first of each pair waits only for the next event,
//! not also for the other half's writes. Each member remembers the last
//! `seq` queued to it, and nothing at or below it is queued again: a
//! connection that joins, resumes or is paused while its half lags gets each
//! event once, from wherever it comes first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use applause_core::EventEnvelope;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::frame;
use crate::outbox::{Closing, OutFrame, Outbox, Push};
use crate::ports::RoomInfo;
use crate::protocol;

/// A room event as fanned out: each frame encoded as a whole WebSocket
/// frame once, the same bytes for every connection.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub seq: u64,
    pub frame: Bytes,
    pub broadcaster_frame: Option<Bytes>,
    pub committed_at_ms: i64,
    pub ends_room: bool,
    received: Instant,
}

impl Delivered {
    pub(crate) fn new(env: &EventEnvelope) -> Self {
        Self {
            seq: env.seq,
            frame: frame::text(&env.frame),
            broadcaster_frame: env.broadcaster_frame.as_deref().map(frame::text),
            committed_at_ms: env.committed_at_ms,
            ends_room: env.ends_room,
            received: Instant::now(),
        }
    }

    fn bytes_for(&self, broadcaster: bool) -> &Bytes {
        match (&self.broadcaster_frame, broadcaster) {
            (Some(f), true) => f,
            _ => &self.frame,
        }
    }

    fn frame_for(&self, broadcaster: bool) -> OutFrame {
        OutFrame::event(self.bytes_for(broadcaster).clone(), self.committed_at_ms)
    }
}

struct Member {
    id: u64,
    outbox: Arc<Outbox>,
    broadcaster: bool,
    /// Its half of the room, for staggered fan-out (0 or 1).
    half: u8,
    /// The last `seq` queued to it (held frames included): nothing at or
    /// below it is queued to it live again.
    delivered: u64,
    /// Set while live events are held back for this member (they stay in
    /// the ring and are queued later, in order): from the welcome for the
    /// resume grace, and while a resume fetches older events from the bus.
    paused_at: Option<u64>,
    /// The live frames held back while paused, in order. Bounded by the
    /// room's history bound and by half the connection's queue bound in
    /// bytes: past either the hold ends and they are flushed (so a flush can
    /// never overflow the queue by itself).
    held: Vec<OutFrame>,
    held_bytes: usize,
}

struct State {
    /// The last `seq` fanned out; `None` until the bus cursor or a first event.
    last_seq: Option<u64>,
    /// Contiguous recent events, oldest first.
    ring: VecDeque<Arc<Delivered>>,
    members: Vec<Member>,
    /// Removed from the registry: a connection holding this room must look again.
    dead: bool,
    empty_since: Option<Instant>,
    /// The half whose live members have not had the last staggered events
    /// yet, and those events (applied: in `last_seq` and the ring).
    lag: Option<Lag>,
    /// The half the next member joins.
    next_half: u8,
}

struct Lag {
    half: u8,
    events: Vec<Arc<Delivered>>,
}

/// Counters from one fan-out, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FanOut {
    pub slow_consumers: u64,
}

/// What a resume came to.
#[derive(Debug)]
pub(crate) enum ResumeStep {
    /// The events were queued (possibly none).
    Replayed(usize),
    /// The events after the client's position are gone.
    Resync,
    /// The ring does not reach back far enough: fetch events after `since`
    /// from the bus (live delivery to this member is paused meanwhile).
    NeedHistory,
}

pub(crate) struct Room {
    pub id: Arc<str>,
    pub epoch: u64,
    pub broadcaster_id: String,
    state: Mutex<State>,
    /// Joined on the bus (once per room object).
    pub joined: tokio::sync::OnceCell<()>,
    events_max: usize,
    age_max: Duration,
    rate: Mutex<RateWindow>,
    per_s: AtomicU32,
    deliveries_per_s: AtomicU32,
}

struct RateWindow {
    since: Instant,
    count: u64,
    deliveries: u64,
}

impl Room {
    pub(crate) fn new(info: &RoomInfo, events_max: usize, age_max: Duration) -> Self {
        Self {
            id: Arc::from(info.room_id.as_str()),
            epoch: info.epoch,
            broadcaster_id: info.broadcaster_id.clone(),
            state: Mutex::new(State {
                last_seq: None,
                ring: VecDeque::new(),
                members: Vec::new(),
                dead: false,
                empty_since: Some(Instant::now()),
                lag: None,
                next_half: 0,
            }),
            joined: tokio::sync::OnceCell::new(),
            events_max,
            age_max,
            rate: Mutex::new(RateWindow {
                since: Instant::now(),
                count: 0,
                deliveries: 0,
            }),
            per_s: AtomicU32::new(0),
            deliveries_per_s: AtomicU32::new(0),
        }
    }

    /// Records the bus cursor after joining. Events the dispatcher already
    /// took stay when they are newer; an older start is discarded.
    pub(crate) fn set_cursor(&self, cursor: u64) {
        let mut s = self.state.lock();
        match s.last_seq {
            Some(last) if last >= cursor => {}
            _ => {
                s.ring.clear();
                s.last_seq = Some(cursor);
            }
        }
    }

    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.state.lock().last_seq
    }

    /// Adds a connection and queues its welcome under the lock, so every event
    /// after the welcome's `seq` follows it. `Err` when the room was retired.
    /// With `hold`, live events are held back until [`Room::release`] or a
    /// resume, so a client that resumes right after its welcome receives the
    /// replay first and every event exactly once, in order.
    pub(crate) fn register(
        &self,
        id: u64,
        outbox: Arc<Outbox>,
        broadcaster: bool,
        server_time: &str,
        hold: bool,
    ) -> Result<u64, ()> {
        let mut s = self.state.lock();
        if s.dead {
            return Err(());
        }
        let seq = s.last_seq.unwrap_or(0);
        outbox.push(OutFrame::control(&protocol::welcome(
            &self.id,
            self.epoch,
            seq,
            server_time,
        )));
        let half = s.next_half;
        s.next_half ^= 1;
        s.members.push(Member {
            id,
            outbox,
            broadcaster,
            half,
            // What its half still lags is older than its welcome.
            delivered: seq,
            paused_at: hold.then_some(seq),
            held: Vec::new(),
            held_bytes: 0,
        });
        s.empty_since = None;
        Ok(seq)
    }

    pub(crate) fn unregister(&self, id: u64) {
        let mut s = self.state.lock();
        if let Some(i) = s.members.iter().position(|m| m.id == id) {
            s.members.swap_remove(i);
        }
        if s.members.is_empty() {
            s.empty_since = Some(Instant::now());
        }
    }

    /// Retires the room when it has had no connection for `linger`.
    pub(crate) fn retire_if_idle(&self, linger: Duration) -> bool {
        let mut s = self.state.lock();
        let idle = s.members.is_empty() && s.empty_since.is_some_and(|t| t.elapsed() >= linger);
        if idle {
            s.dead = true;
        }
        idle
    }

    pub(crate) fn member_count(&self) -> usize {
        self.state.lock().members.len()
    }

    /// Fans an event out if it is the next `seq` (or the first one seen);
    /// returns `None` for a duplicate or a gap, leaving the room unchanged.
    pub(crate) fn apply(&self, ev: Arc<Delivered>) -> Option<FanOut> {
        match self.apply_many(std::slice::from_ref(&ev), false) {
            (0, _) => None,
            (_, out) => Some(out),
        }
    }

    /// Fans out the longest run of `evs` that continues the room's `seq`
    /// (ending at a room end); returns how many were applied. Each
    /// connection gets the run's frames, after whatever its half still
    /// lagged, in one write when its socket has room. With `stagger` the
    /// half that lagged catches up and the other half lags with the run
    /// (see the module doc); without, every connection is brought up to
    /// date. `(0, _)` means the first event is a duplicate or leaves a gap.
    pub(crate) fn apply_many(&self, evs: &[Arc<Delivered>], stagger: bool) -> (usize, FanOut) {
        let mut s = self.state.lock();
        let mut n = 0;
        let mut next = s.last_seq.map(|l| l + 1);
        for ev in evs {
            if next.is_some_and(|want| ev.seq != want) {
                break;
            }
            next = Some(ev.seq + 1);
            n += 1;
            if ev.ends_room {
                break;
            }
        }
        let mut out = FanOut::default();
        if n == 0 {
            return (0, out);
        }
        let run = &evs[..n];
        s.last_seq = Some(run[n - 1].seq);
        self.count_rate(run.len(), run.len() * s.members.len());
        let ends = run[n - 1].ends_room;
        let lagged = s.lag.take();
        let behind: &[Arc<Delivered>] = lagged.as_ref().map_or(&[], |l| l.events.as_slice());
        // The half that gets nothing now: the one that was up to date.
        let lags_next = (stagger && !ends).then(|| lagged.as_ref().map_or(0, |l| l.half ^ 1));
        let events_max = self.events_max;
        let mut frames = Vec::new();
        // One clock read for the round's latency figures, not one per frame.
        let now_ms = crate::metrics::now_ms();
        for m in s.members.iter_mut() {
            if m.paused_at.is_none() && Some(m.half) == lags_next {
                continue;
            }
            // The half that was up to date skips `behind` (it had it).
            let evs = behind.iter().chain(run);
            deliver(m, evs, events_max, &mut frames, now_ms, &mut out);
        }
        drop(frames);
        s.lag = lags_next.map(|half| Lag {
            half,
            events: run.to_vec(),
        });
        if ends {
            // Members still held get what was held, and the end, before closing.
            for m in s.members.iter_mut() {
                if m.paused_at.take().is_some() {
                    m.held_bytes = 0;
                    for f in std::mem::take(&mut m.held) {
                        m.outbox.push(f);
                    }
                }
            }
            for m in &s.members {
                m.outbox.close(
                    Closing {
                        code: protocol::close::NORMAL,
                        reason: "room_ended",
                    },
                    None,
                );
            }
        }
        s.ring.extend(run.iter().cloned());
        self.prune(&mut s);
        (n, out)
    }

    /// Brings the lagging half up to date (the dispatcher's deadline for
    /// it passed without a next event). `None` when nothing lagged.
    pub(crate) fn catch_up(&self) -> Option<FanOut> {
        let mut s = self.state.lock();
        let mut out = FanOut::default();
        self.catch_up_locked(&mut s, &mut out).then_some(out)
    }

    fn catch_up_locked(&self, s: &mut State, out: &mut FanOut) -> bool {
        let Some(lag) = s.lag.take() else {
            return false;
        };
        let mut frames = Vec::new();
        let now_ms = crate::metrics::now_ms();
        for m in s.members.iter_mut() {
            if m.half == lag.half || m.paused_at.is_some() {
                deliver(
                    m,
                    lag.events.iter(),
                    self.events_max,
                    &mut frames,
                    now_ms,
                    out,
                );
            }
        }
        true
    }

    /// Updates the room's event and delivery rates (per second over the
    /// last second or so), which decide whether its fan-out coalesces.
    fn count_rate(&self, events: usize, deliveries: usize) {
        let mut r = self.rate.lock();
        r.count += events as u64;
        r.deliveries += deliveries as u64;
        let elapsed = r.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let per_s = |n: u64| (n as f64 / elapsed.as_secs_f64()).min(f64::from(u32::MAX)) as u32;
            self.per_s.store(per_s(r.count), Ordering::Relaxed);
            self.deliveries_per_s
                .store(per_s(r.deliveries), Ordering::Relaxed);
            r.count = 0;
            r.deliveries = 0;
            r.since = Instant::now();
        }
    }

    /// The room's recent event rate, per second.
    pub(crate) fn events_per_s(&self) -> u32 {
        self.per_s.load(Ordering::Relaxed)
    }

    /// The room's recent fan-out: events times connections, per second.
    pub(crate) fn deliveries_per_s(&self) -> u32 {
        self.deliveries_per_s.load(Ordering::Relaxed)
    }

    /// After events were lost for good: starts over at the next event and
    /// tells every connection it must resync.
    pub(crate) fn reset(&self) {
        let mut s = self.state.lock();
        // What a half still lagged was applied: it goes out before the resync.
        self.catch_up_locked(&mut s, &mut FanOut::default());
        s.ring.clear();
        s.last_seq = None;
        for m in &s.members {
            m.outbox
                .push(OutFrame::control(protocol::resync_required()));
        }
    }

    fn prune(&self, s: &mut State) {
        while s.ring.len() > self.events_max {
            s.ring.pop_front();
        }
        while s
            .ring
            .front()
            .is_some_and(|e| e.received.elapsed() > self.age_max)
        {
            s.ring.pop_front();
        }
    }

    /// Ends the hold after the welcome: queues what arrived meanwhile and
    /// resumes live delivery.
    pub(crate) fn release(&self, member: u64) {
        let mut s = self.state.lock();
        if let Some(i) = s.members.iter().position(|m| m.id == member) {
            if let Some(held) = s.members[i].paused_at {
                self.finish_resume(&mut s, i, held, Some(Vec::new()));
            }
        }
    }

    /// Replays the events after `since` to a member from the ring, or asks
    /// for the bus's history when the ring starts later.
    pub(crate) fn resume_from_ring(&self, member: u64, since: u64) -> ResumeStep {
        let mut s = self.state.lock();
        self.prune(&mut s);
        let last = s.last_seq.unwrap_or(0);
        let Some(i) = s.members.iter().position(|m| m.id == member) else {
            return ResumeStep::Replayed(0);
        };
        // A member held since its welcome misses only what came before it;
        // otherwise the client asked for every event after `since`.
        let gap_end = s.members[i].paused_at.unwrap_or(last);
        let first = s.ring.front().map_or(last + 1, |e| e.seq);
        if since < gap_end && first > since + 1 {
            // Hold live events while the gap is fetched from the bus.
            if s.members[i].paused_at.is_none() {
                s.members[i].paused_at = Some(last);
            }
            return ResumeStep::NeedHistory;
        }
        self.finish_resume(&mut s, i, since, Some(Vec::new()))
    }

    /// Finishes a resume that needed the bus. `older == None` means the bus
    /// no longer has the events.
    pub(crate) fn resume_with_history(
        &self,
        member: u64,
        since: u64,
        older: Option<Vec<Arc<Delivered>>>,
    ) -> ResumeStep {
        let mut s = self.state.lock();
        let Some(i) = s.members.iter().position(|m| m.id == member) else {
            return ResumeStep::Replayed(0);
        };
        self.finish_resume(&mut s, i, since, older)
    }

    /// Queues, in order: the gap `(since, paused_at]` (from `older`, then the
    /// ring), then the events held back after `paused_at`, and resumes live
    /// delivery. For a member held since its welcome, `paused_at` is the
    /// welcome's `seq`: the replay comes first and nothing twice. A gap that
    /// cannot be filled answers `resync_required` (the held events still
    /// follow, so the live stream has no hole).
    fn finish_resume(
        &self,
        s: &mut State,
        i: usize,
        since: u64,
        older: Option<Vec<Arc<Delivered>>>,
    ) -> ResumeStep {
        let last = s.last_seq.unwrap_or(0);
        let paused_at = s.members[i].paused_at.take().unwrap_or(last);
        let gap_end = paused_at;
        let broadcaster = s.members[i].broadcaster;
        let outbox = s.members[i].outbox.clone();
        let mut next = since + 1;
        let mut gap = Vec::new();
        let gap_known = older.is_some();
        for e in older.iter().flatten().chain(s.ring.iter()) {
            if e.seq == next && e.seq <= gap_end {
                gap.push(e.frame_for(broadcaster));
                next += 1;
            }
        }
        let gap_complete = since >= gap_end || (gap_known && next > gap_end);
        let held = std::mem::take(&mut s.members[i].held);
        s.members[i].held_bytes = 0;
        if gap_complete {
            let n = gap.len();
            if n > 0 {
                let m = &mut s.members[i];
                m.delivered = m.delivered.max(next - 1);
            }
            for f in gap.into_iter().chain(held) {
                outbox.push(f);
            }
            return ResumeStep::Replayed(n);
        }
        outbox.push(OutFrame::control(protocol::resync_required()));
        for f in held {
            outbox.push(f);
        }
        ResumeStep::Resync
    }

    #[cfg(test)]
    pub(crate) fn ring_len(&self) -> usize {
        self.state.lock().ring.len()
    }
}

/// Queues to `m` those of `evs` (ascending) after the last it was queued —
/// and, while it is paused, after the pause began (a resume replays those
/// from the ring) — into its held frames while paused, else in one write.
fn deliver<'a>(
    m: &mut Member,
    evs: impl Iterator<Item = &'a Arc<Delivered>>,
    events_max: usize,
    frames: &mut Vec<(&'a Bytes, Option<i64>)>,
    now_ms: i64,
    out: &mut FanOut,
) {
    let after = m.delivered.max(m.paused_at.unwrap_or(0));
    frames.clear();
    for ev in evs.skip_while(|ev| ev.seq <= after) {
        m.delivered = ev.seq;
        if m.paused_at.is_none() {
            frames.push((ev.bytes_for(m.broadcaster), Some(ev.committed_at_ms)));
            continue;
        }
        let frame = ev.frame_for(m.broadcaster);
        m.held_bytes += frame.len();
        m.held.push(frame);
        if m.held.len() < events_max && m.held_bytes <= m.outbox.bytes_max() / 2 {
            continue;
        }
        m.held_bytes = 0;
        // Too much held: end the hold rather than grow; a resume after this
        // replays everything after its `since`.
        m.paused_at = None;
        for f in std::mem::take(&mut m.held) {
            if m.outbox.push(f) == Push::Overflow {
                out.slow_consumers += 1;
            }
        }
    }
    // Written straight to the socket when it has room: no clone, no task
    // wake-up, and a run of events in one write.
    if !frames.is_empty() && m.outbox.push_many(frames, now_ms) == Push::Overflow {
        out.slow_consumers += 1;
    }
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
