//! The scaled mode as separate processes (`applause gateway` ×2 and `applause
//! gifts` on PostgreSQL and Redis, started by `deploy/local-cluster.sh`):
//! viewers on both gateways get every gift once in the same order; a viewer
//! resumes on the other gateway; `kill -9` of the gifts node during a burst
//! of purchases loses and duplicates nothing once a new gifts node runs; the
//! leaderboards are in `scaled_boards`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use applause_core::Role;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::common::*;

/// The first answer to each idempotency key (`None`: the node died first).
type Answers = HashMap<String, Option<(u16, Value)>>;

/// Connects `n` viewers to each gateway; they read until they hold `gifts`
/// gifts (or `wait` passes), then a little longer to catch duplicates.
async fn watch(
    gateways: &[String],
    room: &str,
    n: usize,
    gifts: Arc<std::sync::atomic::AtomicUsize>,
    wait: Duration,
) -> Vec<tokio::task::JoinHandle<(String, u64, Vec<Value>)>> {
    let mut tasks = Vec::new();
    for (g, base) in gateways.iter().enumerate() {
        for i in 0..n {
            let mut v = Viewer::connect(base, room, None).await;
            let gifts = gifts.clone();
            tasks.push(tokio::spawn(async move {
                let mut frames = v
                    .read_until(wait, |f| {
                        let want = gifts.load(std::sync::atomic::Ordering::SeqCst);
                        want > 0 && gift_count(f) >= want
                    })
                    .await;
                frames.extend(v.drain(Duration::from_millis(500)).await);
                (format!("gateway {g} viewer {i}"), v.welcome_seq(), frames)
            }));
        }
    }
    tasks
}

/// Every viewer got every gift once, consecutively, and all in one order.
async fn check_viewers(
    tasks: Vec<tokio::task::JoinHandle<(String, u64, Vec<Value>)>>,
    bodies: &[Value],
) {
    let mut order: Option<Vec<String>> = None;
    for t in tasks {
        let (who, welcome, frames) = t.await.unwrap();
        assert_consecutive(&who, &frames, welcome);
        assert_all_gifts_once(&who, &frames, bodies);
        let ids = gift_ids(&frames);
        match &order {
            None => order = Some(ids),
            Some(o) => assert_eq!(&ids, o, "{who}: another order than the first viewer"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_both_gateways_see_every_gift_and_resume_across_gateways() {
    both_gateways_see_every_gift(&Cluster::start(2, 1)).await;
}

/// The body of the test above on a cluster of 2 gateways and 1 gifts node
/// (also run on a Redis Cluster by `redis_cluster`).
pub async fn both_gateways_see_every_gift(cluster: &Cluster) {
    let gw = cluster.gateways();
    assert_eq!(gw.len(), 2);
    let api = Api::new(&cluster.gifts()[0]);
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    let senders: Vec<String> = (0..5).map(|i| format!("fan{i}")).collect();
    for s in &senders {
        api.top_up(s, "200.00").await;
    }
    const GIFTS: usize = 40;
    let want = Arc::new(std::sync::atomic::AtomicUsize::new(GIFTS));
    let tasks = watch(&gw, &room, 15, want, Duration::from_secs(30)).await;
    let buys: Vec<_> = (0..GIFTS)
        .map(|i| {
            let (api, room) = (api.clone(), room.clone());
            let tok = token(&senders[i % senders.len()], Role::Viewer);
            tokio::spawn(async move { api.buy(&tok, &room, &format!("k{i}"), "heart").await })
        })
        .collect();
    let mut bodies = Vec::new();
    for b in buys {
        bodies.push(b.await.unwrap());
    }
    check_viewers(tasks, &bodies).await;

    // Resume on the other gateway, which has never served this room.
    let room2 = api.open_room(&star).await;
    let alice = token("fan0", Role::Viewer);
    let mut v = Viewer::connect(&gw[0], &room2, None).await;
    let epoch = v.epoch();
    let mut seen = Vec::new();
    for i in 0..3 {
        seen.push(api.buy(&alice, &room2, &format!("seen-{i}"), "rose").await);
    }
    let frames = v
        .read_until(Duration::from_secs(10), |f| gift_count(f) >= 3)
        .await;
    let mut frames_all = frames;
    frames_all.extend(v.drain(Duration::from_millis(800)).await);
    let last = assert_consecutive("first gateway", &frames_all, v.welcome_seq());
    assert_all_gifts_once("first gateway", &frames_all, &seen);
    v.close().await;
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(
            api.buy(&alice, &room2, &format!("missed-{i}"), "rose")
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut v = Viewer::connect(&gw[1], &room2, None).await;
    v.send(json!({"type": "resume", "epoch": epoch, "since_seq": last}))
        .await;
    let frames = v
        .read_until(Duration::from_secs(10), |f| gift_count(f) >= 5)
        .await;
    let mut frames_all = frames;
    frames_all.extend(v.drain(Duration::from_millis(800)).await);
    let resumed_to = assert_consecutive("resumed on the other gateway", &frames_all, last);
    assert_all_gifts_once("resumed on the other gateway", &frames_all, &missed);

    // An ack sent over one gateway's WebSocket reaches a viewer on the other
    // (the gateway node commits it and publishes it), and so does the end.
    let mut star_ws = Viewer::connect(&gw[0], &room2, Some(&star)).await;
    let gift_id = missed[0]["gift_id"].as_str().unwrap().to_owned();
    star_ws
        .send(json!({"type": "ack", "gift_id": gift_id, "text": "thanks, fan0"}))
        .await;
    let frames = v
        .read_until(Duration::from_secs(10), |f| {
            f.iter().any(|x| x["type"] == "ack")
        })
        .await;
    let ack = frames
        .iter()
        .find(|x| x["type"] == "ack")
        .expect("ack on the other gateway");
    assert_eq!(
        (&ack["gift_id"], &ack["sender_id"]),
        (&json!(gift_id), &json!("fan0")),
        "{ack}"
    );
    let resumed_to = assert_consecutive("ack on the other gateway", &frames, resumed_to);
    let (s, b) = api
        .post(&format!("/v1/rooms/{room2}/end"), &star, None, &json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    for (who, ws, after) in [
        ("gateway 0", &mut star_ws, None),
        ("gateway 1", &mut v, Some(resumed_to)),
    ] {
        let frames = ws
            .read_until(Duration::from_secs(10), |f| {
                f.iter().any(|x| x["type"] == "room_ended")
            })
            .await;
        assert!(
            frames.iter().any(|x| x["type"] == "room_ended"),
            "{who}: {frames:?}"
        );
        if let Some(after) = after {
            assert_consecutive(who, &frames, after);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_gifts_node_loses_and_repeats_nothing() {
    kill_9_of_gifts_loses_nothing(&mut Cluster::start(2, 1)).await;
}

/// The body of the test above on a cluster of 2 gateways and 1 gifts node
/// (also run on a Redis Cluster by `redis_cluster`).
pub async fn kill_9_of_gifts_loses_nothing(cluster: &mut Cluster) {
    let gw = cluster.gateways();
    let api = Api::new(&cluster.gifts()[0]);
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    let senders: Vec<String> = (0..8).map(|i| format!("buyer{i}")).collect();
    for s in &senders {
        api.top_up(s, "500.00").await;
    }
    // The number of gifts is known only after the crash and the retries.
    let want = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks = watch(&gw, &room, 10, want.clone(), Duration::from_secs(60)).await;

    // Each sender buys back to back until the node dies under it.
    let answers = buy_until_kill9(cluster, "gifts-1", &api, &room, &senders, &["rose"], 80).await;

    // A new gifts node; every request is retried with its key.
    let api2 = Api::new(&cluster.add("gifts"));
    let mut bodies = Vec::new();
    let mut in_doubt = 0;
    for (key, first) in &answers {
        let sender = key.rsplit_once('-').unwrap().0;
        let (s, b) = api2
            .post(
                &format!("/v1/rooms/{room}/gifts"),
                &token(sender, Role::Viewer),
                Some(key),
                &json!({"sticker_id": "rose", "quantity": 1}),
            )
            .await;
        assert_eq!(s, 201, "retry of {key}: {b}");
        match first {
            Some((s0, b0)) => {
                assert_eq!((*s0, b0), (201, &b), "the replay of {key} differs");
            }
            None => in_doubt += 1,
        }
        bodies.push(b);
    }
    assert!(in_doubt > 0, "the kill hit no purchase in flight");
    want.store(bodies.len(), std::sync::atomic::Ordering::SeqCst);
    check_viewers(tasks, &bodies).await;

    // The ledger agrees: one charge per key, every invariant holds.
    let fin = token("fin", Role::Finance);
    let (s, summary) = api2.get("/v1/finance/summary", Some(&fin)).await;
    assert_eq!(s, 200, "{summary}");
    assert_eq!(
        summary["gifts"].as_u64(),
        Some(bodies.len() as u64),
        "{summary}"
    );
    assert_eq!(summary["ledger_check"]["ok"], true, "{summary}");
    let (_, metrics) = api2.get("/metrics", None).await;
    let relayed = metrics
        .as_str()
        .unwrap_or("")
        .lines()
        .find(|l| l.starts_with("applause_outbox_relayed_total"))
        .unwrap_or("applause_outbox_relayed_total ?")
        .to_owned();
    eprintln!(
        "kill -9: {} purchases, {in_doubt} in doubt at the kill; new node: {relayed}",
        bodies.len()
    );
}

/// A new room's first gifts, bought at once through two gifts nodes, race to
/// the bus: whichever seq arrives first, none is taken for a duplicate and
/// lost (how often the later seq wins depends on timing; the bus conformance
/// suite checks that order deterministically). Then the bus forgets the room (its keys are deleted, as after a
/// Redis flush or expiry) and the next gifts still reach every viewer, the
/// bus going on where the ledger vouches for everything before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_gifts_racing_through_two_gifts_nodes_and_a_forgotten_room_lose_nothing() {
    let cluster = Cluster::start(1, 2);
    let gw = cluster.gateways();
    let nodes: Vec<Api> = cluster.gifts().iter().map(|u| Api::new(u)).collect();
    assert_eq!(nodes.len(), 2);
    let star = token("star", Role::Broadcaster);
    let senders: Vec<String> = (0..4).map(|i| format!("racer{i}")).collect();
    for s in &senders {
        nodes[0].top_up(s, "100.00").await;
    }
    const ROOMS: usize = 6;
    const FIRST: usize = 4;
    let mut rooms = Vec::new();
    for _ in 0..ROOMS {
        rooms.push(nodes[0].open_room(&star).await);
    }
    let mut viewers = Vec::new();
    for room in &rooms {
        viewers.push(Viewer::connect(&gw[0], room, None).await);
    }
    // Each room's first gifts at once, alternating between the nodes.
    let mut bought: Vec<Vec<Value>> = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        let buys: Vec<_> = (0..FIRST)
            .map(|i| {
                let (api, room) = (nodes[i % 2].clone(), room.clone());
                let tok = token(&senders[i], Role::Viewer);
                tokio::spawn(async move {
                    api.buy(&tok, &room, &format!("first-{r}-{i}"), "heart")
                        .await
                })
            })
            .collect();
        let mut bodies = Vec::new();
        for b in buys {
            bodies.push(b.await.unwrap());
        }
        bought.push(bodies);
    }
    let mut last_seqs = Vec::new();
    for (r, v) in viewers.iter_mut().enumerate() {
        let who = format!("room {r}");
        let mut frames = v
            .read_until(Duration::from_secs(15), |f| gift_count(f) >= FIRST)
            .await;
        frames.extend(v.drain(Duration::from_millis(300)).await);
        last_seqs.push(assert_consecutive(&who, &frames, v.welcome_seq()));
        assert_all_gifts_once(&who, &frames, &bought[r]);
    }

    // The bus forgets the rooms; the ledger still knows every seq published.
    let deleted = delete_redis_keys(&format!("{}bus:*", cluster.redis_prefix()))
        .await
        .expect("delete the bus keys");
    assert!(deleted >= ROOMS, "deleted {deleted} bus keys");
    for (r, room) in rooms.iter().enumerate() {
        let tok = token(&senders[0], Role::Viewer);
        let body = nodes[r % 2]
            .buy(&tok, room, &format!("after-{r}"), "rose")
            .await;
        let who = format!("room {r} after the bus forgot it");
        let frames = viewers[r]
            .read_until(Duration::from_secs(15), |f| gift_count(f) >= 1)
            .await;
        assert_eq!(
            gift_ids(&frames),
            vec![body["gift_id"].as_str().unwrap().to_owned()],
            "{who}: {frames:?}"
        );
        assert_consecutive(&who, &frames, last_seqs[r]);
    }
}

/// Each sender buys back to back through `api` (the `i`-th gift is
/// `stickers[i % len]`) until gifts node `victim` is killed with -9, once
/// `kill_after` purchases were answered; returns the first answer to each
/// idempotency key (`None`: the node died first).
pub(crate) async fn buy_until_kill9(
    cluster: &Cluster,
    victim: &str,
    api: &Api,
    room: &str,
    senders: &[String],
    stickers: &'static [&'static str],
    kill_after: usize,
) -> Answers {
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut buyers = Vec::new();
    for s in senders {
        let (s, api, room, answers, answered) = (
            s.clone(),
            api.clone(),
            room.to_owned(),
            answers.clone(),
            answered.clone(),
        );
        buyers.push(tokio::spawn(async move {
            let tok = token(&s, Role::Viewer);
            for i in 0..1_000 {
                let key = format!("{s}-{i}");
                let r = api
                    .try_post(
                        &format!("/v1/rooms/{room}/gifts"),
                        &tok,
                        Some(&key),
                        &json!({"sticker_id": stickers[i % stickers.len()], "quantity": 1}),
                    )
                    .await;
                let ok = r.is_ok();
                answers.lock().await.insert(key, r.ok());
                if !ok {
                    return;
                }
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    while answered.load(std::sync::atomic::Ordering::SeqCst) < kill_after {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.kill9(victim);
    for b in buyers {
        b.await.unwrap();
    }
    let answers = answers.lock().await.clone();
    answers
}
