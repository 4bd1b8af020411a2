//! The security matrix of docs/security.md, the rows not proven elsewhere:
//! every endpoint of SPEC §3 × every role, not-yet-valid and oversized
//! tokens, header and query size limits, and the WebSocket Origin policy.

use applause_core::Role;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{random_name, send, Server, SECRET};

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    /// The viewer who bought the gift and dropped the red packet.
    Fan,
    OtherViewer,
    /// The broadcaster of the room.
    Owner,
    OtherBroadcaster,
    Finance,
    Admin,
}

const EVERYONE: [Who; 7] = [
    Who::Anonymous,
    Who::Fan,
    Who::OtherViewer,
    Who::OtherBroadcaster,
    Who::Finance,
    Who::Admin,
    // Last: some of the owner's allowed requests (ending the room) change state.
    Who::Owner,
];

fn token(s: &Server, who: Who) -> Option<String> {
    match who {
        Who::Anonymous => None,
        Who::Fan => Some(s.viewer("fan-m")),
        Who::OtherViewer => Some(s.viewer("fan-n")),
        Who::Owner => Some(s.token("star-m", Role::Broadcaster)),
        Who::OtherBroadcaster => Some(s.token("star-n", Role::Broadcaster)),
        Who::Finance => Some(s.finance()),
        Who::Admin => Some(s.admin()),
    }
}

/// One request of the matrix, as a method, path and body.
struct Endpoint {
    method: &'static str,
    path: String,
    body: Option<Value>,
    allowed: fn(Who) -> bool,
}

fn anyone(_: Who) -> bool {
    true
}
fn signed_in(w: Who) -> bool {
    w != Who::Anonymous
}
fn finance(w: Who) -> bool {
    matches!(w, Who::Finance | Who::Admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_checks_every_role() {
    let s = Server::start(&["--gift-burst", "1000"]).await;
    let room = s.open_room("star-m").await;
    let ended = s.open_room("star-m").await;
    s.top_up("fan-m", "web", "100.00").await;
    let fan = s.viewer("fan-m");
    let r = s.gift(&fan, &room, "rose", 1).await;
    r.expect_status(201);
    let gift = r.json["gift_id"].as_str().unwrap().to_owned();
    let r = send(
        s.client
            .post(s.url(&format!("/v1/rooms/{room}/red-packets")))
            .bearer_auth(&fan)
            .header("idempotency-key", "drop-1")
            .json(&json!({"total": "1.00", "count": 10, "mode": "equal"})),
    )
    .await;
    r.expect_status(201);
    let packet = r.json["packet_id"].as_str().unwrap().to_owned();

    let e = |method, path: String, body: Option<Value>, allowed: fn(Who) -> bool| Endpoint {
        method,
        path,
        body,
        allowed,
    };
    let endpoints = vec![
        e("GET", "/v1/stickers".into(), None, anyone),
        e(
            "POST",
            "/v1/rooms".into(),
            Some(json!({"title": "t"})),
            |w| matches!(w, Who::Owner | Who::OtherBroadcaster),
        ),
        e("GET", format!("/v1/rooms/{room}"), None, anyone),
        e(
            "POST",
            "/v1/topups".into(),
            Some(
                json!({"user_id": "fan-n", "channel": "web", "amount": "1.00", "receipt_id": "m-1"}),
            ),
            |w| w == Who::Admin,
        ),
        e("GET", "/v1/wallet".into(), None, signed_in),
        e("GET", "/v1/wallet?user_id=fan-m".into(), None, |w| {
            matches!(w, Who::Fan | Who::Finance | Who::Admin)
        }),
        e(
            "POST",
            format!("/v1/rooms/{room}/gifts"),
            Some(json!({"sticker_id": "clap", "quantity": 1})),
            |w| signed_in(w) && w != Who::Owner,
        ),
        e("GET", format!("/v1/gifts/{gift}"), None, |w| {
            matches!(w, Who::Fan | Who::Owner | Who::Finance | Who::Admin)
        }),
        e(
            "POST",
            format!("/v1/gifts/{gift}/ack"),
            Some(json!({"text": "thanks"})),
            |w| w == Who::Owner,
        ),
        e("GET", format!("/v1/rooms/{room}/leaderboard"), None, anyone),
        e(
            "GET",
            format!("/v1/rooms/{room}/leaderboard/me"),
            None,
            signed_in,
        ),
        e("GET", "/v1/leaderboards/broadcasters".into(), None, anyone),
        e(
            "POST",
            format!("/v1/rooms/{room}/red-packets"),
            Some(json!({"total": "1.00", "count": 1, "mode": "equal"})),
            signed_in,
        ),
        e("GET", format!("/v1/red-packets/{packet}"), None, signed_in),
        e(
            "POST",
            format!("/v1/red-packets/{packet}/claim"),
            Some(json!({})),
            |w| signed_in(w) && w != Who::Fan,
        ),
        e(
            "GET",
            "/v1/finance/revenue?from=2026-01-01&to=2026-01-02".into(),
            None,
            finance,
        ),
        e("GET", "/v1/finance/summary".into(), None, finance),
        e(
            "GET",
            "/v1/finance/broadcasters/star-m/statement?from=2026-01-01&to=2026-01-02".into(),
            None,
            |w| matches!(w, Who::Owner | Who::Finance | Who::Admin),
        ),
        e(
            "POST",
            format!("/v1/finance/gifts/{gift}/refund"),
            Some(json!({"reason": "matrix"})),
            finance,
        ),
        e(
            "POST",
            format!("/v1/rooms/{ended}/end"),
            Some(json!({})),
            |w| w == Who::Owner,
        ),
    ];

    let mut checked = 0;
    for ep in &endpoints {
        for who in EVERYONE {
            let mut rb = match ep.method {
                "GET" => s.client.get(s.url(&ep.path)),
                _ => s
                    .client
                    .post(s.url(&ep.path))
                    .header("idempotency-key", format!("m-{}", random_name())),
            };
            if let Some(b) = &ep.body {
                rb = rb.json(b);
            }
            if let Some(t) = token(&s, who) {
                rb = rb.bearer_auth(t);
            }
            let r = send(rb).await;
            let what = format!(
                "{} {} as {who:?}: {} {}",
                ep.method, ep.path, r.status, r.body
            );
            if (ep.allowed)(who) {
                assert!(r.status != 401 && r.status != 403, "refused {what}");
            } else if who == Who::Anonymous {
                r.expect_error(401, "unauthorized");
            } else {
                assert_eq!(r.status, 403, "allowed {what}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints.len() * EVERYONE.len());
    // The refused requests moved nothing: the ledger still checks out, and
    // the only top-up is the admin's.
    let summary = s.summary().await;
    assert_eq!(summary["ledger_check"]["ok"], true);
    s.shutdown().await;
}

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

fn signed(claims: Value) -> String {
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{input}.{sig}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_yet_valid_and_oversized_tokens_are_refused() {
    let s = Server::start(&[]).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |extra: Value| {
        let mut c = json!({"sub": "fan-t", "role": "viewer", "iss": "applause", "exp": now + 3600});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    // Correctly signed, so each refusal is about the one claim changed.
    s.get(
        "/v1/wallet",
        Some(&signed(claims(json!({"nbf": now - 60})))),
    )
    .await
    .expect_status(200);
    s.get(
        "/v1/wallet",
        Some(&signed(claims(json!({"nbf": now + 600})))),
    )
    .await
    .expect_error(401, "unauthorized");
    let big = signed(claims(json!({"pad": "x".repeat(5000)})));
    assert!(big.len() > applause_web::auth::TOKEN_BYTES_MAX);
    s.get("/v1/wallet", Some(&big))
        .await
        .expect_error(401, "unauthorized");
    // On the WebSocket too (as `access_token`).
    let room = s.open_room("star-t").await;
    let ws = s.base.replace("http://", "ws://");
    let nbf = signed(claims(json!({"nbf": now + 600})));
    match tokio_tungstenite::connect_async(format!("{ws}/v1/ws?room={room}&access_token={nbf}"))
        .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("a not-yet-valid token opened a WebSocket: {other:?}"),
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_queries_are_refused() {
    let s = Server::start(&[]).await;
    let fan = s.viewer("fan-h");
    // A header past the server's limit: refused before any handler (431),
    // never a 5xx.
    let r = s
        .client
        .get(s.url("/v1/wallet"))
        .bearer_auth(&fan)
        .header("x-padding", "x".repeat(1024 * 1024))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 431, "a 1 MiB header");
    }
    // A long query: refused by the query's own checks with a 4xx.
    let long = "9".repeat(16 * 1024);
    for path in [
        format!("/v1/leaderboards/broadcasters?limit={long}"),
        format!("/v1/finance/revenue?from={long}&to=2026-01-01"),
    ] {
        let r = s.get(&path, Some(&s.finance())).await;
        r.expect_error(400, "invalid_query");
    }
    // The server still answers normally.
    s.get("/v1/wallet", Some(&fan)).await.expect_status(200);
    s.shutdown().await;
}

async fn ws_status(s: &Server, room: &str, origin: Option<&str>) -> u16 {
    let ws = s.base.replace("http://", "ws://");
    let mut req = format!("{ws}/v1/ws?room={room}")
        .into_client_request()
        .unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut socket, resp)) => {
            let first = socket.next().await;
            assert!(
                matches!(first, Some(Ok(_))),
                "an opened socket says welcome"
            );
            resp.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origins_follow_the_allow_list() {
    // Default: no cookie ever authenticates, so every origin may connect.
    let open = Server::start(&[]).await;
    let room = open.open_room("star-o").await;
    assert_eq!(
        ws_status(&open, &room, Some("https://evil.example")).await,
        101
    );
    assert_eq!(ws_status(&open, &room, None).await, 101);
    open.shutdown().await;

    let s = Server::start(&[
        "--ws-allowed-origins",
        "https://app.example,http://localhost:8080",
    ])
    .await;
    let room = s.open_room("star-o").await;
    assert_eq!(ws_status(&s, &room, Some("https://app.example")).await, 101);
    assert_eq!(
        ws_status(&s, &room, Some("http://localhost:8080")).await,
        101
    );
    // Not a browser: no Origin at all.
    assert_eq!(ws_status(&s, &room, None).await, 101);
    for evil in [
        "https://evil.example",
        "https://app.example.evil.example",
        "http://app.example",
        "null",
    ] {
        assert_eq!(ws_status(&s, &room, Some(evil)).await, 403, "{evil}");
    }
    s.shutdown().await;
}
