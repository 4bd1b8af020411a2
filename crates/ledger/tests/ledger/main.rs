//! The ledger's shared suite: every test runs against real SQLite (a file in
//! a temporary directory) and real PostgreSQL (a fresh database per test on
//! 127.0.0.1:5432, dropped at the end).

mod clock;
mod common;
mod concurrency;
mod idempotency;
mod invariants;
mod lost_commit;
// A PostgreSQL server of the test's own (the applause crate's test support).
mod outbox;
#[allow(dead_code)]
#[path = "../../../applause/tests/support/private_pg.rs"]
mod private_pg;
mod redpackets;
mod refunds;
mod reports;
mod rooms;
