//! Bad input reaches every error code of SPEC §3 for purchases, top-ups,
//! rooms and wallets — with the right status and code, and nothing charged.
//!
//! One module per surface: `purchases`, `top_ups`, `routes` (rooms,
//! wallets, ids, acknowledgements, the catalog); the cases' harness is here.

mod purchases;
mod routes;
mod top_ups;

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
