//! The gateway's integration tests: real sockets, a real `InProcessBus`, one
//! module per feature.

mod common;
mod delivery;
mod protocol;
mod resume;
mod shutdown;
mod slow_consumer;
mod write_paths;
