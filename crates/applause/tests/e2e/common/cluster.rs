//! Scaled clusters started by `deploy/local-cluster.sh` (stopped, database
//! dropped and Redis prefix swept on drop), and the cleanup helpers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

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
