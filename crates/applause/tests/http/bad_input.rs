//! Bad input reaches every error code of SPEC §3 for purchases, top-ups,
//! rooms and wallets — with the right status and code, and nothing charged.

use applause_core::Role;
use reqwest::header::HeaderValue;
use serde_json::{json, Value};

use crate::common::{Money, Resp, Server};

/// A purchase request as the client sends it.
struct Case {
    what: &'static str,
    /// `None`: no `Idempotency-Key` header.
    key: Option<HeaderValue>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    room: Option<String>,
    status: u16,
    code: &'static str,
}

fn case(what: &'static str, body: Value, status: u16, code: &'static str) -> Case {
    Case {
        what,
        key: Some(HeaderValue::from_str(&format!("key-{}", crate::common::random_name())).unwrap()),
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        room: None,
        status,
        code,
    }
}

fn raw(what: &'static str, body: impl AsRef<str>, status: u16, code: &'static str) -> Case {
    Case {
        body: body.as_ref().as_bytes().to_vec(),
        ..case(what, Value::Null, status, code)
    }
}

fn rose() -> Value {
    json!({"sticker_id": "rose", "quantity": 1})
}

async fn send_case(s: &Server, token: &str, room: &str, c: &Case) -> Resp {
    let room = c.room.as_deref().unwrap_or(room);
    let mut rb = s
        .client
        .post(s.url(&format!("/v1/rooms/{room}/gifts")))
        .bearer_auth(token)
        .body(c.body.clone());
    if let Some(k) = &c.key {
        rb = rb.header("idempotency-key", k.clone());
    }
    if let Some(ct) = c.content_type {
        rb = rb.header("content-type", ct);
    }
    crate::common::send(rb).await
}

/// Sends each case as `user` and checks status, code and that nothing moved.
async fn check_all(s: &Server, user: &str, room: &str, cases: Vec<Case>) {
    let token = s.viewer(user);
    for c in cases {
        let before: Money = s.money(user).await;
        let r = send_case(s, &token, room, &c).await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (c.status, Some(c.code)),
            "case {:?}: {}",
            c.what,
            r.body
        );
        r.expect_error(c.status, c.code);
        if c.status == 413 {
            // The unread rest of the body ends the connection: the client must be told.
            assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
        }
        assert_eq!(s.money(user).await, before, "case {:?} charged", c.what);
    }
}

async fn blocked_words_server() -> Server {
    let words = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(words.path(), "# house list\nspam\nbuy followers\n").unwrap();
    let path = words.path().display().to_string();
    // The file is read when the settings are built, before the server starts.
    Server::start(&["--blocked-words", &path, "--gift-burst", "1000"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchase_errors_charge_nothing() {
    let s = blocked_words_server().await;
    let room = s.open_room("star-b").await;
    let ended = s.open_room("star-b2").await;
    s.post(
        &format!("/v1/rooms/{ended}/end"),
        Some(&s.token("star-b2", Role::Broadcaster)),
        &json!({}),
    )
    .await
    .expect_status(200);
    s.top_up("fan-b", "web", "10.00").await;

    let mut cases = vec![
        Case {
            key: None,
            ..case("no key", rose(), 400, "idempotency_key_required")
        },
        Case {
            key: Some(HeaderValue::from_static("")),
            ..case("empty key", rose(), 400, "idempotency_key_required")
        },
        Case {
            key: Some(HeaderValue::from_bytes("clé".as_bytes()).unwrap()),
            ..case("non-ASCII key", rose(), 400, "idempotency_key_required")
        },
        Case {
            key: Some(HeaderValue::from_str(&"k".repeat(256)).unwrap()),
            ..case("256-char key", rose(), 400, "idempotency_key_required")
        },
        Case {
            key: Some(HeaderValue::from_static("a\tb")),
            ..case("tab in key", rose(), 400, "idempotency_key_required")
        },
    ];
    for (what, q) in [
        ("quantity 0", json!(0)),
        ("quantity 10000", json!(10_000)),
        ("quantity 1.5", json!(1.5)),
        ("quantity \"3\"", json!("3")),
        ("quantity -1", json!(-1)),
        ("quantity null", Value::Null),
        ("quantity 1e3", json!(1e3)),
        ("quantity u64 max", json!(u64::MAX)),
    ] {
        cases.push(case(
            what,
            json!({"sticker_id": "rose", "quantity": q}),
            400,
            "invalid_quantity",
        ));
    }
    for (what, m) in [
        ("201 chars", "a".repeat(201)),
        ("201 é", "é".repeat(201)),
        ("newline", "hello\nthere".to_owned()),
        ("NUL", "a\u{0}b".to_owned()),
        ("escape", "a\u{1b}[31mred".to_owned()),
        ("C1 control", "a\u{85}b".to_owned()),
    ] {
        cases.push(case(
            what,
            json!({"sticker_id": "rose", "quantity": 1, "message": m}),
            400,
            "invalid_message",
        ));
    }
    cases.extend([
        case(
            "blocked word",
            json!({"sticker_id": "rose", "quantity": 1, "message": "no SPAM here"}),
            422,
            "message_rejected",
        ),
        case(
            "blocked phrase",
            json!({"sticker_id": "rose", "quantity": 1, "message": "Buy  followers!"}),
            422,
            "message_rejected",
        ),
        case(
            "unknown sticker",
            json!({"sticker_id": "unicorn", "quantity": 1}),
            404,
            "unknown_sticker",
        ),
        Case {
            room: Some("no-such-room".into()),
            ..case("unknown room", rose(), 404, "room_not_found")
        },
        Case {
            room: Some("bad.room%20id".into()),
            ..case("malformed room id", rose(), 404, "room_not_found")
        },
        Case {
            room: Some(ended.clone()),
            ..case("ended room", rose(), 409, "room_not_live")
        },
        case(
            "too expensive",
            json!({"sticker_id": "galaxy", "quantity": 1}),
            402,
            "insufficient_funds",
        ),
        case(
            "too many",
            json!({"sticker_id": "rose", "quantity": 11}),
            402,
            "insufficient_funds",
        ),
        raw(
            "truncated JSON",
            r#"{"sticker_id": "rose","#,
            400,
            "invalid_json",
        ),
        raw(
            "not JSON",
            "sticker_id=rose&quantity=1",
            400,
            "invalid_json",
        ),
        raw("empty body", "", 400, "invalid_json"),
        raw(
            "trailing garbage",
            r#"{"sticker_id": "rose", "quantity": 1} x"#,
            400,
            "invalid_json",
        ),
        raw(
            "quantity out of f64 range",
            r#"{"sticker_id": "rose", "quantity": 1e400}"#,
            400,
            "invalid_json",
        ),
        Case {
            body: b"{\"sticker_id\": \"ro\xffse\", \"quantity\": 1}".to_vec(),
            ..case("invalid UTF-8", Value::Null, 400, "invalid_json")
        },
        raw(
            "deep nesting",
            format!(
                r#"{{"sticker_id": "rose", "quantity": {}{}}}"#,
                "[".repeat(500),
                "]".repeat(500)
            ),
            400,
            "invalid_json",
        ),
        raw(
            "duplicate field",
            r#"{"sticker_id": "rose", "sticker_id": "galaxy", "quantity": 1}"#,
            400,
            "invalid_request",
        ),
        raw("null body", "null", 400, "invalid_request"),
        case(
            "sticker id a number",
            json!({"sticker_id": 5, "quantity": 1}),
            400,
            "invalid_request",
        ),
        case(
            "message a number",
            json!({"sticker_id": "rose", "quantity": 1, "message": 7}),
            400,
            "invalid_request",
        ),
        case(
            "unknown field",
            json!({"sticker_id": "rose", "quantity": 1, "colour": "red"}),
            400,
            "invalid_request",
        ),
        case(
            "missing sticker",
            json!({"quantity": 1}),
            400,
            "invalid_request",
        ),
        case("array body", json!([rose()]), 400, "invalid_request"),
        Case {
            content_type: None,
            ..case("no content type", rose(), 415, "unsupported_media_type")
        },
        Case {
            content_type: Some("text/plain"),
            ..case("text/plain", rose(), 415, "unsupported_media_type")
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..case("form", rose(), 415, "unsupported_media_type")
        },
        Case {
            body: {
                let mut b = br#"{"sticker_id": "rose", "quantity": 1, "message": ""#.to_vec();
                b.resize(1024 * 1024, b'a');
                b
            },
            ..case("1 MiB body", Value::Null, 413, "payload_too_large")
        },
    ]);
    check_all(&s, "fan-b", &room, cases).await;

    // The broadcaster's own room: self_gift, nothing charged.
    s.top_up("star-b", "apple", "5.00").await;
    let before = s.money("star-b").await;
    let r = s
        .gift(&s.token("star-b", Role::Broadcaster), &room, "rose", 1)
        .await;
    r.expect_error(403, "self_gift");
    assert_eq!(s.money("star-b").await, before);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_multibyte_messages_and_keys_at_the_limit_are_accepted() {
    let s = blocked_words_server().await;
    let room = s.open_room("star-m").await;
    s.top_up("fan-m", "google", "10.00").await;
    let token = s.viewer("fan-m");
    let key255 = "k".repeat(255);
    for (key, message) in [
        ("m-e", "é".repeat(200)),
        ("m-emoji", "🎉".repeat(200)),
        (
            "m-mixed",
            format!("{}{}", "a".repeat(150), "日本".repeat(25)),
        ),
        ("m-class", "a classy spammer".to_owned()),
        (key255.as_str(), String::new()),
    ] {
        let before = s.balance("fan-m").await;
        let r = s
            .buy(
                &token,
                &room,
                key,
                &json!({"sticker_id": "rose", "quantity": 1, "message": message}),
            )
            .await;
        r.expect_status(201);
        assert_eq!(r.json["amount"], "0.99");
        assert_eq!(s.balance("fan-m").await, before - 99, "key {key}");
        if !message.is_empty() {
            assert_eq!(r.json["message"], message.as_str());
        }
    }
    // JSON is JSON whatever the parameters and case of its media type.
    for (i, ct) in ["application/json; charset=utf-8", "Application/JSON"]
        .iter()
        .enumerate()
    {
        let key = format!("ct-{i}");
        let r = s
            .post_raw(
                &format!("/v1/rooms/{room}/gifts"),
                Some(&token),
                Some(ct),
                r#"{"sticker_id": "heart", "quantity": 1}"#,
                &[("idempotency-key", key.as_str())],
            )
            .await;
        r.expect_status(201);
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let s = Server::start(&["--gift-rate-per-s", "1", "--gift-burst", "2"]).await;
    let room = s.open_room("star-r").await;
    s.top_up("fan-r", "web", "10.00").await;
    s.top_up("fan-r2", "web", "10.00").await;
    let token = s.viewer("fan-r");
    for _ in 0..2 {
        s.gift(&token, &room, "rose", 1).await.expect_status(201);
    }
    let before = s.money("fan-r").await;
    let r = s.gift(&token, &room, "rose", 1).await;
    r.expect_error(429, "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(s.money("fan-r").await, before, "a limited request charged");
    // The limit is per user.
    s.gift(&s.viewer("fan-r2"), &room, "rose", 1)
        .await
        .expect_status(201);
    // And it refills.
    tokio::time::sleep(std::time::Duration::from_millis(1100 * retry)).await;
    s.gift(&token, &room, "rose", 1).await.expect_status(201);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_up_errors_credit_nothing() {
    let s = Server::start(&[]).await;
    let admin = s.admin();
    let good = json!({"user_id": "fan-t", "channel": "web", "amount": "1.99", "receipt_id": "t-1"});
    let with = |field: &str, v: Value| {
        let mut b = good.clone();
        b[field] = v;
        b
    };
    let mut cases: Vec<(String, Value, u16, &str)> = Vec::new();
    for amount in [
        json!(1.99),
        json!(199),
        json!("1.999"),
        json!("-1"),
        json!("-1.00"),
        json!("1e3"),
        json!("NaN"),
        json!("Infinity"),
        json!("1".repeat(29)),
        json!("9".repeat(19)),
        json!("0"),
        json!("0.00"),
        json!(""),
        json!(" 1.00"),
        json!("1,00"),
        json!("+1"),
        json!("1."),
        json!(".5"),
        Value::Null,
    ] {
        cases.push((
            format!("amount {amount}"),
            with("amount", amount),
            400,
            "invalid_amount",
        ));
    }
    for channel in ["paypal", "", "APPLE ", "stripe"] {
        cases.push((
            format!("channel {channel:?}"),
            with("channel", json!(channel)),
            400,
            "invalid_channel",
        ));
    }
    for user in ["", "al ice", "ålice", &"u".repeat(65), "a/b"] {
        cases.push((
            format!("user {user:?}"),
            with("user_id", json!(user)),
            400,
            "invalid_user_id",
        ));
    }
    cases.push((
        "empty receipt".into(),
        with("receipt_id", json!("")),
        400,
        "invalid_receipt_id",
    ));
    cases.push((
        "unknown field".into(),
        with("bonus", json!("100.00")),
        400,
        "invalid_request",
    ));
    cases.push((
        "channel a number".into(),
        with("channel", json!(1)),
        400,
        "invalid_request",
    ));
    for (what, body, status, code) in cases {
        let before = s.summary().await["topups"].clone();
        let r = s.post("/v1/topups", Some(&admin), &body).await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {}",
            r.body
        );
        r.expect_error(status, code);
        assert_eq!(s.summary().await["topups"], before, "{what} credited");
    }
    let r = s
        .post_raw(
            "/v1/topups",
            Some(&admin),
            Some("application/json"),
            r#"{"user_id": "fan-t", "#,
            &[],
        )
        .await;
    r.expect_error(400, "invalid_json");
    let r = s
        .post_raw("/v1/topups", Some(&admin), None, good.to_string(), &[])
        .await;
    r.expect_error(415, "unsupported_media_type");
    assert_eq!(s.balance("fan-t").await, 0);

    // The good one, for contrast.
    let r = s.post("/v1/topups", Some(&admin), &good).await;
    r.expect_status(201);
    assert_eq!(r.json["amount"], "1.99");
    assert_eq!(s.balance("fan-t").await, 199);
    s.shutdown().await;
}

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
async fn a_top_up_past_the_wallet_maximum_is_refused_alone() {
    // The largest amount is accepted once; one more cent on the same
    // channel would overflow the wallet. That is the admin's bad input: a
    // 4xx that credits nothing, and it must not fail other users' purchases
    // committed in the same moment.
    let s = Server::start(&["--gift-burst", "1000"]).await;
    let room = s.open_room("star-o").await;
    s.top_up("fan-o", "web", "100.00").await;
    s.top_up("rich", "web", "10000000000000.00").await;
    let before = s.summary().await["topups"].clone();
    let fan = s.viewer("fan-o");
    let body = json!({"sticker_id": "clap", "quantity": 1});
    let tasks: Vec<_> = (0..40)
        .map(|i| s.buy_task(&fan, &room, &format!("o-{i}"), &body))
        .collect();
    // Sent without the suite's 5xx check, so that the purchases are awaited
    // before the verdict.
    let topup = s
        .client
        .post(s.url("/v1/topups"))
        .bearer_auth(s.admin())
        .json(&json!({"user_id": "rich", "channel": "web", "amount": "0.01", "receipt_id": "one-cent-more"}))
        .send()
        .await
        .unwrap();
    let status = topup.status().as_u16();
    let text = topup.text().await.unwrap();
    let statuses: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|t| t.map(|r| r.status).unwrap_or(500))
        .collect();
    let code = serde_json::from_str::<Value>(&text).unwrap_or_default()["error"]["code"].clone();
    assert!(
        matches!(status, 400 | 422) && code == "invalid_amount",
        "an overflowing top-up: {status} {text}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201),
        "purchases committed next to it: {statuses:?}"
    );
    assert_eq!(
        s.summary().await["topups"],
        before,
        "the refused top-up credited"
    );
    assert_eq!(s.balance("rich").await, 1_000_000_000_000_000);
    assert_eq!(s.balance("fan-o").await, 10_000 - 40);
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
