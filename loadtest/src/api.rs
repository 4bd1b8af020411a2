//! The slice of the public HTTP API (SPEC §3) the load generator calls, with
//! the retry policy for purchases: same `Idempotency-Key`, bounded attempts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use applause_core::Currency;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::money::{format_minor, parse_minor};

/// Pause before retrying a purchase whose first attempt is still in flight.
const IN_FLIGHT_BACKOFF: Duration = Duration::from_millis(50);
/// Timeout of the finance summary: it runs the ledger check, which grows with
/// the ledger and may take far longer than a purchase.
const REPORT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest `Retry-After` we honour before giving up on that attempt.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    pub currency: Currency,
    retries: u32,
    timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RoomCreated {
    pub room_id: String,
    #[serde(default)]
    pub broadcaster_id: String,
}

#[derive(Debug, Clone)]
pub struct StickerInfo {
    pub id: String,
    pub price_minor: i64,
}

/// What the 201 of a purchase says, amounts in minor units.
#[derive(Debug, Clone)]
pub struct GiftCreated {
    pub gift_id: String,
    pub room_id: String,
    pub sender_id: String,
    pub amount_minor: i64,
    pub seq: Option<u64>,
}

/// How a purchase ended after retries.
#[derive(Debug, Clone)]
pub enum GiftOutcome {
    Created(GiftCreated),
    /// The server answered with an error status and code.
    Rejected {
        status: u16,
        code: String,
    },
    /// No answer after every retry: it may or may not have been committed.
    Unknown {
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct GiftResult {
    pub outcome: GiftOutcome,
    pub retries: u32,
    pub started: Instant,
    pub finished: Instant,
}

/// The stable error code of an error body, or a status-derived stand-in.
fn error_code(status: u16, body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("http_{status}"))
}

impl Api {
    pub fn new(base: &str, timeout: Duration, retries: u32, currency: Currency) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            currency,
            retries,
            timeout,
        })
    }

    /// The same API with a connection pool of its own, for use from another
    /// runtime (a pool's connections belong to the runtime that opened them).
    pub fn fresh(&self) -> Result<Self> {
        Self::new(
            &self.base,
            self.timeout,
            self.retries,
            self.currency.clone(),
        )
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send_json(&self, req: reqwest::RequestBuilder, what: &str) -> Result<(u16, String)> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("{what}: request failed"))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .with_context(|| format!("{what}: reading body"))?;
        Ok((status, body))
    }

    async fn expect_ok(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let (status, body) = self.send_json(req, what).await?;
        if !(200..300).contains(&status) {
            bail!("{what}: HTTP {status} {}", error_code(status, &body));
        }
        serde_json::from_str(&body).with_context(|| format!("{what}: response is not JSON"))
    }

    pub async fn stickers(&self) -> Result<Vec<StickerInfo>> {
        let v = self
            .expect_ok(self.http.get(self.url("/v1/stickers")), "GET /v1/stickers")
            .await?;
        let list = v["stickers"]
            .as_array()
            .ok_or_else(|| anyhow!("GET /v1/stickers: no `stickers` array"))?;
        list.iter()
            .map(|s| {
                let id = s["id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("sticker without id"))?;
                let price = s["price"]
                    .as_str()
                    .ok_or_else(|| anyhow!("sticker {id}: price is not a string"))?;
                Ok(StickerInfo {
                    id: id.to_owned(),
                    price_minor: parse_minor(&self.currency, price)?,
                })
            })
            .collect()
    }

    pub async fn create_room(&self, token: &str, title: &str) -> Result<RoomCreated> {
        let req = self
            .http
            .post(self.url("/v1/rooms"))
            .bearer_auth(token)
            .json(&json!({ "title": title }));
        let v = self.expect_ok(req, "POST /v1/rooms").await?;
        serde_json::from_value(v).context("POST /v1/rooms: unexpected body")
    }

    pub async fn topup(
        &self,
        admin_token: &str,
        user_id: &str,
        channel: &str,
        amount_minor: i64,
        receipt_id: &str,
    ) -> Result<()> {
        let body = json!({
            "user_id": user_id,
            "channel": channel,
            "amount": format_minor(&self.currency, amount_minor),
            "receipt_id": receipt_id,
        });
        let req = self
            .http
            .post(self.url("/v1/topups"))
            .bearer_auth(admin_token)
            .json(&body);
        self.expect_ok(req, "POST /v1/topups").await.map(drop)
    }

    /// Buys a gift; transport failures, 409 in-flight, 429 and 503 are retried
    /// with the same key (each counted), every other answer is final.
    pub async fn send_gift(
        &self,
        token: &str,
        room_id: &str,
        body: &Value,
        idempotency_key: &str,
    ) -> GiftResult {
        let started = Instant::now();
        let url = self.url(&format!("/v1/rooms/{room_id}/gifts"));
        let mut retries = 0;
        let outcome = loop {
            let attempt = self
                .http
                .post(&url)
                .bearer_auth(token)
                .header("Idempotency-Key", idempotency_key)
                .json(body)
                .send()
                .await;
            let (retryable, outcome, wait) = match attempt {
                Err(e) => (
                    true,
                    GiftOutcome::Unknown {
                        error: e.to_string(),
                    },
                    None,
                ),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|h| h.to_str().ok())
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
                    match resp.text().await {
                        Err(e) => (
                            true,
                            GiftOutcome::Unknown {
                                error: e.to_string(),
                            },
                            None,
                        ),
                        Ok(text) if status == 201 || status == 200 => {
                            match self.parse_gift(&text) {
                                Ok(g) => (false, GiftOutcome::Created(g), None),
                                Err(e) => (
                                    false,
                                    GiftOutcome::Rejected {
                                        status,
                                        code: format!("bad_201_body: {e}"),
                                    },
                                    None,
                                ),
                            }
                        }
                        Ok(text) => {
                            let code = error_code(status, &text);
                            let retry = status == 503
                                || status == 429
                                || (status == 409 && code == "idempotency_key_in_flight");
                            let wait = if status == 409 {
                                Some(IN_FLIGHT_BACKOFF)
                            } else {
                                retry_after.or(Some(IN_FLIGHT_BACKOFF))
                            };
                            (retry, GiftOutcome::Rejected { status, code }, wait)
                        }
                    }
                }
            };
            if !retryable || retries >= self.retries {
                break outcome;
            }
            retries += 1;
            if let Some(w) = wait {
                tokio::time::sleep(w).await;
            }
        };
        GiftResult {
            outcome,
            retries,
            started,
            finished: Instant::now(),
        }
    }

    fn parse_gift(&self, text: &str) -> Result<GiftCreated> {
        let v: Value = serde_json::from_str(text)?;
        let s = |k: &str| -> Result<String> {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("no `{k}` string"))
        };
        Ok(GiftCreated {
            gift_id: s("gift_id")?,
            room_id: s("room_id").unwrap_or_default(),
            sender_id: s("sender_id").unwrap_or_default(),
            amount_minor: parse_minor(&self.currency, &s("amount")?)?,
            seq: v["seq"].as_u64(),
        })
    }

    /// Acknowledges a gift as the room's broadcaster; `Err` carries the error code.
    pub async fn ack(&self, token: &str, gift_id: &str, text: &str) -> Result<(), String> {
        let req = self
            .http
            .post(self.url(&format!("/v1/gifts/{gift_id}/ack")))
            .bearer_auth(token)
            .json(&json!({ "text": text }));
        match self.send_json(req, "ack").await {
            Ok((s, _)) if (200..300).contains(&s) => Ok(()),
            Ok((s, body)) => Err(error_code(s, &body)),
            Err(_) => Err("ack_transport_error".into()),
        }
    }

    /// Gross gifts from the finance summary, in minor units.
    pub async fn gross_gifts(&self, finance_token: &str) -> Result<i64> {
        let req = self
            .http
            .get(self.url("/v1/finance/summary"))
            .timeout(REPORT_TIMEOUT)
            .bearer_auth(finance_token);
        let v = self.expect_ok(req, "GET /v1/finance/summary").await?;
        let gross = v["gross_gifts"]
            .as_str()
            .or_else(|| v["totals"]["gross_gifts"].as_str())
            .ok_or_else(|| anyhow!("finance summary has no `gross_gifts` string"))?;
        parse_minor(&self.currency, gross)
    }

    /// Gross gifts per broadcaster from the revenue report over the UTC days
    /// `[from, to)` (`YYYY-MM-DD`), in minor units.
    pub async fn gross_by_broadcaster(
        &self,
        finance_token: &str,
        from: &str,
        to: &str,
    ) -> Result<HashMap<String, i64>> {
        let req = self
            .http
            .get(self.url("/v1/finance/revenue"))
            .query(&[("from", from), ("to", to), ("group_by", "broadcaster")])
            .timeout(REPORT_TIMEOUT)
            .bearer_auth(finance_token);
        let v = self.expect_ok(req, "GET /v1/finance/revenue").await?;
        let rows = v["rows"]
            .as_array()
            .ok_or_else(|| anyhow!("revenue report has no `rows` array"))?;
        let mut out = HashMap::new();
        for row in rows {
            let (Some(id), Some(gross)) = (row["broadcaster"].as_str(), row["gross"].as_str())
            else {
                return Err(anyhow!(
                    "revenue row without `broadcaster` and `gross`: {row}"
                ));
            };
            out.insert(id.to_owned(), parse_minor(&self.currency, gross)?);
        }
        Ok(out)
    }

    /// The room's live leaderboard as (user_id, amount in minor units).
    pub async fn leaderboard(&self, room_id: &str, limit: usize) -> Result<Vec<(String, i64)>> {
        let url = self.url(&format!(
            "/v1/rooms/{room_id}/leaderboard?window=live&limit={limit}"
        ));
        let v = self
            .expect_ok(self.http.get(url), "GET leaderboard")
            .await?;
        let entries = v["entries"]
            .as_array()
            .ok_or_else(|| anyhow!("leaderboard has no `entries` array"))?;
        entries
            .iter()
            .map(|e| {
                let user = e["user_id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("leaderboard entry without user_id"))?;
                let amount = e["amount"]
                    .as_str()
                    .ok_or_else(|| anyhow!("leaderboard amount is not a string"))?;
                Ok((user.to_owned(), parse_minor(&self.currency, amount)?))
            })
            .collect()
    }
}
