//! Broadcaster statements over HTTP: every gift with its split, refunds and
//! totals, as JSON and CSV, for that broadcaster, finance and admin only.

use applause_core::Role;
use serde_json::json;

use crate::common::{minor, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_lists_gifts_refunds_and_totals() {
    let s = Server::start(&[]).await;
    let room = s.open_room("st-b").await;
    let other = s.open_room("st-other").await;
    s.top_up("st-v", "apple", "20.00").await;
    let mut gifts = Vec::new();
    for q in 1..=3 {
        let r = s.gift(&s.viewer("st-v"), &room, "rose", q).await;
        r.expect_status(201);
        gifts.push(r.json.clone());
    }
    s.gift(&s.viewer("st-v"), &other, "rose", 1)
        .await
        .expect_status(201);
    s.post(
        &format!(
            "/v1/finance/gifts/{}/refund",
            gifts[0]["gift_id"].as_str().unwrap()
        ),
        Some(&s.admin()),
        &json!({"reason": "fraud"}),
    )
    .await
    .expect_status(200);
    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap();
    let path = format!("/v1/finance/broadcasters/st-b/statement?from={today}&to={tomorrow}");
    for token in [s.token("st-b", Role::Broadcaster), s.finance(), s.admin()] {
        let r = s.get(&path, Some(&token)).await;
        r.expect_status(200);
        let listed = r.json["gifts"].as_array().unwrap();
        assert_eq!(listed.len(), 3, "only this broadcaster's gifts: {}", r.body);
        let (mut gross, mut b) = (0, 0);
        for (g, bought) in listed.iter().zip(&gifts) {
            assert_eq!(g["gift_id"], bought["gift_id"]);
            assert_eq!(g["split"], bought["split"]);
            let parts = ["store", "broadcaster", "platform"]
                .map(|k| minor(g["split"][k].as_str().unwrap()));
            assert_eq!(
                parts.iter().sum::<i64>(),
                minor(g["amount"].as_str().unwrap())
            );
            gross += minor(g["amount"].as_str().unwrap());
            b += parts[1];
        }
        let t = &r.json["totals"];
        let m = |k: &str| minor(t[k].as_str().unwrap());
        assert_eq!(t["gifts"], 3);
        assert_eq!(m("gross"), gross);
        assert_eq!(
            m("gross"),
            m("store_fees") + m("broadcaster_earnings") + m("platform_revenue")
        );
        assert_eq!(m("broadcaster_earnings"), b);
        assert_eq!(m("refunds"), 99);
        assert_eq!(m("net"), gross - 99);
        let refunded_b = minor(listed[0]["split"]["broadcaster"].as_str().unwrap());
        assert_eq!(m("broadcaster_refunded"), refunded_b);
        assert_eq!(m("broadcaster_net"), b - refunded_b);
        assert!(listed[0]["refunded_at"].is_string());
        assert_eq!(listed[0]["refund"], "0.99");
        assert_eq!(listed[1]["refund"], "0.00");
    }
    let csv = s
        .get(&format!("{path}&format=csv"), Some(&s.finance()))
        .await;
    csv.expect_status(200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines[0],
        "gift_id,created_at,room_id,sender_id,sticker_id,quantity,amount,store,broadcaster,platform,refunded_at,refund"
    );
    assert_eq!(lines.len(), 5, "header, three gifts, totals: {}", csv.body);
    assert!(lines[4].starts_with("total,,,,,3,5.94,"), "{}", lines[4]);
    assert!(lines[4].ends_with(",0.99"), "{}", lines[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_errors() {
    let s = Server::start(&[]).await;
    let ok = "/v1/finance/broadcasters/se-b/statement?from=2026-01-01&to=2026-02-01";
    let cases = [
        ("no token", None, ok.to_owned(), 401, "unauthorized"),
        (
            "a viewer",
            Some(s.viewer("se-v")),
            ok.to_owned(),
            403,
            "forbidden",
        ),
        (
            "another broadcaster",
            Some(s.token("se-x", Role::Broadcaster)),
            ok.to_owned(),
            403,
            "forbidden",
        ),
        (
            "no interval",
            Some(s.finance()),
            "/v1/finance/broadcasters/se-b/statement".into(),
            400,
            "invalid_query",
        ),
        (
            "bad date",
            Some(s.finance()),
            "/v1/finance/broadcasters/se-b/statement?from=2026-1-1&to=2026-02-01".into(),
            400,
            "invalid_query",
        ),
        (
            "backwards",
            Some(s.finance()),
            "/v1/finance/broadcasters/se-b/statement?from=2026-02-01&to=2026-01-01".into(),
            400,
            "invalid_query",
        ),
        (
            "format",
            Some(s.finance()),
            format!("{ok}&format=xml"),
            400,
            "invalid_query",
        ),
        (
            "unknown param",
            Some(s.finance()),
            format!("{ok}&group_by=day"),
            400,
            "invalid_query",
        ),
        (
            "bad id",
            Some(s.finance()),
            "/v1/finance/broadcasters/a%20b/statement?from=2026-01-01&to=2026-02-01".into(),
            400,
            "invalid_user_id",
        ),
    ];
    for (what, token, path, status, code) in cases {
        let r = s.get(&path, token.as_deref()).await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {}",
            r.body
        );
        r.expect_error(status, code);
    }
    // A broadcaster with no gifts gets an empty statement, not an error.
    let r = s.get(ok, Some(&s.token("se-b", Role::Broadcaster))).await;
    r.expect_status(200);
    assert_eq!(r.json["gifts"], json!([]));
    assert_eq!(r.json["totals"]["gross"], "0.00");
}
