//! The Applause ledger: double-entry accounts, wallets with per-channel
//! balances, top-ups, gift purchases, rooms and their event outbox, reports
//! and the ledger check.
//!
//! Every write goes through one **committer** task per process
//! ([`committer`]): requests queue on a channel, the committer takes whatever
//! has queued (up to `batch_max`) and commits it as one database transaction
//! — one fsync for many gifts (group commit). The batch is planned in memory
//! by [`plan`] against the state the backend loaded and locked, so a wallet
//! can never be overdrawn and hot accounts (broadcaster, platform, store) are
//! only appended to, never updated per purchase. Two backends: SQLite
//! (embedded default) and PostgreSQL; only the backend modules know SQL.
//!
//! Refunds and red packets are commands like purchases. A refund reverses a
//! gift's entries in one transaction (once: the gift row is locked and
//! carries `refunded_at_ms`). A red packet's drop moves the total into the
//! `escrow:<packet>` account and the packet row remembers each channel's
//! part; claims draw from that escrow in the policy's draw order (lowest
//! store fee first, like purchases), so a claimed share carries the channels
//! it came from; the return at expiry is planned under the packet's lock and
//! only while the packet is unsettled, so it happens once.
//!
//! Time comes from one injected [`applause_core::Clock`]
//! ([`Ledger::open_with_clock`]; [`Ledger::open`] uses the system clock).

mod backend;
mod committer;
mod error;
mod handle;
mod ids;
pub mod model;
mod plan;
pub mod reports;

pub use committer::CommitNotice;
pub use error::LedgerError;
pub use handle::{Ledger, LedgerOptions};
pub use model::*;
pub use plan::{accounts, RED_PACKET_KEY_PREFIX};
