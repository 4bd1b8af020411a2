//! Shared helpers of the end-to-end suite: the real `applause` binary as
//! child processes (killed on drop), scaled clusters started by
//! `deploy/local-cluster.sh` (stopped, database dropped and Redis prefix swept
//! on drop, also when a test fails), a client for the public HTTP API, and
//! WebSocket clients that check what they receive.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use applause_core::Role;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The JWT secret of every process the suite starts.
pub const SECRET: &str = "e2e-suite-secret-0123456789abcdef-0123";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Flags that lift the per-user and per-IP limits a test would otherwise trip
/// over (hundreds of viewers connect from one address).
pub const OPEN_LIMITS: &[&str] = &[
    "--gift-rate-per-s",
    "100000",
    "--gift-burst",
    "100000",
    "--connects-per-ip-per-s",
    "100000",
];

pub fn token(sub: &str, role: Role) -> String {
    applause_web::Authenticator::new(SECRET.as_bytes())
        .expect("secret")
        .mint(
            sub,
            role,
            Some(&format!("Name {sub}")),
            Duration::from_secs(3600),
        )
        .expect("token")
}

pub fn random_name() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..10)
        .map(|_| char::from(b'a' + r.random_range(0..26u8)))
        .collect()
}

/// Waits until `log` (a node's stderr) names the address it listens on.
async fn listening_addr(log: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(i) = text.find("applause is listening addr=") {
            let rest = &text[i + "applause is listening addr=".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            return rest[..end].to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("applause exited with {status} while starting:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "applause did not report its address:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Polls `GET {base}/readyz` until it answers 200.
pub async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} is not ready");
}

/// One `applause` process; SIGKILLed when dropped.
pub struct Node {
    child: Child,
    pub base: String,
}

impl Node {
    /// `applause serve` (embedded) with its data in `dir`, on a port of its own.
    pub async fn serve(dir: &Path, extra: &[&str]) -> Node {
        let log = dir.join(format!("serve-{}.log", random_name()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_applause"));
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(OPEN_LIMITS)
            .args(extra)
            .env("APPLAUSE_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn,applause=info")
            .env("NO_COLOR", "1")
            .env_remove("APPLAUSE_DATABASE_URL")
            .env_remove("APPLAUSE_REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = cmd.spawn().expect("start applause serve");
        let addr = listening_addr(&log, &mut child).await;
        let base = format!("http://{addr}");
        wait_ready(&base).await;
        Node { child, base }
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of the repository's `deploy/local-cluster.sh`.
fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local-cluster.sh")
}

/// A scaled deployment (`applause gateway` ×N, `applause gifts` ×M on
/// PostgreSQL and Redis) started by `deploy/local-cluster.sh --detach`.
pub struct Cluster {
    state: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl Cluster {
    pub fn start(gateways: usize, gifts: usize) -> Cluster {
        Cluster::start_on(gateways, gifts, REDIS_URL, None)
    }

    /// A cluster on the given Redis and, when given, an existing database
    /// (which the cluster then neither creates nor drops).
    pub fn start_on(
        gateways: usize,
        gifts: usize,
        redis_url: &str,
        database_url: Option<&str>,
    ) -> Cluster {
        let state = tempfile::tempdir().expect("state dir");
        let mut cmd = Command::new("bash");
        cmd.arg(cluster_script())
            .args(["start", "--detach", "--state-dir"])
            .arg(state.path())
            .args(["--gateways", &gateways.to_string()])
            .args(["--gifts", &gifts.to_string()])
            .args(["--redis-url", redis_url, "--pg-admin-url", PG_ADMIN_URL]);
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        let out = cmd
            .arg("--")
            .args(OPEN_LIMITS)
            .env("APPLAUSE_BIN", env!("CARGO_BIN_EXE_applause"))
            // The test script drops leftovers by this prefix, and only by it.
            .env("APPLAUSE_CLUSTER_DB_PREFIX", "applause_citest_cluster_")
            .env("APPLAUSE_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run deploy/local-cluster.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut cluster = Cluster {
            state,
            env: HashMap::new(),
        };
        cluster.env = cluster.read_env();
        assert!(
            out.status.success(),
            "local-cluster.sh failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The script prints what an operator needs: every URL and the secret.
        for url in cluster.gateways().iter().chain(&cluster.gifts()) {
            assert!(
                stdout.contains(url.as_str()),
                "{url} not printed:\n{stdout}"
            );
        }
        assert!(stdout.contains(SECRET), "secret not printed:\n{stdout}");
        cluster
    }

    fn read_env(&self) -> HashMap<String, String> {
        let text =
            std::fs::read_to_string(self.state.path().join("cluster.env")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect()
    }

    fn urls(&self, key: &str) -> Vec<String> {
        self.env
            .get(key)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn gateways(&self) -> Vec<String> {
        self.urls("GATEWAY_URLS")
    }

    pub fn gifts(&self) -> Vec<String> {
        self.urls("GIFTS_URLS")
    }

    pub fn redis_prefix(&self) -> String {
        self.env["APPLAUSE_REDIS_PREFIX"].clone()
    }

    /// The pid of node `name` (such as `gifts-1`) from the state directory.
    pub fn pid(&self, name: &str) -> u32 {
        let pids = std::fs::read_to_string(self.state.path().join("pids")).expect("pids");
        pids.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(name)).then(|| f.next().and_then(|p| p.parse().ok()))?
            })
            .unwrap_or_else(|| panic!("no pid for {name} in\n{pids}"))
    }

    /// The tail of every node's log, for a failing test's message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut paths: Vec<_> = std::fs::read_dir(self.state.path())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.sort();
        for p in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("== {}\n", p.display()));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// `kill -9` of one node.
    pub fn kill9(&self, name: &str) {
        let pid = self.pid(name);
        let s = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(s.success(), "kill -9 {pid}");
        // Wait for it to be gone (it is the script's orphan, reaped by init).
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{name} (pid {pid}) survived kill -9");
    }

    /// `local-cluster.sh add KIND`: one more node; returns its URL.
    pub fn add(&mut self, kind: &str) -> String {
        let out = Command::new("bash")
            .arg(cluster_script())
            .args(["add", kind, "--state-dir"])
            .arg(self.state.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run local-cluster.sh add");
        assert!(
            out.status.success(),
            "local-cluster.sh add {kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.env = self.read_env();
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        line.rsplit_once(' ').expect("name: url").1.to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(cluster_script())
            .args(["stop", "--state-dir"])
            .arg(self.state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Belt and braces when the script could not clean up: the database
        // and the Redis keys of this cluster only (SCAN + DEL, never FLUSHDB).
        let db = self.env.get("CLUSTER_DB_NAME").cloned();
        let prefix = self.env.get("APPLAUSE_REDIS_PREFIX").cloned();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Some(db) = db.filter(|d| !d.is_empty()) {
                    drop_database(&db).await;
                }
                if let Some(p) = prefix.filter(|p| !p.is_empty()) {
                    let _ = delete_redis_keys(&format!("{p}*")).await;
                }
            });
        })
        .join();
    }
}

pub async fn drop_database(name: &str) {
    use sqlx::Executor;
    if let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN_URL).await {
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
            .await;
        admin.close().await;
    }
}

/// SCAN + DEL of the keys matching `pattern`; returns how many were deleted.
pub async fn delete_redis_keys(pattern: &str) -> redis::RedisResult<usize> {
    let client = redis::Client::open(REDIS_URL)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut con)
            .await?;
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL").arg(&keys).query_async(&mut con).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

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

/// The board a set of 201 bodies implies: total per sender, amount desc, id asc.
pub fn expected_board(bodies: &[Value]) -> Vec<(String, String)> {
    let mut cents: BTreeMap<String, i64> = BTreeMap::new();
    for b in bodies {
        *cents
            .entry(b["sender_id"].as_str().expect("sender_id").to_owned())
            .or_default() += minor(b["amount"].as_str().expect("amount"));
    }
    let mut v: Vec<_> = cents.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .map(|(u, c)| (u, format!("{}.{:02}", c / 100, c % 100)))
        .collect()
}

/// "12.34" → 1234 (USD, two decimals).
pub fn minor(amount: &str) -> i64 {
    let (units, cents) = amount.split_once('.').unwrap_or((amount, "0"));
    units.parse::<i64>().expect("units") * 100
        + format!("{cents:0<2}").parse::<i64>().expect("cents")
}

/// What a WebSocket read came to.
#[derive(Debug)]
pub enum Got {
    Frame(Value),
    Closed(Option<u16>),
    Timeout,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One WebSocket client of a room.
pub struct Viewer {
    ws: WsStream,
    pub welcome: Value,
}

impl Viewer {
    /// Connects to `base` (an http:// URL) and reads the welcome frame.
    pub async fn connect(base: &str, room: &str, token: Option<&str>) -> Viewer {
        let mut url = format!("{}/v1/ws?room={room}", base.replacen("http://", "ws://", 1));
        if let Some(t) = token {
            url.push_str(&format!("&access_token={t}"));
        }
        let mut last = None;
        for _ in 0..5 {
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((ws, _)) => {
                    let mut v = Viewer {
                        ws,
                        welcome: Value::Null,
                    };
                    match v.next(Duration::from_secs(10)).await {
                        Got::Frame(f) if f["type"] == "welcome" => {
                            v.welcome = f;
                            return v;
                        }
                        other => panic!("expected a welcome, got {other:?}"),
                    }
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("cannot connect to {url}: {last:?}");
    }

    pub fn welcome_seq(&self) -> u64 {
        self.welcome["seq"].as_u64().expect("welcome seq")
    }

    pub fn epoch(&self) -> u64 {
        self.welcome["epoch"].as_u64().expect("epoch")
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send frame");
    }

    /// The next JSON frame (pongs skipped), a close, or a timeout.
    pub async fn next(&mut self, wait: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Got::Timeout,
                Ok(None) => return Got::Closed(None),
                Ok(Some(Err(_))) => return Got::Closed(None),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("frames are JSON");
                    if v["type"] != "pong" {
                        return Got::Frame(v);
                    }
                }
                Message::Close(c) => return Got::Closed(c.map(|c| u16::from(c.code))),
                _ => {}
            }
        }
    }

    /// Reads frames until `done` says so or `wait` passes; returns them all.
    pub async fn read_until(
        &mut self,
        wait: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        while !done(&frames) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Got::Frame(f) => frames.push(f),
                Got::Closed(_) | Got::Timeout => break,
            }
        }
        frames
    }

    /// Every frame that arrives within `wait` (until the connection closes).
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        self.read_until(wait, |_| false).await
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// The room events among `frames` (everything carrying a `seq`).
pub fn events(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["seq"].is_u64() && f["type"] != "welcome")
        .collect()
}

/// The gift ids of the gift frames among `frames`, in order.
pub fn gift_ids(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "gift")
        .map(|f| f["gift_id"].as_str().expect("gift_id").to_owned())
        .collect()
}

/// Asserts the room events among `frames` are exactly `after+1, after+2, …`
/// (nothing missing, nothing twice, nothing out of order); returns the last seq.
pub fn assert_consecutive(who: &str, frames: &[Value], after: u64) -> u64 {
    let mut expect = after + 1;
    for e in events(frames) {
        let seq = e["seq"].as_u64().expect("seq");
        assert_eq!(seq, expect, "{who}: expected seq {expect}, got {e}");
        expect += 1;
    }
    expect - 1
}

/// Asserts every purchase in `bodies` is among `frames` exactly once, with
/// the seq of its 201, and that no other gift arrived.
pub fn assert_all_gifts_once(who: &str, frames: &[Value], bodies: &[Value]) {
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    for f in frames.iter().filter(|f| f["type"] == "gift") {
        got.entry(f["gift_id"].as_str().expect("gift_id").to_owned())
            .or_default()
            .push(f["seq"].as_u64().expect("seq"));
    }
    for b in bodies {
        let id = b["gift_id"].as_str().expect("gift_id");
        let seqs = got.remove(id).unwrap_or_default();
        assert_eq!(
            seqs,
            vec![b["seq"].as_u64().expect("seq")],
            "{who}: gift {id} (seq {}) delivered {} times",
            b["seq"],
            seqs.len()
        );
    }
    assert!(got.is_empty(), "{who}: unexpected gifts {got:?}");
}

/// Gifts among `frames` seen so far.
pub fn gift_count(frames: &[Value]) -> usize {
    frames.iter().filter(|f| f["type"] == "gift").count()
}
