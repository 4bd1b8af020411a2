//! HTTP-level integration tests of the gift API: each test starts a real
//! server in-process on `127.0.0.1:0` and talks to it with `reqwest`.

mod common;
#[path = "../support/proxy.rs"]
mod proxy;

mod auth;
mod bad_input;
mod concurrency;
mod health;
mod idempotency;
mod leaderboards;
mod openapi;
mod reports;
mod security_matrix;
mod unavailable;
