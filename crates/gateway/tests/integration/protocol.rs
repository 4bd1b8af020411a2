//! SPEC §4 message by message: welcome, events, broadcaster frames, ping,
//! ack, and the refusals before and after the upgrade.

use std::time::Duration;

use applause_bus::HistoryBounds;
use applause_core::{ErrorCode, Role};
use applause_web::ApiError;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test]
async fn welcome_then_strictly_consecutive_events() {
    let h = Harness::start().await;
    let (mut c, welcome) = h.connect(ROOM, None).await;
    assert_eq!(welcome["room_id"], ROOM);
    assert_eq!(welcome["epoch"], EPOCH);
    assert_eq!(welcome["seq"], 0);
    assert!(welcome["server_time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    h.publish_range(ROOM, 1..=20).await;
    for seq in 1..=20u64 {
        let v = c.next_json().await;
        assert_eq!(v["type"], "gift");
        assert_eq!(v["seq"], seq);
        assert_eq!(v["gift_id"], format!("g{seq}"));
        assert!(v.get("split").is_none(), "viewers never see the split");
    }
    assert_eq!(c.maybe_json(Duration::from_millis(200)).await, None);
}

#[tokio::test]
async fn welcome_carries_the_rooms_last_seq() {
    let h = Harness::start().await;
    h.publish_range(ROOM, 1..=5).await;
    let (mut c, welcome) = h.connect(ROOM, None).await;
    assert_eq!(welcome["seq"], 5);
    h.publish_range(ROOM, 6..=6).await;
    assert_eq!(c.seqs(1).await, vec![6]);
}

#[tokio::test]
async fn broadcaster_gets_the_broadcaster_frame_and_viewers_do_not() {
    let h = Harness::start().await;
    let (mut b, _) = h
        .connect(ROOM, Some(&h.token(BROADCASTER, Role::Broadcaster)))
        .await;
    let (mut v, _) = h.connect(ROOM, Some(&h.token("alice", Role::Viewer))).await;
    let (mut anon, _) = h.connect(ROOM, None).await;
    h.publish_range(ROOM, 1..=1).await;
    let bf = b.next_json().await;
    assert_eq!(bf["split"]["broadcaster"], "0.49");
    for c in [&mut v, &mut anon] {
        let f = c.next_json().await;
        assert_eq!(f["seq"], 1);
        assert!(f.get("split").is_none());
    }
}

#[tokio::test]
async fn token_by_header_is_accepted() {
    let h = Harness::start().await;
    let mut req = h.url(ROOM, None).into_client_request().unwrap();
    let bearer = format!("Bearer {}", h.token(BROADCASTER, Role::Broadcaster));
    req.headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client { ws };
    assert_eq!(c.next_json().await["type"], "welcome");
    h.publish_range(ROOM, 1..=1).await;
    assert!(c.next_json().await.get("split").is_some());
}

#[tokio::test]
async fn ping_gets_pong() {
    let h = Harness::start().await;
    let (mut c, _) = h.connect(ROOM, None).await;
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(c.next_json().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn acks_reach_the_handler_and_its_errors_come_back() {
    let h = Harness::start().await;
    let (mut b, _) = h
        .connect(ROOM, Some(&h.token(BROADCASTER, Role::Broadcaster)))
        .await;
    b.send_json(json!({"type": "ack", "gift_id": "g1", "text": "thank you!"}))
        .await;
    b.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        b.next_json().await["type"],
        "pong",
        "a successful ack answers nothing"
    );
    assert_eq!(
        h.acks.calls.lock().clone(),
        vec![(
            BROADCASTER.to_owned(),
            "g1".to_owned(),
            "thank you!".to_owned()
        )]
    );

    *h.acks.fail_with.lock() = Some(ApiError::new(
        ErrorCode::AlreadyAcknowledged,
        "already acknowledged",
    ));
    b.send_json(json!({"type": "ack", "gift_id": "g1", "text": "again"}))
        .await;
    let e = b.next_json().await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "already_acknowledged");

    let (mut anon, _) = h.connect(ROOM, None).await;
    anon.send_json(json!({"type": "ack", "gift_id": "g1", "text": "hi"}))
        .await;
    assert_eq!(anon.next_json().await["code"], "unauthorized");
    assert_eq!(
        h.acks.calls.lock().len(),
        2,
        "anonymous acks never reach the handler"
    );
}

#[tokio::test]
async fn refusals_before_the_upgrade() {
    let h = Harness::start().await;
    let (status, body) = h.refused(h.url(ROOM, Some("garbage"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );

    let mut req = h.url(ROOM, None).into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(h.refused(req).await.0, 401);

    let (status, body) = h.refused(h.url("no-such-room", None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("room_not_found"))
    );
    let (status, _) = h.refused(h.url("bad%20id", None)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn connection_cap_and_per_ip_rate() {
    let h = Harness::with(config(|c| c.connections_max = 2), HistoryBounds::default()).await;
    let _a = h.connect(ROOM, None).await;
    let _b = h.connect(ROOM, None).await;
    let (status, body) = h.refused(h.url(ROOM, None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );

    let h = Harness::with(
        config(|c| {
            c.connects_per_ip_per_s = 1;
            c.connects_per_ip_burst = 2;
        }),
        HistoryBounds::default(),
    )
    .await;
    let _a = h.connect(ROOM, None).await;
    let _b = h.connect(ROOM, None).await;
    let (status, body) = h.refused(h.url(ROOM, None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
}

#[tokio::test]
async fn oversized_frame_closes_1009() {
    let h = Harness::start().await;
    let (mut c, _) = h.connect(ROOM, None).await;
    c.send(Message::text("x".repeat(5_000))).await;
    let (frames, closed) = c.until_close().await;
    assert_eq!(closed.code, 1009);
    assert_eq!(frames.last().unwrap()["code"], "payload_too_large");
}

#[tokio::test]
async fn frame_far_over_the_limit_closes_1009_too() {
    let h = Harness::start().await;
    let (mut c, _) = h.connect(ROOM, None).await;
    c.send(Message::text("x".repeat(100_000))).await;
    let (_, closed) = c.until_close().await;
    assert_eq!(closed.code, 1009);
}

#[tokio::test]
async fn malformed_frames_get_errors_then_1008() {
    let h = Harness::start().await;
    let (mut c, _) = h.connect(ROOM, None).await;
    for _ in 0..4 {
        c.send(Message::text("not json")).await;
        let e = c.next_json().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("invalid_json"))
        );
    }
    c.send_json(json!({"type": "dance"})).await;
    let (frames, closed) = c.until_close().await;
    assert_eq!(frames.last().unwrap()["code"], "invalid_request");
    assert_eq!(closed.code, 1008);
}

#[tokio::test]
async fn binary_frames_are_refused_with_an_error() {
    let h = Harness::start().await;
    let (mut c, _) = h.connect(ROOM, None).await;
    c.send(Message::binary(vec![1, 2, 3])).await;
    let e = c.next_json().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("invalid_request"))
    );
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        c.next_json().await["type"],
        "pong",
        "one bad frame does not close"
    );
}

#[tokio::test]
async fn silent_peer_is_closed_after_the_idle_timeout() {
    let h = Harness::with(
        config(|c| {
            c.ping_interval_ms = 100;
            c.idle_timeout_ms = 300;
        }),
        HistoryBounds::default(),
    )
    .await;
    let (mut c, _) = h.connect(ROOM, None).await;
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, closed) = c.until_close().await;
    assert_eq!(
        closed,
        Closed {
            code: 1000,
            reason: "idle_timeout".into()
        }
    );

    // A peer that keeps reading answers pings and stays.
    let (mut c, _) = h.connect(ROOM, None).await;
    assert_eq!(c.maybe_json(Duration::from_millis(800)).await, None);
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(c.next_json().await["type"], "pong");
}

#[tokio::test]
async fn room_end_is_delivered_then_closes_1000() {
    let h = Harness::start().await;
    let (mut c, _) = h.connect(ROOM, None).await;
    let mut end = gift(ROOM, 1);
    end.frame =
        json!({"type": "room_ended", "room_id": ROOM, "epoch": EPOCH, "seq": 1}).to_string();
    end.broadcaster_frame = None;
    end.ends_room = true;
    h.publish(&[end]).await;
    let (frames, closed) = c.until_close().await;
    assert_eq!(frames[0]["type"], "room_ended");
    assert_eq!(
        closed,
        Closed {
            code: 1000,
            reason: "room_ended".into()
        }
    );
}

#[tokio::test]
async fn plain_http_get_is_a_json_400() {
    let h = Harness::start().await;
    let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET /v1/ws?room={ROOM} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains(r#""code":"invalid_request""#), "{resp}");
}
