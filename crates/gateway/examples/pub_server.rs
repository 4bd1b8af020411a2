//! The gateway alone as a pub/sub fan-out server, for side-by-side runs of
//! `applause-loadtest fanout` against it, nginx+nchan and Node ws with the
//! same client and the same messages: `POST /pub?room=R` publishes its body
//! as the next event of room R on an in-process bus; viewers subscribe on
//! `GET /v1/ws?room=R` (anonymous). Everything else is the real gateway.
//!
//! `cargo run --release -p applause-gateway --example pub_server -- 127.0.0.1:18090`
//! Environment knobs for lever comparisons (when this gateway version has
//! them): `DIRECT_WRITE=0`, `VECTORED_WRITE=0`, `BATCH_EVENTS_MAX=1`,
//! `COALESCE_MS=2` (0 turns the window off; unset, the library default),
//! `COALESCE_EVENTS=4`, `HEAVY_DELIVERIES_MIN=0` (no heavy rooms), `HEAVY_MS=40`, `HEAVY_STAGGER=0`,
//! `NODELAY=0`; and `RESUME_GRACE_MS` (default 0). On SIGTERM it
//! prints the gateway's own commit-to-socket latency histogram and counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use applause_bus::{EventBus, HistoryBounds, InProcessBus};
use applause_core::EventEnvelope;
use applause_gateway::{AckHandler, Gateway, GatewayConfig, RoomDirectory, RoomInfo};
use applause_web::{ApiError, Authenticator, Principal};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;

struct AnyRoom;

#[async_trait::async_trait]
impl RoomDirectory for AnyRoom {
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

#[derive(Clone)]
struct Pub {
    bus: Arc<InProcessBus>,
    /// The last seq published per room; one publisher connection is served
    /// in order, so its messages keep their order.
    seqs: Arc<tokio::sync::Mutex<HashMap<String, u64>>>,
}

async fn publish(
    State(p): State<Pub>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> StatusCode {
    let room = q.get("room").cloned().unwrap_or_else(|| "bench".into());
    let mut seqs = p.seqs.lock().await;
    let seq = seqs.entry(room.clone()).or_insert(0);
    *seq += 1;
    let env = EventEnvelope {
        room_id: room,
        epoch: 1,
        seq: *seq,
        frame: body,
        broadcaster_frame: None,
        broadcaster_id: "b".into(),
        committed_at_ms: applause_bus::system_now_ms(),
        ends_room: false,
    };
    match p.bus.publish(&[env]).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::main]
async fn main() {
    let bind: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into())
        .parse()
        .expect("a socket address");
    #[allow(unused_mut)]
    let mut config = GatewayConfig {
        connects_per_ip_per_s: 0,
        resume_grace_ms: env_u64("RESUME_GRACE_MS").unwrap_or(0),
        ..GatewayConfig::default()
    };
    // Older gateway versions have neither knob: to build this example
    // against them, drop this block (`sed '/knobs-begin/,/knobs-end/d'`).
    // knobs-begin
    config.direct_write = env_u64("DIRECT_WRITE") != Some(0);
    config.vectored_write = env_u64("VECTORED_WRITE") != Some(0);
    config.fanout_batch_events_max = env_u64("BATCH_EVENTS_MAX").map_or(64, |n| n as usize);
    if let Some(ms) = env_u64("COALESCE_MS") {
        config.fanout_coalesce_ms = ms;
    }
    if let Some(n) = env_u64("COALESCE_EVENTS") {
        config.fanout_coalesce_events = n as usize;
    }
    if let Some(n) = env_u64("HEAVY_DELIVERIES_MIN") {
        config.fanout_heavy_deliveries_min = n as u32;
    }
    if let Some(ms) = env_u64("HEAVY_MS") {
        config.fanout_heavy_coalesce_ms = ms;
    }
    if let Some(on) = env_u64("HEAVY_STAGGER") {
        config.fanout_heavy_stagger = on != 0;
    }
    if let Some(on) = env_u64("FANOUT_THREAD") {
        config.fanout_thread = on != 0;
    }
    // knobs-end
    let bus = Arc::new(InProcessBus::new(HistoryBounds::default()));
    let registry = prometheus::Registry::new();
    let gw = Gateway::new(
        config,
        Authenticator::new(&[7u8; 32]).expect("a key"),
        bus.clone(),
        Arc::new(AnyRoom),
        Arc::new(NoAcks),
        &registry,
    )
    .expect("a gateway");
    let app = gw
        .router()
        .merge(Router::new().route("/pub", post(publish)).with_state(Pub {
            bus,
            seqs: Arc::default(),
        }));
    let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
    eprintln!("pub_server on {bind}");
    // `NODELAY=0` leaves Nagle's algorithm on (the gateway before it set
    // TCP_NODELAY), for before/after comparisons.
    let nodelay = env_u64("NODELAY") != Some(0);
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        r = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        ) => r.expect("serve"),
        _ = term.recv() => {}
    }
    // Per-stage timing for the run's log: the gateway's own view, from the
    // publish (its commit time) to the frame taken by the socket, next to
    // the client's publish-to-receive figures.
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_default();
    for line in text.lines().filter(|l| {
        !l.starts_with('#')
            && [
                "fanout_",
                "frames_queued",
                "deliveries_total",
                "socket_writes",
            ]
            .iter()
            .any(|k| l.contains(k))
    }) {
        eprintln!("{line}");
    }
}
