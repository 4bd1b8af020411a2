//! The live leaderboard through the binary: after purchases, viewers get a
//! `leaderboard` frame (window `live`) that matches both the purchases and
//! `GET /v1/rooms/{room}/leaderboard`.

use std::time::Duration;

use applause_core::Role;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_leaderboard_frames_match_the_purchases_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::serve(dir.path(), &[]).await;
    let api = node.api();
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    let mut viewers = Vec::new();
    for i in 0..3 {
        viewers.push(
            Viewer::connect(
                &node.base,
                &room,
                Some(&token(&format!("w{i}"), Role::Viewer)),
            )
            .await,
        );
    }

    // Different totals per sender, and a tie (broken by user id).
    let plan = [
        ("zed", "heart", 3),
        ("amy", "rose", 5),
        ("bea", "heart", 3),
        ("cal", "rose", 1),
    ];
    let mut bodies = Vec::new();
    for (user, sticker, n) in plan {
        api.top_up(user, "100.00").await;
        let tok = token(user, Role::Viewer);
        for i in 0..n {
            bodies.push(api.buy(&tok, &room, &format!("{user}-{i}"), sticker).await);
        }
    }
    let want = expected_board(&bodies);
    assert_eq!(want.len(), 4);

    for (i, v) in viewers.iter_mut().enumerate() {
        let frames = v
            .read_until(Duration::from_secs(5), |f| {
                f.iter()
                    .rev()
                    .find(|x| x["type"] == "leaderboard")
                    .is_some_and(|x| entries(&x["entries"]) == want)
            })
            .await;
        let last = frames
            .iter()
            .rev()
            .find(|x| x["type"] == "leaderboard")
            .unwrap_or_else(|| panic!("viewer {i}: no leaderboard frame in {frames:?}"));
        assert_eq!(last["window"], "live", "{last}");
        assert_eq!(last["room_id"], room.as_str(), "{last}");
        assert_eq!(entries(&last["entries"]), want, "viewer {i}: {last}");
        assert_eq!(last["entries"][0]["name"], "Name amy", "{last}");
        assert_consecutive(&format!("viewer {i}"), &frames, v.welcome_seq());
        // No stale board follows the final one.
        let rest = v.drain(Duration::from_millis(600)).await;
        assert!(
            rest.iter().all(|x| x["type"] != "leaderboard"),
            "viewer {i}: {rest:?}"
        );
    }
    assert_eq!(api.board(&room, "live").await, want);
}

/// A Redis that may evict keys is reported at start: an operator reading the
/// log learns why viewers could be asked to resync and boards get rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_keys_is_reported_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
        .args(["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("evict-{}:", random_name());
    let node = Node::serve(
        dir.path(),
        &["--redis-url", &url, "--redis-prefix", &prefix],
    )
    .await;
    drop(node);
    let _ = redis.kill();
    let _ = redis.wait();
    let log: String = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("serve-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        log.contains("maxmemory-policy is not noeviction") && log.contains("allkeys-lru"),
        "{log}"
    );
}

/// `applause leaderboard rebuild` recomputes the boards exactly as the nodes
/// count them: a refunded gift stays subtracted after an operator's rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_command_keeps_refunded_gifts_off_the_boards() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("rebuild-{}:", random_name());
    let redis = ["--redis-url", REDIS_URL, "--redis-prefix", prefix.as_str()];
    let node = Node::serve(dir.path(), &redis).await;
    let api = node.api();
    let star = token("star", Role::Broadcaster);
    let room = api.open_room(&star).await;
    api.top_up("amy", "100.00").await;
    api.top_up("bea", "100.00").await;
    let amy = token("amy", Role::Viewer);
    let bea = token("bea", Role::Viewer);
    let kept = api.buy(&amy, &room, "amy-1", "rose").await;
    let refunded = api.buy(&amy, &room, "amy-2", "heart").await;
    let bea_gift = api.buy(&bea, &room, "bea-1", "rose").await;
    let (s, b) = api
        .post(
            &format!(
                "/v1/finance/gifts/{}/refund",
                refunded["gift_id"].as_str().unwrap()
            ),
            &token("fin", Role::Finance),
            None,
            &serde_json::json!({"reason": "chargeback"}),
        )
        .await;
    assert_eq!(s, 200, "refund: {b}");
    let want = expected_board(&[kept.clone(), bea_gift.clone()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api.board(&room, "all").await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "the refund never reached the boards"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_applause"))
        .args(["leaderboard", "rebuild", "--data-dir"])
        .arg(dir.path())
        .args(redis)
        .env("APPLAUSE_JWT_SECRET", SECRET)
        .env_remove("APPLAUSE_DATABASE_URL")
        .output()
        .expect("run applause leaderboard rebuild");
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for window in ["live", "day", "week", "all"] {
        assert_eq!(
            api.board(&room, window).await,
            want,
            "window {window} after the rebuild"
        );
    }
    let (s, top) = api
        .get("/v1/leaderboards/broadcasters?window=all&limit=10", None)
        .await;
    assert_eq!(s, 200, "{top}");
    let gross =
        minor(kept["amount"].as_str().unwrap()) + minor(bea_gift["amount"].as_str().unwrap());
    let star_row = top["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["user_id"] == "star")
        .unwrap_or_else(|| panic!("star is not on the broadcaster board: {top}"));
    assert_eq!(minor(star_row["amount"].as_str().unwrap()), gross, "{top}");
    drop(node);
    let _ = delete_redis_keys(&format!("{prefix}*")).await;
}
