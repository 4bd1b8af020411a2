//! The clock the buses measure event age with, injectable so tests can move time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch, as the bus compares them with
/// an event's `committed_at_ms`.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock: what the Redis bus uses, because `committed_at_ms`
/// was stamped by another process's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_now_ms()
    }
}

/// Wall time at construction plus tokio's monotonic time since then.
///
/// Under `tokio::time::pause()` it advances only with `tokio::time::advance`,
/// so tests can age history without sleeping; in production it tracks the
/// wall clock closely enough for a minutes-long history bound.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall_ms_at_start: i64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        Self {
            wall_ms_at_start: system_now_ms(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        let elapsed_ms = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.wall_ms_at_start.saturating_add(elapsed_ms)
    }
}

/// Milliseconds since the Unix epoch; a clock set before 1970 reads as 0
/// rather than panicking.
pub fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
