//! Top-ups: every error code, and the wallet maximum.

use super::*;

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
