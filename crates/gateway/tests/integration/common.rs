//! Shared test harness: a gateway on a real `InProcessBus`, served on
//! 127.0.0.1:0, with an in-test room directory and ack handler, and a small
//! tokio-tungstenite client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use applause_bus::{EventBus, HistoryBounds, InProcessBus, PublishOutcome};
use applause_core::{EventEnvelope, Role};
use applause_gateway::{AckHandler, Gateway, GatewayConfig, RoomDirectory, RoomInfo, Spawner};
use applause_web::{ApiError, Authenticator, Principal};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
pub const ROOM: &str = "room1";
pub const BROADCASTER: &str = "bob";
pub const EPOCH: u64 = 1;
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct TestRooms(Mutex<HashMap<String, RoomInfo>>);

impl TestRooms {
    pub fn add(&self, room_id: &str) {
        self.0.lock().insert(
            room_id.to_owned(),
            RoomInfo {
                room_id: room_id.to_owned(),
                broadcaster_id: BROADCASTER.to_owned(),
                epoch: EPOCH,
                live: true,
                published_seq: 0,
            },
        );
    }
}

#[async_trait::async_trait]
impl RoomDirectory for TestRooms {
    async fn room(&self, room_id: &str) -> Result<Option<RoomInfo>, ApiError> {
        Ok(self.0.lock().get(room_id).cloned())
    }
}

/// Records every ack; answers with `fail_with` when set.
#[derive(Default)]
pub struct TestAcks {
    pub calls: Mutex<Vec<(String, String, String)>>,
    pub fail_with: Mutex<Option<ApiError>>,
}

#[async_trait::async_trait]
impl AckHandler for TestAcks {
    async fn ack(&self, who: &Principal, gift_id: &str, text: &str) -> Result<(), ApiError> {
        self.calls
            .lock()
            .push((who.user_id.clone(), gift_id.to_owned(), text.to_owned()));
        match self.fail_with.lock().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

pub struct Harness {
    pub gw: Gateway,
    pub bus: Arc<InProcessBus>,
    pub addr: SocketAddr,
    pub registry: prometheus::Registry,
    pub auth: Authenticator,
    pub acks: Arc<TestAcks>,
    pub rooms: Arc<TestRooms>,
}

/// A small config for tests: the defaults with the given edits.
pub fn config(edit: impl FnOnce(&mut GatewayConfig)) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    edit(&mut c);
    c
}

impl Harness {
    pub async fn start() -> Self {
        Self::with(GatewayConfig::default(), HistoryBounds::default()).await
    }

    pub async fn with(config: GatewayConfig, bounds: HistoryBounds) -> Self {
        Self::on(config, bounds, Spawner::default()).await
    }

    /// A gateway whose tasks run on `spawner` (a process's tracker).
    pub async fn on(config: GatewayConfig, bounds: HistoryBounds, spawner: Spawner) -> Self {
        let bus = Arc::new(InProcessBus::new(bounds));
        let rooms = Arc::new(TestRooms::default());
        rooms.add(ROOM);
        let acks = Arc::new(TestAcks::default());
        let registry = prometheus::Registry::new();
        let auth = Authenticator::new(SECRET).unwrap();
        let gw = Gateway::new_on(
            config,
            auth.clone(),
            bus.clone(),
            rooms.clone(),
            acks.clone(),
            &registry,
            spawner,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = gw.router();
        tokio::spawn(async move {
            axum::serve(
                applause_gateway::nodelay_listener(listener),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Self {
            gw,
            bus,
            addr,
            registry,
            auth,
            acks,
            rooms,
        }
    }

    pub fn token(&self, user: &str, role: Role) -> String {
        self.auth
            .mint(user, role, None, Duration::from_secs(600))
            .unwrap()
    }

    pub fn url(&self, room: &str, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("ws://{}/v1/ws?room={room}&access_token={t}", self.addr),
            None => format!("ws://{}/v1/ws?room={room}", self.addr),
        }
    }

    /// Connects and reads the welcome.
    pub async fn connect(&self, room: &str, token: Option<&str>) -> (Client, Value) {
        let (ws, _) = tokio_tungstenite::connect_async(self.url(room, token))
            .await
            .expect("connect");
        let mut c = Client { ws };
        let welcome = c.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (c, welcome)
    }

    /// Connects expecting a refusal before the upgrade; returns the status and body.
    pub async fn refused(&self, request: impl IntoClientRequest + Unpin) -> (u16, Value) {
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp.body().clone().unwrap_or_default();
                (
                    resp.status().as_u16(),
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                )
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("the connection was accepted"),
        }
    }

    pub async fn publish(&self, events: &[EventEnvelope]) {
        let outcomes = self.bus.publish(events).await.unwrap();
        assert!(
            outcomes.iter().all(|o| *o == PublishOutcome::Published),
            "{outcomes:?}"
        );
    }

    pub async fn publish_range(&self, room: &str, seqs: std::ops::RangeInclusive<u64>) {
        let events: Vec<_> = seqs.map(|s| gift(room, s)).collect();
        self.publish(&events).await;
    }

    /// The value of a metric (summed over its label sets).
    pub fn metric(&self, name: &str) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            // An unset field reads as its default, 0.
            .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
            .sum()
    }

    pub fn metric_with(&self, name: &str, label: &str, value: &str) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == label && l.value() == value)
            })
            .map(|m| m.get_counter().get_value())
            .sum()
    }
}

/// A gift event for `room` with `seq`; the broadcaster's frame carries a split.
pub fn gift(room: &str, seq: u64) -> EventEnvelope {
    padded(room, seq, 0)
}

/// A gift event whose frames carry `pad` extra bytes.
pub fn padded(room: &str, seq: u64, pad: usize) -> EventEnvelope {
    let frame = serde_json::json!({
        "type": "gift", "room_id": room, "epoch": EPOCH, "seq": seq,
        "gift_id": format!("g{seq}"), "pad": "x".repeat(pad),
    });
    let mut bframe = frame.clone();
    bframe["split"] =
        serde_json::json!({"store": "0.30", "broadcaster": "0.49", "platform": "0.20"});
    EventEnvelope {
        room_id: room.to_owned(),
        epoch: EPOCH,
        seq,
        frame: frame.to_string(),
        broadcaster_frame: Some(bframe.to_string()),
        broadcaster_id: BROADCASTER.to_owned(),
        committed_at_ms: applause_bus::system_now_ms(),
        ends_room: false,
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw when its connection ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Client {
    /// The next text frame as JSON (pings and pongs are skipped).
    pub async fn next_json(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame, or `None` when nothing arrives within `wait`.
    pub async fn maybe_json(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// Reads until the close frame, collecting the text frames before it.
    pub async fn until_close(&mut self) -> (Vec<Value>, Closed) {
        let mut frames = Vec::new();
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the close in time");
            match msg {
                Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(Some(f)))) => {
                    return (
                        frames,
                        Closed {
                            code: u16::from(f.code),
                            reason: f.reason.to_string(),
                        },
                    )
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Reads `n` room events and returns their seqs.
    pub async fn seqs(&mut self, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let v = self.next_json().await;
            out.push(
                v["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("not an event: {v}")),
            );
        }
        out
    }
}

pub fn range(a: u64, b: u64) -> Vec<u64> {
    (a..=b).collect()
}
