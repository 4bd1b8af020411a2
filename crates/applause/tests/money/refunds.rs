//! Refunds over HTTP: finance reverses a gift once (a second refund is 409),
//! the wallet gets the price back, leaderboards subtract, reports balance on
//! every row, and every bad request is refused with nothing moved.

use std::time::Duration;

use applause_core::Role;
use serde_json::{json, Value};

use crate::common::{eventually, minor, Server};

/// Everything a refund could move.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub balances: Vec<i64>,
    pub summary: Value,
}

pub async fn snapshot(s: &Server, users: &[&str]) -> Snapshot {
    let mut balances = Vec::new();
    for u in users {
        balances.push(s.balance(u).await);
    }
    let mut summary = s.summary().await;
    // The check counts transactions; equal counts mean nothing was written.
    summary["ledger_check"]["ok"] = Value::Null;
    Snapshot { balances, summary }
}

/// (what, token, path, content type, body, status, code).
type RefundCase<'a> = (
    &'a str,
    Option<String>,
    String,
    Option<&'a str>,
    String,
    u16,
    &'a str,
);

async fn live_total(s: &Server, room: &str, user: &str) -> i64 {
    let r = s
        .get(
            &format!("/v1/rooms/{room}/leaderboard?window=live&limit=100"),
            None,
        )
        .await;
    r.expect_status(200);
    r.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["user_id"] == user)
        .map(|e| minor(e["amount"].as_str().expect("amount")))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_reverses_once_and_boards_subtract() {
    let s = Server::start(&[]).await;
    let room = s.open_room("rf-b").await;
    s.top_up("rf-v", "web", "1.00").await;
    s.top_up("rf-v", "apple", "10.00").await;
    let mut gifts = Vec::new();
    for _ in 0..3 {
        let r = s.gift(&s.viewer("rf-v"), &room, "rose", 1).await;
        r.expect_status(201);
        gifts.push(r.json["gift_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(s.balance("rf-v").await, 1_100 - 3 * 99);
    let board = eventually(Duration::from_secs(5), || async {
        (live_total(&s, &room, "rf-v").await == 297).then_some(())
    })
    .await;
    assert!(board.is_some(), "the gifts reach the board");

    let path = format!("/v1/finance/gifts/{}/refund", gifts[1]);
    let r = s
        .post(&path, Some(&s.finance()), &json!({"reason": "chargeback"}))
        .await;
    r.expect_status(200);
    assert_eq!(r.json["amount"], "0.99");
    assert_eq!(r.json["reason"], "chargeback");
    assert_eq!(r.json["refunded_by"], "finance-1");
    assert_eq!(s.balance("rf-v").await, 1_100 - 2 * 99);
    let g = s
        .get(&format!("/v1/gifts/{}", gifts[1]), Some(&s.finance()))
        .await;
    g.expect_status(200);
    assert!(g.json["refunded_at"].is_string());

    // Once per gift: a second refund (any reason, admin too) is 409, nothing moves.
    let before = crate::refunds::snapshot(&s, &["rf-v"]).await;
    for (token, reason) in [(s.finance(), "chargeback"), (s.admin(), "again")] {
        s.post(&path, Some(&token), &json!({ "reason": reason }))
            .await
            .expect_error(409, "already_refunded");
    }
    assert_eq!(snapshot(&s, &["rf-v"]).await, before);

    // The leaderboards subtract the refunded gift.
    let board = eventually(Duration::from_secs(5), || async {
        (live_total(&s, &room, "rf-v").await == 198).then_some(())
    })
    .await;
    assert!(board.is_some(), "the refund reaches the board");

    // Reports: refunds in their own column, every row balances, net = gross − refunds.
    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap();
    for group_by in ["day", "channel", "broadcaster", "sticker"] {
        let r = s
            .get(
                &format!("/v1/finance/revenue?from={today}&to={tomorrow}&group_by={group_by}"),
                Some(&s.finance()),
            )
            .await;
        r.expect_status(200);
        let rows = r.json["rows"].as_array().unwrap().clone();
        for row in rows.iter().chain(std::iter::once(&r.json["totals"])) {
            let m = |k: &str| minor(row[k].as_str().unwrap());
            assert_eq!(
                m("gross"),
                m("store_fees") + m("broadcaster_earnings") + m("platform_revenue"),
                "{row}"
            );
            assert_eq!(m("net"), m("gross") - m("refunds"), "{row}");
        }
        assert_eq!(minor(r.json["totals"]["refunds"].as_str().unwrap()), 99);
        assert_eq!(minor(r.json["totals"]["gross"].as_str().unwrap()), 297);
    }
    let sum = s.summary().await;
    assert_eq!(sum["refunds"], "0.99");
    let parts = minor(sum["store_fees"].as_str().unwrap())
        + minor(sum["broadcaster_payable"].as_str().unwrap())
        + minor(sum["platform_revenue"].as_str().unwrap());
    assert_eq!(parts, 198, "the accounts hold the sales net of the refund");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_errors_move_nothing() {
    let s = Server::start(&[]).await;
    let room = s.open_room("rfe-b").await;
    s.top_up("rfe-v", "google", "5.00").await;
    let r = s.gift(&s.viewer("rfe-v"), &room, "rose", 2).await;
    r.expect_status(201);
    let gift = r.json["gift_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/finance/gifts/{gift}/refund");
    let good = json!({"reason": "fraud"}).to_string();
    let fin = s.finance();
    let cases: Vec<RefundCase<'_>> = vec![
        (
            "no token",
            None,
            path.clone(),
            Some("application/json"),
            good.clone(),
            401,
            "unauthorized",
        ),
        (
            "viewer",
            Some(s.viewer("rfe-v")),
            path.clone(),
            Some("application/json"),
            good.clone(),
            403,
            "forbidden",
        ),
        (
            "broadcaster",
            Some(s.token("rfe-b", Role::Broadcaster)),
            path.clone(),
            Some("application/json"),
            good.clone(),
            403,
            "forbidden",
        ),
        (
            "no content type",
            Some(fin.clone()),
            path.clone(),
            None,
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "broken json",
            Some(fin.clone()),
            path.clone(),
            Some("application/json"),
            "{\"reason\":".into(),
            400,
            "invalid_json",
        ),
        (
            "no reason",
            Some(fin.clone()),
            path.clone(),
            Some("application/json"),
            "{}".into(),
            400,
            "invalid_request",
        ),
        (
            "empty reason",
            Some(fin.clone()),
            path.clone(),
            Some("application/json"),
            json!({"reason": "  "}).to_string(),
            400,
            "invalid_request",
        ),
        (
            "long reason",
            Some(fin.clone()),
            path.clone(),
            Some("application/json"),
            json!({"reason": "x".repeat(201)}).to_string(),
            400,
            "invalid_request",
        ),
        (
            "control chars",
            Some(fin.clone()),
            path.clone(),
            Some("application/json"),
            json!({"reason": "a\u{7}b"}).to_string(),
            400,
            "invalid_request",
        ),
        (
            "extra field",
            Some(fin.clone()),
            path.clone(),
            Some("application/json"),
            json!({"reason": "x", "amount": "9.99"}).to_string(),
            400,
            "invalid_request",
        ),
        (
            "unknown gift",
            Some(fin.clone()),
            "/v1/finance/gifts/g0000/refund".into(),
            Some("application/json"),
            good.clone(),
            404,
            "gift_not_found",
        ),
        (
            "impossible id",
            Some(fin.clone()),
            "/v1/finance/gifts/a.b/refund".into(),
            Some("application/json"),
            good.clone(),
            404,
            "gift_not_found",
        ),
    ];
    for (what, token, path, ct, body, status, code) in cases {
        let before = snapshot(&s, &["rfe-v"]).await;
        let r = s.post_raw(&path, token.as_deref(), ct, body, &[]).await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {}",
            r.body
        );
        r.expect_error(status, code);
        assert_eq!(snapshot(&s, &["rfe-v"]).await, before, "{what} moved money");
    }
    // A GET on the refund endpoint is not a refund either.
    let r = s.get(&path, Some(&fin)).await;
    r.expect_error(405, "method_not_allowed");
    s.post(&path, Some(&fin), &json!({"reason": "fraud"}))
        .await
        .expect_status(200);
}

/// A room's live board as `user → amount`.
async fn board(s: &Server, room: &str) -> std::collections::BTreeMap<String, i64> {
    let r = s
        .get(
            &format!("/v1/rooms/{room}/leaderboard?window=live&limit=100"),
            None,
        )
        .await;
    r.expect_status(200);
    r.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["user_id"].as_str().unwrap().to_owned(),
                minor(e["amount"].as_str().unwrap()),
            )
        })
        .filter(|(_, a)| *a != 0)
        .collect()
}

/// A mixed run on both backends: gifts from several viewers in two rooms,
/// a third refunded (each refund sent twice: one 200, one 409). Afterwards
/// every report row balances, the boards equal the ledger, the check passes.
async fn mixed_run(backend: crate::common::Backend) {
    use std::collections::BTreeMap;
    let s = Server::on(
        crate::common::Store::new(backend).await,
        &["--gift-burst", "1000"],
    )
    .await;
    let rooms = [s.open_room("mx-b1").await, s.open_room("mx-b2").await];
    let viewers = ["mx-v1", "mx-v2", "mx-v3", "mx-v4"];
    for (i, v) in viewers.iter().enumerate() {
        s.top_up(v, ["apple", "google", "web"][i % 3], "50.00")
            .await;
    }
    let mut expected: Vec<BTreeMap<String, i64>> = vec![BTreeMap::new(), BTreeMap::new()];
    let mut refunded = 0;
    for i in 0..30usize {
        let v = viewers[i % viewers.len()];
        let room = i % 2;
        let q = 1 + (i % 3) as u32;
        let r = s.gift(&s.viewer(v), &rooms[room], "rose", q).await;
        r.expect_status(201);
        let amount = minor(r.json["amount"].as_str().unwrap());
        *expected[room].entry(v.to_owned()).or_default() += amount;
        if i % 3 == 0 {
            let path = format!(
                "/v1/finance/gifts/{}/refund",
                r.json["gift_id"].as_str().unwrap()
            );
            s.post(&path, Some(&s.finance()), &json!({"reason": "fraud"}))
                .await
                .expect_status(200);
            s.post(&path, Some(&s.admin()), &json!({"reason": "fraud"}))
                .await
                .expect_error(409, "already_refunded");
            *expected[room].get_mut(v).unwrap() -= amount;
            refunded += amount;
        }
    }
    for e in &mut expected {
        e.retain(|_, a| *a != 0);
    }
    for (room, want) in rooms.iter().zip(&expected) {
        let got = eventually(Duration::from_secs(10), || async {
            let b = board(&s, room).await;
            (b == *want).then_some(b)
        })
        .await;
        assert!(
            got.is_some(),
            "room {room}: board {:?} != ledger {want:?}",
            board(&s, room).await
        );
    }
    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap();
    for group_by in ["day", "channel", "broadcaster", "sticker"] {
        let r = s
            .get(
                &format!("/v1/finance/revenue?from={today}&to={tomorrow}&group_by={group_by}"),
                Some(&s.finance()),
            )
            .await;
        r.expect_status(200);
        let rows = r.json["rows"].as_array().unwrap().clone();
        for row in rows.iter().chain(std::iter::once(&r.json["totals"])) {
            let m = |k: &str| minor(row[k].as_str().unwrap());
            assert_eq!(
                m("gross"),
                m("store_fees") + m("broadcaster_earnings") + m("platform_revenue"),
                "{row}"
            );
            assert_eq!(m("net"), m("gross") - m("refunds"), "{row}");
        }
        assert_eq!(
            minor(r.json["totals"]["refunds"].as_str().unwrap()),
            refunded
        );
    }
    // `summary` asserts the ledger check.
    assert_eq!(
        minor(s.summary().await["refunds"].as_str().unwrap()),
        refunded
    );
}
crate::both_backends!(mixed_run);
