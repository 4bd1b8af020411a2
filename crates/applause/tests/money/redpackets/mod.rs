//! Red packets over HTTP: drop (Idempotency-Key, replay byte-identical),
//! claims (once per user, never more than the count, sender excluded), the
//! packet view, the return at expiry (also across a restart), and every error
//! code of the three endpoints — with nothing moved on any error.
//!
//! The error codes of the three endpoints are in `errors`.

mod errors;

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
