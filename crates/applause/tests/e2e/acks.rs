//! Broadcaster acknowledgements through the binary: over the WebSocket and
//! over HTTP, each reaches the sender and the whole room once; a second ack
//! of a gift is refused (409 / `error` frame), and nobody but the room's
//! broadcaster may acknowledge.

use std::time::Duration;

use applause_core::Role;
use serde_json::json;

use crate::common::*;

fn ack_frames(frames: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    frames.iter().filter(|f| f["type"] == "ack").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_reach_sender_and_room_once_and_only_from_the_broadcaster() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::serve(dir.path(), &[]).await;
    let api = node.api();
    let star = token("star", Role::Broadcaster);
    let alice = token("alice", Role::Viewer);
    let bob = token("bob", Role::Viewer);
    let room = api.open_room(&star).await;
    api.top_up("alice", "50.00").await;

    let mut star_ws = Viewer::connect(&node.base, &room, Some(&star)).await;
    let mut alice_ws = Viewer::connect(&node.base, &room, Some(&alice)).await;
    let mut bob_ws = Viewer::connect(&node.base, &room, Some(&bob)).await;
    let mut anon_ws = Viewer::connect(&node.base, &room, None).await;

    let g: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            let b = api.buy(&alice, &room, &format!("ack-{i}"), "rose").await;
            ids.push(b["gift_id"].as_str().unwrap().to_owned());
        }
        ids
    };
    let seen = star_ws
        .read_until(Duration::from_secs(10), |f| gift_count(f) >= 3)
        .await;
    assert_eq!(
        gift_ids(&seen),
        g,
        "the broadcaster sees the gifts in order"
    );

    // One ack over the WebSocket, one over HTTP.
    star_ws
        .send(json!({"type": "ack", "gift_id": g[0], "text": "thank you!"}))
        .await;
    let (s, b) = api
        .post(
            &format!("/v1/gifts/{}/ack", g[1]),
            &star,
            None,
            &json!({"text": "great question"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    for (who, ws) in [
        ("alice", &mut alice_ws),
        ("anonymous", &mut anon_ws),
        ("broadcaster", &mut star_ws),
    ] {
        let frames = ws
            .read_until(Duration::from_secs(10), |f| ack_frames(f).len() >= 2)
            .await;
        let acks = ack_frames(&frames);
        assert_eq!(acks.len(), 2, "{who}: {frames:?}");
        let mut by_gift: Vec<(String, String)> = acks
            .iter()
            .map(|a| {
                assert_eq!(a["sender_id"], "alice", "{who}: {a}");
                assert_eq!(a["room_id"], room.as_str(), "{who}: {a}");
                (
                    a["gift_id"].as_str().unwrap().to_owned(),
                    a["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        by_gift.sort();
        let mut want = vec![
            (g[0].clone(), "thank you!".to_owned()),
            (g[1].clone(), "great question".to_owned()),
        ];
        want.sort();
        assert_eq!(by_gift, want, "{who}");
    }

    // A second ack: 409 over HTTP, an error frame over the WebSocket.
    let (s, b) = api
        .post(
            &format!("/v1/gifts/{}/ack", g[0]),
            &star,
            None,
            &json!({"text": "again"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("already_acknowledged")),
        "{b}"
    );
    star_ws
        .send(json!({"type": "ack", "gift_id": g[1], "text": "again"}))
        .await;
    let frames = star_ws
        .read_until(Duration::from_secs(5), |f| {
            f.iter().any(|x| x["type"] == "error")
        })
        .await;
    let err = frames
        .iter()
        .find(|f| f["type"] == "error")
        .expect("error frame");
    assert_eq!(err["code"], "already_acknowledged", "{err}");

    // Only the room's broadcaster: a viewer and an anonymous watcher are refused.
    bob_ws
        .send(json!({"type": "ack", "gift_id": g[2], "text": "not mine"}))
        .await;
    let frames = bob_ws
        .read_until(Duration::from_secs(5), |f| {
            f.iter().any(|x| x["type"] == "error")
        })
        .await;
    let err = frames
        .iter()
        .find(|f| f["type"] == "error")
        .expect("error frame for bob");
    assert_eq!(err["code"], "forbidden", "{err}");
    anon_ws
        .send(json!({"type": "ack", "gift_id": g[2], "text": "anonymous"}))
        .await;
    let frames = anon_ws
        .read_until(Duration::from_secs(5), |f| {
            f.iter().any(|x| x["type"] == "error")
        })
        .await;
    let err = frames
        .iter()
        .find(|f| f["type"] == "error")
        .expect("error frame for anonymous");
    assert_eq!(err["code"], "unauthorized", "{err}");
    let (s, b) = api
        .post(
            &format!("/v1/gifts/{}/ack", g[2]),
            &bob,
            None,
            &json!({"text": "not mine"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{b}"
    );

    // Nothing else was broadcast: no ack of the third gift, no repeated ack.
    let rest = alice_ws.drain(Duration::from_millis(700)).await;
    assert!(ack_frames(&rest).is_empty(), "unexpected acks: {rest:?}");
}
