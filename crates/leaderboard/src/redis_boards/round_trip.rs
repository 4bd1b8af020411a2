//! One Redis round trip of the boards: the pipeline with its retries, the
//! script cache, the generation pointer read back with each call, and the
//! mapping of Redis's errors into the backend-neutral [`BoardError`].

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{from_redis_value, ErrorKind, FromRedisValue, Pipeline, RedisError, Value};

use crate::model::BoardError;

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
