//! The clock the buses measure event age with: core's [`Clock`], plus a
//! tokio-driven one so tests can age history with `tokio::time::advance`.

pub use applause_core::clock::{system_now_ms, Clock, SystemClock};

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
