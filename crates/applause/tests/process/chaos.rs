//! Chaos, embedded: `kill -9` of `applause serve` again and again under
//! concurrent purchases, red-packet drops and claims, and refunds. After each
//! kill the offline `applause ledger check` must pass; after each restart
//! every unanswered request is retried with its key and every answered one
//! replays byte-identically. At the end each wallet holds exactly what its
//! answered requests say, a wallet that ran dry paid for exactly ⌊B/x⌋
//! gifts, and no gift was charged twice.
//!
//! `APPLAUSE_CHAOS_CYCLES` sets the number of kill cycles (default 5, the
//! short form in the test command); `scripts/chaos.sh` runs 100.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use applause_core::Role;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::common::*;

const BUYERS: usize = 4;
const CLAIMERS: usize = 3;
const BUYER_FUNDS_MINOR: i64 = 10_000_000;
/// The dry wallet: 1.00, spending 0.30 a gift → exactly 3 succeed.
const DRY_FUNDS_MINOR: i64 = 100;
const DRY_PRICE_MINOR: i64 = 30;
const DROPPER_FUNDS_MINOR: i64 = 100_000;

/// One request of the run, replayable: the same path, token, key and body.
#[derive(Clone, Debug)]
struct Op {
    path: String,
    user: String,
    role: Role,
    key: Option<String>,
    body: Value,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Purchase,
    Drop,
    Claim,
    Refund,
}

/// Every request and its first answer (`None`: the server died first).
#[derive(Default)]
struct Book {
    ops: Vec<(Op, Option<(u16, String)>)>,
}

struct World {
    base: String,
    http: reqwest::Client,
    room: String,
    book: Mutex<Book>,
    /// Gifts bought (201) not yet sent to refund, and packets dropped.
    refundable: Mutex<Vec<String>>,
    packets: Mutex<Vec<String>>,
    seed: AtomicU64,
}

impl World {
    fn random(&self, below: u64) -> u64 {
        // xorshift: reproducible enough, and no dependency.
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        x % below.max(1)
    }

    async fn send(&self, op: &Op) -> Result<(u16, String), reqwest::Error> {
        let mut req = self
            .http
            .post(format!("{}{}", self.base, op.path))
            .bearer_auth(token(&op.user, op.role))
            .json(&op.body);
        if let Some(k) = &op.key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    /// Sends `op` and books its answer; `Err` when the server is gone.
    async fn run(&self, op: Op) -> Result<(u16, Value), ()> {
        let answer = self.send(&op).await.ok();
        let parsed = answer
            .as_ref()
            .map(|(s, b)| (*s, serde_json::from_str(b).unwrap_or(Value::Null)));
        self.book.lock().await.ops.push((op, answer));
        parsed.ok_or(())
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token("admin", Role::Admin))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }
}

fn purchase(room: &str, user: &str, key: String, sticker: &str, quantity: u32) -> Op {
    Op {
        path: format!("/v1/rooms/{room}/gifts"),
        user: user.to_owned(),
        role: Role::Viewer,
        key: Some(key),
        body: json!({"sticker_id": sticker, "quantity": quantity}),
        kind: Kind::Purchase,
    }
}

/// The workers of one cycle; each stops at its first unanswered request.
async fn load(w: Arc<World>, cycle: usize, stop: Arc<AtomicBool>) {
    let mut tasks = Vec::new();
    for b in 0..BUYERS {
        let (w, stop) = (w.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("buyer{b}");
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let sticker = if w.random(2) == 0 { "heart" } else { "rose" };
                let qty = 1 + w.random(3) as u32;
                let op = purchase(&w.room, &user, format!("c{cycle}-{user}-{i}"), sticker, qty);
                match w.run(op).await {
                    Ok((201, v)) => w
                        .refundable
                        .lock()
                        .await
                        .push(v["gift_id"].as_str().unwrap().to_owned()),
                    Ok(_) => {}
                    Err(()) => return,
                }
            }
        }));
    }
    {
        let (w, stop) = (w.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // The dry wallet: a few tries per cycle, all with fresh keys.
            for i in 0..3 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let op = purchase(&w.room, "dry", format!("c{cycle}-dry-{i}"), "heart", 3);
                if w.run(op).await.is_err() {
                    return;
                }
            }
        }));
    }
    {
        let (w, stop) = (w.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let op = Op {
                    path: format!("/v1/rooms/{}/red-packets", w.room),
                    user: "dropper".into(),
                    role: Role::Viewer,
                    key: Some(format!("c{cycle}-drop-{i}")),
                    body: json!({"total": "0.50", "count": 3, "mode": "random"}),
                    kind: Kind::Drop,
                };
                match w.run(op).await {
                    Ok((201, v)) => w
                        .packets
                        .lock()
                        .await
                        .push(v["packet_id"].as_str().unwrap().to_owned()),
                    Ok(_) => {}
                    Err(()) => return,
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }
    for c in 0..CLAIMERS {
        let (w, stop) = (w.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("claimer{c}");
            let mut done = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let next = w
                    .packets
                    .lock()
                    .await
                    .iter()
                    .find(|p| !done.contains(*p))
                    .cloned();
                let Some(packet) = next else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                done.insert(packet.clone());
                let op = Op {
                    path: format!("/v1/red-packets/{packet}/claim"),
                    user: user.clone(),
                    role: Role::Viewer,
                    key: None,
                    body: json!({}),
                    kind: Kind::Claim,
                };
                if w.run(op).await.is_err() {
                    return;
                }
            }
        }));
    }
    {
        let (w, stop) = (w.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let gift = {
                    let mut r = w.refundable.lock().await;
                    if r.is_empty() {
                        continue;
                    }
                    let i = w.random(r.len() as u64) as usize;
                    r.swap_remove(i)
                };
                let op = Op {
                    path: format!("/v1/finance/gifts/{gift}/refund"),
                    user: "fin".into(),
                    role: Role::Finance,
                    key: None,
                    body: json!({"reason": "chaos chargeback"}),
                    kind: Kind::Refund,
                };
                if w.run(op).await.is_err() {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// After a restart: retries every unanswered request with its key (booking
/// the answer), and replays the latest answered ones, which must match.
async fn repair(w: &World, replay_last: usize) -> (usize, usize) {
    let mut book = w.book.lock().await;
    let mut retried = 0;
    for (op, answer) in book.ops.iter_mut().filter(|(_, a)| a.is_none()) {
        let got = w.send(op).await.expect("the restarted server answers");
        let ok = match op.kind {
            Kind::Purchase | Kind::Drop => matches!(got.0, 201 | 402),
            // The lost attempt may have taken effect: then the retry says so.
            Kind::Claim => matches!(got.0, 200 | 409 | 410),
            Kind::Refund => matches!(got.0, 200 | 409),
        };
        assert!(ok, "retry of {op:?}: {got:?}");
        *answer = Some(got);
        retried += 1;
    }
    let mut replayed = 0;
    let keyed: Vec<_> = book
        .ops
        .iter()
        .filter(|(op, _)| op.key.is_some())
        .rev()
        .take(replay_last)
        .cloned()
        .collect();
    for (op, first) in keyed {
        let again = w.send(&op).await.expect("the server answers a replay");
        assert_eq!(Some(&again), first.as_ref(), "replay of {op:?} differs");
        replayed += 1;
    }
    (retried, replayed)
}

fn ledger_check_offline(dir: &std::path::Path) {
    let out = bin()
        .args(["ledger", "check", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ledger check after a kill: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn minor(amount: &str) -> i64 {
    let (units, cents) = amount.split_once('.').unwrap();
    units.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_cycles_under_purchases_red_packets_and_refunds_lose_nothing() {
    let cycles: usize = std::env::var("APPLAUSE_CHAOS_CYCLES")
        .ok()
        .map(|v| v.parse().expect("APPLAUSE_CHAOS_CYCLES is a number"))
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(dir.path(), port).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let setup = |path: &str, tok: String, body: Value| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http
                .post(url)
                .bearer_auth(tok)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201, "setup {body}");
            r.json::<Value>().await.unwrap()
        }
    };
    let room = setup(
        "/v1/rooms",
        token("star", Role::Broadcaster),
        json!({"title": "chaos"}),
    )
    .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut funds: BTreeMap<String, i64> = BTreeMap::new();
    for b in 0..BUYERS {
        funds.insert(format!("buyer{b}"), BUYER_FUNDS_MINOR);
    }
    funds.insert("dry".into(), DRY_FUNDS_MINOR);
    funds.insert("dropper".into(), DROPPER_FUNDS_MINOR);
    for (i, (user, minor)) in funds.iter().enumerate() {
        // Spread the money over the channels so draws cross them.
        let channel = ["apple", "google", "web"][i % 3];
        let amount = format!("{}.{:02}", minor / 100, minor % 100);
        setup(
            "/v1/topups",
            token("admin", Role::Admin),
            json!({"user_id": user, "channel": channel, "amount": amount, "receipt_id": format!("chaos-{user}")}),
        )
        .await;
    }
    let world = Arc::new(World {
        base: base.clone(),
        http: http.clone(),
        room: room.clone(),
        book: Mutex::default(),
        refundable: Mutex::default(),
        packets: Mutex::default(),
        seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
    });

    let (mut unanswered, mut replayed) = (0, 0);
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(load(world.clone(), cycle, stop.clone()));
        let run_ms = 150 + world.random(500);
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        child.kill().expect("kill -9");
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap();
        ledger_check_offline(dir.path());
        child = serve(dir.path(), port).await;
        let (r, p) = repair(&world, 10).await;
        unanswered += r;
        replayed += p;
    }

    // Settle what the book says, then compare it with the ledger.
    let book = world.book.lock().await;
    let mut gift_of_key: HashMap<String, (String, String, i64)> = HashMap::new();
    let mut gift_ids = BTreeSet::new();
    let mut refunded = BTreeSet::new();
    let mut drops = 0i64;
    let (mut purchases, mut claims, mut refunds) = (0, 0, 0);
    for (op, answer) in &book.ops {
        let (status, body) = answer.as_ref().expect("repaired");
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        match (op.kind, *status) {
            (Kind::Purchase, 201) => {
                let key = op.key.clone().unwrap();
                let gift = v["gift_id"].as_str().unwrap().to_owned();
                let entry = (
                    gift.clone(),
                    op.user.clone(),
                    minor(v["amount"].as_str().unwrap()),
                );
                if let Some(prev) = gift_of_key.insert(key.clone(), entry) {
                    assert_eq!(prev.0, gift, "key {key} answered two gifts");
                } else {
                    assert!(gift_ids.insert(gift), "two keys share a gift");
                    purchases += 1;
                }
            }
            (Kind::Drop, 201) => drops += minor(v["total"].as_str().unwrap()),
            (Kind::Claim, 200) => claims += 1,
            (Kind::Refund, 200 | 409) => {
                refunds += 1;
                refunded.insert(op.path.split('/').nth(4).unwrap().to_owned());
            }
            _ => {}
        }
    }
    let mut expected = funds.clone();
    for (gift, user, amount) in gift_of_key.values() {
        let e = expected.get_mut(user).unwrap();
        *e -= amount;
        if refunded.contains(gift) {
            *e += amount;
        }
    }
    *expected.get_mut("dropper").unwrap() -= drops;
    let dry_paid = gift_of_key.values().filter(|(_, u, _)| u == "dry").count() as i64;
    assert_eq!(
        dry_paid,
        DRY_FUNDS_MINOR / DRY_PRICE_MINOR,
        "the dry wallet paid for {dry_paid} gifts"
    );
    for (user, want) in &expected {
        let w = world.get(&format!("/v1/wallet?user_id={user}")).await;
        assert_eq!(minor(w["balance"].as_str().unwrap()), *want, "{user}: {w}");
    }
    // What the claimers hold is exactly what the packets say they took.
    let mut claimed_total = 0;
    for packet in world.packets.lock().await.iter() {
        let p = world.get(&format!("/v1/red-packets/{packet}")).await;
        let users: BTreeSet<_> = p["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["user_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            users.len(),
            p["claims"].as_array().unwrap().len(),
            "a double claim: {p}"
        );
        claimed_total += minor(p["claimed"].as_str().unwrap());
    }
    let mut held = 0;
    for c in 0..CLAIMERS {
        let w = world.get(&format!("/v1/wallet?user_id=claimer{c}")).await;
        held += minor(w["balance"].as_str().unwrap());
    }
    assert_eq!(held, claimed_total, "claimers' wallets against the packets");
    let summary = world.get("/v1/finance/summary").await;
    assert_eq!(summary["gifts"], gift_ids.len() as u64, "{summary}");
    assert_eq!(summary["ledger_check"]["ok"], true, "{summary}");
    println!(
        "chaos: {cycles} kill -9 cycles, {} requests, {purchases} gifts, {claims} claims, \
         {refunds} refunds, {unanswered} unanswered at a kill and retried, {replayed} replays \
         byte-identical; lost 0, charged twice 0",
        book.ops.len()
    );
    drop(book);
    child.kill().unwrap();
    child.wait().unwrap();
    ledger_check_offline(dir.path());
}
