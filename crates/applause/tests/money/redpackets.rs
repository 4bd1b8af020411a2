//! Red packets over HTTP: drop (Idempotency-Key, replay byte-identical),
//! claims (once per user, never more than the count, sender excluded), the
//! packet view, the return at expiry (also across a restart), and every error
//! code of the three endpoints — with nothing moved on any error.

use std::time::Duration;

use applause_core::Role;
use serde_json::{json, Value};

use crate::common::{eventually, minor, random_name, Backend, Resp, Server, Store};
use crate::refunds::snapshot;

/// (what, room, key, body (None: not JSON), status, code).
type DropCase<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<String>,
    u16,
    &'a str,
);

async fn drop_packet(s: &Server, user: &str, room: &str, key: Option<&str>, body: &Value) -> Resp {
    let mut headers = Vec::new();
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    s.post_raw(
        &format!("/v1/rooms/{room}/red-packets"),
        Some(&s.viewer(user)),
        Some("application/json"),
        body.to_string(),
        &headers,
    )
    .await
}

async fn claim(s: &Server, user: &str, packet: &str) -> Resp {
    s.post_raw(
        &format!("/v1/red-packets/{packet}/claim"),
        Some(&s.viewer(user)),
        None,
        "",
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_claim_and_view() {
    let s = Server::start(&[]).await;
    let room = s.open_room("rp-b").await;
    s.top_up("rp-s", "web", "0.40").await;
    s.top_up("rp-s", "apple", "5.00").await;
    let body = json!({"total": "1.00", "count": 3, "mode": "equal"});
    let r = drop_packet(&s, "rp-s", &room, Some("k1"), &body).await;
    r.expect_status(201);
    let packet = r.json["packet_id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["total"], "1.00");
    assert_eq!(s.balance("rp-s").await, 540 - 100);
    // A replay answers the same bytes and charges nothing.
    let again = drop_packet(&s, "rp-s", &room, Some("k1"), &body).await;
    again.expect_status(201);
    assert_eq!(again.body, r.body);
    assert_eq!(s.balance("rp-s").await, 440);
    drop_packet(
        &s,
        "rp-s",
        &room,
        Some("k1"),
        &json!({"total": "2.00", "count": 3, "mode": "equal"}),
    )
    .await
    .expect_error(422, "idempotency_key_reused");
    let sum = s.summary().await;
    assert_eq!(
        sum["escrow_open"], "1.00",
        "the packet is escrow, not revenue"
    );
    assert_eq!(sum["platform_revenue"], "0.00");

    // The sender may not claim; others once each, in share order.
    claim(&s, "rp-s", &packet)
        .await
        .expect_error(403, "forbidden");
    let mut got = Vec::new();
    for u in ["rp-a", "rp-c", "rp-d"] {
        let r = claim(&s, u, &packet).await;
        r.expect_status(200);
        got.push(minor(r.json["amount"].as_str().unwrap()));
        assert_eq!(s.balance(u).await, *got.last().unwrap());
    }
    assert_eq!(got, vec![34, 33, 33]);
    // The drop and each claim are room events (seq 1–4).
    let room_view = s.get(&format!("/v1/rooms/{room}"), None).await;
    room_view.expect_status(200);
    assert_eq!(room_view.json["seq"], 4);
    claim(&s, "rp-a", &packet)
        .await
        .expect_error(409, "already_claimed");
    claim(&s, "rp-e", &packet)
        .await
        .expect_error(410, "red_packet_gone");
    let v = s
        .get(
            &format!("/v1/red-packets/{packet}"),
            Some(&s.viewer("rp-x")),
        )
        .await;
    v.expect_status(200);
    assert_eq!(v.json["state"], "exhausted");
    assert_eq!(v.json["claimed_count"], 3);
    assert_eq!(v.json["remaining"], "0.00");
    assert_eq!(v.json["claims"].as_array().unwrap().len(), 3);
    // 0.40 web drawn first, then 0.60 apple: the first claimer carries web.
    assert_eq!(v.json["claims"][0]["by_channel"]["web"], "0.34");
    assert_eq!(s.summary().await["escrow_open"], "0.00");
}

/// 60 users race for a 20-share random packet: exactly 20 win, the shares
/// sum to the total, escrow ends at zero; on both backends.
async fn concurrent_claims(backend: Backend) {
    let s = Server::on(Store::new(backend).await, &[]).await;
    let room = s.open_room("rc-b").await;
    s.top_up("rc-s", "google", "10.00").await;
    let r = drop_packet(
        &s,
        "rc-s",
        &room,
        Some("k"),
        &json!({"total": "10.00", "count": 20, "mode": "random"}),
    )
    .await;
    r.expect_status(201);
    let packet = r.json["packet_id"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let rb = s
                .client
                .post(s.url(&format!("/v1/red-packets/{packet}/claim")))
                .bearer_auth(s.viewer(&format!("rc-u{i}")));
            tokio::spawn(crate::common::send(rb))
        })
        .collect();
    let (mut won, mut gone, mut total) = (0, 0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => {
                won += 1;
                let a = minor(r.json["amount"].as_str().unwrap());
                assert!(a >= 1);
                total += a;
            }
            410 => {
                r.expect_error(410, "red_packet_gone");
                gone += 1
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!((won, gone, total), (20, 40, 1_000));
    let sum = s.summary().await;
    assert_eq!(sum["escrow_open"], "0.00");
    assert_eq!(sum["wallets_outstanding"], "10.00");
}
crate::both_backends!(concurrent_claims);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rest_returns_once_across_a_restart() {
    let s = Server::start(&[]).await;
    let room = s.open_room("rx-b").await;
    s.top_up("rx-s", "apple", "3.00").await;
    let r = drop_packet(
        &s,
        "rx-s",
        &room,
        Some("k"),
        &json!({"total": "1.00", "count": 4, "mode": "equal", "expires_in_s": 1}),
    )
    .await;
    r.expect_status(201);
    let packet = r.json["packet_id"].as_str().unwrap().to_owned();
    claim(&s, "rx-a", &packet).await.expect_status(200);
    // Stop before the expiry; the restarted server's sweeper returns the rest.
    let store = s.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let s = Server::on(store, &[]).await;
    claim(&s, "rx-c", &packet)
        .await
        .expect_error(410, "red_packet_gone");
    let returned = eventually(Duration::from_secs(10), || async {
        let v = s
            .get(
                &format!("/v1/red-packets/{packet}"),
                Some(&s.viewer("rx-s")),
            )
            .await;
        (v.json["state"] == "returned").then_some(v)
    })
    .await
    .expect("the rest is returned");
    assert_eq!(returned.json["returned"], "0.75");
    assert_eq!(s.balance("rx-s").await, 300 - 25);
    // More sweeps (and another restart) return nothing more.
    let s = s.restart().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(s.balance("rx-s").await, 275);
    let sum = s.summary().await;
    assert_eq!(sum["escrow_open"], "0.00");
}

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

/// The default expiry is configurable (`--red-packet-expiry-s`, 1–86400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_expiry_is_configurable() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: applause::CommonArgs,
    }
    for bad in ["0", "86401"] {
        let cli = Cli::try_parse_from(["applause", "--red-packet-expiry-s", bad]).unwrap();
        let err = cli.common.settings().expect_err("refused");
        assert!(err.contains("--red-packet-expiry-s"), "{err}");
    }
    let s = Server::start(&["--red-packet-expiry-s", "1"]).await;
    let room = s.open_room("rq-b").await;
    s.top_up("rq-s", "web", "1.00").await;
    let r = drop_packet(
        &s,
        "rq-s",
        &room,
        Some("k"),
        &json!({"total": "0.50", "count": 5, "mode": "random"}),
    )
    .await;
    r.expect_status(201);
    let packet = r.json["packet_id"].as_str().unwrap().to_owned();
    let back = eventually(Duration::from_secs(10), || async {
        (s.balance("rq-s").await == 100).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "the whole packet returns after the configured second"
    );
    let v = s
        .get(
            &format!("/v1/red-packets/{packet}"),
            Some(&s.viewer("rq-s")),
        )
        .await;
    assert_eq!(v.json["state"], "returned");
    assert_eq!(v.json["returned"], "0.50");
}
