//! A COMMIT whose outcome the ledger never heard (PostgreSQL): the connection
//! dies after the COMMIT was sent, before its answer came back, as when the
//! server crashes or the network fails at that moment. The ledger must tell
//! what happened from the database afterwards: a commit that took effect is
//! the purchase's outcome (not a 503 "nothing was charged" while it was),
//! one that did not is `Unavailable` and charged nothing.
//!
//! A proxy between the ledger and PostgreSQL plays the fault, exactly once:
//! it either forwards the COMMIT, waits for the server's "COMMIT" answer
//! (so it is durable) and drops the connection instead of passing the answer
//! on, or drops the connection instead of forwarding the COMMIT. The last
//! test also crashes the server then, which needs one of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use applause_core::Channel;
use applause_ledger::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::private_pg::PrivatePg;

/// The simple-query message `COMMIT` (sqlx commits that way), and the
/// server's CommandComplete for it.
const COMMIT_QUERY: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";
const COMMIT_DONE: &[u8] = b"C\0\0\0\x0bCOMMIT\0";

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The COMMIT reaches the server and commits; its answer is lost.
    LoseAnswer,
    /// The COMMIT never reaches the server.
    LoseRequest,
}

/// What the trap's connections share.
#[derive(Default)]
struct State {
    armed: Mutex<Option<Fault>>,
    fired: AtomicBool,
    /// Once fired, whether the database then stays away (every connection
    /// dropped, new ones closed at once) until released.
    away_after: AtomicBool,
    away: AtomicBool,
    conns: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl State {
    fn fire(&self) {
        if self.away_after.load(Ordering::SeqCst) {
            self.away.store(true, Ordering::SeqCst);
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
        self.fired.store(true, Ordering::SeqCst);
    }
}

/// A TCP proxy to a PostgreSQL on 127.0.0.1 that plays one armed fault.
struct Trap {
    port: u16,
    state: Arc<State>,
    accept: tokio::task::AbortHandle,
}

impl Trap {
    async fn start(target_port: u16) -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<State> = Arc::default();
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.away.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                    continue;
                };
                let task = tokio::spawn(pipe(client, server, st.clone()));
                st.conns.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Trap {
            port,
            state,
            accept,
        }
    }

    fn arm(&self, fault: Fault) {
        *self.state.armed.lock().unwrap() = Some(fault);
    }

    /// After the fault, the database stays away until [`Trap::come_back`].
    fn stay_away_after(&self) {
        self.state.away_after.store(true, Ordering::SeqCst);
    }

    fn come_back(&self) {
        self.state.away.store(false, Ordering::SeqCst);
    }

    fn fired(&self) -> bool {
        self.state.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.state.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Relays one connection; returning drops both sides.
async fn pipe(mut client: TcpStream, mut server: TcpStream, state: Arc<State>) {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (mut up, mut down) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
    // Set once this connection's COMMIT was let through to be answered
    // into the void: what the server says from then on.
    let mut swallowed: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            n = cr.read(&mut up) => {
                let Ok(n @ 1..) = n else { return };
                if swallowed.is_none() && contains(&up[..n], COMMIT_QUERY) {
                    let fault = state.armed.lock().unwrap().take();
                    match fault {
                        Some(Fault::LoseRequest) => {
                            state.fire();
                            return;
                        }
                        Some(Fault::LoseAnswer) => swallowed = Some(Vec::new()),
                        None => {}
                    }
                }
                if sw.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            n = sr.read(&mut down) => {
                let Ok(n @ 1..) = n else { return };
                if let Some(said) = swallowed.as_mut() {
                    said.extend_from_slice(&down[..n]);
                    if contains(said, COMMIT_DONE) {
                        // Committed, and the ledger will never hear it.
                        state.fire();
                        return;
                    }
                    continue;
                }
                if cw.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A ledger on a fresh PostgreSQL database, reached through a trap.
async fn trapped() -> (TestStore, Trap, Ledger) {
    let store = TestStore::new(Kind::Postgres).await;
    let trap = Trap::start(5432).await;
    let url = store.url.replace(":5432/", &format!(":{}/", trap.port));
    let ledger = Ledger::open(&url, LedgerOptions::default(), &prometheus::Registry::new())
        .await
        .unwrap();
    (store, trap, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_whose_commit_answer_is_lost_is_the_gift_it_committed() {
    let (store, trap, ledger) = trapped().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    trap.arm(Fault::LoseAnswer);
    let out = ledger.purchase(buy("v", &r.room_id, 300, "k1")).await;
    assert!(trap.fired(), "the fault was not played");
    // It was charged, so it must not be answered "unavailable" (which
    // promises that nothing was charged).
    let Ok(PurchaseOutcome::Charged(gift, _)) = out else {
        panic!("a committed purchase answered {out:?}")
    };
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 700);
    let again = ledger
        .purchase(buy("v", &r.room_id, 300, "k1"))
        .await
        .unwrap();
    assert_eq!(
        again,
        PurchaseOutcome::Replay(StoredOutcome::Gift(gift.gift_id.clone()))
    );
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 700);
    assert_check(&ledger).await;
    drop(ledger);
    store.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_whose_commit_never_arrived_is_unavailable_and_charged_nothing() {
    let (store, trap, ledger) = trapped().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    trap.arm(Fault::LoseRequest);
    let out = ledger.purchase(buy("v", &r.room_id, 300, "k1")).await;
    assert!(trap.fired(), "the fault was not played");
    assert!(
        matches!(out, Err(LedgerError::Unavailable(_))),
        "an uncommitted purchase answered {out:?}"
    );
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 1_000);
    // The same key then buys, once.
    let again = ledger
        .purchase(buy("v", &r.room_id, 300, "k1"))
        .await
        .unwrap();
    assert!(matches!(again, PurchaseOutcome::Charged(..)), "{again:?}");
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 700);
    assert_check(&ledger).await;
    drop(ledger);
    store.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_commit_holds_up_only_its_own_batch() {
    let (store, trap, ledger) = trapped().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    trap.arm(Fault::LoseAnswer);
    trap.stay_away_after();
    let first = tokio::spawn({
        let (ledger, room_id) = (ledger.clone(), r.room_id.clone());
        async move { ledger.purchase(buy("v", &room_id, 300, "k1")).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !trap.fired() {
        assert!(Instant::now() < deadline, "the fault was not played");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The database is away: a later purchase is told so at once, while the
    // first still waits to learn what became of its commit.
    let later = tokio::time::timeout(
        Duration::from_secs(5),
        ledger.purchase(buy("v", &r.room_id, 100, "k2")),
    )
    .await
    .expect("a later purchase waited for the unanswered commit");
    assert!(
        matches!(later, Err(LedgerError::Unavailable(_))),
        "{later:?}"
    );
    assert!(
        !first.is_finished(),
        "answered before the database could tell"
    );
    trap.come_back();
    let first = first.await.unwrap();
    assert!(
        matches!(first, Ok(PurchaseOutcome::Charged(..))),
        "a committed purchase answered {first:?}"
    );
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 700);
    assert_check(&ledger).await;
    drop(ledger);
    store.finish().await;
}

/// The COMMIT never arrives, then the server crashes before any of the
/// transaction's WAL reached the disk: after the restart its transaction id
/// is given to the next transaction, which commits. The purchase did not
/// take effect and must say so (asking `txid_status` about that id would
/// hear "committed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_in_a_crash_is_not_mistaken_for_a_later_transaction() {
    // WAL reaches the disk only when a commit flushes it: no background
    // writer or WAL writer flushes the lost transaction's records first.
    let mut pg = PrivatePg::start_with(&["wal_writer_delay=10s", "bgwriter_lru_maxpages=0"]).await;
    pg.create_database("ledger").await;
    let trap = Trap::start(pg.port).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/ledger", trap.port);
    let ledger = Ledger::open(&url, LedgerOptions::default(), &prometheus::Registry::new())
        .await
        .unwrap();
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 1_000).await;
    trap.arm(Fault::LoseRequest);
    trap.stay_away_after();
    let first = tokio::spawn({
        let (ledger, room_id) = (ledger.clone(), r.room_id.clone());
        async move { ledger.purchase(buy("v", &room_id, 300, "k1")).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !trap.fired() {
        assert!(Instant::now() < deadline, "the fault was not played");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pg.stop_immediate();
    pg.start_again().await;
    // Transactions of someone else, straight to the server: the first takes
    // the lost transaction's id.
    {
        use sqlx::{Connection, Executor};
        let mut c = sqlx::PgConnection::connect(&pg.url("ledger"))
            .await
            .unwrap();
        c.execute("CREATE TABLE someone_else (x BIGINT)")
            .await
            .unwrap();
        for x in 0..3 {
            c.execute(format!("INSERT INTO someone_else VALUES ({x})").as_str())
                .await
                .unwrap();
        }
        let _ = c.close().await;
    }
    trap.come_back();
    let first = first.await.unwrap();
    assert!(
        matches!(first, Err(LedgerError::Unavailable(_))),
        "a purchase that never committed answered {first:?}"
    );
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 1_000);
    assert_check(&ledger).await;
}
