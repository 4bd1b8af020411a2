//! The Redis twin: sorted sets written by one Lua script per hash-tag slot,
//! batched into one pipeline per call, under a generation prefix that a
//! rebuild switches atomically. Key layout and rules: see the crate doc.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use redis::aio::ConnectionManager;
use redis::{from_redis_value, Cmd, ErrorKind, Pipeline, Script, Value};

use crate::metrics::Metrics;
use crate::model::{
    check_id, check_limit, check_now, decode_member, encode_member, global_board_key, names_key,
    plan, room_board_key, stored_name, validate, wall_ms, ApplyReport, BoardError, BoardUpdate,
    Entry, PartPlan, RebuildReport, Window,
};
use crate::model::{rebuild_input, tally, Status};
use crate::{Leaderboard, DEFAULT_MARKER_TTL_SECS};

/// Most updates sent in one pipeline; larger batches are split, which bounds
/// the script's KEYS/ARGV and the time Redis spends in one script.
pub const BATCH_UPDATES_MAX: usize = 1_000;

/// The generation written before any rebuild: boards written there are not
/// known complete and are removed by the first rebuild.
const GENERATION_PROVISIONAL: &str = "0";

/// How long the rebuild lock holds without a refresh, in ms.
const REBUILD_LOCK_MS: u64 = 600_000;

/// The longest wait between two reconnect attempts, in ms.
const RECONNECT_DELAY_MS_MAX: u64 = 500;

/// Retries of one round trip after a dropped connection or timeout. Safe
/// because every write is idempotent and reads have no effects.
const ROUND_TRIP_RETRIES_MAX: u32 = 2;

/// Most update parts (room or global) one script applies. A script runs
/// atomically, so this bounds how long it keeps readers waiting (a part
/// costs Redis ≈ 15-30 µs).
const SCRIPT_PARTS_MAX: usize = 64;

/// Keys deleted per UNLINK during a rebuild sweep.
const UNLINK_KEYS_MAX: usize = 500;

/// Applies the parts of several updates that live in one hash-tag slot.
///
/// Applies parts of updates (a room part or a global part each).
///
/// KEYS: [names hash if ARGV[2] == '1'], then per part: marker, boards…
/// ARGV: ttl, has_names, n, then per part: n_boards, mark, member, amount,
/// name_field (empty: no name), name, expire_at per board (0 = none).
/// Returns one status per part: 0 duplicate, 1 applied, 2 overflow.
///
/// Amounts and expiry times are passed to Redis as the original strings:
/// a Lua number converted back to a string keeps only 14 digits. CAP is
/// [`crate::TOTAL_MINOR_MAX`]; a part that would push a total past it is undone
/// in the same script and reported (no ZSCORE pre-check: half the calls).
const APPLY_LUA: &str = r"
local CAP = 4503599627370495
local ttl = ARGV[1]
local k = 1
local names = nil
if ARGV[2] == '1' then names = KEYS[1]; k = 2 end
local n = tonumber(ARGV[3])
local a = 4
local out = {}
for i = 1, n do
  local nb = tonumber(ARGV[a])
  local mark = ARGV[a + 1] == '1'
  local member = ARGV[a + 2]
  local amount_str = ARGV[a + 3]
  local amount = tonumber(amount_str)
  local marker = KEYS[k]
  local status = 1
  if mark and not redis.call('SET', marker, '1', 'NX', 'EX', ttl) then
    status = 0
  end
  if status == 1 then
    -- Totals stay within the cap and amounts within 10^15, so every sum
    -- here is below 2^53 and exact, and so is the undo.
    local scores = {}
    for j = 1, nb do
      scores[j] = tonumber(redis.call('ZINCRBY', KEYS[k + j], amount_str, member))
      if scores[j] > CAP or scores[j] < -CAP then status = 2 end
    end
    if status == 2 then
      -- Negated as a string: a Lua number becomes a 14-digit string.
      local negated = '-' .. amount_str
      if string.sub(amount_str, 1, 1) == '-' then negated = string.sub(amount_str, 2) end
      for j = 1, nb do
        local back = tonumber(redis.call('ZINCRBY', KEYS[k + j], negated, member))
        if back == 0 then redis.call('ZREM', KEYS[k + j], member) end
      end
      if mark then redis.call('DEL', marker) end
    else
      for j = 1, nb do
        local s = scores[j]
        if s == 0 then
          redis.call('ZREM', KEYS[k + j], member)
        elseif s == amount then
          -- A new member, maybe a new key: the expiry is a function of the
          -- key name, so setting it when a member appears is enough.
          local exp = ARGV[a + 5 + j]
          if exp ~= '0' then redis.call('EXPIREAT', KEYS[k + j], exp) end
        end
      end
      if names and ARGV[a + 4] ~= '' then redis.call('HSET', names, ARGV[a + 4], ARGV[a + 5]) end
    end
  end
  out[i] = status
  a = a + 6 + nb
  k = k + 1 + nb
end
return out
";

/// Releases the rebuild lock only if this process still holds it.
const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The leaderboards in Redis. Cheap to share behind an `Arc`; the
/// connection manager multiplexes all callers on one connection.
pub struct RedisBoards {
    /// Writes and rebuilds: long pipelines of scripts.
    con: ConnectionManager,
    /// Reads, on their own connection so a top-10 read never queues behind
    /// a writer's pipeline in the same TCP stream.
    read_con: ConnectionManager,
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
    /// Connects to `redis_url` and serves the boards under `key_prefix`
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
        let client = redis::Client::open(redis_url)?;
        // The manager's reconnect backoff multiplies its delay by `factor`
        // from one second up (redis 0.32): left at its default of 100, a
        // reconnect that failed once waits a minute before trying again,
        // and every round trip waits with it. A factor of 2 capped at
        // RECONNECT_DELAY_MS_MAX fails a dead Redis fast and finds a
        // returning one within a second.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_factor(2)
            .set_max_delay(RECONNECT_DELAY_MS_MAX)
            .set_number_of_retries(3);
        let con = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        let read_con = ConnectionManager::new_with_config(client, config).await?;
        let boards = Self {
            con,
            read_con,
            prefix: key_prefix.to_owned(),
            generation: RwLock::new(GENERATION_PROVISIONAL.to_owned()),
            marker_ttl_secs: DEFAULT_MARKER_TTL_SECS,
            slot_scripts: false,
            metrics: None,
            apply_script: Script::new(APPLY_LUA),
            unlock_script: Script::new(UNLOCK_LUA),
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
    /// proxy; on one node (the default) both parts of many updates are packed
    /// into each script, which costs Redis far less per update.
    pub fn with_slot_scripts(mut self, on: bool) -> Self {
        self.slot_scripts = on;
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

    async fn load_scripts(&self) -> Result<(), BoardError> {
        let mut con = self.con.clone();
        self.apply_script
            .prepare_invoke()
            .load_async(&mut con)
            .await?;
        self.unlock_script
            .prepare_invoke()
            .load_async(&mut con)
            .await?;
        Ok(())
    }

    /// Runs one pipeline, retrying dropped connections and timeouts (the
    /// connection manager reconnects meanwhile) and reloading the scripts
    /// after a Redis restart emptied its script cache.
    async fn query(&self, pipe: &Pipeline) -> Result<Vec<Value>, BoardError> {
        self.query_on(&self.con, pipe).await
    }

    /// [`Self::query`] on the read connection.
    async fn query_read(&self, pipe: &Pipeline) -> Result<Vec<Value>, BoardError> {
        self.query_on(&self.read_con, pipe).await
    }

    async fn query_on(
        &self,
        connection: &ConnectionManager,
        pipe: &Pipeline,
    ) -> Result<Vec<Value>, BoardError> {
        let mut attempt = 0;
        loop {
            let mut con = connection.clone();
            match pipe.query_async::<Vec<Value>>(&mut con).await {
                Ok(values) => return Ok(values),
                Err(error) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.redis_errors.inc();
                    }
                    let retryable = error.kind() == ErrorKind::NoScriptError
                        || error.is_connection_dropped()
                        || error.is_io_error()
                        || error.is_timeout();
                    if !retryable || attempt >= ROUND_TRIP_RETRIES_MAX {
                        tracing::warn!(%error, attempt, "leaderboard redis round trip failed");
                        return Err(error.into());
                    }
                    attempt += 1;
                    if error.kind() == ErrorKind::NoScriptError {
                        self.load_scripts().await?;
                    } else {
                        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    }
                }
            }
        }
    }

    /// Adopts the pointer read in a round trip. Returns true when it moved
    /// away from `used`, i.e. the operation ran on a stale generation.
    fn adopt_pointer(&self, pointer: Option<String>, used: &str) -> bool {
        match pointer {
            Some(current) if current != used => {
                *self.generation.write() = current;
                true
            }
            _ => false,
        }
    }

    /// The EVALSHA of one slot's parts.
    fn script_cmd(
        &self,
        generation: &str,
        names: bool,
        parts: &[(&PartPlan, bool, i64, &str, &str)],
    ) -> Cmd {
        let mut keys: Vec<String> = Vec::new();
        let mut args: Vec<String> = vec![
            self.marker_ttl_secs.to_string(),
            if names { "1" } else { "0" }.to_owned(),
            parts.len().to_string(),
        ];
        if names {
            keys.push(self.key(generation, &names_key()));
        }
        for (part, mark, amount, field, name) in parts {
            keys.push(self.key(generation, &part.marker));
            args.push(part.boards.len().to_string());
            args.push(if *mark { "1" } else { "0" }.to_owned());
            args.push(part.member.clone());
            args.push(amount.to_string());
            args.push((*field).to_owned());
            args.push((*name).to_owned());
            for (board, expire_at_s) in &part.boards {
                keys.push(self.key(generation, board));
                args.push(expire_at_s.to_string());
            }
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.apply_script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        cmd
    }

    /// Applies `updates` (≤ BATCH_UPDATES_MAX, validated) to `generation` in
    /// one pipeline of scripts of at most SCRIPT_PARTS_MAX parts (grouped by
    /// slot when `slot_scripts`), then a GET of the pointer when
    /// `read_pointer`.
    ///
    /// `plan_now_s` decides which period boards are alive; `mark[i]` says
    /// whether update i sets an idempotency marker.
    async fn apply_in(
        &self,
        generation: &str,
        updates: &[BoardUpdate],
        marks: &[bool],
        plan_now_s: i64,
        read_pointer: bool,
    ) -> Result<(Vec<(Status, Status)>, Option<String>), BoardError> {
        let plans: Vec<(PartPlan, PartPlan)> =
            updates.iter().map(|u| plan(u, plan_now_s)).collect();
        // Each script is a list of parts: (update index, global part?).
        let mut scripts: Vec<Vec<(usize, bool)>> = Vec::new();
        if self.slot_scripts {
            // Cluster-safe: every script stays inside one hash-tag slot.
            let mut slot_of: HashMap<&str, usize> = HashMap::new();
            let mut slots: Vec<Vec<(usize, bool)>> = Vec::new();
            for (i, update) in updates.iter().enumerate() {
                let slot = *slot_of
                    .entry(update.broadcaster_id.as_str())
                    .or_insert_with(|| {
                        slots.push(Vec::new());
                        slots.len() - 1
                    });
                slots[slot].push((i, false));
            }
            let global: Vec<(usize, bool)> = (0..updates.len()).map(|i| (i, true)).collect();
            slots.push(global);
            for parts in &slots {
                scripts.extend(parts.chunks(SCRIPT_PARTS_MAX).map(<[_]>::to_vec));
            }
        } else {
            // One node: a script may span slots, so pack both parts of
            // consecutive updates; far fewer scripts per batch.
            let parts: Vec<(usize, bool)> = (0..updates.len())
                .flat_map(|i| [(i, false), (i, true)])
                .collect();
            scripts.extend(parts.chunks(SCRIPT_PARTS_MAX).map(<[_]>::to_vec));
        }
        let mut pipe = redis::pipe();
        for parts in &scripts {
            let args: Vec<_> = parts
                .iter()
                .map(|&(i, global)| {
                    let u = &updates[i];
                    if global {
                        let name = stored_name(&u.sender_name);
                        let field = u.sender_id.as_str();
                        (&plans[i].1, marks[i], u.amount_minor, field, name)
                    } else {
                        (&plans[i].0, marks[i], u.amount_minor, "", "")
                    }
                })
                .collect();
            let names = parts.iter().any(|&(_, global)| global);
            pipe.add_command(self.script_cmd(generation, names, &args));
        }
        if read_pointer {
            pipe.cmd("GET").arg(self.gen_key());
        }
        let values = self.query(&pipe).await?;
        let expected = scripts.len() + usize::from(read_pointer);
        if values.len() != expected {
            return Err(BoardError::Protocol(format!(
                "{} replies to a pipeline of {expected} commands",
                values.len()
            )));
        }
        let mut statuses = vec![(Status::Duplicate, Status::Duplicate); updates.len()];
        for (parts, value) in scripts.iter().zip(&values) {
            let codes: Vec<i64> = from_redis_value(value)?;
            if codes.len() != parts.len() {
                return Err(BoardError::Protocol("script status count".into()));
            }
            for (&(i, global), code) in parts.iter().zip(codes) {
                let status = Status::from_code(code)?;
                if global {
                    statuses[i].1 = status;
                } else {
                    statuses[i].0 = status;
                }
            }
        }
        let pointer = if read_pointer {
            from_redis_value(&values[scripts.len()])?
        } else {
            None
        };
        Ok((statuses, pointer))
    }

    /// Applies one chunk on the current generation, following the pointer if
    /// a rebuild switched it meanwhile.
    async fn apply_chunk(&self, updates: &[BoardUpdate]) -> Result<ApplyReport, BoardError> {
        let marks = vec![true; updates.len()];
        let mut report = ApplyReport::default();
        // Two switches during one call would mean rebuilds back to back;
        // after the third attempt the next call catches up.
        for _ in 0..3 {
            let generation = self.generation();
            let now_s = wall_ms().div_euclid(1000);
            let (statuses, pointer) = self
                .apply_in(&generation, updates, &marks, now_s, true)
                .await?;
            report = tally(updates, &statuses);
            if let Some(metrics) = &self.metrics {
                let done_ms = wall_ms();
                for (update, status) in updates.iter().zip(&statuses) {
                    if status.0 == Status::Applied {
                        metrics.observe_lag(update.at_ms, done_ms);
                    }
                }
            }
            if !self.adopt_pointer(pointer, &generation) {
                break;
            }
            // A rebuild switched generations under us: what this call just
            // wrote lives in a dead generation that the rebuild's sweep may
            // already have passed, so remove it here, then re-apply.
            self.unlink_written(&generation, updates, now_s).await?;
        }
        Ok(report)
    }

    /// Deletes every key `apply_in` may have written for `updates` under
    /// the dead `generation`.
    async fn unlink_written(
        &self,
        generation: &str,
        updates: &[BoardUpdate],
        plan_now_s: i64,
    ) -> Result<(), BoardError> {
        let mut keys: HashSet<String> = HashSet::new();
        keys.insert(self.key(generation, &names_key()));
        for update in updates {
            let (room, global) = plan(update, plan_now_s);
            for part in [room, global] {
                keys.insert(self.key(generation, &part.marker));
                for (board, _) in part.boards {
                    keys.insert(self.key(generation, &board));
                }
            }
        }
        let keys: Vec<String> = keys.into_iter().collect();
        for chunk in keys.chunks(UNLINK_KEYS_MAX) {
            let mut pipe = redis::pipe();
            pipe.cmd("UNLINK").arg(chunk);
            self.query(&pipe).await?;
        }
        Ok(())
    }

    /// Reads one board's top entries, following a moved pointer once.
    async fn top_of(&self, relative_key: &str, limit: usize) -> Result<Vec<Entry>, BoardError> {
        let mut rows: Vec<(String, i64)> = Vec::new();
        let mut generation = self.generation();
        for _ in 0..2 {
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(self.gen_key());
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(self.key(&generation, relative_key))
                .arg("+inf")
                .arg("(0")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
            let values = self.query_read(&pipe).await?;
            let [pointer, range] = values.as_slice() else {
                return Err(BoardError::Protocol("top reply".into()));
            };
            let raw: Vec<(String, String)> = from_redis_value(range)?;
            rows = raw
                .into_iter()
                .map(|(member, score)| Ok((user_of(&member)?, score_of(&score)?)))
                .collect::<Result<_, BoardError>>()?;
            if !self.adopt_pointer(from_redis_value(pointer)?, &generation) {
                break;
            }
            generation = self.generation();
        }
        let names = self
            .names(&generation, rows.iter().map(|r| r.0.as_str()))
            .await?;
        Ok(rows
            .into_iter()
            .zip(names)
            .enumerate()
            .map(|(i, ((user_id, amount_minor), name))| Entry {
                rank: u32::try_from(i + 1).unwrap_or(u32::MAX),
                user_id,
                name,
                amount_minor,
            })
            .collect())
    }

    async fn names<'a>(
        &self,
        generation: &str,
        users: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<Option<String>>, BoardError> {
        let users: Vec<&str> = users.collect();
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.key(generation, &names_key()))
            .arg(&users);
        let values = self.query_read(&pipe).await?;
        let [names] = values.as_slice() else {
            return Err(BoardError::Protocol("names reply".into()));
        };
        let names: Vec<Option<String>> = from_redis_value(names)?;
        if names.len() != users.len() {
            return Err(BoardError::Protocol("names count".into()));
        }
        Ok(names)
    }

    /// Deletes every key under the prefix except the pointer, the lock and
    /// the keys of `keep_generation`. SCAN, never KEYS: it does not block
    /// Redis on a large keyspace.
    async fn sweep(&self, keep_generation: &str) -> Result<u64, BoardError> {
        let pattern = format!("{}:*", self.prefix);
        let keep = format!("{}:{keep_generation}:", self.prefix);
        let fixed: HashSet<String> = [self.gen_key(), self.lock_key()].into_iter().collect();
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let values = self.query(&pipe).await?;
            let [reply] = values.as_slice() else {
                return Err(BoardError::Protocol("scan reply".into()));
            };
            let (next, keys): (u64, Vec<String>) = from_redis_value(reply)?;
            let doomed: Vec<String> = keys
                .into_iter()
                .filter(|k| !k.starts_with(&keep) && !fixed.contains(k))
                .filter(|k| self.is_generation_key(k))
                .collect();
            for chunk in doomed.chunks(UNLINK_KEYS_MAX) {
                let mut pipe = redis::pipe();
                pipe.cmd("UNLINK").arg(chunk);
                let values = self.query(&pipe).await?;
                removed += values
                    .first()
                    .map(from_redis_value::<u64>)
                    .transpose()?
                    .unwrap_or(0);
            }
            cursor = next;
            if cursor == 0 {
                return Ok(removed);
            }
        }
    }

    async fn rebuild_locked(
        &self,
        updates: &[BoardUpdate],
        now_ms: i64,
        token: &str,
    ) -> Result<RebuildReport, BoardError> {
        let generation = format!("{:016x}", rand::random::<u64>());
        let (unique, marks) = rebuild_input(updates, now_ms, self.marker_ttl_secs);
        let mut report = RebuildReport {
            generation: generation.clone(),
            updates: updates.len(),
            applied: 0,
            duplicates: u32::try_from(updates.len() - unique.len()).unwrap_or(u32::MAX),
            overflowed: Vec::new(),
            removed: 0,
        };
        let now_s = now_ms.div_euclid(1000);
        for (chunk, chunk_marks) in unique
            .chunks(BATCH_UPDATES_MAX)
            .zip(marks.chunks(BATCH_UPDATES_MAX))
        {
            let (statuses, _) = self
                .apply_in(&generation, chunk, chunk_marks, now_s, false)
                .await?;
            let part = tally(chunk, &statuses);
            report.applied += part.applied;
            report.duplicates += part.duplicates;
            report.overflowed.extend(part.overflowed);
            let mut pipe = redis::pipe();
            pipe.cmd("PEXPIRE")
                .arg(self.lock_key())
                .arg(REBUILD_LOCK_MS);
            self.query(&pipe).await?;
        }
        // The switch: one SET, after which every reader and writer that
        // reads the pointer moves to the complete new generation.
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.gen_key()).arg(&generation);
        self.query(&pipe).await?;
        *self.generation.write() = generation.clone();
        report.removed = self.sweep(&generation).await?;
        let mut con = self.con.clone();
        let _: i64 = self
            .unlock_script
            .key(self.lock_key())
            .arg(token)
            .invoke_async(&mut con)
            .await?;
        Ok(report)
    }
}

fn user_of(member: &str) -> Result<String, BoardError> {
    decode_member(member).ok_or_else(|| BoardError::Protocol(format!("member {member:?}")))
}

/// Parses a score reply. Redis may format a double as `1e+15`; every total
/// is an integer within ±[`crate::TOTAL_MINOR_MAX`] < 2^53, so the double converts
/// back exactly; anything else is refused rather than rounded.
fn score_of(score: &str) -> Result<i64, BoardError> {
    const EXACT_MAX: f64 = 9_007_199_254_740_991.0; // 2^53 - 1
    let value: f64 = score
        .parse()
        .map_err(|_| BoardError::Protocol(format!("score {score:?}")))?;
    if value.fract() != 0.0 || value.abs() > EXACT_MAX {
        return Err(BoardError::Protocol(format!("score {score:?}")));
    }
    Ok(value as i64)
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
        check_id("room_id", room_id)?;
        check_id("broadcaster_id", broadcaster_id)?;
        check_limit(limit)?;
        check_now(now_ms)?;
        self.top_of(
            &room_board_key(room_id, broadcaster_id, window, now_ms),
            limit,
        )
        .await
    }

    async fn me(
        &self,
        room_id: &str,
        broadcaster_id: &str,
        window: Window,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Option<Entry>, BoardError> {
        check_id("room_id", room_id)?;
        check_id("broadcaster_id", broadcaster_id)?;
        check_id("user_id", user_id)?;
        check_now(now_ms)?;
        let relative = room_board_key(room_id, broadcaster_id, window, now_ms);
        let member = encode_member(user_id);
        let mut generation = self.generation();
        let mut found: Option<(i64, u32)> = None;
        for _ in 0..2 {
            let key = self.key(&generation, &relative);
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(self.gen_key());
            pipe.cmd("ZSCORE").arg(&key).arg(&member);
            pipe.cmd("ZREVRANK").arg(&key).arg(&member);
            let values = self.query_read(&pipe).await?;
            let [pointer, score, rank] = values.as_slice() else {
                return Err(BoardError::Protocol("me reply".into()));
            };
            let score: Option<String> = from_redis_value(score)?;
            let rank: Option<u32> = from_redis_value(rank)?;
            found = match (score, rank) {
                (Some(score), Some(rank)) => Some((score_of(&score)?, rank + 1)),
                _ => None,
            };
            if !self.adopt_pointer(from_redis_value(pointer)?, &generation) {
                break;
            }
            generation = self.generation();
        }
        // Non-positive totals sort below every positive one, so the rank of
        // a positive total is its rank among the shown entries.
        let Some((amount_minor, rank)) = found.filter(|(total, _)| *total > 0) else {
            return Ok(None);
        };
        let name = self
            .names(&generation, std::iter::once(user_id))
            .await?
            .pop()
            .flatten();
        Ok(Some(Entry {
            rank,
            user_id: user_id.to_owned(),
            name,
            amount_minor,
        }))
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
        check_now(now_ms)?;
        for update in updates {
            validate(update)?;
        }
        let token = format!("{:016x}", rand::random::<u64>());
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.lock_key())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(REBUILD_LOCK_MS);
        let values = self.query(&pipe).await?;
        if matches!(values.first(), Some(Value::Nil) | None) {
            return Err(BoardError::RebuildInProgress);
        }
        let result = self.rebuild_locked(updates, now_ms, &token).await;
        if result.is_err() {
            // Best effort: a failed rebuild frees the lock for a retry; if
            // Redis is gone, the lock's own TTL frees it.
            let mut con = self.con.clone();
            let _: Result<i64, _> = self
                .unlock_script
                .key(self.lock_key())
                .arg(&token)
                .invoke_async(&mut con)
                .await;
        }
        let report = result?;
        if let Some(metrics) = &self.metrics {
            metrics.rebuilds.inc();
        }
        tracing::info!(
            generation = %report.generation,
            updates = report.updates,
            removed = report.removed,
            "leaderboard rebuilt"
        );
        Ok(report)
    }

    async fn needs_rebuild(&self) -> Result<bool, BoardError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.gen_key());
        let values = self.query(&pipe).await?;
        let [pointer] = values.as_slice() else {
            return Err(BoardError::Protocol("generation reply".into()));
        };
        let pointer: Option<String> = from_redis_value(pointer)?;
        Ok(match pointer {
            Some(current) => {
                *self.generation.write() = current;
                false
            }
            None => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TOTAL_MINOR_MAX;

    #[test]
    fn scores_parse_exactly_in_any_double_format() {
        assert_eq!(score_of("100").unwrap(), 100);
        assert_eq!(score_of("-70").unwrap(), -70);
        assert_eq!(score_of("1e+15").unwrap(), 1_000_000_000_000_000);
        assert_eq!(score_of("4503599627370495").unwrap(), TOTAL_MINOR_MAX);
        assert_eq!(score_of("9007199254740991").unwrap(), (1 << 53) - 1);
        assert!(score_of("1.5").is_err());
        assert!(score_of("9007199254740992").is_err());
        assert!(score_of("inf").is_err());
    }

    #[test]
    fn rebuild_input_keeps_first_ids_and_marks_only_recent_updates() {
        let u = |id: &str, at_ms| BoardUpdate {
            update_id: id.into(),
            room_id: "r".into(),
            broadcaster_id: "b".into(),
            sender_id: "s".into(),
            sender_name: "S".into(),
            amount_minor: 1,
            at_ms,
        };
        let (unique, marks) =
            rebuild_input(&[u("a", 1_000), u("b", 900_000), u("a", 5)], 1_000_000, 600);
        assert_eq!(unique.len(), 2);
        assert_eq!(unique[0].at_ms, 1_000);
        assert_eq!(marks, vec![false, true]);
    }
}
