//! Shared helpers of the end-to-end suite: the real `applause` binary as
//! child processes (killed on drop), scaled clusters started by
//! `deploy/local-cluster.sh` (stopped, database dropped and Redis prefix swept
//! on drop, also when a test fails), a client for the public HTTP API, and
//! WebSocket clients that check what they receive.
//!
//! Split by what they drive: processes here, `cluster` (scaled
//! deployments, their database and Redis keys), `api` (HTTP), `ws`
//! (WebSocket viewers and what they must have seen).

mod api;
mod cluster;
mod ws;

pub use api::*;
pub use cluster::*;
pub use ws::*;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use applause_core::Role;

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
/// "12.34" → 1234 (USD, two decimals).
pub fn minor(amount: &str) -> i64 {
    let (units, cents) = amount.split_once('.').unwrap_or((amount, "0"));
    units.parse::<i64>().expect("units") * 100
        + format!("{cents:0<2}").parse::<i64>().expect("cents")
}
