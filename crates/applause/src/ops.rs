//! Operator endpoints of every node, whatever it runs: liveness, readiness
//! (ledger and bus reachable), Prometheus metrics, and the node's OpenAPI
//! description (`/openapi.json`).

use std::sync::{Arc, OnceLock};

use applause_bus::EventBus;
use applause_ledger::Ledger;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::Encoder;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the operator endpoints read.
#[derive(Clone)]
struct Ops {
    ledger: Ledger,
    bus: Arc<dyn EventBus>,
    registry: prometheus::Registry,
}

/// `/healthz`, `/readyz` and `/metrics`, described.
pub fn api(
    ledger: Ledger,
    bus: Arc<dyn EventBus>,
    registry: prometheus::Registry,
) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .with_state(Ops {
            ledger,
            bus,
            registry,
        })
}

/// The serialized description the node serves, set once the router is built
/// (the description describes its own route too).
#[derive(Clone, Default)]
pub struct Description(Arc<OnceLock<String>>);

impl Description {
    /// Sets the document; later calls change nothing.
    pub fn set(&self, json: String) {
        let _ = self.0.set(json);
    }
}

/// `/openapi.json`, serving `doc` once it is set.
pub fn description_api(doc: Description) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .with_state(doc)
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operators",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = String, content_type = "text/plain"))
)]
async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// Whether the node's dependencies answer.
#[derive(Serialize, ToSchema)]
struct Readiness {
    /// The event bus (in-process, or Redis) answers.
    bus: bool,
    /// The ledger's database answers.
    ledger: bool,
    /// Both.
    ready: bool,
}

/// Readiness: the ledger and the bus (Redis, when configured) are reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operators",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready: what is unreachable is `false`.", body = Readiness),
    )
)]
async fn readyz(State(ops): State<Ops>) -> Response {
    let ledger = ops.ledger.ping().await.is_ok();
    let bus = ops.bus.ready().await;
    let status = if ledger && bus {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        bus,
        ledger,
        ready: ledger && bus,
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_string(&body).expect("readiness serializes"),
    )
        .into_response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operators",
    operation_id = "metrics",
    responses((status = 200, description = "The metrics.", body = String,
        content_type = "text/plain; version=0.0.4"))
)]
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

/// This description: the OpenAPI 3.1 document of the routes this node serves.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operators",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.",
        body = Object, content_type = "application/json"))
)]
async fn openapi_json(State(doc): State<Description>) -> Response {
    let body = doc.0.get().cloned().unwrap_or_else(|| "{}".to_owned());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
