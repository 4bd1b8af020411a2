//! Shared helpers: a running Redis, fresh boards under a random prefix,
//! update builders, injected times, and an independent model of the boards.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::OnceLock;

use applause_leaderboard::{BoardUpdate, Entry, Leaderboard, MemoryBoards, RedisBoards, Window};
use chrono::{DateTime, Datelike};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Starts Redis the way CI does if nothing answers on 6379.
fn ensure_redis() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let ping = Command::new("redis-cli").arg("ping").output();
        if matches!(&ping, Ok(out) if out.stdout.starts_with(b"PONG")) {
            return;
        }
        let _ = std::fs::create_dir_all("/var/lib/redis");
        let _ = std::fs::create_dir_all("/var/log/redis");
        let status = Command::new("redis-server")
            .args([
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1 -::1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
                "--logfile",
                "/var/log/redis/ci.log",
            ])
            .status()
            .expect("redis-server must be installed for the leaderboard tests");
        assert!(status.success(), "redis-server failed to start");
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let ping = Command::new("redis-cli").arg("ping").output();
            if matches!(&ping, Ok(out) if out.stdout.starts_with(b"PONG")) {
                return;
            }
        }
        panic!("redis-server did not answer PING");
    });
}

/// A random key prefix, so tests sharing the server never see each other.
pub fn random_prefix() -> String {
    format!("lbtest:{:016x}", rand::random::<u64>())
}

pub async fn redis_boards(prefix: &str) -> RedisBoards {
    ensure_redis();
    RedisBoards::connect(REDIS_URL, prefix)
        .await
        .expect("connect to redis")
}

/// Both twins, fresh: Redis under a new random prefix.
pub async fn twins() -> (MemoryBoards, RedisBoards) {
    (MemoryBoards::new(), redis_boards(&random_prefix()).await)
}

/// A raw connection for what a test does behind the boards' back.
pub async fn raw() -> redis::aio::MultiplexedConnection {
    ensure_redis();
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key under `prefix`, found with SCAN.
pub async fn keys_under(prefix: &str) -> Vec<String> {
    let mut con = raw().await;
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            return keys;
        }
    }
}

/// Deletes this test's keys (SCAN + DEL): never FLUSHDB on a shared server.
pub async fn delete_prefix(prefix: &str) -> usize {
    let keys = keys_under(prefix).await;
    let mut con = raw().await;
    for chunk in keys.chunks(500) {
        let _: i64 = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    keys.len()
}

pub fn update(
    id: &str,
    room: &str,
    broadcaster: &str,
    sender: &str,
    amount_minor: i64,
    at_ms: i64,
) -> BoardUpdate {
    BoardUpdate {
        update_id: id.to_owned(),
        room_id: room.to_owned(),
        broadcaster_id: broadcaster.to_owned(),
        sender_id: sender.to_owned(),
        sender_name: format!("{sender} name"),
        amount_minor,
        at_ms,
    }
}

/// The real clock: what a caller passes as `now` to `rebuild`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A Monday 00:00 UTC one to two weeks ahead: injected times around it stay
/// in the future, so Redis (which expires period boards by its own clock)
/// keeps every board the test reads.
pub fn monday_ms() -> i64 {
    let now = now_ms();
    let day = now.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday: +3 makes Monday 0.
    let weekday = (day + 3).rem_euclid(7);
    (day - weekday + 14) * DAY_MS
}

/// (user, amount) pairs of a read, with ranks checked to be 1..=n.
pub fn pairs(entries: &[Entry]) -> Vec<(String, i64)> {
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e.rank as usize,
            i + 1,
            "ranks are dense from 1: {entries:?}"
        );
    }
    entries
        .iter()
        .map(|e| (e.user_id.clone(), e.amount_minor))
        .collect()
}

pub fn owned(expected: &[(&str, i64)]) -> Vec<(String, i64)> {
    expected
        .iter()
        .map(|(u, a)| ((*u).to_owned(), *a))
        .collect()
}

pub async fn top(
    b: &dyn Leaderboard,
    room: &str,
    broadcaster: &str,
    window: Window,
    now: i64,
) -> Vec<(String, i64)> {
    pairs(&b.top(room, broadcaster, window, 100, now).await.unwrap())
}

pub async fn global(b: &dyn Leaderboard, window: Window, now: i64) -> Vec<(String, i64)> {
    pairs(&b.top_broadcasters(window, 100, now).await.unwrap())
}

/// An independent model of the product rules: a plain map per board, sorted
/// on read. Deliberately shares no code with the crate.
#[derive(Default)]
pub struct Model {
    seen: HashSet<String>,
    boards: HashMap<String, HashMap<String, i64>>,
    pub names: HashMap<String, String>,
}

fn day_of(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

fn week_of(ms: i64) -> String {
    let w = DateTime::from_timestamp_millis(ms).unwrap().iso_week();
    format!("{}-{}", w.year(), w.week())
}

impl Model {
    pub fn apply(&mut self, u: &BoardUpdate) {
        if !self.seen.insert(u.update_id.clone()) {
            return;
        }
        let (b, r, s, a, t) = (
            &u.broadcaster_id,
            &u.room_id,
            &u.sender_id,
            u.amount_minor,
            u.at_ms,
        );
        for key in [
            format!("live/{b}/{r}"),
            format!("day/{b}/{}", day_of(t)),
            format!("week/{b}/{}", week_of(t)),
            format!("all/{b}"),
        ] {
            *self
                .boards
                .entry(key)
                .or_default()
                .entry(s.clone())
                .or_default() += a;
        }
        for key in [
            format!("gday/{}", day_of(t)),
            format!("gweek/{}", week_of(t)),
            "gall".to_owned(),
        ] {
            *self
                .boards
                .entry(key)
                .or_default()
                .entry(b.clone())
                .or_default() += a;
        }
        self.names.insert(s.clone(), u.sender_name.clone());
    }

    fn sorted(&self, key: &str) -> Vec<(String, i64)> {
        let mut rows: Vec<(String, i64)> = self
            .boards
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        rows
    }

    pub fn top(
        &self,
        room: &str,
        broadcaster: &str,
        window: Window,
        now: i64,
    ) -> Vec<(String, i64)> {
        let key = match window {
            Window::Live => format!("live/{broadcaster}/{room}"),
            Window::Day => format!("day/{broadcaster}/{}", day_of(now)),
            Window::Week => format!("week/{broadcaster}/{}", week_of(now)),
            Window::All => format!("all/{broadcaster}"),
        };
        self.sorted(&key)
    }

    pub fn global(&self, window: Window, now: i64) -> Vec<(String, i64)> {
        let key = match window {
            Window::Live => unreachable!("no global live board"),
            Window::Day => format!("gday/{}", day_of(now)),
            Window::Week => format!("gweek/{}", week_of(now)),
            Window::All => "gall".to_owned(),
        };
        self.sorted(&key)
    }
}

/// Everything readable for `rooms` at `nows`, as text: tops (capped at 100
/// like the API), every user's `me`, and the global boards.
pub async fn snapshot(
    b: &dyn Leaderboard,
    rooms: &[(String, String)],
    users: &[String],
    nows: &[i64],
) -> Vec<String> {
    let mut out = Vec::new();
    for &now in nows {
        for (room, broadcaster) in rooms {
            for window in Window::ALL {
                let entries = b.top(room, broadcaster, window, 100, now).await.unwrap();
                out.push(format!("{now} {room} {window} top {entries:?}"));
                for user in users {
                    let me = b.me(room, broadcaster, window, user, now).await.unwrap();
                    out.push(format!("{now} {room} {window} me {user} {me:?}"));
                }
            }
        }
        for window in [Window::Day, Window::Week, Window::All] {
            let entries = b.top_broadcasters(window, 100, now).await.unwrap();
            out.push(format!("{now} global {window} {entries:?}"));
        }
    }
    out
}

/// The model's view of the same reads, in [`pairs`] form.
pub fn model_tops(
    model: &Model,
    rooms: &[(String, String)],
    nows: &[i64],
) -> Vec<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for &now in nows {
        for (room, broadcaster) in rooms {
            for window in Window::ALL {
                let mut rows = model.top(room, broadcaster, window, now);
                rows.truncate(100);
                out.push(rows);
            }
        }
        for window in [Window::Day, Window::Week, Window::All] {
            let mut rows = model.global(window, now);
            rows.truncate(100);
            out.push(rows);
        }
    }
    out
}

/// The same reads from a board, in [`pairs`] form.
pub async fn board_tops(
    b: &dyn Leaderboard,
    rooms: &[(String, String)],
    nows: &[i64],
) -> Vec<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for &now in nows {
        for (room, broadcaster) in rooms {
            for window in Window::ALL {
                out.push(top(b, room, broadcaster, window, now).await);
            }
        }
        for window in [Window::Day, Window::Week, Window::All] {
            out.push(global(b, window, now).await);
        }
    }
    out
}

/// Compares board reads board by board, naming the first that differs
/// (whole-vector diffs of thousands of entries are unreadable).
pub fn assert_same_tops(
    actual: &[Vec<(String, i64)>],
    expected: &[Vec<(String, i64)>],
    what: &str,
) {
    assert_eq!(actual.len(), expected.len(), "{what}: number of boards");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        if a != e {
            let first = a.iter().zip(e).position(|(x, y)| x != y);
            panic!(
                "{what}: board #{i} differs (lengths {} vs {}, first difference at {first:?}: {:?} vs {:?})",
                a.len(),
                e.len(),
                first.map(|f| &a[f]),
                first.map(|f| &e[f]),
            );
        }
    }
}

/// Boards on the test binary's own three-master Redis Cluster (started on
/// first use, gone with the test process).
pub async fn cluster_boards(prefix: &str) -> RedisBoards {
    let url = tokio::task::spawn_blocking(|| applause_redis::test_cluster::shared().url())
        .await
        .expect("test cluster started");
    RedisBoards::connect(&url, prefix)
        .await
        .expect("connect to the test cluster")
}

/// Every key under `prefix` on each master of the shared test cluster
/// (SCAN per node: a cluster has no global keyspace scan).
pub async fn cluster_keys_under(prefix: &str) -> Vec<Vec<String>> {
    let cluster = tokio::task::spawn_blocking(applause_redis::test_cluster::shared)
        .await
        .unwrap();
    let mut per_node = Vec::new();
    for i in 0..cluster.ports().len() {
        let mut con = redis::Client::open(cluster.node_url(i))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .unwrap();
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        per_node.push(keys);
    }
    per_node
}

/// Deletes this test's keys on every master of the shared test cluster.
pub async fn cluster_delete_prefix(prefix: &str) -> usize {
    let cluster = tokio::task::spawn_blocking(applause_redis::test_cluster::shared)
        .await
        .unwrap();
    let per_node = cluster_keys_under(prefix).await;
    let mut deleted = 0;
    for (i, keys) in per_node.iter().enumerate() {
        let mut con = redis::Client::open(cluster.node_url(i))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        // One DEL per key: keys of several slots cannot share one DEL.
        for key in keys {
            let n: usize = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut con)
                .await
                .unwrap();
            deleted += n;
        }
    }
    deleted
}
