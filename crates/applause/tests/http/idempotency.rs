//! `Idempotency-Key` and `receipt_id` over HTTP, on SQLite and PostgreSQL:
//! replays are byte-identical and charge once, also concurrently and after a
//! restart; a reused key with another body is a 422.

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, Server, Store};

const FAST: &[&str] = &["--gift-burst", "1000", "--gift-rate-per-s", "1000"];

async fn server(backend: Backend) -> Server {
    Server::on(Store::new(backend).await, FAST).await
}

both_backends!(replays_are_byte_identical_and_charge_once);
async fn replays_are_byte_identical_and_charge_once(backend: Backend) {
    let s = server(backend).await;
    let room = s.open_room("star-i").await;
    s.top_up("fan-i", "web", "10.00").await;
    s.top_up("fan-j", "web", "10.00").await;
    let fan = s.viewer("fan-i");
    let body = json!({"sticker_id": "rose", "quantity": 2, "message": "hi there"});
    let first = s.buy(&fan, &room, "same-key", &body).await;
    first.expect_status(201);
    assert_eq!(first.json["amount"], "1.98");
    assert_eq!(first.json["balance"], "8.02");
    let before = s.money("fan-i").await;
    for _ in 0..3 {
        let again = s.buy(&fan, &room, "same-key", &body).await;
        assert_eq!(again.status, 201);
        assert_eq!(again.body, first.body, "a replay is byte-identical");
        assert_eq!(again.header("content-type"), first.header("content-type"));
    }
    assert_eq!(s.money("fan-i").await, before, "a replay charged");
    assert_eq!(before.balance, 802);
    assert_eq!(before.gifts, 1);

    // Keys belong to their user: another user's identical key is a new purchase.
    let other = s.buy(&s.viewer("fan-j"), &room, "same-key", &body).await;
    other.expect_status(201);
    assert_ne!(other.json["gift_id"], first.json["gift_id"]);
    assert_eq!(s.balance("fan-j").await, 802);
    assert_eq!(s.balance("fan-i").await, 802);
    s.shutdown().await;
}

both_backends!(concurrent_same_key_charges_once);
async fn concurrent_same_key_charges_once(backend: Backend) {
    let s = server(backend).await;
    let room = s.open_room("star-k").await;
    s.top_up("fan-k", "apple", "100.00").await;
    let fan = s.viewer("fan-k");
    let body = json!({"sticker_id": "coffee", "quantity": 3});
    let tasks: Vec<_> = (0..100)
        .map(|_| s.buy_task(&fan, &room, "storm", &body))
        .collect();
    let mut created = Vec::new();
    let mut in_flight = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created.push(r.body),
            409 => {
                r.expect_error(409, "idempotency_key_in_flight");
                in_flight += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(!created.is_empty(), "no request succeeded");
    assert!(
        created.iter().all(|b| *b == created[0]),
        "every 201 carries the same body"
    );
    assert_eq!(created.len() + in_flight, 100);
    let m = s.money("fan-k").await;
    assert_eq!(m.balance, 10_000 - 597, "exactly one charge");
    assert_eq!(m.gifts, 1);
    let again = s.buy(&fan, &room, "storm", &body).await;
    assert_eq!((again.status, &again.body), (201, &created[0]));
    s.shutdown().await;
}

both_backends!(same_key_with_another_body_is_refused);
async fn same_key_with_another_body_is_refused(backend: Backend) {
    let s = server(backend).await;
    let room = s.open_room("star-l").await;
    let room2 = s.open_room("star-l2").await;
    s.top_up("fan-l", "google", "20.00").await;
    let fan = s.viewer("fan-l");
    let body = json!({"sticker_id": "rose", "quantity": 1, "message": "one"});
    let first = s.buy(&fan, &room, "reuse", &body).await;
    first.expect_status(201);
    let before = s.money("fan-l").await;
    for (what, other_room, other) in [
        (
            "quantity",
            &room,
            json!({"sticker_id": "rose", "quantity": 2, "message": "one"}),
        ),
        (
            "sticker",
            &room,
            json!({"sticker_id": "heart", "quantity": 1, "message": "one"}),
        ),
        (
            "message",
            &room,
            json!({"sticker_id": "rose", "quantity": 1, "message": "two"}),
        ),
        (
            "no message",
            &room,
            json!({"sticker_id": "rose", "quantity": 1}),
        ),
        ("room", &room2, body.clone()),
    ] {
        let r = s.buy(&fan, other_room, "reuse", &other).await;
        assert_eq!(r.status, 422, "{what}: {}", r.body);
        r.expect_error(422, "idempotency_key_reused");
        assert_eq!(s.money("fan-l").await, before, "{what} charged");
    }
    let again = s.buy(&fan, &room, "reuse", &body).await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    s.shutdown().await;
}

both_backends!(a_failed_purchase_replays_as_that_failure);
async fn a_failed_purchase_replays_as_that_failure(backend: Backend) {
    let s = server(backend).await;
    let room = s.open_room("star-f").await;
    s.top_up("fan-f", "web", "0.50").await;
    let fan = s.viewer("fan-f");
    let body = json!({"sticker_id": "coffee", "quantity": 1});
    let first = s.buy(&fan, &room, "poor", &body).await;
    first.expect_error(402, "insufficient_funds");
    s.top_up("fan-f", "web", "10.00").await;
    let before = s.money("fan-f").await;
    let again = s.buy(&fan, &room, "poor", &body).await;
    assert_eq!((again.status, &again.body), (402, &first.body));
    assert_eq!(
        s.money("fan-f").await,
        before,
        "the replayed failure charged"
    );
    assert_eq!(before.balance, 1050);
    // A new key buys it now.
    s.buy(&fan, &room, "rich", &body).await.expect_status(201);
    assert_eq!(s.balance("fan-f").await, 1050 - 199);
    s.shutdown().await;
}

both_backends!(replays_survive_a_restart);
async fn replays_survive_a_restart(backend: Backend) {
    let s = server(backend).await;
    let room = s.open_room("star-s").await;
    s.top_up("fan-s", "apple", "5.00").await;
    let fan = s.viewer("fan-s");
    let body = json!({"sticker_id": "star", "quantity": 1, "message": "before restart"});
    let created = s.buy(&fan, &room, "durable", &body).await;
    created.expect_status(201);
    let poor_body = json!({"sticker_id": "star", "quantity": 1});
    let refused = s.buy(&fan, &room, "durable-poor", &poor_body).await;
    refused.expect_error(402, "insufficient_funds");
    let receipt = s
        .top_up_receipt("fan-s", "web", "3.00", "receipt-durable")
        .await;
    receipt.expect_status(201);
    let before = s.money("fan-s").await;

    let s = s.restart().await;
    let fan = s.viewer("fan-s");
    assert_eq!(s.money("fan-s").await, before, "a restart moved money");
    let again = s.buy(&fan, &room, "durable", &body).await;
    assert_eq!((again.status, &again.body), (201, &created.body));
    let again = s.buy(&fan, &room, "durable-poor", &poor_body).await;
    assert_eq!((again.status, &again.body), (402, &refused.body));
    let again = s
        .top_up_receipt("fan-s", "web", "3.00", "receipt-durable")
        .await;
    assert_eq!((again.status, &again.body), (201, &receipt.body));
    s.buy(&fan, &room, "durable", &poor_body)
        .await
        .expect_error(422, "idempotency_key_reused");
    assert_eq!(
        s.money("fan-s").await,
        before,
        "a replay after restart charged"
    );
    s.shutdown().await;
}

both_backends!(top_up_receipts_are_idempotent);
async fn top_up_receipts_are_idempotent(backend: Backend) {
    let s = server(backend).await;
    let first = s
        .top_up_receipt("fan-t", "apple", "12.34", "receipt-1")
        .await;
    first.expect_status(201);
    assert_eq!(first.json["amount"], "12.34");
    assert_eq!(first.json["channel"], "apple");
    for _ in 0..3 {
        let again = s
            .top_up_receipt("fan-t", "apple", "12.34", "receipt-1")
            .await;
        assert_eq!((again.status, &again.body), (201, &first.body));
    }
    assert_eq!(
        s.balance("fan-t").await,
        1234,
        "a replayed receipt credited"
    );
    let topups = s.summary().await["topups"].clone();
    assert_eq!(topups, "12.34");
    for (what, user, channel, amount) in [
        ("amount", "fan-t", "apple", "12.35"),
        ("channel", "fan-t", "google", "12.34"),
        ("user", "fan-u", "apple", "12.34"),
    ] {
        let r = s.top_up_receipt(user, channel, amount, "receipt-1").await;
        assert_eq!(r.status, 422, "{what}: {}", r.body);
        r.expect_error(422, "idempotency_key_reused");
    }
    assert_eq!(s.balance("fan-t").await, 1234);
    assert_eq!(s.balance("fan-u").await, 0);
    assert_eq!(s.summary().await["topups"], topups);

    // Concurrent deliveries of one receipt credit once.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let rb = s.client.post(s.url("/v1/topups")).bearer_auth(s.admin()).json(
                &json!({"user_id": "fan-v", "channel": "web", "amount": "1.00", "receipt_id": "receipt-storm"}),
            );
            tokio::spawn(crate::common::send(rb))
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        r.expect_status(201);
        bodies.push(r.body);
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert_eq!(s.balance("fan-v").await, 100);
    s.shutdown().await;
}
