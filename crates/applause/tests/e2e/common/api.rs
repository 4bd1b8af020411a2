//! A client of the public HTTP API, and what its leaderboards must show.

use std::collections::BTreeMap;
use std::time::Duration;

use applause_core::Role;
use serde_json::{json, Value};

use super::*;

/// A client of the public HTTP API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
        }
    }

    /// POST; `Err` only when there was no answer (the node is gone).
    pub async fn try_post(
        &self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn post(
        &self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        self.try_post(path, token, key, body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Opens a live room for `broadcaster`; returns its id.
    pub async fn open_room(&self, broadcaster: &str) -> String {
        let (s, b) = self
            .post("/v1/rooms", broadcaster, None, &json!({"title": "e2e"}))
            .await;
        assert_eq!(s, 201, "{b}");
        b["room_id"].as_str().expect("room_id").to_owned()
    }

    pub async fn top_up(&self, user: &str, amount: &str) {
        let admin = token("admin", Role::Admin);
        let (s, b) = self
            .post(
                "/v1/topups",
                &admin,
                None,
                &json!({"user_id": user, "channel": "web", "amount": amount,
                        "receipt_id": format!("r-{user}-{}", random_name())}),
            )
            .await;
        assert!(s == 201 || s == 200, "top-up: {s} {b}");
    }

    /// Buys one sticker; panics unless 201. Returns the 201 body.
    pub async fn buy(&self, sender: &str, room: &str, key: &str, sticker: &str) -> Value {
        let (s, b) = self
            .post(
                &format!("/v1/rooms/{room}/gifts"),
                sender,
                Some(key),
                &json!({"sticker_id": sticker, "quantity": 1}),
            )
            .await;
        assert_eq!(s, 201, "purchase {key}: {b}");
        b
    }

    /// The room's board for `window` as (user_id, amount) pairs, in rank order.
    pub async fn board(&self, room: &str, window: &str) -> Vec<(String, String)> {
        let (s, b) = self
            .get(
                &format!("/v1/rooms/{room}/leaderboard?window={window}&limit=100"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        entries(&b["entries"])
    }
}

/// (user_id, amount) of leaderboard entries, checking ranks are 1, 2, 3….
pub fn entries(v: &Value) -> Vec<(String, String)> {
    let list = v.as_array().expect("entries");
    for (i, e) in list.iter().enumerate() {
        assert_eq!(e["rank"].as_u64(), Some(i as u64 + 1), "ranks of {v}");
    }
    list.iter()
        .map(|e| {
            (
                e["user_id"].as_str().expect("user_id").to_owned(),
                e["amount"].as_str().expect("amount").to_owned(),
            )
        })
        .collect()
}

/// What each sender spent, by the 201 bodies they were answered.
pub fn spent_by_sender(bodies: &[Value]) -> BTreeMap<String, i64> {
    let mut spent: BTreeMap<String, i64> = BTreeMap::new();
    for b in bodies {
        *spent
            .entry(b["sender_id"].as_str().expect("sender_id").to_owned())
            .or_default() += minor(b["amount"].as_str().expect("amount"));
    }
    spent
}

/// One charge per 201: each buyer, funded with `funded_minor`, holds that
/// less what their 201s bought (read through `api` as an admin).
pub async fn assert_charged_once(
    api: &Api,
    buyers: &[String],
    bodies: &[Value],
    funded_minor: i64,
) {
    let spent = spent_by_sender(bodies);
    let admin = token("admin", Role::Admin);
    for b in buyers {
        let (s, w) = api
            .get(&format!("/v1/wallet?user_id={b}"), Some(&admin))
            .await;
        assert_eq!(s, 200, "{w}");
        let want = funded_minor - spent.get(b).copied().unwrap_or(0);
        assert_eq!(minor(w["balance"].as_str().unwrap()), want, "{b}: {w}");
    }
}

/// The board a set of 201 bodies implies: total per sender, amount desc, id asc.
pub fn expected_board(bodies: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<_> = spent_by_sender(bodies).into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .map(|(u, c)| (u, format!("{}.{:02}", c / 100, c % 100)))
        .collect()
}
