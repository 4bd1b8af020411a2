//! When the ledger cannot reach its database, a purchase answers 503
//! `unavailable` with `Retry-After` and charges nothing; once the database is
//! back, the same key buys exactly once. The outage is a TCP proxy in front of
//! PostgreSQL that the test cuts and restores.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Backend, Server, Store};
use crate::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_outage_is_503_and_charges_nothing() {
    let proxy = Proxy::start(5432).await;
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
