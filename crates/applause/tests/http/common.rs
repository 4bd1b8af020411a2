//! Shared helpers: a real server started in-process on `127.0.0.1:0` over a
//! fresh SQLite data directory or PostgreSQL database, a response type that
//! checks every answer for 5xx and leaked internals, tokens, and money reads.

use std::sync::Arc;
use std::time::Duration;

use applause::{CommonArgs, Mode};
use applause_core::Role;
use applause_web::Authenticator;
use clap::Parser;
use serde_json::Value;
use sqlx::Executor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The JWT secret every test server uses (tokens are minted and forged with it).
pub const SECRET: &[u8] = b"http-suite-secret-0123456789abcdef";
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which ledger backend a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The stored state of a server: its data directory and, for PostgreSQL, a
/// database of its own, dropped when the last user lets go (also on panic).
pub struct Store {
    pub dir: tempfile::TempDir,
    db: Option<String>,
    /// The port servers reach PostgreSQL on (a test proxy can stand in).
    pg_port: std::sync::atomic::AtomicU16,
}

impl Store {
    pub async fn new(backend: Backend) -> Arc<Store> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let name = format!("applause_citest_h_{}", random_name());
                let admin = sqlx::PgPool::connect(PG_ADMIN_URL)
                    .await
                    .expect("PostgreSQL on 127.0.0.1:5432");
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create test database");
                admin.close().await;
                Some(name)
            }
        };
        Arc::new(Store {
            dir,
            db,
            pg_port: 5432.into(),
        })
    }

    /// Servers started from now on reach PostgreSQL through `port`.
    pub fn route_through(&self, port: u16) {
        self.pg_port
            .store(port, std::sync::atomic::Ordering::Relaxed);
    }

    fn database_url(&self) -> Option<String> {
        let port = self.pg_port.load(std::sync::atomic::Ordering::Relaxed);
        self.db
            .as_ref()
            .map(|name| format!("postgres://postgres@127.0.0.1:{port}/{name}"))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let Some(name) = self.db.take() else { return };
        // Drop runs inside the test's runtime (maybe while unwinding): use a
        // thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN_URL).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

pub fn random_name() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..12)
        .map(|_| char::from(b'a' + r.random_range(0..26u8)))
        .collect()
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

/// A running server.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<Store>,
    auth: Authenticator,
    args: Vec<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// A server on SQLite with default settings plus `extra` flags.
    pub async fn start(extra: &[&str]) -> Server {
        Server::on(Store::new(Backend::Sqlite).await, extra).await
    }

    /// A server on `store`, with default settings plus `extra` flags.
    pub async fn on(store: Arc<Store>, extra: &[&str]) -> Server {
        let args = extra.iter().map(|s| (*s).to_owned()).collect();
        Server::launch(store, args).await
    }

    async fn launch(store: Arc<Store>, extra: Vec<String>) -> Server {
        let mut argv = vec![
            "applause".to_owned(),
            "--bind".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--data-dir".to_owned(),
            store.dir.path().display().to_string(),
        ];
        if let Some(url) = store.database_url() {
            argv.push("--database-url".into());
            argv.push(url);
        }
        argv.extend(extra.iter().cloned());
        let settings = Cli::try_parse_from(&argv)
            .expect("flags parse")
            .common
            .settings()
            .expect("settings are valid");
        let app = applause::build(&settings, SECRET, Mode::Embedded)
            .await
            .expect("app builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(applause::run(app, listener, async move {
            let _ = rx.await;
        }));
        Server {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(256)
                .build()
                .expect("client"),
            store,
            auth: Authenticator::new(SECRET).expect("authenticator"),
            args: extra,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn shutdown(mut self) -> Arc<Store> {
        self.stop_now().await;
        self.store.clone()
    }

    async fn stop_now(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops within 20 s")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    /// Shuts down and starts again on the same data directory / database.
    pub async fn restart(mut self) -> Server {
        self.stop_now().await;
        let args = std::mem::take(&mut self.args);
        Server::launch(self.store.clone(), args).await
    }

    /// A token for `user` with `role`, valid for an hour.
    pub fn token(&self, user: &str, role: Role) -> String {
        self.auth
            .mint(user, role, Some(user), Duration::from_secs(3600))
            .expect("mint")
    }

    pub fn viewer(&self, user: &str) -> String {
        self.token(user, Role::Viewer)
    }

    pub fn admin(&self) -> String {
        self.token("admin-1", Role::Admin)
    }

    pub fn finance(&self) -> String {
        self.token("finance-1", Role::Finance)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path`, with a bearer token when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut rb = self.client.get(self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        send(rb).await
    }

    /// POST a JSON value to `path`.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let mut rb = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        send(rb).await
    }

    /// POST raw bytes with a content type (or none).
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self.client.post(self.url(path)).body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        send(rb).await
    }

    /// Credits `user` through `channel` (a fresh receipt id); asserts 201.
    pub async fn top_up(&self, user: &str, channel: &str, amount: &str) -> Resp {
        let receipt = format!("r-{}", random_name());
        let r = self.top_up_receipt(user, channel, amount, &receipt).await;
        r.expect_status(201);
        r
    }

    pub async fn top_up_receipt(
        &self,
        user: &str,
        channel: &str,
        amount: &str,
        receipt: &str,
    ) -> Resp {
        self.post(
            "/v1/topups",
            Some(&self.admin()),
            &serde_json::json!({
                "user_id": user, "channel": channel, "amount": amount, "receipt_id": receipt
            }),
        )
        .await
    }

    /// Opens a room for `broadcaster`; returns its id.
    pub async fn open_room(&self, broadcaster: &str) -> String {
        let r = self
            .post(
                "/v1/rooms",
                Some(&self.token(broadcaster, Role::Broadcaster)),
                &serde_json::json!({ "title": format!("{broadcaster}'s stream") }),
            )
            .await;
        r.expect_status(201);
        assert_eq!(r.json["live"], true);
        assert_eq!(r.json["broadcaster_id"], broadcaster);
        r.json["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Buys a gift: `body` as JSON with `Idempotency-Key: key`.
    pub async fn buy(&self, token: &str, room: &str, key: &str, body: &Value) -> Resp {
        send(
            self.client
                .post(self.url(&format!("/v1/rooms/{room}/gifts")))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(body),
        )
        .await
    }

    /// Like [`Server::buy`], on a task of its own (for concurrent requests).
    pub fn buy_task(&self, token: &str, room: &str, key: &str, body: &Value) -> JoinHandle<Resp> {
        let rb = self
            .client
            .post(self.url(&format!("/v1/rooms/{room}/gifts")))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body);
        tokio::spawn(send(rb))
    }

    /// Buys `quantity` of `sticker` with a fresh key.
    pub async fn gift(&self, token: &str, room: &str, sticker: &str, quantity: u32) -> Resp {
        let key = format!("k-{}", random_name());
        self.buy(
            token,
            room,
            &key,
            &serde_json::json!({ "sticker_id": sticker, "quantity": quantity }),
        )
        .await
    }

    /// `user`'s wallet balance in minor units (read by finance).
    pub async fn balance(&self, user: &str) -> i64 {
        let r = self
            .get(&format!("/v1/wallet?user_id={user}"), Some(&self.finance()))
            .await;
        r.expect_status(200);
        minor(r.json["balance"].as_str().expect("balance"))
    }

    /// The finance summary; its ledger check must pass.
    pub async fn summary(&self) -> Value {
        let r = self.get("/v1/finance/summary", Some(&self.finance())).await;
        r.expect_status(200);
        assert_eq!(
            r.json["ledger_check"]["ok"], true,
            "ledger check failed: {}",
            r.body
        );
        r.json
    }

    /// What a request could have charged: `user`'s balance and the ledger's
    /// gift count and gross. Compare before and after to prove "nothing charged".
    pub async fn money(&self, user: &str) -> Money {
        let s = self.summary().await;
        Money {
            balance: self.balance(user).await,
            gifts: s["gifts"].as_u64().expect("gifts"),
            gross: minor(s["gross_gifts"].as_str().expect("gross_gifts")),
            wallets: minor(s["wallets_outstanding"].as_str().expect("wallets")),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The money a request could have moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub balance: i64,
    pub gifts: u64,
    pub gross: i64,
    pub wallets: i64,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub json: Value,
}

impl Resp {
    #[track_caller]
    pub fn expect_status(&self, status: u16) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
    }

    /// Asserts an error response: status, JSON content type, `error.code`
    /// and a non-empty message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.json["error"]["code"].as_str()),
            (status, Some(code)),
            "body: {}",
            self.body
        );
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error carries a message: {}",
            self.body
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "errors are JSON: {:?}",
            self.headers
        );
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and checks what every response must satisfy: never a 5xx,
/// never SQL, a panic or a stack trace in the body.
pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let resp = rb.send().await.expect("request reaches the server");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("body");
    assert!(status < 500, "a {status} response: {body}");
    for leak in ["sqlx", "SQL", "panicked", "stack backtrace", "src/", ".rs:"] {
        assert!(!body.contains(leak), "the body leaks {leak:?}: {body}");
    }
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        json,
    }
}

/// "12.34" → 1234 (USD has two decimals).
pub fn minor(amount: &str) -> i64 {
    let (neg, digits) = match amount.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, amount),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    assert!(
        frac.len() <= 2,
        "amount {amount:?} has more than 2 decimals"
    );
    let frac = format!("{frac:0<2}");
    let v = whole.parse::<i64>().expect("whole part") * 100 + frac.parse::<i64>().expect("cents");
    if neg {
        -v
    } else {
        v
    }
}

/// Minor units → "12.34".
pub fn fmt_minor(v: i64) -> String {
    format!("{}.{:02}", v / 100, v % 100)
}

/// Polls `f` until it returns `Some`, at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs an async test body once per ledger backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    };
}
