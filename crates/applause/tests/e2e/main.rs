//! End-to-end tests through the real `applause` binary, over its public HTTP
//! and WebSocket API only: embedded delivery, acknowledgements, the live
//! leaderboard, room end and resume on `applause serve`; and the scaled mode
//! (separate gateway and gifts processes on PostgreSQL and Redis, started by
//! `deploy/local-cluster.sh`) through crashes and a lost Redis, also on a
//! Redis Cluster.

mod acks;
mod chaos;
mod chaos_pg;
mod common;
mod delivery;
mod leaderboard;
#[path = "../support/private_pg.rs"]
mod private_pg;
#[path = "../support/proxy.rs"]
mod proxy;
mod redis_cluster;
mod resume;
mod room_end;
mod scaled;
mod scaled_boards;
