//! The fan-out mode against a minimal in-test broadcast server (the shape of
//! the Node ws and nchan peers): publishing by WebSocket and by pipelined HTTP
//! POST, every message must reach every subscriber once and in order.

use std::sync::Arc;

use applause_loadtest::{execute, Cli};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use tokio::sync::broadcast;

type Tx = Arc<broadcast::Sender<String>>;

async fn sub(State(tx): State<Tx>, up: WebSocketUpgrade) -> Response {
    let mut rx = tx.subscribe();
    up.on_upgrade(move |mut ws: WebSocket| async move {
        while let Ok(m) = rx.recv().await {
            if ws.send(Message::text(m)).await.is_err() {
                return;
            }
        }
    })
}

async fn pub_ws(State(tx): State<Tx>, up: WebSocketUpgrade) -> Response {
    up.on_upgrade(move |mut ws: WebSocket| async move {
        while let Some(Ok(m)) = ws.recv().await {
            if let Message::Text(t) = m {
                let _ = tx.send(t.to_string());
            }
        }
    })
}

async fn pub_http(State(tx): State<Tx>, body: String) -> &'static str {
    let _ = tx.send(body);
    "queued"
}

async fn start() -> String {
    let (tx, _) = broadcast::channel(4096);
    let app = Router::new()
        .route("/sub", get(sub))
        .route("/pub", get(pub_ws).post(pub_http))
        .with_state(Arc::new(tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

async fn fanout(publish: String, sub: String) {
    let pid = std::process::id().to_string();
    let cli = Cli::try_parse_from([
        "applause-loadtest",
        "fanout",
        "--publish",
        &publish,
        "--subscribe",
        &sub,
        "--subscribers",
        "50",
        "--rate",
        "40",
        "--duration",
        "1s",
        "--warmup",
        "250ms",
        "--drain",
        "2s",
        "--strict",
        "--quiet",
        "--server-pid",
        &pid,
    ])
    .unwrap();
    let (outcome, _) = execute(cli).await.unwrap();
    let r = &outcome.report;
    assert!(outcome.ok(), "{:?}", outcome.problems);
    assert_eq!(r.viewers.connected, 50);
    assert!(r.gifts.created >= 45, "{:?}", r.gifts);
    assert_eq!(r.deliveries.total, r.gifts.created * 50);
    assert!(r.latency.gift_to_screen.count > 0);
    assert!(r.server.as_ref().is_some_and(|s| s.rss_kib_max > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_by_websocket() {
    let addr = start().await;
    fanout(format!("ws://{addr}/pub"), format!("ws://{addr}/sub")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_by_pipelined_http_post() {
    let addr = start().await;
    fanout(
        format!("http://{addr}/pub?id=x"),
        format!("http://{addr}/sub"),
    )
    .await;
}
