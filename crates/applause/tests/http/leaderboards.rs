//! Leaderboards over HTTP: after purchases, a room's boards and the
//! broadcaster board equal the test's own tallies; `me`, limits and windows.

use std::collections::BTreeMap;
use std::time::Duration;

use applause_core::Role;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::{eventually, minor, Server};

/// The board as (user, amount) in rank order, with ranks checked to be 1..n.
fn entries(board: &Value) -> Vec<(String, i64)> {
    board["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["rank"], i as u64 + 1, "ranks are 1..n: {board}");
            (
                e["user_id"].as_str().unwrap().to_owned(),
                minor(e["amount"].as_str().unwrap()),
            )
        })
        .collect()
}

/// The expected board: amount descending, ties by user id ascending.
fn ranked(tally: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = tally.iter().map(|(u, a)| (u.clone(), *a)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Polls `path` until its entries equal `want` (the boards update
/// asynchronously); fails with the last board seen.
async fn board_becomes(s: &Server, path: &str, want: &[(String, i64)]) {
    let last = std::cell::RefCell::new(Value::Null);
    let found = eventually(Duration::from_secs(2), || async {
        let r = s.get(path, None).await;
        r.expect_status(200);
        let got = entries(&r.json);
        *last.borrow_mut() = r.json;
        (got == want).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "{path}: want {want:?}, last {}",
        last.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_boards_equal_the_tallies() {
    let s = Server::start(&["--gift-burst", "1000", "--gift-rate-per-s", "1000"]).await;
    let room = s.open_room("star-lb").await;
    let other_room = s.open_room("star-lb2").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let fans: Vec<String> = (0..8).map(|i| format!("lb-fan-{i}")).collect();
    for f in &fans {
        s.top_up(f, "web", "200.00").await;
    }
    let prices = [("clap", 1), ("heart", 10), ("rose", 99), ("coffee", 199)];
    let mut tally: BTreeMap<String, i64> = BTreeMap::new();
    let mut broadcasters: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..50 {
        let f = &fans[rng.random_range(0..fans.len() - 1)];
        let (sticker, price) = prices[rng.random_range(0..prices.len())];
        let q = rng.random_range(1..=5);
        let r = s
            .buy(
                &s.viewer(f),
                &room,
                &format!("lb-{i}"),
                &json!({"sticker_id": sticker, "quantity": q}),
            )
            .await;
        r.expect_status(201);
        assert_eq!(minor(r.json["amount"].as_str().unwrap()), price * q);
        *tally.entry(f.clone()).or_default() += price * q;
        *broadcasters.entry("star-lb".into()).or_default() += price * q;
    }
    // Two gifts into another room count there, and for its broadcaster only.
    for i in 0..2 {
        s.buy(
            &s.viewer(&fans[0]),
            &other_room,
            &format!("lb-other-{i}"),
            &json!({"sticker_id": "star", "quantity": 1}),
        )
        .await
        .expect_status(201);
        *broadcasters.entry("star-lb2".into()).or_default() += 499;
    }
    // Replays of the first purchases count nowhere.
    let mut replay_rng = rand::rngs::StdRng::seed_from_u64(99);
    for i in 0..3 {
        let f = &fans[replay_rng.random_range(0..fans.len() - 1)];
        let (sticker, _) = prices[replay_rng.random_range(0..prices.len())];
        let q: i64 = replay_rng.random_range(1..=5);
        let r = s
            .buy(
                &s.viewer(f),
                &room,
                &format!("lb-{i}"),
                &json!({"sticker_id": sticker, "quantity": q}),
            )
            .await;
        assert_eq!(r.status, 201, "a replay: {}", r.body);
    }
    let want = ranked(&tally);
    board_becomes(
        &s,
        &format!("/v1/rooms/{room}/leaderboard?window=live&limit=100"),
        &want,
    )
    .await;
    for window in ["day", "week", "all"] {
        board_becomes(
            &s,
            &format!("/v1/rooms/{room}/leaderboard?window={window}&limit=100"),
            &want,
        )
        .await;
    }
    // The default window is live, the default limit 10; a limit cuts the top.
    board_becomes(&s, &format!("/v1/rooms/{room}/leaderboard"), &want).await;
    board_becomes(
        &s,
        &format!("/v1/rooms/{room}/leaderboard?limit=3"),
        &want[..3],
    )
    .await;
    board_becomes(
        &s,
        &format!("/v1/rooms/{other_room}/leaderboard?window=live"),
        &[(fans[0].clone(), 998)],
    )
    .await;
    board_becomes(
        &s,
        "/v1/leaderboards/broadcasters?window=all&limit=100",
        &ranked(&broadcasters),
    )
    .await;
    board_becomes(
        &s,
        "/v1/leaderboards/broadcasters?window=day",
        &ranked(&broadcasters),
    )
    .await;

    // One's own rank.
    for (i, (user, amount)) in want.iter().enumerate() {
        let r = s
            .get(
                &format!("/v1/rooms/{room}/leaderboard/me?window=live"),
                Some(&s.viewer(user)),
            )
            .await;
        r.expect_status(200);
        assert_eq!(r.json["user_id"], user.as_str());
        assert_eq!(r.json["rank"], i as u64 + 1, "{}", r.body);
        assert_eq!(minor(r.json["amount"].as_str().unwrap()), *amount);
    }
    let idle = fans.last().unwrap();
    assert!(!tally.contains_key(idle));
    for who in [s.viewer(idle), s.token("star-lb", Role::Broadcaster)] {
        let r = s
            .get(&format!("/v1/rooms/{room}/leaderboard/me"), Some(&who))
            .await;
        r.expect_status(200);
        assert_eq!(r.json["rank"], Value::Null, "{}", r.body);
        assert_eq!(r.json["amount"], "0.00");
    }
    s.get(&format!("/v1/rooms/{room}/leaderboard/me"), None)
        .await
        .expect_error(401, "unauthorized");

    // A new stream session starts an empty live board; "all" keeps the room's past.
    let star = s.token("star-lb", Role::Broadcaster);
    s.post(&format!("/v1/rooms/{room}/end"), Some(&star), &json!({}))
        .await
        .expect_status(200);
    let next = s.open_room("star-lb").await;
    board_becomes(
        &s,
        &format!("/v1/rooms/{next}/leaderboard?window=live"),
        &[],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_board_queries_are_400() {
    let s = Server::start(&[]).await;
    let room = s.open_room("star-lq").await;
    let viewer = s.viewer("lq-fan");
    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "window=month",
        "window=LIVE",
        "window=",
        "colour=red",
    ] {
        for path in [
            format!("/v1/rooms/{room}/leaderboard?{query}"),
            format!("/v1/rooms/{room}/leaderboard/me?{query}"),
            format!("/v1/leaderboards/broadcasters?{query}"),
        ] {
            if path.contains("/me?") && query.starts_with("limit") {
                continue;
            }
            let r = s.get(&path, Some(&viewer)).await;
            assert_eq!(r.status, 400, "{path}: {}", r.body);
            r.expect_error(400, "invalid_query");
        }
    }
    // There is no live window across broadcasters.
    s.get("/v1/leaderboards/broadcasters?window=live", None)
        .await
        .expect_error(400, "invalid_query");
    for limit in ["1", "100"] {
        s.get(&format!("/v1/rooms/{room}/leaderboard?limit={limit}"), None)
            .await
            .expect_status(200);
    }
    s.get("/v1/rooms/no-such-room/leaderboard", None)
        .await
        .expect_error(404, "room_not_found");
    s.get("/v1/rooms/no-such-room/leaderboard/me", Some(&viewer))
        .await
        .expect_error(404, "room_not_found");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_are_rebuilt_after_a_restart() {
    // The embedded boards live in memory: the ledger is the truth, and a
    // restarted server shows the same boards.
    let s = Server::start(&["--gift-burst", "1000"]).await;
    let room = s.open_room("star-rs").await;
    let mut tally: BTreeMap<String, i64> = BTreeMap::new();
    for (i, (fan, sticker, price)) in [
        ("rs-a", "rose", 99),
        ("rs-b", "coffee", 199),
        ("rs-a", "heart", 10),
        ("rs-c", "clap", 1),
    ]
    .into_iter()
    .enumerate()
    {
        s.top_up(fan, "google", "5.00").await;
        s.buy(
            &s.viewer(fan),
            &room,
            &format!("rs-{i}"),
            &json!({"sticker_id": sticker, "quantity": 1}),
        )
        .await
        .expect_status(201);
        *tally.entry(fan.to_owned()).or_default() += price;
    }
    let want = ranked(&tally);
    let path = format!("/v1/rooms/{room}/leaderboard?window=live");
    board_becomes(&s, &path, &want).await;
    let s = s.restart().await;
    board_becomes(&s, &path, &want).await;
    board_becomes(
        &s,
        "/v1/leaderboards/broadcasters?window=all",
        &[("star-rs".to_owned(), 309)],
    )
    .await;
    s.shutdown().await;
}
