//! WebSocket clients of a room, and the checks of what they received.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// What a WebSocket read came to.
#[derive(Debug)]
pub enum Got {
    Frame(Value),
    Closed(Option<u16>),
    Timeout,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One WebSocket client of a room.
pub struct Viewer {
    ws: WsStream,
    pub welcome: Value,
}

impl Viewer {
    /// Connects to `base` (an http:// URL) and reads the welcome frame.
    pub async fn connect(base: &str, room: &str, token: Option<&str>) -> Viewer {
        let mut url = format!("{}/v1/ws?room={room}", base.replacen("http://", "ws://", 1));
        if let Some(t) = token {
            url.push_str(&format!("&access_token={t}"));
        }
        let mut last = None;
        for _ in 0..5 {
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((ws, _)) => {
                    let mut v = Viewer {
                        ws,
                        welcome: Value::Null,
                    };
                    match v.next(Duration::from_secs(10)).await {
                        Got::Frame(f) if f["type"] == "welcome" => {
                            v.welcome = f;
                            return v;
                        }
                        other => panic!("expected a welcome, got {other:?}"),
                    }
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("cannot connect to {url}: {last:?}");
    }

    pub fn welcome_seq(&self) -> u64 {
        self.welcome["seq"].as_u64().expect("welcome seq")
    }

    pub fn epoch(&self) -> u64 {
        self.welcome["epoch"].as_u64().expect("epoch")
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send frame");
    }

    /// The next JSON frame (pongs skipped), a close, or a timeout.
    pub async fn next(&mut self, wait: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Got::Timeout,
                Ok(None) => return Got::Closed(None),
                Ok(Some(Err(_))) => return Got::Closed(None),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("frames are JSON");
                    if v["type"] != "pong" {
                        return Got::Frame(v);
                    }
                }
                Message::Close(c) => return Got::Closed(c.map(|c| u16::from(c.code))),
                _ => {}
            }
        }
    }

    /// Reads frames until `done` says so or `wait` passes; returns them all.
    pub async fn read_until(
        &mut self,
        wait: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        while !done(&frames) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Got::Frame(f) => frames.push(f),
                Got::Closed(_) | Got::Timeout => break,
            }
        }
        frames
    }

    /// Every frame that arrives within `wait` (until the connection closes).
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        self.read_until(wait, |_| false).await
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// The room events among `frames` (everything carrying a `seq`).
pub fn events(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|f| f["seq"].is_u64() && f["type"] != "welcome")
        .collect()
}

/// The gift ids of the gift frames among `frames`, in order.
pub fn gift_ids(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "gift")
        .map(|f| f["gift_id"].as_str().expect("gift_id").to_owned())
        .collect()
}

/// Asserts the room events among `frames` are exactly `after+1, after+2, …`
/// (nothing missing, nothing twice, nothing out of order); returns the last seq.
pub fn assert_consecutive(who: &str, frames: &[Value], after: u64) -> u64 {
    let mut expect = after + 1;
    for e in events(frames) {
        let seq = e["seq"].as_u64().expect("seq");
        assert_eq!(seq, expect, "{who}: expected seq {expect}, got {e}");
        expect += 1;
    }
    expect - 1
}

/// Asserts every purchase in `bodies` is among `frames` exactly once, with
/// the seq of its 201, and that no other gift arrived.
pub fn assert_all_gifts_once(who: &str, frames: &[Value], bodies: &[Value]) {
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    for f in frames.iter().filter(|f| f["type"] == "gift") {
        got.entry(f["gift_id"].as_str().expect("gift_id").to_owned())
            .or_default()
            .push(f["seq"].as_u64().expect("seq"));
    }
    for b in bodies {
        let id = b["gift_id"].as_str().expect("gift_id");
        let seqs = got.remove(id).unwrap_or_default();
        assert_eq!(
            seqs,
            vec![b["seq"].as_u64().expect("seq")],
            "{who}: gift {id} (seq {}) delivered {} times",
            b["seq"],
            seqs.len()
        );
    }
    assert!(got.is_empty(), "{who}: unexpected gifts {got:?}");
}

/// Gifts among `frames` seen so far.
pub fn gift_count(frames: &[Value]) -> usize {
    frames.iter().filter(|f| f["type"] == "gift").count()
}
