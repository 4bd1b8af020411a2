//! Purchases: every error code of a gift request, the limits that are
//! still accepted, and the rate limit.

use super::*;

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
