//! Measures the gateway's resident memory per idle WebSocket connection.
//!
//! `cargo run --release -p applause-gateway --example idle_memory -- 10000`
//! serves a gateway in this process, opens N idle viewer connections from a
//! child process (so the clients' memory is not counted), and prints the
//! server's RSS growth per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use applause_bus::{HistoryBounds, InProcessBus};
use applause_gateway::{AckHandler, Gateway, GatewayConfig, RoomDirectory, RoomInfo};
use applause_web::{ApiError, Authenticator, Principal};

struct OneRoom;

#[async_trait::async_trait]
impl RoomDirectory for OneRoom {
    async fn room(&self, room_id: &str) -> Result<Option<RoomInfo>, ApiError> {
        Ok(Some(RoomInfo {
            room_id: room_id.to_owned(),
            broadcaster_id: "b".into(),
            epoch: 1,
            live: true,
            published_seq: 0,
        }))
    }
}

struct NoAcks;

#[async_trait::async_trait]
impl AckHandler for NoAcks {
    async fn ack(&self, _: &Principal, _: &str, _: &str) -> Result<(), ApiError> {
        Ok(())
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn clients(addr: SocketAddr, n: usize) {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let url = format!("ws://{addr}/v1/ws?room=r1");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        held.push(ws);
    }
    println!("ready");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        clients(args[2].parse().unwrap(), args[3].parse().unwrap()).await;
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let config = GatewayConfig {
        connects_per_ip_per_s: 0,
        read_buffer_bytes: std::env::var("READ_BUF")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(GatewayConfig::default().read_buffer_bytes),
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(
        config,
        Authenticator::new(&[7u8; 32]).unwrap(),
        Arc::new(InProcessBus::new(HistoryBounds::default())),
        Arc::new(OneRoom),
        Arc::new(NoAcks),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = gw.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Warm up allocator arenas and the room with a few connections first.
    let warm = 100;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["client", &addr.to_string(), &warm.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while gw.connections() < warm {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes();
    let mut big = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["client", &addr.to_string(), &n.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while gw.connections() < warm + n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_bytes();
    println!(
        "{n} idle connections: server RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes per connection",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / n as f64
    );
    let _ = big.kill().await;
    let _ = child.kill().await;
}
