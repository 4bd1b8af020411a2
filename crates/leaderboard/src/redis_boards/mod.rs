//! The Redis twin: sorted sets written by one Lua script per hash-tag slot,
//! batched into one pipeline per call, under a generation prefix that a
//! rebuild switches atomically. Key layout and rules: see the crate doc.
//!
//! This module is the only part of the crate that knows Redis: `connect`
//! and keys here, one round trip (retries, errors) in `round_trip`, writes in
//! `apply`, reads in `reads`, the rebuild and its sweep in `rebuild`, the
//! Lua in `scripts`.
//!
//! Redis Cluster (`redis+cluster://` URLs, see [`applause_redis::RedisTarget`]):
//! scripts are always one per hash-tag slot there, a pipeline is split into
//! one per slot (run concurrently, the pointer GET after all of them), and
//! the sweep SCANs every master.

mod apply;
mod reads;
mod rebuild;
mod round_trip;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use applause_core::clock::{SharedClock, SystemClock};
use applause_redis::{Conn, ConnOptions, RedisTarget};
use async_trait::async_trait;
use parking_lot::RwLock;
use redis::Script;

use crate::metrics::Metrics;
use crate::model::{
    check_id, check_limit, check_now, checked_room_board_key, global_board_key, validate,
    validate_rebuild, ApplyReport, BoardError, BoardUpdate, Entry, RebuildReport, Window,
};
use crate::{Leaderboard, DEFAULT_MARKER_TTL_SECS};

use round_trip::backend;

/// Most updates sent in one pipeline; larger batches are split, which bounds
/// the script's KEYS/ARGV and the time Redis spends in one script.
pub const BATCH_UPDATES_MAX: usize = 1_000;

/// The generation written before any rebuild: boards written there are not
/// known complete and are removed by the first rebuild.
const GENERATION_PROVISIONAL: &str = "0";

/// The leaderboards in Redis. Cheap to share behind an `Arc`; the
/// connection (to a server or a cluster) multiplexes all callers.
pub struct RedisBoards {
    /// Writes and rebuilds: long pipelines of scripts.
    con: Conn,
    /// Reads, on their own connection so a top-10 read never queues behind
    /// a writer's pipeline in the same TCP stream.
    read_con: Conn,
    prefix: String,
    /// The generation this process reads and writes; refreshed whenever a
    /// round trip shows `P:gen` moved.
    generation: RwLock<String>,
    marker_ttl_secs: u64,
    /// Group scripts by hash-tag slot (Redis Cluster) instead of packing.
    slot_scripts: bool,
    metrics: Option<Metrics>,
    apply_script: Script,
    unlock_script: Script,
    /// The clock that decides which period boards are still alive when an
    /// update is applied; it should agree with the Redis server's, which
    /// expires them. Also times the update lag.
    clock: SharedClock,
}

impl std::fmt::Debug for RedisBoards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBoards")
            .field("prefix", &self.prefix)
            .field("generation", &*self.generation.read())
            .finish_non_exhaustive()
    }
}

impl RedisBoards {
    /// Connects to `redis_url` (a server, or `redis+cluster://` seeds) and
    /// serves the boards under `key_prefix`
    /// (1–64 characters of `[A-Za-z0-9_.:-]`: no hash-tag braces, no SCAN
    /// pattern characters).
    pub async fn connect(redis_url: &str, key_prefix: &str) -> Result<Self, BoardError> {
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || !key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return Err(BoardError::invalid(
                "key_prefix",
                format!("{key_prefix:?} is not 1-64 characters of [A-Za-z0-9_.:-]"),
            ));
        }
        let target =
            RedisTarget::parse(redis_url).map_err(|e| BoardError::invalid("redis_url", e))?;
        // Reconnects grow by a factor of 2 from one second, capped at
        // 500 ms: a dead Redis fails fast and a returning one is found within
        // a second (redis 0.32's default factor would wait a minute).
        let options = ConnOptions {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            retries: 3,
            retry_factor: 2,
            retry_delay_max_ms: 500,
        };
        let con = Conn::connect(&target, &options).await.map_err(backend)?;
        let read_con = Conn::connect(&target, &options).await.map_err(backend)?;
        let boards = Self {
            con,
            read_con,
            prefix: key_prefix.to_owned(),
            generation: RwLock::new(GENERATION_PROVISIONAL.to_owned()),
            marker_ttl_secs: DEFAULT_MARKER_TTL_SECS,
            slot_scripts: target.is_cluster(),
            metrics: None,
            apply_script: Script::new(scripts::APPLY_LUA),
            unlock_script: Script::new(scripts::UNLOCK_LUA),
            clock: Arc::new(SystemClock),
        };
        boards.load_scripts().await?;
        // Picks up the current generation, if any.
        boards.needs_rebuild().await?;
        Ok(boards)
    }

    /// Records lag, Redis errors and rebuilds on `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets how long an update id is remembered, in seconds (at least 1).
    pub fn with_marker_ttl_secs(mut self, secs: u64) -> Self {
        self.marker_ttl_secs = secs.max(1);
        self
    }

    /// Sends only scripts whose keys share one hash-tag slot: one script per
    /// broadcaster in a batch plus global ones. Needed behind a Redis Cluster
    /// proxy (always on for a `redis+cluster://` URL); on one node (the
    /// default) both parts of many updates are packed into each script,
    /// which costs Redis far less per update.
    pub fn with_slot_scripts(mut self, on: bool) -> Self {
        self.slot_scripts = on || self.con.is_cluster();
        self
    }

    /// Decides by `clock` (default: the system clock) which period boards
    /// an update still reaches. Redis expires them by its own clock, so
    /// anything but a clock in step with the server's is for tests.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The key prefix this instance serves.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// The generation this process currently reads and writes.
    pub fn generation(&self) -> String {
        self.generation.read().clone()
    }

    fn gen_key(&self) -> String {
        format!("{}:gen", self.prefix)
    }

    fn lock_key(&self) -> String {
        format!("{}:rebuild-lock", self.prefix)
    }

    fn key(&self, generation: &str, relative: &str) -> String {
        format!("{}:{generation}:{relative}", self.prefix)
    }

    /// Whether `key` is `P:<generation>:…` — a board key of some generation
    /// of ours. The sweep deletes nothing else, so a deployment whose prefix
    /// happens to start with ours (`P:x:…`) is never touched.
    fn is_generation_key(&self, key: &str) -> bool {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix(':'))
        else {
            return false;
        };
        let generation = rest.split(':').next().unwrap_or("");
        generation == GENERATION_PROVISIONAL
            || (generation.len() == 16
                && generation
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    }
}

#[async_trait]
impl Leaderboard for RedisBoards {
    async fn apply_batch(&self, updates: &[BoardUpdate]) -> Result<ApplyReport, BoardError> {
        for update in updates {
            validate(update)?;
        }
        let mut report = ApplyReport::default();
        for chunk in updates.chunks(BATCH_UPDATES_MAX) {
            let part = self.apply_chunk(chunk).await?;
            report.applied += part.applied;
            report.duplicates += part.duplicates;
            report.overflowed.extend(part.overflowed);
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
        self.top_of(&key, limit).await
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
        self.me_on(&key, user_id).await
    }

    async fn top_broadcasters(
        &self,
        window: Window,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Entry>, BoardError> {
        check_limit(limit)?;
        check_now(now_ms)?;
        self.top_of(&global_board_key(window, now_ms)?, limit).await
    }

    async fn rebuild(
        &self,
        updates: &[BoardUpdate],
        now_ms: i64,
    ) -> Result<RebuildReport, BoardError> {
        validate_rebuild(updates, now_ms)?;
        self.rebuild_all(updates, now_ms).await
    }

    async fn needs_rebuild(&self) -> Result<bool, BoardError> {
        self.pointer_missing().await
    }
}
