//! The scaled mode's leaderboards: boards deleted from Redis are rebuilt
//! exact without an operator, every committed gift is counted after a
//! `kill -9`, and the last live frame is the final board with two gifts
//! nodes.

use std::time::Duration;

use applause_core::Role;
use serde_json::json;

use crate::common::*;
use crate::scaled::buy_until_kill9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboards_deleted_from_redis_are_rebuilt_exact() {
    let cluster = Cluster::start(1, 1);
    let api = Api::new(&cluster.gifts()[0]);
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    let mut bodies = Vec::new();
    for (i, user) in ["ann", "ben", "cy", "dee"].iter().enumerate() {
        api.top_up(user, "100.00").await;
        let tok = token(user, Role::Viewer);
        for j in 0..=i {
            bodies.push(
                api.buy(
                    &tok,
                    &room,
                    &format!("{user}-{j}"),
                    ["rose", "heart"][j % 2],
                )
                .await,
            );
        }
    }
    let want = expected_board(&bodies);
    assert_eq!(
        poll_board(&api, &room, &want).await,
        want,
        "the board before the loss"
    );
    let before = rebuilds(&cluster).await;

    let deleted = delete_redis_keys(&format!("{}lb:*", cluster.redis_prefix()))
        .await
        .unwrap();
    assert!(
        deleted > 0,
        "no leaderboard keys under {}lb:",
        cluster.redis_prefix()
    );
    assert_eq!(
        poll_board(&api, &room, &want).await,
        want,
        "the board after the loss"
    );
    for w in ["day", "week", "all"] {
        assert_eq!(api.board(&room, w).await, want, "window {w}");
    }
    assert!(rebuilds(&cluster).await > before, "no rebuild was counted");
    // Only gifts nodes keep the boards up; a gateway node never rebuilds them.
    for g in cluster.gateways() {
        assert_eq!(rebuilds_of(&g).await, 0, "gateway {g} rebuilt the boards");
    }

    // After the rebuild every new gift counts exactly once.
    let tok = token("ann", Role::Viewer);
    for j in 0..3 {
        bodies.push(
            api.buy(&tok, &room, &format!("ann-after-{j}"), "heart")
                .await,
        );
    }
    let want = expected_board(&bodies);
    assert_eq!(
        poll_board(&api, &room, &want).await,
        want,
        "gifts after the rebuild"
    );
}

/// `kill -9` of one of two gifts nodes, which is not replaced: the other
/// node (and the gateway) must still bring the boards to exactly what the
/// ledger holds, including gifts committed right before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_count_every_committed_gift_after_a_kill_9_without_restart() {
    let cluster = Cluster::start(1, 2);
    let nodes: Vec<Api> = cluster.gifts().iter().map(|u| Api::new(u)).collect();
    let star = token("star", Role::Broadcaster);
    let room = nodes[1].open_room(&star).await;
    let senders: Vec<String> = (0..8).map(|i| format!("b{i}")).collect();
    for s in &senders {
        nodes[1].top_up(s, "500.00").await;
    }
    let answers = buy_until_kill9(
        &cluster,
        "gifts-1",
        &nodes[0],
        &room,
        &senders,
        &["rose", "heart"],
        60,
    )
    .await;
    // Retry everything on the surviving node (replays count nothing new).
    let mut bodies = Vec::new();
    for key in answers.keys() {
        let (sender, i) = key.rsplit_once('-').unwrap();
        let i: usize = i.parse().unwrap();
        let (s, b) = nodes[1]
            .post(
                &format!("/v1/rooms/{room}/gifts"),
                &token(sender, Role::Viewer),
                Some(key),
                &json!({"sticker_id": (["rose", "heart"][i % 2]), "quantity": 1}),
            )
            .await;
        assert_eq!(s, 201, "retry of {key}: {b}");
        bodies.push(b);
    }
    let want = expected_board(&bodies);
    assert_eq!(
        poll_board(&nodes[1], &room, &want).await,
        want,
        "the live board after the kill"
    );
}

/// Two gifts nodes sell into one room at once: each pushes the live top 10
/// after its own purchases, and the last `leaderboard` frame viewers hold
/// must still be the room's final board, not an older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_leaderboard_frame_is_the_final_board_with_two_gifts_nodes() {
    let cluster = Cluster::start(1, 2);
    let nodes: Vec<Api> = cluster.gifts().iter().map(|u| Api::new(u)).collect();
    assert_eq!(nodes.len(), 2);
    let star = token("star", Role::Broadcaster);
    let room = nodes[0].open_room(&star).await;
    let users: Vec<String> = (0..12).map(|i| format!("u{i:02}")).collect();
    for u in &users {
        nodes[0].top_up(u, "300.00").await;
    }
    let mut v = Viewer::connect(&cluster.gateways()[0], &room, None).await;
    let mut bodies = Vec::new();
    let mut stale = Vec::new();
    for round in 0..6 {
        // A burst through both nodes; amounts vary so the ranking moves.
        let buys: Vec<_> = (0..24)
            .map(|i| {
                let api = nodes[i % 2].clone();
                let room = room.clone();
                let user = users[(i * 7 + round * 5) % users.len()].clone();
                let sticker = ["rose", "heart", "rose", "rose"][(i + round) % 4];
                tokio::spawn(async move {
                    api.buy(
                        &token(&user, Role::Viewer),
                        &room,
                        &format!("r{round}-{i}"),
                        sticker,
                    )
                    .await
                })
            })
            .collect();
        for b in buys {
            bodies.push(b.await.unwrap());
        }
        let all = expected_board(&bodies);
        assert_eq!(
            poll_board(&nodes[1], &room, &all).await,
            all,
            "round {round}: API board"
        );
        let want = all[..all.len().min(10)].to_vec();
        // Let every push of the burst arrive, then look at the last one.
        let frames = v.drain(Duration::from_millis(1_500)).await;
        let last = frames.iter().rev().find(|f| f["type"] == "leaderboard");
        let shown = last.map(|f| entries(&f["entries"])).unwrap_or_default();
        if shown != want {
            stale.push(format!(
                "round {round}: viewers were left with {shown:?}, the board is {want:?}"
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "a stale live leaderboard was the last one pushed:\n{}",
        stale.join("\n")
    );
}

/// Polls the room's live board for up to ~5 s until it equals `want`.
async fn poll_board(api: &Api, room: &str, want: &[(String, String)]) -> Vec<(String, String)> {
    let mut got = Vec::new();
    for _ in 0..50 {
        got = api.board(room, "live").await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

/// Leaderboard rebuilds counted by every node of the cluster
/// (`applause_leaderboard_rebuilds_total`): with several gifts nodes,
/// whichever notices the lost marker first rebuilds.
async fn rebuilds(cluster: &Cluster) -> u64 {
    let mut total = 0;
    for base in cluster.gifts().iter().chain(&cluster.gateways()) {
        total += rebuilds_of(base).await;
    }
    total
}

/// Leaderboard rebuilds counted by one node.
async fn rebuilds_of(base: &str) -> u64 {
    let (_, m) = Api::new(base).get("/metrics", None).await;
    m.as_str()
        .unwrap_or("")
        .lines()
        .find_map(|l| l.strip_prefix("applause_leaderboard_rebuilds_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
