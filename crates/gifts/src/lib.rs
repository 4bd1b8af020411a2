//! The gift service: the HTTP API of SPEC §3 (stickers, rooms, top-ups,
//! wallets, gift purchases, acknowledgements, leaderboards, finance, health
//! and metrics). Its handlers validate requests and hand commands to the
//! ledger; what happens after a commit (bus, boards, sweepers) is the
//! relay's (`applause-relay`).
//!
//! It never imports the gateway; the binary wires both.

mod boards;
mod body;
mod config;
pub mod decode;
mod extractors;
mod finance;
mod gifts;
mod idempotency;
mod limits;
mod metrics;
mod params;
mod redpackets;
mod refunds;
mod render;
mod rooms;
mod routes;
mod service;
mod statements;
mod views;
mod wallet;

pub use config::GiftsConfig;
pub use finance::{check_json, parse_interval, revenue_csv, summary_json};
pub use gifts::acknowledge;
pub use limits::RateLimit;
pub use routes::with_json_fallbacks;
pub use service::GiftService;

pub(crate) use extractors::{principal, Id};
