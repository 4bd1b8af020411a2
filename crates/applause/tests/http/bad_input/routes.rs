//! Rooms, wallets, ids, acknowledgements and the catalog: routes,
//! methods and their error codes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_wallets_routes_and_methods() {
    let s = Server::start(&[]).await;
    let star = s.token("star-x", Role::Broadcaster);
    for (what, body, status, code) in [
        ("empty title", json!({"title": ""}), 400, "invalid_title"),
        ("blank title", json!({"title": "   "}), 400, "invalid_title"),
        (
            "101-char title",
            json!({"title": "t".repeat(101)}),
            400,
            "invalid_title",
        ),
        ("newline", json!({"title": "a\nb"}), 400, "invalid_title"),
        (
            "title a number",
            json!({"title": 3}),
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            json!({"title": "x", "live": false}),
            400,
            "invalid_request",
        ),
        ("no title", json!({}), 400, "invalid_request"),
    ] {
        let r = s.post("/v1/rooms", Some(&star), &body).await;
        assert_eq!(r.json["error"]["code"], code, "{what}: {}", r.body);
        r.expect_error(status, code);
    }
    let r = s
        .post("/v1/rooms", Some(&star), &json!({"title": "é".repeat(100)}))
        .await;
    r.expect_status(201);
    let room = r.json["room_id"].as_str().unwrap().to_owned();

    let r = s.get(&format!("/v1/rooms/{room}"), None).await;
    r.expect_status(200);
    assert_eq!(r.json["live"], true);
    s.get("/v1/rooms/no-such-room", None)
        .await
        .expect_error(404, "room_not_found");
    s.post("/v1/rooms/no-such-room/end", Some(&star), &json!({}))
        .await
        .expect_error(404, "room_not_found");
    s.get("/v1/gifts/no-such-gift", Some(&s.admin()))
        .await
        .expect_error(404, "gift_not_found");

    s.get("/v1/wallet?user_id=bad%20id", Some(&s.finance()))
        .await
        .expect_error(400, "invalid_user_id");
    s.get("/v1/wallet?colour=red", Some(&s.viewer("fan-x")))
        .await
        .expect_error(400, "invalid_query");

    for path in ["/v1/nope", "/nope", "/v1/rooms/a/b/c", "/v1/gifts"] {
        s.get(path, None).await.expect_error(404, "not_found");
    }
    let r = s
        .client
        .delete(s.url(&format!("/v1/rooms/{room}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    s.get("/v1/topups", Some(&s.admin()))
        .await
        .expect_error(405, "method_not_allowed");
    s.get(&format!("/v1/rooms/{room}/gifts"), None)
        .await
        .expect_error(405, "method_not_allowed");
    s.post("/v1/stickers", None, &json!({}))
        .await
        .expect_error(405, "method_not_allowed");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_are_not_utf8_get_json_errors() {
    // `%ff` decodes to no text at all: such an id cannot exist.
    let s = Server::start(&[]).await;
    let viewer = s.viewer("fan-u");
    let star = s.token("star-u", Role::Broadcaster);
    for (post, path, token, status, code) in [
        (false, "/v1/rooms/%ff", &viewer, 404, "room_not_found"),
        (
            false,
            "/v1/rooms/%ff/leaderboard",
            &viewer,
            404,
            "room_not_found",
        ),
        (
            false,
            "/v1/rooms/%ff/leaderboard/me",
            &viewer,
            404,
            "room_not_found",
        ),
        (true, "/v1/rooms/%ff/gifts", &viewer, 404, "room_not_found"),
        (true, "/v1/rooms/%ff/end", &star, 404, "room_not_found"),
        (false, "/v1/gifts/%ff", &viewer, 404, "gift_not_found"),
        (true, "/v1/gifts/%ff/ack", &star, 404, "gift_not_found"),
        (false, "/v1/rooms/%C0%AF", &viewer, 404, "room_not_found"),
    ] {
        let body = if path.ends_with("/gifts") {
            rose()
        } else {
            json!({"text": "thanks"})
        };
        let rb = if post {
            s.client
                .post(s.url(path))
                .header("idempotency-key", "utf8-probe")
                .json(&body)
        } else {
            s.client.get(s.url(path))
        };
        let r = crate::common::send(rb.bearer_auth(token)).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        r.expect_error(status, code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgement_errors() {
    let s = blocked_words_server().await;
    let room = s.open_room("star-k").await;
    s.top_up("fan-k", "web", "5.00").await;
    let r = s.gift(&s.viewer("fan-k"), &room, "rose", 1).await;
    r.expect_status(201);
    let ack = format!("/v1/gifts/{}/ack", r.json["gift_id"].as_str().unwrap());
    let star = s.token("star-k", Role::Broadcaster);
    for (what, body, status, code) in [
        ("empty", json!({"text": ""}), 400, "invalid_message"),
        ("blank", json!({"text": "  "}), 400, "invalid_message"),
        (
            "201 chars",
            json!({"text": "t".repeat(201)}),
            400,
            "invalid_message",
        ),
        (
            "control",
            json!({"text": "a\u{7}b"}),
            400,
            "invalid_message",
        ),
        (
            "blocked",
            json!({"text": "spam spam"}),
            422,
            "message_rejected",
        ),
        ("a number", json!({"text": 5}), 400, "invalid_request"),
        (
            "unknown field",
            json!({"text": "hi", "gift_id": "x"}),
            400,
            "invalid_request",
        ),
    ] {
        let r = s.post(&ack, Some(&star), &body).await;
        assert_eq!(r.json["error"]["code"], code, "{what}: {}", r.body);
        r.expect_error(status, code);
    }
    s.post(
        "/v1/gifts/no-such-gift/ack",
        Some(&star),
        &json!({"text": "hi"}),
    )
    .await
    .expect_error(404, "gift_not_found");
    // The refusals above did not use up the one acknowledgement.
    let r = s
        .post(&ack, Some(&star), &json!({"text": "é".repeat(200)}))
        .await;
    r.expect_status(200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_public_and_priced_in_strings() {
    let s = Server::start(&[]).await;
    let r = s.get("/v1/stickers", None).await;
    r.expect_status(200);
    assert_eq!(r.json["currency"], "USD");
    let stickers = r.json["stickers"].as_array().unwrap();
    assert_eq!(stickers.len(), 10);
    for st in stickers {
        let price = st["price"].as_str().expect("prices are JSON strings");
        let (_, cents) = price.split_once('.').expect("two decimals");
        assert_eq!(cents.len(), 2, "{price}");
        assert!(crate::common::minor(price) > 0);
        assert!(st["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(st["name"].as_str().is_some());
    }
    s.shutdown().await;
}
