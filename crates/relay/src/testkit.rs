//! Test helpers: a real SQLite ledger in a temporary directory.

use std::sync::Arc;

use applause_core::clock::{SharedClock, SystemClock};
use applause_core::Channel;
use applause_ledger::{CreateRoomCmd, Ledger, LedgerOptions, TopUpCmd};

pub(crate) async fn ledger(dir: &tempfile::TempDir) -> Ledger {
    ledger_on(dir, Arc::new(SystemClock)).await
}

/// A ledger that reads the time from `clock`, as the relay's tests move it.
pub(crate) async fn ledger_on(dir: &tempfile::TempDir, clock: SharedClock) -> Ledger {
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    Ledger::open_with_clock(
        &url,
        LedgerOptions::default(),
        &prometheus::Registry::new(),
        clock,
    )
    .await
    .expect("SQLite ledger opens")
}

pub(crate) async fn funded_room(ledger: &Ledger, user: &str) -> String {
    ledger
        .top_up(TopUpCmd {
            user_id: user.into(),
            channel: Channel::Web,
            amount_minor: 10_000,
            receipt_id: format!("r-{user}"),
        })
        .await
        .unwrap();
    ledger
        .create_room(CreateRoomCmd {
            broadcaster_id: "star".into(),
            title: "t".into(),
        })
        .await
        .unwrap()
        .room_id
}
