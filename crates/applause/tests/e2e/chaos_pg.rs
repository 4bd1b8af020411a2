//! Chaos, scaled, PostgreSQL itself: a cluster (1 gateway, 2 gifts nodes) on
//! a PostgreSQL server of the test's own and the shared Redis (a key prefix
//! of its own), under continuous purchases retried with their keys, while
//! that server is crashed and restarted, in turn with `pg_ctl stop -m
//! immediate` and with `kill -9` of the postmaster (crash recovery on every
//! start). Meanwhile purchases answer 503 `unavailable` and nothing else;
//! afterwards both gifts nodes sell again by themselves (no node restarted),
//! every 201 reached the viewers exactly once and in order, a key retried
//! across the crash answers what it answered, nothing was charged twice and
//! the ledger check passes, online and offline.
//!
//! `APPLAUSE_CHAOS_PG_RESTARTS` sets the number of restarts (default 2: one
//! of each kind); `scripts/chaos.sh` runs more.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use applause_core::Role;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::chaos::{buyer, settle, viewer, Bought, Watched};
use crate::common::*;
use crate::private_pg::PrivatePg;

/// How long the server stays down before it is started again (crash
/// recovery then takes a few seconds more): longer than the nodes' pool
/// acquire timeout (3 s), so a request waiting for a connection gives up
/// with a 503 rather than ride the outage out, however fast the recovery.
/// The outage's length, not a correctness condition.
/// `APPLAUSE_CHAOS_PG_DOWN_MS` changes it.
const DOWN: Duration = Duration::from_millis(3500);
/// How long the ledger waits for PostgreSQL to tell whether a COMMIT whose
/// answer was lost took effect (`applause_ledger`'s `RESOLVE_WITHIN`).
const LOST_COMMIT_RESOLVED_WITHIN: Duration = Duration::from_secs(10);
/// The redis-server the cluster shares (for the failure diagnosis).
const REDIS_PORT: u16 = 6379;

/// One restart as measured.
struct Restart {
    how: &'static str,
    unavailable: usize,
    outage: Duration,
    resumed_after: Duration,
    delivered_after: Duration,
    /// Purchases answered 503 whose gift had committed before the crash
    /// (the commit's answer was lost with the connection); their retry
    /// with the key answered 201 with that gift.
    ambiguous: usize,
}

/// Polls `done` until it holds, panicking with `why` (and the logs) after
/// `within`; a buyer that ended early (it panicked) is reported at once.
async fn wait_for<F, Fut>(
    within: Duration,
    why: &str,
    buyers: &mut [JoinHandle<()>],
    logs: impl Fn() -> String,
    mut done: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        if let Some(t) = buyers.iter_mut().find(|t| t.is_finished()) {
            t.await.expect("a buyer failed");
            panic!("a buyer stopped early");
        }
        assert!(Instant::now() < deadline, "{why}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a whole number")),
    )
}

/// What the reads saw while the server was down: `(path, status, code)`.
type Probed = Arc<Mutex<Vec<(String, u16, String)>>>;

/// Reads every node's `/readyz` and, on the gifts nodes, a wallet and the
/// finance summary (ledger reads), each in a loop of its own until `stop`,
/// recording every answer.
fn probe(
    gateways: &[String],
    gifts: &[String],
    seen: &Probed,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let mut reads: Vec<(String, &str, bool)> = Vec::new();
    for base in gateways.iter().chain(gifts) {
        reads.push((base.clone(), "/readyz", false));
    }
    for base in gifts {
        reads.push((base.clone(), "/v1/wallet?user_id=pgchaos0", true));
        reads.push((base.clone(), "/v1/finance/summary", true));
    }
    let admin = token("admin", Role::Admin);
    reads
        .into_iter()
        .map(|(base, path, auth)| {
            let (seen, stop, admin) = (seen.clone(), stop.clone(), admin.clone());
            tokio::spawn(async move {
                let api = Api::new(&base);
                while !stop.load(Ordering::SeqCst) {
                    let (s, b) = api.get(path, auth.then_some(admin.as_str())).await;
                    let code = b["error"]["code"].as_str().unwrap_or_default().to_owned();
                    seen.lock().await.push((format!("{base}{path}"), s, code));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_through_postgresql_crashes_and_restarts_loses_nothing() {
    let restarts = env_number("APPLAUSE_CHAOS_PG_RESTARTS").unwrap_or(2).max(1) as usize;
    let down = env_number("APPLAUSE_CHAOS_PG_DOWN_MS").map_or(DOWN, Duration::from_millis);
    let mut pg = PrivatePg::start().await;
    pg.create_database("applause").await;
    let cluster = Cluster::start_on(1, 2, REDIS_URL, Some(&pg.url("applause")));
    let gifts = cluster.gifts();
    let nodes: Vec<Api> = gifts.iter().map(|u| Api::new(u)).collect();
    let api = nodes[0].clone();
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    let buyers: Vec<String> = (0..4).map(|i| format!("pgchaos{i}")).collect();
    for b in &buyers {
        api.top_up(b, "1000.00").await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stop_viewers = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let bought: Arc<Mutex<Bought>> = Arc::default();
    let mut viewers = Vec::new();
    let mut viewer_tasks = Vec::new();
    for _ in 0..2 {
        let seen: Arc<Mutex<Watched>> = Arc::default();
        viewers.push(seen.clone());
        let v = Viewer::connect(&cluster.gateways()[0], &room, None).await;
        viewer_tasks.push(tokio::spawn(viewer(
            cluster.gateways(),
            0,
            v,
            room.clone(),
            seen,
            stop_viewers.clone(),
        )));
    }
    // Half the buyers start on each gifts node (a buyer moves on only when
    // its node does not answer at all).
    let mut buyer_tasks = Vec::new();
    for (i, b) in buyers.iter().enumerate() {
        let mut mine = nodes.clone();
        mine.rotate_left(i % nodes.len());
        buyer_tasks.push(tokio::spawn(buyer(
            b.clone(),
            mine,
            room.clone(),
            bought.clone(),
            paused.clone(),
            stop.clone(),
        )));
    }
    let pg_log = pg.log_path();
    let logs = || {
        let text = std::fs::read_to_string(&pg_log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{}\n== postgres\n{}",
            cluster.log_tails(20),
            tail.join("\n")
        )
    };

    let sold = |n: usize| {
        let bought = bought.clone();
        move || {
            let bought = bought.clone();
            async move { bought.lock().await.bodies.len() >= n }
        }
    };
    wait_for(
        Duration::from_secs(30),
        "no purchases before the first crash",
        &mut buyer_tasks,
        &logs,
        sold(50),
    )
    .await;

    let mut measured = Vec::new();
    let probed: Probed = Arc::default();
    for r in 0..restarts {
        let (before_503, before_n, how) = {
            let b = bought.lock().await;
            (b.unavailable, b.bodies.len(), r % 2)
        };
        let crash_at = applause_web::rfc3339_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        );
        let down_at = Instant::now();
        let how = if how == 0 {
            pg.stop_immediate();
            "pg_ctl stop -m immediate"
        } else {
            pg.kill9();
            "kill -9 of the postmaster"
        };
        eprintln!("chaos phase: PostgreSQL {how}");
        let stop_probe = Arc::new(AtomicBool::new(false));
        let probes = probe(&cluster.gateways(), &gifts, &probed, &stop_probe);
        tokio::time::sleep(down).await;
        stop_probe.store(true, Ordering::SeqCst);
        pg.start_again().await;
        for p in probes {
            p.await.expect("a read failed");
        }
        let outage = down_at.elapsed();
        let up_at = Instant::now();
        let mark = bought.lock().await.bodies.len();
        // Both gifts nodes sell again by themselves: each answers a 201
        // for a request made after the server came back.
        let resumed = |bought: Arc<Mutex<Bought>>, gifts: Vec<String>| {
            move || {
                let (bought, gifts) = (bought.clone(), gifts.clone());
                async move {
                    let b = bought.lock().await;
                    let after: BTreeSet<&String> =
                        b.nodes[mark.min(b.nodes.len())..].iter().collect();
                    gifts.iter().all(|g| after.contains(g))
                }
            }
        };
        wait_for(
            Duration::from_secs(30),
            &format!("after {how}, a gifts node never sold again"),
            &mut buyer_tasks,
            &logs,
            resumed(bought.clone(), gifts.clone()),
        )
        .await;
        let resumed_after = up_at.elapsed();
        for base in cluster.gateways().iter().chain(&gifts) {
            wait_ready(base).await;
        }
        paused.store(true, Ordering::SeqCst);
        settle(
            &cluster,
            REDIS_PORT,
            &viewers,
            &bought,
            &format!("after {how}"),
        )
        .await;
        let delivered_after = up_at.elapsed();
        paused.store(false, Ordering::SeqCst);
        let (unavailable, ambiguous) = {
            let b = bought.lock().await;
            let ambiguous = b
                .retried_after_503
                .iter()
                .filter(|&&i| i >= before_n)
                .filter(|&&i| {
                    b.bodies[i]["created_at"].as_str().unwrap_or_default() < crash_at.as_str()
                })
                .count();
            (b.unavailable - before_503, ambiguous)
        };
        eprintln!(
            "chaos phase: PostgreSQL back after {outage:.1?}, both nodes selling {resumed_after:.1?} later, {unavailable} answers 503"
        );
        measured.push(Restart {
            how,
            unavailable,
            outage,
            resumed_after,
            delivered_after,
            ambiguous,
        });
        let more = bought.lock().await.bodies.len() + 50;
        wait_for(
            Duration::from_secs(30),
            "no purchases after the restart",
            &mut buyer_tasks,
            &logs,
            sold(more),
        )
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in buyer_tasks {
        t.await.expect("a buyer failed");
    }
    settle(&cluster, REDIS_PORT, &viewers, &bought, "at the end").await;
    stop_viewers.store(true, Ordering::SeqCst);
    for t in viewer_tasks {
        t.await.unwrap();
    }

    // Reads meanwhile: 503 (`unavailable` from the API), never another 5xx.
    let probed = probed.lock().await;
    let mut read_503 = 0;
    for (what, s, code) in probed.iter() {
        assert!(
            *s < 500 || *s == 503,
            "{what} answered {s} {code} while PostgreSQL was down"
        );
        if *s == 503 && !what.ends_with("/readyz") {
            assert_eq!(code, "unavailable", "{what} answered 503 {code}");
        }
        read_503 += usize::from(*s == 503);
    }
    for base in cluster.gateways().iter().chain(&gifts) {
        let not_ready = probed
            .iter()
            .any(|(w, s, _)| *w == format!("{base}/readyz") && *s == 503);
        assert!(
            not_ready,
            "{base}/readyz never said 503 while PostgreSQL was down"
        );
    }
    let bought = bought.lock().await;
    let total_503: usize = measured.iter().map(|m| m.unavailable).sum();
    // A 503 charged nothing: a COMMIT whose answer the crash took is looked
    // up once the server is back (within the ledger's 10 s; a longer
    // outage may leave it unknown, and then the retry with the key tells).
    for m in measured
        .iter()
        .filter(|m| m.outage < LOST_COMMIT_RESOLVED_WITHIN)
    {
        assert_eq!(
            m.ambiguous, 0,
            "after {}, a purchase answered 503 had been charged",
            m.how
        );
    }
    assert!(
        total_503 > 0,
        "no purchase was answered 503 during a restart"
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
    // One gift per key, and no gift for two keys.
    let ids: BTreeSet<&str> = bought
        .bodies
        .iter()
        .map(|b| b["gift_id"].as_str().expect("gift_id"))
        .collect();
    assert_eq!(ids.len(), bought.bodies.len(), "a gift answered two keys");
    let keys: BTreeSet<&(String, String)> = bought.keys.iter().collect();
    assert_eq!(keys.len(), bought.keys.len(), "a key was answered twice");
    // A key retried across a crash answers again exactly what it answered
    // (its first attempt may have committed before the crash), on either node.
    let body = json!({"sticker_id": "rose", "quantity": 1});
    let replays: Vec<usize> = bought
        .retried_after_503
        .iter()
        .copied()
        .chain(bought.bodies.len().saturating_sub(8)..bought.bodies.len())
        .collect();
    for (n, &i) in replays.iter().enumerate() {
        let (user, key) = &bought.keys[i];
        let path = format!("/v1/rooms/{room}/gifts");
        let (s, b) = nodes[n % nodes.len()]
            .post(&path, &token(user, Role::Viewer), Some(key), &body)
            .await;
        assert_eq!((s, &b), (201, &bought.bodies[i]), "replay of {key}");
    }
    // One charge per 201.
    assert_charged_once(&api, &buyers, &bought.bodies, 100_000).await;
    let admin = token("admin", Role::Admin);
    let want_board = expected_board(&bought.bodies);
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.board(&room, "all").await != want_board {
        assert!(
            Instant::now() < deadline,
            "the board differs from the ledger\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, summary) = api.get("/v1/finance/summary", Some(&admin)).await;
    assert_eq!(s, 200, "{summary}");
    assert_eq!(summary["gifts"].as_u64(), Some(bought.bodies.len() as u64));
    assert_eq!(summary["ledger_check"]["ok"], true, "{summary}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_applause"))
        .args(["ledger", "check", "--database-url", &pg.url("applause")])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run applause ledger check");
    assert!(
        check.status.success(),
        "applause ledger check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for m in &measured {
        eprintln!(
            "scaled chaos, PostgreSQL {}: down {:.1?}, {} answers 503 ({} of them committed before the crash), both nodes selling {:.1?} and every gift delivered {:.1?} after it was back",
            m.how, m.outage, m.unavailable, m.ambiguous, m.resumed_after, m.delivered_after
        );
    }
    // The gifts nodes' word on the COMMITs a crash left unanswered.
    let node_logs = cluster.log_tails(usize::MAX);
    let fate = |f: &str| node_logs.matches(&format!("fate={f}")).count();
    eprintln!(
        "scaled chaos: {} PostgreSQL restarts, {} gifts, {} purchases and {} of {} reads answered 503 during the restarts, {} keys replayed across a 503, {} unanswered COMMITs looked up ({} had committed, {} not, {} unknown); lost 0, charged twice 0",
        measured.len(),
        bought.bodies.len(),
        total_503,
        read_503,
        probed.len(),
        bought.retried_after_503.len(),
        fate("Committed") + fate("Aborted") + fate("Unknown"),
        fate("Committed"),
        fate("Aborted"),
        fate("Unknown"),
    );
    drop(cluster);
}
