//! Opening a ledger on each backend, and small builders for commands.

use std::sync::Arc;

use applause_core::{Channel, ManualClock};
use applause_ledger::*;
use sqlx::Executor;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A ledger on a fresh store; `reopen` opens the same store again (a restart).
pub struct TestStore {
    pub kind: Kind,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    db: Option<String>,
}

impl TestStore {
    pub async fn new(kind: Kind) -> TestStore {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
                TestStore {
                    kind,
                    url,
                    _dir: Some(dir),
                    db: None,
                }
            }
            Kind::Postgres => {
                let name = format!("applause_citest_t_{}", uuid_like());
                let admin = sqlx::PgPool::connect(PG_ADMIN_URL)
                    .await
                    .expect("PostgreSQL on 127.0.0.1:5432");
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                admin.close().await;
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                TestStore {
                    kind,
                    url,
                    _dir: None,
                    db: Some(name),
                }
            }
        }
    }

    pub async fn open(&self) -> Ledger {
        self.open_with(LedgerOptions::default()).await
    }

    pub async fn open_with(&self, options: LedgerOptions) -> Ledger {
        Ledger::open(&self.url, options, &prometheus::Registry::new())
            .await
            .unwrap()
    }

    /// A ledger whose time is `clock` (tests move it instead of sleeping).
    pub async fn open_with_clock(&self, clock: &Arc<ManualClock>) -> Ledger {
        Ledger::open_with_clock(
            &self.url,
            LedgerOptions::default(),
            &prometheus::Registry::new(),
            clock.clone(),
        )
        .await
        .unwrap()
    }

    /// Drops the PostgreSQL database (connections are terminated).
    pub async fn finish(self) {
        if let Some(name) = &self.db {
            if let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN_URL).await {
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
                admin.close().await;
            }
        }
    }

    /// Runs raw SQL against the store (to tamper with it in invariant tests).
    pub async fn raw(&self, sql: &str) {
        match self.kind {
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                pool.execute(sql).await.unwrap();
                pool.close().await;
            }
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                pool.execute(sql).await.unwrap();
                pool.close().await;
            }
        }
    }
}

/// A manual clock at a fixed, realistic time (2023-11-14T22:13:20Z).
pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

pub fn uuid_like() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..16)
        .map(|_| char::from(b'a' + r.random_range(0..26u8)))
        .collect()
}

/// Runs a test body once per backend.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let store = $crate::common::TestStore::new($crate::common::Kind::Sqlite).await;
                $body(&store).await;
                store.finish().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let store = $crate::common::TestStore::new($crate::common::Kind::Postgres).await;
                $body(&store).await;
                store.finish().await;
            }
        }
    };
}

pub async fn fund(ledger: &Ledger, user: &str, channel: Channel, minor: i64) {
    let r = ledger
        .top_up(TopUpCmd {
            user_id: user.into(),
            channel,
            amount_minor: minor,
            receipt_id: format!("r-{}", uuid_like()),
        })
        .await
        .unwrap();
    assert!(matches!(r, TopUpOutcome::Credited(_)));
}

pub async fn room(ledger: &Ledger, broadcaster: &str) -> Room {
    ledger
        .create_room(CreateRoomCmd {
            broadcaster_id: broadcaster.into(),
            title: "live".into(),
        })
        .await
        .unwrap()
}

pub fn buy(sender: &str, room: &str, amount: i64, key: &str) -> PurchaseCmd {
    PurchaseCmd {
        sender_id: sender.into(),
        sender_name: sender.to_uppercase(),
        room_id: room.into(),
        sticker_id: "rose".into(),
        quantity: 1,
        amount_minor: amount,
        message: None,
        idempotency_key: key.into(),
        request_hash: format!("{room}/{amount}"),
    }
}

pub async fn assert_check(ledger: &Ledger) -> CheckReport {
    let c = ledger.check().await.unwrap();
    assert!(c.ok(), "ledger check failed: {c:?}");
    c
}
