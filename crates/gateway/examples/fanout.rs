//! Rough fan-out throughput probe: one room, N viewers in a child process,
//! R events per second for D seconds; prints deliveries per second and the
//! gateway process's CPU time per delivery.
//!
//! `cargo run -p applause-gateway --example fanout -- 2000 50 10`
//! (viewers, events per second, seconds). The load generator in `loadtest/`
//! is the real benchmark; this isolates the gateway with an in-process bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use applause_bus::{EventBus, HistoryBounds, InProcessBus};
use applause_core::EventEnvelope;
use applause_gateway::{AckHandler, Gateway, GatewayConfig, RoomDirectory, RoomInfo};
use applause_web::{ApiError, Authenticator, Principal};
use futures_util::StreamExt;

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

/// User plus system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum());
    ticks as f64 / 100.0
}

async fn viewers(addr: SocketAddr, n: usize) {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws?room=r1"))
            .await
            .expect("connect");
        tasks.push(tokio::spawn(async move {
            let (_, mut read) = ws.split();
            while let Some(Ok(_)) = read.next().await {}
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("viewers") {
        viewers(args[2].parse().unwrap(), args[3].parse().unwrap()).await;
        return;
    }
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (n, rate, secs) = (arg(1, 2_000) as usize, arg(2, 50), arg(3, 10));
    let bus = Arc::new(InProcessBus::new(HistoryBounds::default()));
    let registry = prometheus::Registry::new();
    let gw = Gateway::new(
        GatewayConfig {
            connects_per_ip_per_s: 0,
            ..GatewayConfig::default()
        },
        Authenticator::new(&[7u8; 32]).unwrap(),
        bus.clone(),
        Arc::new(OneRoom),
        Arc::new(NoAcks),
        &registry,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = gw.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["viewers", &addr.to_string(), &n.to_string()])
        .spawn()
        .unwrap();
    while gw.connections() < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries = || {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "applause_gateway_deliveries_total")
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum::<f64>()
    };
    let pad = "x".repeat(120);
    let (cpu0, d0, t0) = (cpu_seconds(), deliveries(), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    for seq in 1..=rate * secs {
        tick.tick().await;
        let frame =
            format!(r#"{{"type":"gift","room_id":"r1","epoch":1,"seq":{seq},"pad":"{pad}"}}"#);
        bus.publish(&[EventEnvelope {
            room_id: "r1".into(),
            epoch: 1,
            seq,
            frame,
            broadcaster_frame: None,
            broadcaster_id: "b".into(),
            committed_at_ms: applause_bus::system_now_ms(),
            ends_room: false,
        }])
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu, d, t) = (
        cpu_seconds() - cpu0,
        deliveries() - d0,
        t0.elapsed().as_secs_f64(),
    );
    println!(
        "{n} viewers, {rate} events/s for {secs}s: {:.0} deliveries/s, server CPU {:.2} µs per delivery ({:.0}% of one core)",
        d / t,
        cpu * 1e6 / d.max(1.0),
        cpu * 100.0 / t
    );
    let _ = child.kill().await;
}
