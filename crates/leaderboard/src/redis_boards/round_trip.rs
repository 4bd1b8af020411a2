//! One Redis round trip of the boards: the pipeline with its retries, the
//! script cache, the generation pointer read back with each call, and the
//! mapping of Redis's errors into the backend-neutral [`BoardError`].
//!
//! On a Redis Cluster a "round trip" of commands in several hash-tag slots
//! is one pipeline per slot, run concurrently ([`RedisBoards::query_cmds`]).

use std::time::Duration;

use applause_redis::Conn;
use futures_util::future::try_join_all;
use redis::{from_redis_value, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, Value};

use crate::model::BoardError;

use super::apply::UNLINK_KEYS_MAX;
use super::RedisBoards;

/// Retries of one round trip after a dropped connection or timeout. Safe
/// because every write is idempotent and reads have no effects.
const ROUND_TRIP_RETRIES_MAX: u32 = 2;

/// The name the errors of this backend carry.
const BACKEND: &str = "redis";

/// Redis failed or is unreachable.
pub(super) fn backend(error: RedisError) -> BoardError {
    BoardError::Backend {
        backend: BACKEND,
        source: Box::new(error),
    }
}

/// Redis answered something the boards never ask for.
pub(super) fn protocol(detail: impl Into<String>) -> BoardError {
    BoardError::Protocol {
        backend: BACKEND,
        detail: detail.into(),
    }
}

/// Converts one reply; a reply of another type is a Redis error, as the
/// client reports it.
pub(super) fn decode<T: FromRedisValue>(value: &Value) -> Result<T, BoardError> {
    from_redis_value(value).map_err(backend)
}

impl RedisBoards {
    pub(super) async fn load_scripts(&self) -> Result<(), BoardError> {
        let mut con = self.con.clone();
        self.apply_script
            .prepare_invoke()
            .load_async(&mut con)
            .await
            .map_err(backend)?;
        self.unlock_script
            .prepare_invoke()
            .load_async(&mut con)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Runs one pipeline, retrying dropped connections and timeouts (the
    /// connection manager reconnects meanwhile) and reloading the scripts
    /// after a Redis restart emptied its script cache.
    pub(super) async fn query(&self, pipe: &Pipeline) -> Result<Vec<Value>, BoardError> {
        self.query_on(&self.con, pipe).await
    }

    /// [`Self::query`] on the read connection.
    pub(super) async fn query_read(&self, pipe: &Pipeline) -> Result<Vec<Value>, BoardError> {
        self.query_on(&self.read_con, pipe).await
    }

    /// Runs `cmds` (each with the key that routes it) and returns their
    /// replies in order, then the generation pointer when `read_pointer`.
    /// On one server that is one pipeline ending with the GET. On a cluster
    /// it is one pipeline per hash-tag slot, concurrently, and the GET once
    /// they all answered: either way the pointer is read after the data, so
    /// an unmoved pointer vouches that the data came from a live generation.
    pub(super) async fn query_cmds(
        &self,
        read: bool,
        cmds: &[(String, Cmd)],
        read_pointer: bool,
    ) -> Result<(Vec<Value>, Option<String>), BoardError> {
        let connection = if read { &self.read_con } else { &self.con };
        let mut get_pointer = redis::cmd("GET");
        get_pointer.arg(self.gen_key());
        if !connection.is_cluster() {
            let mut pipe = redis::pipe();
            for (_, cmd) in cmds {
                pipe.add_command(cmd.clone());
            }
            if read_pointer {
                pipe.add_command(get_pointer);
            }
            let mut values = self.query_on(connection, &pipe).await?;
            let pointer = match (read_pointer, values.len() == cmds.len() + 1) {
                (false, _) => None,
                (true, true) => values.pop().as_ref().map(decode).transpose()?.flatten(),
                (true, false) => return Err(protocol("pointer reply missing")),
            };
            return Ok((values, pointer));
        }
        let groups = connection.slot_groups(cmds.iter().map(|(key, _)| key.as_str()));
        let replies = try_join_all(groups.iter().map(|group| async move {
            let mut pipe = redis::pipe();
            for &i in group {
                pipe.add_command(cmds[i].1.clone());
            }
            self.query_on(connection, &pipe).await
        }))
        .await?;
        let mut values = vec![Value::Nil; cmds.len()];
        for (group, group_values) in groups.iter().zip(replies) {
            if group_values.len() != group.len() {
                return Err(protocol(format!(
                    "{} replies to a pipeline of {} commands",
                    group_values.len(),
                    group.len()
                )));
            }
            for (&i, value) in group.iter().zip(group_values) {
                values[i] = value;
            }
        }
        let pointer = if read_pointer {
            let mut pipe = redis::pipe();
            pipe.add_command(get_pointer);
            let reply = self.query_on(connection, &pipe).await?;
            let [pointer] = reply.as_slice() else {
                return Err(protocol("generation reply"));
            };
            decode(pointer)?
        } else {
            None
        };
        Ok((values, pointer))
    }

    /// Deletes `keys`: UNLINK in chunks, per hash-tag slot on a cluster
    /// (a multi-key command must stay in one slot there). Returns how many
    /// existed.
    pub(super) async fn unlink(&self, keys: &[String]) -> Result<u64, BoardError> {
        let mut removed = 0;
        for group in self.con.slot_groups(keys.iter().map(String::as_str)) {
            for chunk in group.chunks(UNLINK_KEYS_MAX) {
                let mut pipe = redis::pipe();
                pipe.cmd("UNLINK")
                    .arg(chunk.iter().map(|&i| keys[i].as_str()).collect::<Vec<_>>());
                let values = self.query(&pipe).await?;
                removed += values.first().map(decode::<u64>).transpose()?.unwrap_or(0);
            }
        }
        Ok(removed)
    }

    async fn query_on(&self, connection: &Conn, pipe: &Pipeline) -> Result<Vec<Value>, BoardError> {
        let mut attempt = 0;
        loop {
            match connection.query_pipeline::<Vec<Value>>(pipe).await {
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
                        return Err(backend(error));
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
    pub(super) fn adopt_pointer(&self, pointer: Option<String>, used: &str) -> bool {
        match pointer {
            Some(current) if current != used => {
                *self.generation.write() = current;
                true
            }
            _ => false,
        }
    }

    /// Reads `P:gen` and adopts it; true when there is none (rebuild needed).
    pub(super) async fn pointer_missing(&self) -> Result<bool, BoardError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.gen_key());
        let values = self.query(&pipe).await?;
        let [pointer] = values.as_slice() else {
            return Err(protocol("generation reply"));
        };
        let pointer: Option<String> = decode(pointer)?;
        Ok(match pointer {
            Some(current) => {
                *self.generation.write() = current;
                false
            }
            None => true,
        })
    }
}
