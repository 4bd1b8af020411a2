//! Ending a room through the binary: every viewer gets `room_ended` (in
//! `seq` order after the gifts) and the stream closes; later purchases are
//! refused with 409 `room_not_live`.

use std::time::Duration;

use applause_core::Role;
use futures_util::StreamExt;
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_room_reaches_every_viewer_and_stops_purchases() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::serve(dir.path(), &[]).await;
    let api = node.api();
    let star = token("star", Role::Broadcaster);
    let alice = token("alice", Role::Viewer);
    let room = api.open_room(&star).await;
    api.top_up("alice", "20.00").await;
    let mut viewers: Vec<Viewer> = futures_util::stream::iter(0..60)
        .map(|_| Viewer::connect(&node.base, &room, None))
        .buffer_unordered(20)
        .collect()
        .await;
    let gift = api.buy(&alice, &room, "before-end", "rose").await;

    let (s, b) = api
        .post(&format!("/v1/rooms/{room}/end"), &alice, None, &json!({}))
        .await;
    assert_eq!(s, 403, "only the broadcaster ends the room: {b}");
    let (s, b) = api
        .post(&format!("/v1/rooms/{room}/end"), &star, None, &json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["live"], false, "{b}");

    for (i, v) in viewers.iter_mut().enumerate() {
        let frames = v
            .read_until(Duration::from_secs(10), |f| {
                f.iter().any(|x| x["type"] == "room_ended")
            })
            .await;
        assert!(
            frames.iter().any(|x| x["type"] == "room_ended"),
            "viewer {i}: no room_ended in {frames:?}"
        );
        assert_consecutive(&format!("viewer {i}"), &frames, v.welcome_seq());
        assert_all_gifts_once(&format!("viewer {i}"), &frames, std::slice::from_ref(&gift));
        match v.next(Duration::from_secs(5)).await {
            Got::Closed(code) => assert_eq!(code, Some(1000), "viewer {i}: close code"),
            other => panic!("viewer {i}: the connection stays open after room_ended: {other:?}"),
        }
    }

    let (s, b) = api
        .post(
            &format!("/v1/rooms/{room}/gifts"),
            &alice,
            Some("after-end"),
            &json!({"sticker_id": "rose", "quantity": 1}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("room_not_live")),
        "{b}"
    );
    let (s, b) = api.get(&format!("/v1/rooms/{room}"), None).await;
    assert_eq!((s, &b["live"]), (200, &json!(false)), "{b}");
}
