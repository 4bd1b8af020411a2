//! Every error code of the drop, claim and view endpoints, with nothing
//! moved on any error.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_errors_move_nothing() {
    let s = Server::start(&[]).await;
    let room = s.open_room("rd-b").await;
    let ended = s.open_room("rd-e").await;
    s.post(
        &format!("/v1/rooms/{ended}/end"),
        Some(&s.token("rd-e", Role::Broadcaster)),
        &json!({}),
    )
    .await
    .expect_status(200);
    s.top_up("rd-s", "web", "2.00").await;
    let ok = json!({"total": "1.00", "count": 2, "mode": "equal"});
    let j = |v: Value| Some(v.to_string());
    // (what, room, key, body (None: not JSON), status, code)
    let cases: Vec<DropCase<'_>> = vec![
        (
            "no key",
            room.clone(),
            None,
            j(ok.clone()),
            400,
            "idempotency_key_required",
        ),
        (
            "empty key",
            room.clone(),
            Some(""),
            j(ok.clone()),
            400,
            "idempotency_key_required",
        ),
        (
            "no content type",
            room.clone(),
            Some("k"),
            None,
            415,
            "unsupported_media_type",
        ),
        (
            "broken json",
            room.clone(),
            Some("k"),
            Some("{\"total\":".into()),
            400,
            "invalid_json",
        ),
        (
            "unknown field",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 2, "mode": "equal", "sender_id": "x"})),
            400,
            "invalid_request",
        ),
        (
            "total as number",
            room.clone(),
            Some("k"),
            j(json!({"total": 1, "count": 2, "mode": "equal"})),
            400,
            "invalid_amount",
        ),
        (
            "too many decimals",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.001", "count": 2, "mode": "equal"})),
            400,
            "invalid_amount",
        ),
        (
            "zero total",
            room.clone(),
            Some("k"),
            j(json!({"total": "0.00", "count": 2, "mode": "equal"})),
            400,
            "invalid_amount",
        ),
        (
            "negative total",
            room.clone(),
            Some("k"),
            j(json!({"total": "-1.00", "count": 2, "mode": "equal"})),
            400,
            "invalid_amount",
        ),
        (
            "count 0",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 0, "mode": "equal"})),
            400,
            "invalid_red_packet",
        ),
        (
            "count 501",
            room.clone(),
            Some("k"),
            j(json!({"total": "100.00", "count": 501, "mode": "equal"})),
            400,
            "invalid_red_packet",
        ),
        (
            "count as text",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": "2", "mode": "equal"})),
            400,
            "invalid_red_packet",
        ),
        (
            "total below count",
            room.clone(),
            Some("k"),
            j(json!({"total": "0.02", "count": 3, "mode": "random"})),
            400,
            "invalid_red_packet",
        ),
        (
            "unknown mode",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 2, "mode": "lucky"})),
            400,
            "invalid_red_packet",
        ),
        (
            "fixed without shares",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 2, "mode": "fixed"})),
            400,
            "invalid_red_packet",
        ),
        (
            "fixed shares off",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 2, "mode": "fixed", "shares": ["0.50", "0.49"]})),
            400,
            "invalid_red_packet",
        ),
        (
            "fixed wrong count",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 3, "mode": "fixed", "shares": ["0.50", "0.50"]})),
            400,
            "invalid_red_packet",
        ),
        (
            "fixed zero share",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 2, "mode": "fixed", "shares": ["1.00", "0.00"]})),
            400,
            "invalid_amount",
        ),
        (
            "shares for equal",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 2, "mode": "equal", "shares": ["0.50", "0.50"]})),
            400,
            "invalid_red_packet",
        ),
        (
            "expiry 0",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 2, "mode": "equal", "expires_in_s": 0})),
            400,
            "invalid_red_packet",
        ),
        (
            "expiry past a day",
            room.clone(),
            Some("k"),
            j(json!({"total": "1.00", "count": 2, "mode": "equal", "expires_in_s": 86_401})),
            400,
            "invalid_red_packet",
        ),
        (
            "unknown room",
            "r0000".into(),
            Some("k-nr"),
            j(ok.clone()),
            404,
            "room_not_found",
        ),
        (
            "impossible room",
            "a.b".into(),
            Some("k"),
            j(ok.clone()),
            404,
            "room_not_found",
        ),
        (
            "ended room",
            ended.clone(),
            Some("k-ended"),
            j(ok.clone()),
            409,
            "room_not_live",
        ),
        (
            "too poor",
            room.clone(),
            Some("k-poor"),
            j(json!({"total": "2.01", "count": 2, "mode": "equal"})),
            402,
            "insufficient_funds",
        ),
    ];
    for (what, room, key, body, status, code) in cases {
        let before = snapshot(&s, &["rd-s"]).await;
        let mut headers = Vec::new();
        if let Some(k) = key {
            headers.push(("idempotency-key", k));
        }
        let ct = body.as_ref().map(|_| "application/json");
        let r = s
            .post_raw(
                &format!("/v1/rooms/{room}/red-packets"),
                Some(&s.viewer("rd-s")),
                ct,
                body.unwrap_or_else(|| ok.to_string()),
                &headers,
            )
            .await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {}",
            r.body
        );
        r.expect_error(status, code);
        assert_eq!(snapshot(&s, &["rd-s"]).await, before, "{what} moved money");
    }
    // A refused drop is replayed as the same refusal, and no token is 401.
    let again = drop_packet(
        &s,
        "rd-s",
        &room,
        Some("k-poor"),
        &json!({"total": "2.01", "count": 2, "mode": "equal"}),
    )
    .await;
    again.expect_error(402, "insufficient_funds");
    let r = s
        .post_raw(
            &format!("/v1/rooms/{room}/red-packets"),
            None,
            Some("application/json"),
            ok.to_string(),
            &[("idempotency-key", "k")],
        )
        .await;
    r.expect_error(401, "unauthorized");
    // The same key with a different body while refused: 422.
    drop_packet(&s, "rd-s", &room, Some("k-poor"), &ok)
        .await
        .expect_error(422, "idempotency_key_reused");
    assert_eq!(s.balance("rd-s").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_and_view_errors_move_nothing() {
    let s = Server::start(&[]).await;
    let room = s.open_room("rv-b").await;
    s.top_up("rv-s", "web", "1.00").await;
    let r = drop_packet(
        &s,
        "rv-s",
        &room,
        Some(&random_name()),
        &json!({"total": "0.10", "count": 1, "mode": "fixed", "shares": ["0.10"]}),
    )
    .await;
    r.expect_status(201);
    let packet = r.json["packet_id"].as_str().unwrap().to_owned();
    let cases: Vec<(&str, Option<String>, String, u16, &str)> = vec![
        ("no token", None, packet.clone(), 401, "unauthorized"),
        (
            "unknown packet",
            Some(s.viewer("rv-a")),
            "p0000".into(),
            404,
            "red_packet_not_found",
        ),
        (
            "impossible id",
            Some(s.viewer("rv-a")),
            "p.0".into(),
            404,
            "red_packet_not_found",
        ),
        (
            "own packet",
            Some(s.viewer("rv-s")),
            packet.clone(),
            403,
            "forbidden",
        ),
    ];
    for (what, token, id, status, code) in cases {
        let before = snapshot(&s, &["rv-s", "rv-a"]).await;
        let r = s
            .post_raw(
                &format!("/v1/red-packets/{id}/claim"),
                token.as_deref(),
                None,
                "",
                &[],
            )
            .await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {}",
            r.body
        );
        r.expect_error(status, code);
        assert_eq!(
            snapshot(&s, &["rv-s", "rv-a"]).await,
            before,
            "{what} moved money"
        );
    }
    claim(&s, "rv-a", &packet).await.expect_status(200);
    let before = snapshot(&s, &["rv-s", "rv-a", "rv-c"]).await;
    claim(&s, "rv-a", &packet)
        .await
        .expect_error(409, "already_claimed");
    claim(&s, "rv-c", &packet)
        .await
        .expect_error(410, "red_packet_gone");
    assert_eq!(snapshot(&s, &["rv-s", "rv-a", "rv-c"]).await, before);
    s.get(&format!("/v1/red-packets/{packet}"), None)
        .await
        .expect_error(401, "unauthorized");
    s.get("/v1/red-packets/p0000", Some(&s.viewer("rv-a")))
        .await
        .expect_error(404, "red_packet_not_found");
}
