//! Test helpers: a real SQLite ledger in a temporary directory.

use applause_core::Channel;
use applause_ledger::{CreateRoomCmd, Ledger, LedgerOptions, TopUpCmd};

pub(crate) async fn ledger(dir: &tempfile::TempDir) -> Ledger {
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    Ledger::open(&url, LedgerOptions::default(), &prometheus::Registry::new())
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
