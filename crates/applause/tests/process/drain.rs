//! SIGTERM drains: in-flight purchases finish and are answered, then the
//! process exits cleanly; nothing answered 201 is missing afterwards.

use std::sync::Arc;
use std::time::Duration;

use applause_core::Role;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_purchases() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(dir.path(), port).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let star = token("star", Role::Broadcaster);
    let room: serde_json::Value = http
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(&star)
        .json(&serde_json::json!({"title": "drain"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let admin = token("admin", Role::Admin);
    let r = http
        .post(format!("{base}/v1/topups"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"user_id": "v", "channel": "web", "amount": "100.00", "receipt_id": "drain-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let viewer = Arc::new(token("v", Role::Viewer));
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (http, base, room_id, viewer, created) = (
            http.clone(),
            base.clone(),
            room_id.clone(),
            viewer.clone(),
            created.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let r = http
                    .post(format!("{base}/v1/rooms/{room_id}/gifts"))
                    .bearer_auth(viewer.as_str())
                    .header("Idempotency-Key", format!("d-{t}-{i}"))
                    .json(&serde_json::json!({"sticker_id": "clap", "quantity": 1}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        created.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Anything else must be a refused connection after the drain began.
                    Ok(r) => panic!("unexpected status {} during drain", r.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    for t in tasks {
        t.await.unwrap();
    }
    let created = created.load(std::sync::atomic::Ordering::SeqCst);
    assert!(created > 0);

    // Every 201 is in the ledger, and the ledger is sound.
    let out = bin()
        .args(["ledger", "check", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // One top-up plus one transaction per gift.
    assert_eq!(check["transactions"].as_u64().unwrap(), 1 + created as u64);
}
