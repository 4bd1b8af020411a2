//! `kill -9` of `applause serve` in the middle of concurrent purchases: after
//! a restart, retrying every request with its key charges nothing twice,
//! every 201 is in the ledger with a byte-identical replay, and the ledger
//! check passes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use applause_core::Role;
use tokio::sync::Mutex;

use crate::common::*;

/// The first answer to each idempotency key (`None`: no answer, the server died).
type Answers = HashMap<String, Option<(u16, String)>>;

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: serde_json::Value,
    ) -> Result<(u16, String), reqwest::Error> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    async fn get(&self, path: &str, token: &str) -> serde_json::Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_charges_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(dir.path(), port).await;
    let api = Api::new(port);
    let admin = token("admin", Role::Admin);
    let star = token("star", Role::Broadcaster);
    let (s, body) = api
        .post(
            "/v1/rooms",
            &star,
            None,
            serde_json::json!({"title": "crash"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let room_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let viewers: Vec<String> = (0..8).map(|i| format!("viewer{i}")).collect();
    for v in &viewers {
        let (s, b) = api
            .post("/v1/topups", &admin, None, serde_json::json!({"user_id": v, "channel": "google", "amount": "50.00", "receipt_id": format!("r-{v}")}))
            .await
            .unwrap();
        assert_eq!(s, 201, "{b}");
    }

    // Each viewer sends gifts back to back; the server dies under them.
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let api = Arc::new(api);
    let mut tasks = Vec::new();
    for v in viewers.clone() {
        let (api, answers, room_id) = (api.clone(), answers.clone(), room_id.clone());
        tasks.push(tokio::spawn(async move {
            let tok = token(&v, Role::Viewer);
            for i in 0..400 {
                let key = format!("{v}-{i}");
                let r = api
                    .post(
                        &format!("/v1/rooms/{room_id}/gifts"),
                        &tok,
                        Some(&key),
                        serde_json::json!({"sticker_id": "heart", "quantity": 1}),
                    )
                    .await;
                let failed = r.is_err();
                answers.lock().await.insert(key, r.ok());
                if failed {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().expect("kill -9"); // SIGKILL on Unix
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }

    let mut child = serve(dir.path(), port).await;
    let answers = answers.lock().await.clone();
    let answered = answers.values().filter(|a| a.is_some()).count();
    let unanswered = answers.len() - answered;
    assert!(answered > 0, "no purchase completed before the kill");

    // Retry every request with its key; an answered one must replay exactly.
    let mut gifts: BTreeMap<String, i64> = BTreeMap::new();
    let mut charged_cents: HashMap<String, i64> = HashMap::new();
    for (key, first) in &answers {
        let v = key.rsplit_once('-').unwrap().0.to_owned();
        let tok = token(&v, Role::Viewer);
        let (status, body) = api
            .post(
                &format!("/v1/rooms/{room_id}/gifts"),
                &tok,
                Some(key),
                serde_json::json!({"sticker_id": "heart", "quantity": 1}),
            )
            .await
            .unwrap();
        if let Some((s0, b0)) = first {
            assert_eq!((status, &body), (*s0, b0), "replay of {key} differs");
        }
        assert!(status == 201 || status == 402, "{key}: {status} {body}");
        if status == 201 {
            let g: serde_json::Value = serde_json::from_str(&body).unwrap();
            let id = g["gift_id"].as_str().unwrap().to_owned();
            assert!(gifts.insert(id, 10).is_none(), "two keys share a gift");
            *charged_cents.entry(v).or_default() += 10;
        }
    }
    // Every viewer paid exactly for their distinct gifts.
    for v in &viewers {
        let w = api.get(&format!("/v1/wallet?user_id={v}"), &admin).await;
        let expected = 5_000 - charged_cents.get(v).copied().unwrap_or(0);
        assert_eq!(
            w["balance"],
            format!("{}.{:02}", expected / 100, expected % 100),
            "{v}"
        );
    }
    let summary = api.get("/v1/finance/summary", &admin).await;
    assert_eq!(summary["gifts"], gifts.len() as u64);
    assert_eq!(summary["ledger_check"]["ok"], true, "{summary}");
    for id in gifts.keys().take(20) {
        api.get(&format!("/v1/gifts/{id}"), &admin).await;
    }
    println!("kill -9: {answered} answered before the kill, {unanswered} unanswered, {} gifts in the ledger", gifts.len());

    // Graceful stop, then the offline check agrees.
    child.kill().unwrap();
    child.wait().unwrap();
    let out = bin()
        .args(["ledger", "check", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ledger check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
