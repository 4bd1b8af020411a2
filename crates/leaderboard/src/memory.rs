//! The in-memory twin of the Redis boards, for the embedded single binary.
//!
//! It mirrors the Redis scripts step by step (same key names from
//! [`crate::model::plan`], same marker-then-bounds-then-increment order, same
//! removal of zero totals, same expiry by the wall clock) so the conformance
//! suite can demand identical answers from both.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use applause_core::clock::{SharedClock, SystemClock};
use async_trait::async_trait;
use parking_lot::RwLock;

use crate::metrics::Metrics;
use crate::model::{
    check_id, check_limit, check_now, checked_room_board_key, global_board_key, plan, stored_name,
    validate, validate_rebuild, ApplyReport, BoardError, BoardUpdate, Entry, PartPlan,
    RebuildReport, Window, TOTAL_MINOR_MAX,
};
use crate::model::{rebuild_input, tally, Status};
use crate::{Leaderboard, DEFAULT_MARKER_TTL_SECS};

/// One sorted board: totals by user, plus the order (total desc, user asc).
/// User ids are shared `Arc<str>` between the two indexes: no copies per
/// update.
#[derive(Debug, Default)]
struct Board {
    totals: HashMap<Arc<str>, i64>,
    order: BTreeSet<(Reverse<i64>, Arc<str>)>,
    /// Unix second the board expires at; 0 = never.
    expire_at_s: i64,
}

impl Board {
    fn total(&self, user: &str) -> i64 {
        self.totals.get(user).copied().unwrap_or(0)
    }

    fn add(&mut self, user: &str, amount: i64) {
        let (key, old) = match self.totals.get_key_value(user) {
            Some((key, total)) => (Arc::clone(key), *total),
            None => (Arc::<str>::from(user), 0),
        };
        if old != 0 {
            self.order.remove(&(Reverse(old), Arc::clone(&key)));
        }
        let new = old + amount;
        if new == 0 {
            // Like the script's ZREM: a fully refunded user leaves the board.
            self.totals.remove(user);
        } else {
            self.totals.insert(Arc::clone(&key), new);
            self.order.insert((Reverse(new), key));
        }
    }

    fn is_expired(&self, now_s: i64) -> bool {
        self.expire_at_s != 0 && self.expire_at_s <= now_s
    }
}

/// Idempotency markers kept for between one and two TTLs: two sets rotated
/// every TTL, so memory stays bounded without a timer per marker.
#[derive(Debug, Default)]
struct Markers {
    current: HashSet<String>,
    previous: HashSet<String>,
    rotated_at_ms: i64,
}

impl Markers {
    fn insert(&mut self, marker: &str, now_ms: i64, ttl_ms: i64) -> bool {
        if now_ms - self.rotated_at_ms >= ttl_ms {
            self.previous = std::mem::take(&mut self.current);
            self.rotated_at_ms = now_ms;
        }
        if self.previous.contains(marker) {
            return false;
        }
        self.current.insert(marker.to_owned())
    }

    fn remove(&mut self, marker: &str) {
        self.current.remove(marker);
    }
}

/// The wall clock and the marker TTL, as the Redis server would see them.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    now_ms: i64,
    ttl_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    /// Set by a rebuild; `None` means the boards are not known complete.
    generation: Option<u64>,
    /// Keyed like Redis, without the `P:G:` prefix; members are user ids.
    boards: HashMap<String, Board>,
    names: HashMap<String, String>,
    markers: Markers,
    next_prune_s: i64,
}

impl State {
    /// One part of an update, exactly as the Redis script does it.
    fn apply_part(
        &mut self,
        part: &PartPlan,
        mark: bool,
        member: &str,
        amount: i64,
        name: Option<(&str, &str)>,
        clock: WallClock,
    ) -> Status {
        let WallClock { now_ms, ttl_ms } = clock;
        if mark && !self.markers.insert(&part.marker, now_ms, ttl_ms) {
            return Status::Duplicate;
        }
        let now_s = now_ms.div_euclid(1000);
        for (key, _) in &part.boards {
            let current = self
                .boards
                .get(key)
                .filter(|b| !b.is_expired(now_s))
                .map_or(0, |b| b.total(member));
            if (current + amount).abs() > TOTAL_MINOR_MAX {
                if mark {
                    self.markers.remove(&part.marker);
                }
                return Status::Overflowed;
            }
        }
        for (key, expire_at_s) in &part.boards {
            if !self.boards.contains_key(key) {
                self.boards.insert(key.clone(), Board::default());
            }
            let Some(board) = self.boards.get_mut(key) else {
                continue;
            };
            if board.is_expired(now_s) {
                *board = Board::default();
            }
            board.add(member, amount);
            if board.totals.is_empty() {
                // An empty zset does not exist in Redis, nor does its TTL.
                self.boards.remove(key);
            } else if *expire_at_s > 0 {
                board.expire_at_s = *expire_at_s;
            }
        }
        if let Some((user, name)) = name {
            self.names.insert(user.to_owned(), name.to_owned());
        }
        Status::Applied
    }

    /// `plan_now_s` decides which period boards are still alive (the
    /// caller's `now` for a rebuild, the wall clock otherwise); `now_ms` is
    /// the wall clock that expires markers and boards.
    fn apply(
        &mut self,
        update: &BoardUpdate,
        mark: bool,
        plan_now_s: i64,
        now_ms: i64,
        ttl_ms: i64,
    ) -> (Status, Status) {
        let (room, global) = plan(update, plan_now_s);
        let room_status = self.apply_part(
            &room,
            mark,
            &update.sender_id,
            update.amount_minor,
            None,
            WallClock { now_ms, ttl_ms },
        );
        let global_status = self.apply_part(
            &global,
            mark,
            &update.broadcaster_id,
            update.amount_minor,
            Some((&update.sender_id, stored_name(&update.sender_name))),
            WallClock { now_ms, ttl_ms },
        );
        (room_status, global_status)
    }

    fn prune(&mut self, now_s: i64) {
        if now_s >= self.next_prune_s {
            self.boards.retain(|_, b| !b.is_expired(now_s));
            self.next_prune_s = now_s + 60;
        }
    }

    fn board(&self, key: &str, now_s: i64) -> Option<&Board> {
        self.boards.get(key).filter(|b| !b.is_expired(now_s))
    }

    fn entry(&self, rank: usize, user: &str, total: i64) -> Entry {
        Entry {
            rank: u32::try_from(rank).unwrap_or(u32::MAX),
            user_id: user.to_owned(),
            name: self.names.get(user).cloned(),
            amount_minor: total,
        }
    }

    fn top(&self, key: &str, limit: usize, now_s: i64) -> Vec<Entry> {
        let Some(board) = self.board(key, now_s) else {
            return Vec::new();
        };
        board
            .order
            .iter()
            .take_while(|(Reverse(total), _)| *total > 0)
            .take(limit)
            .enumerate()
            .map(|(i, (Reverse(total), user))| self.entry(i + 1, user, *total))
            .collect()
    }

    fn me(&self, key: &str, user: &str, now_s: i64) -> Option<Entry> {
        let board = self.board(key, now_s)?;
        let total = *board.totals.get(user)?;
        if total <= 0 {
            return None;
        }
        // O(rank): fine for the embedded twin, where boards are small.
        let ahead = board
            .order
            .range(..(Reverse(total), Arc::<str>::from(user)))
            .count();
        Some(self.entry(ahead + 1, user, total))
    }
}

/// The in-memory leaderboards. Cheap to share behind an `Arc`.
pub struct MemoryBoards {
    state: RwLock<State>,
    marker_ttl_ms: i64,
    metrics: Option<Metrics>,
    /// The clock that expires markers and period boards, as Redis's own
    /// clock does for the Redis twin.
    clock: SharedClock,
}

impl std::fmt::Debug for MemoryBoards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBoards")
            .field("marker_ttl_ms", &self.marker_ttl_ms)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBoards {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBoards {
    /// Empty boards with no generation: `needs_rebuild()` is true until the
    /// first rebuild, as a process start loses everything the twin held.
    pub fn new() -> Self {
        Self {
            state: RwLock::new(State::default()),
            marker_ttl_ms: i64::try_from(DEFAULT_MARKER_TTL_SECS * 1000).unwrap_or(i64::MAX),
            metrics: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Expires markers and day/week boards by `clock` (default: the system
    /// clock) — a test moves it instead of waiting. Which window a gift or
    /// a read falls into is still decided by `at_ms` and the caller's `now_ms`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    fn wall_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Records lag and rebuilds on `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets how long an update id is remembered, in seconds (at least 1).
    pub fn with_marker_ttl_secs(mut self, secs: u64) -> Self {
        self.marker_ttl_ms = i64::try_from(secs.max(1).saturating_mul(1000)).unwrap_or(i64::MAX);
        self
    }
}

#[async_trait]
impl Leaderboard for MemoryBoards {
    async fn apply_batch(&self, updates: &[BoardUpdate]) -> Result<ApplyReport, BoardError> {
        for update in updates {
            validate(update)?;
        }
        let now_ms = self.wall_ms();
        let statuses: Vec<(Status, Status)> = {
            let mut state = self.state.write();
            state.prune(now_ms.div_euclid(1000));
            updates
                .iter()
                .map(|u| state.apply(u, true, now_ms.div_euclid(1000), now_ms, self.marker_ttl_ms))
                .collect()
        };
        let report = tally(updates, &statuses);
        if let Some(metrics) = &self.metrics {
            let done_ms = self.wall_ms();
            for (update, status) in updates.iter().zip(&statuses) {
                if status.0 == Status::Applied {
                    metrics.observe_lag(update.at_ms, done_ms);
                }
            }
        }
        Ok(report)
    }

    async fn top(
        &self,
        room_id: &str,
        broadcaster_id: &str,
        window: Window,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Entry>, BoardError> {
        check_limit(limit)?;
        let key = checked_room_board_key(room_id, broadcaster_id, window, now_ms)?;
        Ok(self
            .state
            .read()
            .top(&key, limit, self.wall_ms().div_euclid(1000)))
    }

    async fn me(
        &self,
        room_id: &str,
        broadcaster_id: &str,
        window: Window,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Option<Entry>, BoardError> {
        check_id("user_id", user_id)?;
        let key = checked_room_board_key(room_id, broadcaster_id, window, now_ms)?;
        Ok(self
            .state
            .read()
            .me(&key, user_id, self.wall_ms().div_euclid(1000)))
    }

    async fn top_broadcasters(
        &self,
        window: Window,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Entry>, BoardError> {
        check_limit(limit)?;
        check_now(now_ms)?;
        let key = global_board_key(window, now_ms)?;
        Ok(self
            .state
            .read()
            .top(&key, limit, self.wall_ms().div_euclid(1000)))
    }

    async fn rebuild(
        &self,
        updates: &[BoardUpdate],
        now_ms: i64,
    ) -> Result<RebuildReport, BoardError> {
        validate_rebuild(updates, now_ms)?;
        // Built aside and swapped in under the lock: readers see the old
        // boards or the new ones, never a half board.
        let mut fresh = State::default();
        let ttl_secs = u64::try_from(self.marker_ttl_ms / 1000).unwrap_or(u64::MAX);
        let (unique, marks) = rebuild_input(updates, now_ms, ttl_secs);
        let wall = self.wall_ms();
        let statuses: Vec<(Status, Status)> = unique
            .iter()
            .zip(&marks)
            .map(|(u, &mark)| {
                fresh.apply(u, mark, now_ms.div_euclid(1000), wall, self.marker_ttl_ms)
            })
            .collect();
        let applied = tally(&unique, &statuses);
        let mut report = RebuildReport {
            generation: String::new(),
            updates: updates.len(),
            applied: applied.applied,
            duplicates: applied.duplicates
                + u32::try_from(updates.len() - unique.len()).unwrap_or(u32::MAX),
            overflowed: applied.overflowed,
            removed: 0,
        };
        let mut state = self.state.write();
        let generation = state.generation.map_or(1, |g| g + 1);
        fresh.generation = Some(generation);
        report.removed = u64::try_from(state.boards.len()).unwrap_or(u64::MAX);
        report.generation = generation.to_string();
        *state = fresh;
        drop(state);
        if let Some(metrics) = &self.metrics {
            metrics.rebuilds.inc();
        }
        Ok(report)
    }

    async fn needs_rebuild(&self) -> Result<bool, BoardError> {
        Ok(self.state.read().generation.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PERIOD_GRACE_SECS;
    use applause_core::clock::ManualClock;
    use chrono::DateTime;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn gift(id: &str, at_ms: i64) -> BoardUpdate {
        BoardUpdate {
            update_id: id.into(),
            room_id: "room-1".into(),
            broadcaster_id: "b-1".into(),
            sender_id: "fan-1".into(),
            sender_name: "Fan".into(),
            amount_minor: 100,
            at_ms,
        }
    }

    async fn total(boards: &MemoryBoards, window: Window, now_ms: i64) -> Option<i64> {
        let top = boards
            .top("room-1", "b-1", window, 10, now_ms)
            .await
            .unwrap();
        top.first().map(|e| e.amount_minor)
    }

    #[tokio::test]
    async fn markers_expire_by_the_injected_clock() {
        let t = ms("2026-03-10T12:00:00Z");
        let clock = Arc::new(ManualClock::new(t));
        let boards = MemoryBoards::new()
            .with_marker_ttl_secs(10)
            .with_clock(clock.clone());
        assert_eq!(boards.apply(&gift("g1", t)).await.unwrap().applied, 1);
        assert_eq!(boards.apply(&gift("g1", t)).await.unwrap().duplicates, 1);
        // Within two TTLs the marker is still remembered…
        clock.advance_ms(11_000);
        assert_eq!(boards.apply(&gift("g1", t)).await.unwrap().duplicates, 1);
        // …after them, a retry counts again (the documented limit).
        clock.advance_ms(11_000);
        assert_eq!(boards.apply(&gift("g1", t)).await.unwrap().applied, 1);
        assert_eq!(total(&boards, Window::Live, t).await, Some(200));
    }

    #[tokio::test]
    async fn a_day_board_expires_by_the_injected_clock_not_by_the_readers_now() {
        let day = ms("2026-03-10T12:00:00Z");
        let clock = Arc::new(ManualClock::new(day));
        let boards = MemoryBoards::new().with_clock(clock.clone());
        boards.apply(&gift("g1", day)).await.unwrap();
        assert_eq!(total(&boards, Window::Day, day).await, Some(100));
        // The day board lives until the end of its day plus the grace.
        let expiry = ms("2026-03-11T00:00:00Z") + PERIOD_GRACE_SECS * 1000;
        clock.set_ms(expiry - 1_000);
        assert_eq!(total(&boards, Window::Day, day).await, Some(100));
        clock.set_ms(expiry);
        assert_eq!(total(&boards, Window::Day, day).await, None);
        // A late update of that day skips the expired board, not `all`.
        boards.apply(&gift("g2", day)).await.unwrap();
        assert_eq!(total(&boards, Window::Day, day).await, None);
        assert_eq!(total(&boards, Window::All, day).await, Some(200));
    }
}
