//! The leaderboard's one integration-test binary: the conformance suite run
//! against both twins, exactly-once, rebuild and randomised comparisons.
//! Redis tests talk to the real server at redis://127.0.0.1:6379 (started by
//! `common` if it is not running), each under its own random key prefix.

mod common;
mod conformance;
mod exactly_once;
mod metrics;
mod property;
mod rebuild;
mod redis_cluster;
