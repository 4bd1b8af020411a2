//! Secrets never reach the log: a real `applause serve` at `RUST_LOG=debug`
//! serves requests with tokens (in the `Authorization` header, on the
//! WebSocket as `access_token`, and bad ones), and neither the JWT secret nor
//! any token, nor a token's signature, appears in what it printed.

use std::process::Stdio;
use std::time::Duration;

use applause_core::Role;
use futures_util::StreamExt;

use crate::common::{bin, free_port, token, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_and_tokens_are_not_logged_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let mut child = bin()
        .env("RUST_LOG", "debug")
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start applause serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "applause serve did not come up");

    let admin = token("admin-s", Role::Admin);
    let star = token("star-s", Role::Broadcaster);
    let fan = token("fan-s", Role::Viewer);
    let tokens = [&admin, &star, &fan];
    let room: serde_json::Value = client
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(&star)
        .json(&serde_json::json!({"title": "secrets"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = room["room_id"].as_str().expect("room_id").to_owned();
    let r = client
        .post(format!("{base}/v1/topups"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"user_id": "fan-s", "channel": "web", "amount": "5.00", "receipt_id": "s-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{base}/v1/rooms/{room}/gifts"))
        .bearer_auth(&fan)
        .header("idempotency-key", "secret-1")
        .json(&serde_json::json!({"sticker_id": "rose", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A refused token (wrong signature) and a refused request body.
    let forged = format!("{}x", fan);
    let r = client
        .get(format!("{base}/v1/wallet"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The WebSocket with the token in the query string.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/v1/ws?room={room}&access_token={fan}"
    ))
    .await
    .expect("websocket");
    assert!(matches!(ws.next().await, Some(Ok(_))));
    drop(ws);

    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap();
    // The log is there and at debug level, so the absence below means something.
    assert!(
        text.contains("DEBUG") || text.contains("\"debug\""),
        "the server logged nothing at debug:\n{text}"
    );
    assert!(!text.contains(SECRET), "the JWT secret is in the log");
    for t in tokens.iter().map(|t| t.as_str()).chain([forged.as_str()]) {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a token is in the log");
    }
}
