//! Chaos, scaled: one cluster (2 gateways, 2 gifts nodes) on a private Redis
//! and on PostgreSQL behind a cut-able proxy, under continuous purchases
//! retried with their keys, goes through in turn: `kill -9` of a gifts node,
//! `kill -9` of a gateway (its viewer reconnects to the other and resumes),
//! a network cut to PostgreSQL (503 `unavailable` meanwhile, then it resumes
//! by itself), a network cut to Redis, and Redis restarted empty. Afterwards
//! every 201 reached both viewers exactly once and in order, nothing was
//! charged twice, the boards equal the ledger and every invariant holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use applause_core::Role;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::common::*;
use crate::proxy::Proxy;

/// Each buyer's pause after a purchase: four buyers stay under ~150 gifts/s.
const BUY_PAUSE: Duration = Duration::from_millis(25);

/// A redis-server of the test's own, so it can be restarted and flushed.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(port, dir.path());
        PrivateRedis { port, dir, child }
    }

    fn spawn(port: u16, dir: &std::path::Path) -> std::process::Child {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Kills it and starts an empty one on the same port: everything it held
    /// (bus history, room cursors, boards, generation markers) is gone.
    fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, self.dir.path());
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database of the test's own, dropped at the end (also on failure).
struct Database(String);

impl Database {
    async fn create() -> Database {
        use sqlx::Executor;
        let name = format!("applause_citest_chaos_{}", random_name());
        let admin = sqlx::PgPool::connect(PG_ADMIN_URL).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap();
        Database(name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_database(&name));
        })
        .join();
    }
}

/// What the buyers saw: every 201 (with the node that answered it and its
/// key), how many 503s the outages cost, and the keys that met one.
#[derive(Default)]
pub(crate) struct Bought {
    pub bodies: Vec<Value>,
    pub nodes: Vec<String>,
    pub keys: Vec<(String, String)>,
    pub unavailable: usize,
    pub retried_after_503: Vec<usize>,
}

/// Buys back to back through the gifts nodes in turn, retrying each key
/// (another node on a dead one, later on a 503) until it is answered for good.
/// Any answer but 201, 503 `unavailable` or 409 `idempotency_key_in_flight`
/// fails the test (so does a 503 with another code, or any other 5xx).
pub(crate) async fn buyer(
    user: String,
    nodes: Vec<Api>,
    room: String,
    bought: Arc<Mutex<Bought>>,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let tok = token(&user, Role::Viewer);
    let body = json!({"sticker_id": "rose", "quantity": 1});
    let mut attempt = 0usize;
    for i in 0.. {
        while paused.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let key = format!("{user}-{i}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut met_503 = false;
        loop {
            assert!(Instant::now() < deadline, "{key} was never answered");
            let api = &nodes[attempt % nodes.len()];
            let path = format!("/v1/rooms/{room}/gifts");
            match api.try_post(&path, &tok, Some(&key), &body).await {
                Ok((201, b)) => {
                    let mut bought = bought.lock().await;
                    if met_503 {
                        let i = bought.bodies.len();
                        bought.retried_after_503.push(i);
                    }
                    bought.bodies.push(b);
                    bought.nodes.push(api.base.clone());
                    bought.keys.push((user.clone(), key.clone()));
                    drop(bought);
                    // Paced: an outage of a few seconds stays inside the
                    // gateways' resume history (1,000 events), beyond which
                    // a resync is the documented answer, not a loss.
                    tokio::time::sleep(BUY_PAUSE).await;
                    break;
                }
                Ok((503, b)) => {
                    assert_eq!(b["error"]["code"], "unavailable", "{key}: 503 {b}");
                    met_503 = true;
                    bought.lock().await.unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok((409, b)) if b["error"]["code"] == "idempotency_key_in_flight" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok((s, b)) => panic!("{key}: {s} {b}"),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// What one viewer received, across its reconnects.
#[derive(Default)]
pub(crate) struct Watched {
    pub frames: Vec<Value>,
    pub welcome_seq: u64,
    pub reconnects: usize,
}

/// Watches the room through gateway deaths: on a closed connection it
/// reconnects to the next gateway and resumes after the last seq it saw.
pub(crate) async fn viewer(
    gateways: Vec<String>,
    first: usize,
    mut v: Viewer,
    room: String,
    seen: Arc<Mutex<Watched>>,
    stop: Arc<AtomicBool>,
) {
    let mut g = first;
    let epoch = v.epoch();
    let mut last = v.welcome_seq();
    seen.lock().await.welcome_seq = last;
    while !stop.load(Ordering::SeqCst) {
        match v.next(Duration::from_millis(100)).await {
            Got::Frame(f) => {
                if let Some(seq) = f["seq"].as_u64() {
                    last = last.max(seq);
                }
                seen.lock().await.frames.push(f);
            }
            Got::Closed(_) => {
                g = (g + 1) % gateways.len();
                v = Viewer::connect(&gateways[g], &room, None).await;
                v.send(json!({"type": "resume", "epoch": epoch, "since_seq": last}))
                    .await;
                seen.lock().await.reconnects += 1;
            }
            Got::Timeout => {}
        }
    }
}

/// What a failing run needs to be understood: Redis's subscriptions, clients
/// and room cursors, the nodes' publish and delivery counters, their logs.
async fn diagnosis(cluster: &Cluster, redis_port: u16) -> String {
    let script = format!(
        "redis-cli -p {redis_port} PUBSUB CHANNELS '*'; redis-cli -p {redis_port} CLIENT LIST; \
         for k in $(redis-cli -p {redis_port} --scan --pattern '*seq'); do \
         echo $k $(redis-cli -p {redis_port} GET $k); done"
    );
    let redis = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut metrics = String::new();
    for base in cluster.gateways().iter().chain(&cluster.gifts()) {
        let Ok(r) = reqwest::get(format!("{base}/metrics")).await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        for l in text.lines().filter(|l| {
            !l.starts_with('#')
                && ["outbox", "published", "errors", "deliveries"]
                    .iter()
                    .any(|k| l.contains(k))
        }) {
            metrics.push_str(&format!("{base} {l}\n"));
        }
    }
    format!("{redis}\n{metrics}\n{}", cluster.log_tails(30))
}

/// Waits until every viewer holds every gift bought so far.
pub(crate) async fn settle(
    cluster: &Cluster,
    port: u16,
    viewers: &[Arc<Mutex<Watched>>],
    bought: &Mutex<Bought>,
    why: &str,
) {
    let want = bought.lock().await.bodies.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    for v in viewers {
        while gift_count(&v.lock().await.frames) < want {
            let resynced = v
                .lock()
                .await
                .frames
                .iter()
                .any(|f| f["type"] == "resync_required");
            assert!(!resynced, "{why}: a viewer was asked to resync");
            if Instant::now() >= deadline {
                let v = v.lock().await;
                let got: std::collections::BTreeSet<u64> = v
                    .frames
                    .iter()
                    .filter(|f| f["type"] == "gift")
                    .filter_map(|f| f["seq"].as_u64())
                    .collect();
                let missing: Vec<u64> = bought
                    .lock()
                    .await
                    .bodies
                    .iter()
                    .filter_map(|b| b["seq"].as_u64())
                    .filter(|s| !got.contains(s))
                    .collect();
                // A seq answered twice (two 201s for one gift, or two gifts
                // with one seq) shows as nothing missing and yet too few.
                let mut answered: BTreeMap<u64, Vec<String>> = BTreeMap::new();
                let bought = bought.lock().await;
                for (i, b) in bought.bodies.iter().enumerate() {
                    let key = bought.keys.get(i).map(|k| k.1.as_str()).unwrap_or("?");
                    let node = bought.nodes.get(i).map(String::as_str).unwrap_or("?");
                    answered
                        .entry(b["seq"].as_u64().unwrap_or(0))
                        .or_default()
                        .push(format!("{key} at {node}: {b}"));
                }
                answered.retain(|_, v| v.len() > 1);
                panic!(
                    "{why}: the viewers never caught up ({} of {want}): missing seqs {missing:?}, answered more than once {answered:?}\n{}",
                    gift_count(&v.frames),
                    diagnosis(cluster, port).await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_through_crashes_cuts_and_a_lost_redis_loses_nothing() {
    let mut redis = PrivateRedis::start();
    let redis_proxy = Proxy::start(redis.port).await;
    let pg_proxy = Proxy::start(5432).await;
    let db = Database::create().await;
    let cluster = Cluster::start_on(
        2,
        2,
        &format!("redis://127.0.0.1:{}", redis_proxy.port),
        Some(&format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            pg_proxy.port, db.0
        )),
    );
    let nodes: Vec<Api> = cluster.gifts().iter().map(|u| Api::new(u)).collect();
    let api = nodes[1].clone();
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    let buyers: Vec<String> = (0..4).map(|i| format!("chaos{i}")).collect();
    for b in &buyers {
        api.top_up(b, "1000.00").await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stop_viewers = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let bought: Arc<Mutex<Bought>> = Arc::default();
    let mut viewers = Vec::new();
    let mut viewer_tasks = Vec::new();
    for first in 0..2 {
        let seen: Arc<Mutex<Watched>> = Arc::default();
        viewers.push(seen.clone());
        // Welcomed before the first purchase, so every gift is after it.
        let v = Viewer::connect(&cluster.gateways()[first], &room, None).await;
        viewer_tasks.push(tokio::spawn(viewer(
            cluster.gateways(),
            first,
            v,
            room.clone(),
            seen,
            stop_viewers.clone(),
        )));
    }
    let mut buyer_tasks = Vec::new();
    for b in &buyers {
        buyer_tasks.push(tokio::spawn(buyer(
            b.clone(),
            nodes.clone(),
            room.clone(),
            bought.clone(),
            paused.clone(),
            stop.clone(),
        )));
    }
    let count = Arc::new(AtomicUsize::new(0));
    let phase = |name: &'static str| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            eprintln!("chaos phase: {name}");
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
    };

    phase("warm up").await;
    cluster.kill9("gifts-1");
    phase("gifts-1 killed").await;
    cluster.kill9("gateway-1");
    phase("gateway-1 killed").await;
    pg_proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg_proxy.restore();
    phase("PostgreSQL cut for 2 s, restored").await;
    redis_proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis_proxy.restore();
    phase("Redis cut for 2 s, restored").await;
    // A flush between purchases: the boards and the bus forget everything.
    paused.store(true, Ordering::SeqCst);
    settle(
        &cluster,
        redis.port,
        &viewers,
        &bought,
        "before the Redis restart",
    )
    .await;
    redis.restart_empty();
    paused.store(false, Ordering::SeqCst);
    phase("Redis restarted empty").await;
    stop.store(true, Ordering::SeqCst);
    for t in buyer_tasks {
        t.await.unwrap();
    }
    settle(&cluster, redis.port, &viewers, &bought, "at the end").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_viewers.store(true, Ordering::SeqCst);
    for t in viewer_tasks {
        t.await.unwrap();
    }

    let bought = bought.lock().await;
    assert!(
        bought.unavailable > 0,
        "the PostgreSQL cut was never answered 503"
    );
    for (i, v) in viewers.iter().enumerate() {
        let v = v.lock().await;
        let who = format!("viewer {i}");
        assert!(
            v.frames.iter().all(|f| f["type"] != "resync_required"),
            "{who} was asked to resync"
        );
        assert_consecutive(&who, &v.frames, v.welcome_seq);
        assert_all_gifts_once(&who, &v.frames, &bought.bodies);
    }
    assert!(
        viewers[0].lock().await.reconnects >= 1,
        "the viewer of gateway-1 never reconnected"
    );
    // One charge per 201, the boards equal the ledger, every invariant holds.
    assert_charged_once(&api, &buyers, &bought.bodies, 100_000).await;
    let admin = token("admin", Role::Admin);
    let want_board = expected_board(&bought.bodies);
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.board(&room, "all").await != want_board {
        assert!(
            Instant::now() < deadline,
            "the boards were not rebuilt exact\n{}",
            cluster.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, summary) = api.get("/v1/finance/summary", Some(&admin)).await;
    assert_eq!(s, 200, "{summary}");
    assert_eq!(summary["gifts"].as_u64(), Some(bought.bodies.len() as u64));
    assert_eq!(summary["ledger_check"]["ok"], true, "{summary}");
    eprintln!(
        "scaled chaos: {} phases, {} gifts, {} answers 503 during the cut, {} reconnects; lost 0, charged twice 0",
        count.load(Ordering::SeqCst),
        bought.bodies.len(),
        bought.unavailable,
        viewers[0].lock().await.reconnects
    );
    drop(cluster);
}
