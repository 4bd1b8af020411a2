//! Who may do what: bad tokens answer 401, the wrong role or another user's
//! resource 403, and no client field can set a price, a split or a sender.

use std::collections::HashMap;

use applause_core::Role;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use crate::common::{minor, Server, SECRET};

/// URL-safe base64 without padding.
fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token built by hand: header and claims as given, signed HS256 with `key`
/// (`None`: no signature at all).
fn forge(header: Value, claims: Value, key: Option<&[u8]>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    match key {
        None => format!("{input}."),
        Some(k) => {
            let sig = jsonwebtoken::crypto::sign(
                input.as_bytes(),
                &EncodingKey::from_secret(k),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{input}.{sig}")
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str, role: &str) -> Value {
    json!({"sub": sub, "role": role, "iss": "applause", "exp": now() + 3600})
}

fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

/// `Authorization` header values that must all be refused.
fn bad_authorizations(user: &str) -> Vec<(&'static str, Option<String>)> {
    let good = claims(user, "viewer");
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("evil");
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_iss = good.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    let mut bad_sub = good.clone();
    bad_sub["sub"] = json!("al ice");
    let admin_claims = claims(user, "admin");
    // A genuine viewer token whose claims are swapped for admin ones.
    let genuine = forge(hs256(), good.clone(), Some(SECRET));
    let sig = genuine.rsplit('.').next().unwrap().to_owned();
    let tampered = format!(
        "{}.{}.{sig}",
        b64(hs256().to_string().as_bytes()),
        b64(admin_claims.to_string().as_bytes())
    );
    let bearer = |t: String| Some(format!("Bearer {t}"));
    vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("bearer without token", Some("Bearer ".into())),
        ("basic auth", Some("Basic YWxpY2U6cGFzcw==".into())),
        ("token without scheme", Some(genuine.clone())),
        ("garbage", bearer("not-a-jwt".into())),
        ("three garbage parts", bearer("a.b.c".into())),
        ("expired", bearer(forge(hs256(), expired, Some(SECRET)))),
        (
            "wrong key",
            bearer(forge(
                hs256(),
                good.clone(),
                Some(b"another-secret-0123456789abcdef-xyz"),
            )),
        ),
        (
            "alg none",
            bearer(forge(
                json!({"alg": "none", "typ": "JWT"}),
                good.clone(),
                None,
            )),
        ),
        (
            "alg none with a signature",
            bearer(forge(
                json!({"alg": "none", "typ": "JWT"}),
                good.clone(),
                Some(SECRET),
            )),
        ),
        (
            "alg HS512 header",
            bearer(forge(
                json!({"alg": "HS512", "typ": "JWT"}),
                good.clone(),
                Some(SECRET),
            )),
        ),
        (
            "wrong issuer",
            bearer(forge(hs256(), wrong_iss, Some(SECRET))),
        ),
        ("no exp", bearer(forge(hs256(), no_exp, Some(SECRET)))),
        ("no iss", bearer(forge(hs256(), no_iss, Some(SECRET)))),
        (
            "unknown role",
            bearer(forge(hs256(), claims(user, "root"), Some(SECRET))),
        ),
        ("bad sub", bearer(forge(hs256(), bad_sub, Some(SECRET)))),
        ("tampered claims", bearer(tampered)),
        (
            "unsigned",
            bearer(format!("{}.", genuine.rsplit_once('.').unwrap().0)),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthorized_and_charge_nothing() {
    let s = Server::start(&["--gift-burst", "1000"]).await;
    let room = s.open_room("star-a").await;
    s.top_up("fan-a", "web", "20.00").await;

    // The hand-forged token is accepted when everything about it is right,
    // so the refusals below are about what was changed.
    let ok = forge(hs256(), claims("fan-a", "viewer"), Some(SECRET));
    s.get("/v1/wallet", Some(&ok)).await.expect_status(200);

    for (what, authorization) in bad_authorizations("fan-a") {
        let before = s.money("fan-a").await;
        let with_auth = |rb: reqwest::RequestBuilder| match &authorization {
            Some(a) => rb.header("authorization", a),
            None => rb,
        };
        let r = crate::common::send(with_auth(
            s.client
                .post(s.url(&format!("/v1/rooms/{room}/gifts")))
                .header(
                    "idempotency-key",
                    format!("auth-{}", crate::common::random_name()),
                )
                .json(&json!({"sticker_id": "rose", "quantity": 1})),
        ))
        .await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        r.expect_error(401, "unauthorized");
        assert_eq!(s.money("fan-a").await, before, "{what} charged");

        for path in ["/v1/wallet", "/v1/finance/summary"] {
            let r = crate::common::send(with_auth(s.client.get(s.url(path)))).await;
            assert_eq!(r.status, 401, "{what} on {path}: {}", r.body);
            r.expect_error(401, "unauthorized");
        }
        let r = crate::common::send(with_auth(s.client.post(s.url("/v1/topups")).json(
            &json!({"user_id": "fan-a", "channel": "web", "amount": "1.00", "receipt_id": "x"}),
        )))
        .await;
        r.expect_error(401, "unauthorized");
    }
    // Invalid bytes in the header value.
    let r = crate::common::send(s.client.get(s.url("/v1/wallet")).header(
        "authorization",
        reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
    ))
    .await;
    r.expect_error(401, "unauthorized");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced() {
    let s = Server::start(&[]).await;
    let room = s.open_room("star-c").await;
    s.top_up("fan-c", "apple", "20.00").await;
    let viewer = s.viewer("fan-c");
    let star = s.token("star-c", Role::Broadcaster);
    let other_star = s.token("star-d", Role::Broadcaster);

    // Finance endpoints.
    for token in [&viewer, &star] {
        for path in [
            "/v1/finance/summary",
            "/v1/finance/revenue?from=2026-01-01&to=2026-01-02",
        ] {
            s.get(path, Some(token))
                .await
                .expect_error(403, "forbidden");
        }
    }
    for token in [s.finance(), s.admin()] {
        s.get("/v1/finance/summary", Some(&token))
            .await
            .expect_status(200);
    }

    // Top-ups are admin-only; nothing is credited otherwise.
    let before = s.summary().await["topups"].clone();
    for token in [&viewer, &star, &s.finance()] {
        let r = s
            .post(
                "/v1/topups",
                Some(token),
                &json!({"user_id": "fan-c", "channel": "web", "amount": "100.00", "receipt_id": format!("self-{}", crate::common::random_name())}),
            )
            .await;
        r.expect_error(403, "forbidden");
    }
    assert_eq!(s.summary().await["topups"], before);
    assert_eq!(s.balance("fan-c").await, 2000);

    // Only broadcasters open rooms.
    for token in [&viewer, &s.finance(), &s.admin()] {
        s.post("/v1/rooms", Some(token), &json!({"title": "mine"}))
            .await
            .expect_error(403, "forbidden");
    }

    // Wallets: one's own, unless finance or admin.
    s.get("/v1/wallet?user_id=star-c", Some(&viewer))
        .await
        .expect_error(403, "forbidden");
    s.get("/v1/wallet?user_id=fan-c", Some(&star))
        .await
        .expect_error(403, "forbidden");
    let r = s.get("/v1/wallet?user_id=fan-c", Some(&viewer)).await;
    r.expect_status(200);
    assert_eq!(r.json["balance"], "20.00");
    let r = s.get("/v1/wallet", Some(&viewer)).await;
    r.expect_status(200);
    assert_eq!(r.json["user_id"], "fan-c");
    assert_eq!(r.json["by_channel"]["apple"], "20.00");
    for token in [s.finance(), s.admin()] {
        let r = s.get("/v1/wallet?user_id=fan-c", Some(&token)).await;
        r.expect_status(200);
        assert_eq!(r.json["user_id"], "fan-c");
        assert_eq!(r.json["balance"], "20.00");
    }

    // Gifts: sender, the room's broadcaster, finance and admin read them.
    let r = s.gift(&viewer, &room, "coffee", 1).await;
    r.expect_status(201);
    let gift = r.json["gift_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/gifts/{gift}");
    for token in [&viewer, &star, &s.finance(), &s.admin()] {
        let r = s.get(&path, Some(token)).await;
        r.expect_status(200);
        assert_eq!(r.json["gift_id"], gift.as_str());
        assert_eq!(r.json["sender_id"], "fan-c");
        assert_eq!(r.json["amount"], "1.99");
    }
    for token in [s.viewer("fan-other"), other_star.clone()] {
        s.get(&path, Some(&token))
            .await
            .expect_error(403, "forbidden");
    }
    s.get(&path, None).await.expect_error(401, "unauthorized");

    // Acknowledging: the room's broadcaster only.
    for token in [&viewer, &other_star] {
        s.post(
            &format!("{path}/ack"),
            Some(token),
            &json!({"text": "thanks"}),
        )
        .await
        .expect_error(403, "forbidden");
    }
    s.post(
        &format!("{path}/ack"),
        Some(&star),
        &json!({"text": "thanks!"}),
    )
    .await
    .expect_status(200);
    s.post(
        &format!("{path}/ack"),
        Some(&star),
        &json!({"text": "again"}),
    )
    .await
    .expect_error(409, "already_acknowledged");

    // Ending a room: its broadcaster only.
    for token in [&other_star, &viewer] {
        s.post(&format!("/v1/rooms/{room}/end"), Some(token), &json!({}))
            .await
            .expect_error(403, "forbidden");
    }
    let r = s.get(&format!("/v1/rooms/{room}"), None).await;
    assert_eq!(r.json["live"], true, "a refused end ended the room");
    let r = s
        .post(&format!("/v1/rooms/{room}/end"), Some(&star), &json!({}))
        .await;
    r.expect_status(200);
    assert_eq!(r.json["live"], false);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_set_price_split_or_sender() {
    let s = Server::start(&["--gift-burst", "1000"]).await;
    let room = s.open_room("star-p").await;
    s.top_up("fan-p", "web", "100.00").await;
    s.top_up("fan-p", "apple", "100.00").await;
    let viewer = s.viewer("fan-p");
    for (field, value) in [
        ("price", json!("0.01")),
        ("amount", json!("0.01")),
        (
            "split",
            json!({"store": "0", "broadcaster": "0.99", "platform": "0"}),
        ),
        ("sender_id", json!("someone-else")),
        ("balance", json!("1000.00")),
        ("room_id", json!("another-room")),
    ] {
        let before = s.money("fan-p").await;
        let mut body = json!({"sticker_id": "rose", "quantity": 1});
        body[field] = value;
        let r = s.buy(&viewer, &room, &format!("mass-{field}"), &body).await;
        assert_eq!(r.status, 400, "{field}: {}", r.body);
        r.expect_error(400, "invalid_request");
        assert_eq!(s.money("fan-p").await, before, "{field} charged");
    }

    // The charged amount is always the catalog price × quantity.
    let r = s.get("/v1/stickers", None).await;
    r.expect_status(200);
    let prices: HashMap<String, i64> = r.json["stickers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["id"].as_str().unwrap().to_owned(),
                minor(st["price"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(prices["rose"], 99);
    for (sticker, quantity) in [
        ("clap", 1),
        ("clap", 9_999),
        ("heart", 7),
        ("rose", 3),
        ("coffee", 2),
        ("star", 1),
        ("cake", 5),
    ] {
        let before = s.balance("fan-p").await;
        let r = s.gift(&viewer, &room, sticker, quantity).await;
        r.expect_status(201);
        let expected = prices[sticker] * i64::from(quantity);
        assert_eq!(
            minor(r.json["amount"].as_str().unwrap()),
            expected,
            "{sticker}×{quantity}"
        );
        assert_eq!(r.json["sender_id"], "fan-p");
        assert_eq!(r.json["room_id"], room.as_str());
        assert_eq!(r.json["quantity"], quantity);
        let split = &r.json["split"];
        let parts: i64 = ["store", "broadcaster", "platform"]
            .iter()
            .map(|k| minor(split[*k].as_str().unwrap()))
            .sum();
        assert_eq!(parts, expected, "split {split} of {sticker}×{quantity}");
        let after = s.balance("fan-p").await;
        assert_eq!(before - after, expected, "{sticker}×{quantity}");
        assert_eq!(minor(r.json["balance"].as_str().unwrap()), after);
    }
    s.shutdown().await;
}
