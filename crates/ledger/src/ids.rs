//! New identifiers: a one-letter kind and 32 hex digits of a UUIDv7 whose
//! time part is read from the ledger's clock, so ids sort by creation time
//! and a test that moves the clock gets ids of that time. The handle makes
//! them and hands them to the planner with the command (the planner never
//! reads a clock or a random source).

use std::sync::Mutex;

use applause_core::SharedClock;
use uuid::{ContextV7, Timestamp, Uuid};

pub(crate) struct Ids {
    clock: SharedClock,
    /// Keeps ids of one millisecond in order (a counter under the random bits).
    context: Mutex<ContextV7>,
}

impl Ids {
    pub fn new(clock: SharedClock) -> Ids {
        Ids {
            clock,
            context: Mutex::new(ContextV7::new()),
        }
    }

    /// A new id of `kind` (`g` gift, `r` room, `p` red packet).
    pub fn next(&self, kind: char) -> String {
        let ms = u64::try_from(self.clock.now_ms()).unwrap_or(0);
        let context = self.context.lock().unwrap_or_else(|p| p.into_inner());
        let ts = Timestamp::from_unix(&*context, ms / 1_000, (ms % 1_000) as u32 * 1_000_000);
        format!("{kind}{}", Uuid::new_v7(ts).simple())
    }
}
