//! Operator endpoints of every node, whatever it runs: liveness, readiness
//! (ledger and bus reachable) and Prometheus metrics.

use std::sync::Arc;

use applause_bus::EventBus;
use applause_ledger::Ledger;
use axum::routing::get;
use axum::Router;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::Encoder;

/// What the operator endpoints read.
#[derive(Clone)]
struct Ops {
    ledger: Ledger,
    bus: Arc<dyn EventBus>,
    registry: prometheus::Registry,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(ledger: Ledger, bus: Arc<dyn EventBus>, registry: prometheus::Registry) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Ops {
            ledger,
            bus,
            registry,
        })
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let ledger = ops.ledger.ping().await.is_ok();
    let bus = ops.bus.ready().await;
    let status = if ledger && bus {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ledger && bus, "ledger": ledger, "bus": bus });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode(&ops.registry.gather(), &mut buf).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        buf,
    )
        .into_response()
}
