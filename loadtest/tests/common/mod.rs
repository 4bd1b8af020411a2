//! A deliberately small, optionally FAULTY stand-in for Applause: just enough
//! of the public API (stickers, rooms, top-ups, gifts, acks, finance summary
//! and revenue by broadcaster, leaderboard, WebSocket welcome/gift/ack frames) to drive the load generator,
//! with switches that break exactly one guarantee each.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Which single guarantee the server breaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Viewer connection 0 never gets the second gift frame.
    DropFrame,
    /// Viewer connection 0 gets the second gift frame twice.
    DuplicateFrame,
    /// Viewer connection 0 gets the third gift frame before the second.
    ReorderFrames,
    /// The finance summary, and the revenue report of each broadcaster, show one
    /// cent more than was sold (once anything was).
    FinanceTotal,
    /// The top leaderboard entry shows one cent more than it spent.
    LeaderboardEntry,
}

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

struct RoomState {
    broadcaster: String,
    seq: u64,
    tx: broadcast::Sender<(bool, String)>,
    board: BTreeMap<String, i64>,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, RoomState>,
    gifts: HashMap<String, Value>,
    by_key: HashMap<String, Value>,
    gross: i64,
    gross_by_broadcaster: BTreeMap<String, i64>,
    next_id: u64,
}

struct AppState {
    fault: Fault,
    inner: Mutex<Inner>,
    connections: AtomicUsize,
}

type Shared = Arc<AppState>;

fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn sub_of(headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_issuer(&["applause"]);
    let data =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(SECRET.as_bytes()), &v)
            .ok()?;
    data.claims["sub"].as_str().map(str::to_owned)
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": code}})),
    )
        .into_response()
}

async fn stickers() -> Json<Value> {
    Json(json!({"stickers": [
        {"id": "rose", "name": "Rose", "price": "0.10", "animation": "rose"},
        {"id": "heart", "name": "Heart", "price": "1.99", "animation": "heart"},
        {"id": "rocket", "name": "Rocket", "price": "50.00", "animation": "rocket"},
    ]}))
}

async fn create_room(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let Some(sub) = sub_of(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let mut inner = s.inner.lock().unwrap();
    inner.next_id += 1;
    let room_id = format!("room{}", inner.next_id);
    let (tx, _) = broadcast::channel(65_536);
    inner.rooms.insert(
        room_id.clone(),
        RoomState {
            broadcaster: sub.clone(),
            seq: 0,
            tx,
            board: BTreeMap::new(),
        },
    );
    let body = json!({"room_id": room_id, "broadcaster_id": sub, "title": "t", "live": true});
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn topup(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if sub_of(&headers).is_none() || !body["amount"].is_string() {
        return error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    (StatusCode::CREATED, Json(json!({"ok": true}))).into_response()
}

async fn gift(
    State(s): State<Shared>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let Some(sub) = sub_of(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let Some(key) = headers.get("idempotency-key").and_then(|k| k.to_str().ok()) else {
        return error(StatusCode::BAD_REQUEST, "idempotency_key_required");
    };
    let price = match body["sticker_id"].as_str() {
        Some("rose") => 10,
        Some("heart") => 199,
        Some("rocket") => 5000,
        _ => return error(StatusCode::NOT_FOUND, "unknown_sticker"),
    };
    let quantity = body["quantity"].as_i64().unwrap_or(1);
    let mut inner = s.inner.lock().unwrap();
    if let Some(previous) = inner.by_key.get(key) {
        return (StatusCode::CREATED, Json(previous.clone())).into_response();
    }
    inner.next_id += 1;
    let gift_id = format!("gift{}", inner.next_id);
    let amount = price * quantity;
    inner.gross += amount;
    if let Some(b) = inner.rooms.get(&room_id).map(|r| r.broadcaster.clone()) {
        *inner.gross_by_broadcaster.entry(b).or_default() += amount;
    }
    let Some(room) = inner.rooms.get_mut(&room_id) else {
        return error(StatusCode::NOT_FOUND, "room_not_found");
    };
    room.seq += 1;
    *room.board.entry(sub.clone()).or_default() += amount;
    let frame = json!({
        "room_id": room_id, "epoch": 1, "seq": room.seq, "type": "gift", "gift_id": gift_id,
        "sender": {"id": sub, "name": sub}, "sticker_id": body["sticker_id"],
        "quantity": quantity, "amount": money(amount), "message": body["message"],
        "created_at": "2026-01-01T00:00:00Z",
    });
    let _ = room.tx.send((true, frame.to_string()));
    let resp = json!({
        "gift_id": gift_id, "room_id": room_id, "sender_id": sub,
        "sticker_id": body["sticker_id"], "quantity": quantity, "amount": money(amount),
        "split": {"store": "0.00", "broadcaster": money(amount), "platform": "0.00"},
        "balance": "0.00", "seq": room.seq, "created_at": "2026-01-01T00:00:00Z",
    });
    inner.by_key.insert(key.to_owned(), resp.clone());
    inner
        .gifts
        .insert(gift_id, json!({"room_id": room_id, "sender_id": sub}));
    (StatusCode::CREATED, Json(resp)).into_response()
}

async fn ack(State(s): State<Shared>, Path(gift_id): Path<String>) -> Response {
    let mut inner = s.inner.lock().unwrap();
    let Some(g) = inner.gifts.get(&gift_id).cloned() else {
        return error(StatusCode::NOT_FOUND, "gift_not_found");
    };
    let room_id = g["room_id"].as_str().unwrap_or_default().to_owned();
    let room = inner.rooms.get_mut(&room_id).expect("room of a gift");
    room.seq += 1;
    let frame = json!({
        "room_id": room_id, "epoch": 1, "seq": room.seq, "type": "ack", "gift_id": gift_id,
        "sender_id": g["sender_id"], "text": "thanks", "created_at": "2026-01-01T00:00:00Z",
    });
    let _ = room.tx.send((false, frame.to_string()));
    (StatusCode::OK, Json(json!({"ok": true}))).into_response()
}

async fn summary(State(s): State<Shared>) -> Json<Value> {
    let gross = s.inner.lock().unwrap().gross;
    // Off by a cent once anything was sold: a constant offset would cancel
    // out of the before/after delta the load generator compares.
    let off = i64::from(s.fault == Fault::FinanceTotal && gross > 0);
    Json(json!({"gross_gifts": money(gross + off), "ledger_check": {"ok": true}}))
}

async fn revenue(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("group_by").map(String::as_str) != Some("broadcaster")
        || !q.contains_key("from")
        || !q.contains_key("to")
    {
        return error(StatusCode::BAD_REQUEST, "invalid_query");
    }
    let inner = s.inner.lock().unwrap();
    let off = i64::from(s.fault == Fault::FinanceTotal);
    let rows: Vec<Value> = inner
        .gross_by_broadcaster
        .iter()
        .map(|(b, &g)| json!({"broadcaster": b, "gross": money(if g > 0 { g + off } else { g })}))
        .collect();
    Json(json!({"group_by": "broadcaster", "rows": rows, "totals": {"gross": money(inner.gross)}}))
        .into_response()
}

async fn leaderboard(State(s): State<Shared>, Path(room_id): Path<String>) -> Response {
    let inner = s.inner.lock().unwrap();
    let Some(room) = inner.rooms.get(&room_id) else {
        return error(StatusCode::NOT_FOUND, "room_not_found");
    };
    let mut rows: Vec<(&String, i64)> = room.board.iter().map(|(u, a)| (u, *a)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let off = i64::from(s.fault == Fault::LeaderboardEntry);
    let entries: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (u, a))| {
            let a = if i == 0 { a + off } else { *a };
            json!({"rank": i + 1, "user_id": u, "name": u, "amount": money(a)})
        })
        .collect();
    Json(json!({"room_id": room_id, "window": "live", "entries": entries})).into_response()
}

async fn ws(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let room_id = q.get("room").cloned().unwrap_or_default();
    let subscribed = {
        let inner = s.inner.lock().unwrap();
        inner.rooms.get(&room_id).map(|r| (r.tx.subscribe(), r.seq))
    };
    let Some((rx, seq)) = subscribed else {
        return error(StatusCode::NOT_FOUND, "room_not_found");
    };
    let index = s.connections.fetch_add(1, Ordering::SeqCst);
    let fault = if index == 0 { s.fault } else { Fault::None };
    upgrade.on_upgrade(move |socket| viewer(socket, room_id, seq, rx, fault))
}

async fn viewer(
    mut socket: WebSocket,
    room_id: String,
    seq: u64,
    mut rx: broadcast::Receiver<(bool, String)>,
    fault: Fault,
) {
    let welcome =
        json!({"type": "welcome", "room_id": room_id, "epoch": 1, "seq": seq, "server_time": "x"});
    if socket
        .send(Message::text(welcome.to_string()))
        .await
        .is_err()
    {
        return;
    }
    let mut gifts = 0;
    let mut held: Option<String> = None;
    while let Ok((is_gift, frame)) = rx.recv().await {
        let mut out = vec![frame.clone()];
        if is_gift {
            gifts += 1;
            match (fault, gifts) {
                (Fault::DropFrame, 2) => out.clear(),
                (Fault::DuplicateFrame, 2) => out.push(frame),
                (Fault::ReorderFrames, 2) => {
                    held = Some(frame);
                    out.clear();
                }
                (Fault::ReorderFrames, 3) => out.extend(held.take()),
                _ => {}
            }
        }
        for f in out {
            if socket.send(Message::text(f)).await.is_err() {
                return;
            }
        }
    }
}

/// Starts the server on an ephemeral loopback port; returns its base URL.
pub async fn start(fault: Fault) -> String {
    let state = Arc::new(AppState {
        fault,
        inner: Mutex::default(),
        connections: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/v1/stickers", get(stickers))
        .route("/v1/rooms", post(create_room))
        .route("/v1/topups", post(topup))
        .route("/v1/rooms/{room_id}/gifts", post(gift))
        .route("/v1/gifts/{gift_id}/ack", post(ack))
        .route("/v1/finance/summary", get(summary))
        .route("/v1/finance/revenue", get(revenue))
        .route("/v1/rooms/{room_id}/leaderboard", get(leaderboard))
        .route("/v1/ws", get(ws))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}
