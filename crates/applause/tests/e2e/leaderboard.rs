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
