//! When the ledger cannot reach its database, a purchase answers 503
//! `unavailable` with `Retry-After` and charges nothing; once the database is
//! back, the same key buys exactly once. The outage is a TCP proxy in front of
//! PostgreSQL that the test cuts and restores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::common::{Backend, Server, Store};

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped, new
/// ones closed at once) and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            port,
            up,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_outage_is_503_and_charges_nothing() {
    let proxy = Proxy::start().await;
    let store = Store::new(Backend::Postgres).await;
    store.route_through(proxy.port);
    let s = Server::on(store, &[]).await;
    let room = s.open_room("star-out").await;
    s.top_up("fan-out", "web", "10.00").await;
    let fan = s.viewer("fan-out");
    let body = json!({"sticker_id": "coffee", "quantity": 1});
    let purchase = || {
        s.client
            .post(s.url(&format!("/v1/rooms/{room}/gifts")))
            .bearer_auth(&fan)
            .header("idempotency-key", "outage")
            .json(&body)
            .send()
    };

    proxy.cut();
    let started = Instant::now();
    let r = purchase().await.unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    let took = started.elapsed();
    proxy.restore();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("\"unavailable\""), "{text}");
    for leak in ["sqlx", "SQL", "postgres", "127.0.0.1"] {
        assert!(!text.contains(leak), "the 503 leaks {leak:?}: {text}");
    }
    assert!(retry_after.is_some(), "a 503 says when to retry");
    assert!(took < Duration::from_secs(20), "the 503 took {took:?}");

    // Back up: the same key now buys, once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        let r = purchase().await.unwrap();
        if r.status() == 201 {
            break r.text().await.unwrap();
        }
        assert_eq!(r.status(), 503, "while recovering");
        assert!(Instant::now() < deadline, "the ledger did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let again = s.buy(&fan, &room, "outage", &body).await;
    assert_eq!((again.status, &again.body), (201, &created));
    assert_eq!(s.balance("fan-out").await, 1000 - 199, "charged once");
    assert_eq!(s.summary().await["gifts"], 1);
    s.shutdown().await;
}
