//! The OpenAPI description against the routes: on every kind of node, the
//! router serves exactly the described operations plus the HTML pages (and
//! nothing else), every described operation is routed (no 404/405 from the
//! router), and the served `/openapi.json` is a valid OpenAPI 3.1 document
//! whose error responses carry real codes with their real statuses.

use std::collections::{BTreeSet, HashSet};

use applause::{CommonArgs, Mode};
use applause_core::ErrorCode;
use clap::Parser;
use serde_json::Value;

use crate::common::{random_name, Server, SECRET};

/// The routes that are web pages (`applause-pages`): HTML, not API, so not
/// described. Every node serves them (docs/architecture.md).
const PAGES: &[(&str, &str)] = &[
    ("GET", "/watch/{room_id}"),
    ("GET", "/overlay/{room_id}"),
    ("GET", "/studio"),
    ("GET", "/finance"),
    ("GET", "/favicon.ico"),
    ("GET", "/assets/"),
    ("GET", "/assets/{*path}"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

async fn app(mode: Mode, dir: &std::path::Path) -> applause::App {
    let prefix = format!("applause_citest_openapi_{}:", random_name());
    let mut argv = vec![
        "applause".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
    ];
    if mode != Mode::Embedded {
        argv.extend([
            "--redis-url".to_owned(),
            "redis://127.0.0.1:6379".to_owned(),
            "--redis-prefix".to_owned(),
            prefix,
        ]);
    }
    let settings = Cli::try_parse_from(&argv)
        .expect("flags parse")
        .common
        .settings()
        .expect("settings are valid");
    applause::build(&settings, SECRET, mode)
        .await
        .expect("app builds (Redis on 127.0.0.1:6379 for scaled kinds)")
}

/// The `(METHOD, path)` pairs a router serves, read from its `Debug`
/// rendering: axum 0.8 prints each route's `MethodRouter` (an endpoint per
/// method, `None` where there is none) and the route id → path table. A
/// `get` also answers HEAD (axum adds it), so HEAD is not listed beside GET.
fn routes_of(router: &axum::Router) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    // Only the router's own routes: the fallback router comes after.
    let text = &text[..text
        .find("fallback_router")
        .expect("axum's Router Debug layout")];
    let paths: std::collections::HashMap<String, String> =
        route_fields(text, "RouteId(", ": \"").into_iter().collect();
    let mut routes = BTreeSet::new();
    for (id, endpoint) in route_fields(text, "RouteId(", ": MethodRouter(MethodRouter { ") {
        let path = paths
            .get(&id)
            .unwrap_or_else(|| panic!("route {id} has a path"));
        let fields = &endpoint[..endpoint.find("fallback:").expect("MethodRouter layout")];
        let mut methods = Vec::new();
        for field in fields.split(", ").filter(|f| !f.is_empty()) {
            let (method, value) = field.split_once(": ").expect("`method: endpoint`");
            if value != "None" {
                methods.push(method.to_uppercase());
            }
        }
        let has_get = methods.iter().any(|m| m == "GET");
        for m in methods {
            if !(m == "HEAD" && has_get) {
                routes.insert((m, path.clone()));
            }
        }
    }
    assert!(
        !routes.is_empty(),
        "no route found in the router's Debug output: has axum's layout changed?\n{text}"
    );
    routes
}

/// Every `RouteId(N)` + `sep` + rest in `text`: `(N, rest up to the next `, RouteId(` or `}`)`.
fn route_fields(text: &str, open: &str, sep: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find(open) {
        let start = at + i + open.len();
        let Some(close) = text[start..].find(')') else {
            break;
        };
        let id = text[start..start + close].to_owned();
        let after = start + close + 1;
        at = after;
        if let Some(rest) = text[after..].strip_prefix(sep) {
            let end = if sep.ends_with('"') {
                rest.find('"').unwrap_or(rest.len())
            } else {
                rest.find(" }").unwrap_or(rest.len())
            };
            out.push((id, rest[..end].to_owned()));
        }
    }
    out
}

/// The `(METHOD, path)` pairs a description describes.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_and_every_description_routed_on_every_kind_of_node() {
    for mode in [Mode::Embedded, Mode::Gifts, Mode::Gateway] {
        let dir = tempfile::tempdir().unwrap();
        let app = app(mode, dir.path()).await;
        let routed = routes_of(&app.router);
        let doc = described(&app.openapi);
        let pages: BTreeSet<(String, String)> = PAGES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        let api: BTreeSet<_> = routed.difference(&pages).cloned().collect();
        assert!(
            pages.is_subset(&routed),
            "{mode:?}: pages not routed: {:?}",
            pages.difference(&routed).collect::<Vec<_>>()
        );
        assert_eq!(
            api.difference(&doc).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "{mode:?}: routes without a description"
        );
        assert_eq!(
            doc.difference(&api).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "{mode:?}: descriptions without a route"
        );
        // What each kind serves.
        let has = |m: &str, p: &str| doc.contains(&(m.to_owned(), p.to_owned()));
        assert!(
            has("GET", "/openapi.json") && has("GET", "/healthz"),
            "{mode:?}"
        );
        assert_eq!(has("GET", "/v1/ws"), mode != Mode::Gifts, "{mode:?}");
        assert_eq!(
            has("POST", "/v1/rooms/{room_id}/gifts"),
            mode != Mode::Gateway,
            "{mode:?}"
        );
        if mode == Mode::Embedded {
            assert_eq!(doc.len(), 24, "{doc:?}");
        }
        app.tasks.shutdown().await;
        app.ledger.shutdown().await;
    }
}

/// A request to every described operation reaches its handler: the answer
/// is never the router's own 404 (`not_found`, "no such endpoint") or 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_described_operation_reaches_a_handler() {
    let s = Server::start(&[]).await;
    let doc: Value = s
        .client
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ops = described(&doc);
    assert_eq!(ops.len(), 24);
    for (method, path) in &ops {
        // Any id that could exist; handlers answer their own 404 for it.
        let url = format!("{}{}", s.base, fill(path));
        let req = s.client.request(method.parse().unwrap(), &url).header(
            "authorization",
            format!("Bearer {}", s.token("probe", applause_core::Role::Admin)),
        );
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        let routed_away = status == 405
            || (status == 404
                && body.contains("\"not_found\"")
                && body.contains("no such endpoint"));
        assert!(!routed_away, "{method} {path}: {status} {body}");
    }
    // The probe tells the router's answers apart: they are what it sees
    // for what is not routed.
    for (method, path, status) in [("GET", "/v1/nothing", 404), ("DELETE", "/v1/stickers", 405)] {
        let r = s
            .client
            .request(method.parse().unwrap(), format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
    }
    s.shutdown().await;
}

/// A path template with each `{param}` replaced by a well-formed id.
fn fill(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("a closed parameter") + open;
        out.push_str("probe-id");
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every `"$ref"` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().expect("a $ref is a string"));
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_description_is_valid_openapi_3_1() {
    for mode in [Mode::Embedded, Mode::Gifts, Mode::Gateway] {
        let dir = tempfile::tempdir().unwrap();
        let app = app(mode, dir.path()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let expected = app.openapi.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(applause::run(app, listener, async move {
            let _ = stopped.await;
        }));
        let resp = reqwest::get(format!("{base}/openapi.json")).await.unwrap();
        assert_eq!(resp.status(), 200, "{mode:?}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{mode:?}"
        );
        let text = resp.text().await.unwrap();
        let doc: Value = serde_json::from_str(&text).expect("the description is JSON");
        assert_eq!(doc, expected, "{mode:?}: served = built");
        check_document(&doc, &text, mode);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}

fn check_document(doc: &Value, text: &str, mode: Mode) {
    let version = doc["openapi"].as_str().expect("an `openapi` field");
    assert!(version.starts_with("3.1."), "{mode:?}: openapi {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // The document parses as OpenAPI (utoipa's own model of the spec).
    let _: utoipa::openapi::OpenApi =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{mode:?}: not OpenAPI: {e}"));
    // Every reference resolves inside the document.
    let mut all = Vec::new();
    refs(doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{mode:?}: a reference outside the schemas: {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{mode:?}: {r} does not resolve"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let mut ids = HashSet::new();
    let mut links = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{mode:?} {method} {path}");
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_owned()), "{what}: operationId {id} twice");
            for req in op["security"].as_array().into_iter().flatten() {
                for name in req.as_object().unwrap().keys() {
                    assert!(schemes[name].is_object(), "{what}: unknown scheme {name}");
                }
            }
            for (status, resp) in op["responses"].as_object().expect("responses") {
                let status: u16 = status.parse().expect("a numeric status");
                assert!(resp["description"].is_string(), "{what} {status}");
                links.extend(
                    resp["links"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(_, l)| (what.clone(), l.clone())),
                );
                if status < 400 {
                    continue;
                }
                // An error response: the codes it lists travel with its status.
                let codes = &resp["content"]["application/json"]["schema"]["properties"]["error"]
                    ["properties"]["code"]["enum"];
                let Some(codes) = codes.as_array() else {
                    // The one error status that is no API error: readiness.
                    assert_eq!(
                        (path.as_str(), status),
                        ("/readyz", 503),
                        "{what}: no codes"
                    );
                    continue;
                };
                for c in codes {
                    let code = ErrorCode::from_wire(c.as_str().unwrap())
                        .unwrap_or_else(|| panic!("{what}: unknown code {c}"));
                    assert_eq!(code.status(), status, "{what}: {code} is not a {status}");
                }
            }
        }
    }
    // Links name operations of this document.
    for (what, link) in links {
        let target = link["operationId"]
            .as_str()
            .expect("a link names an operationId");
        assert!(ids.contains(target), "{what}: link to unknown {target}");
    }
    // The shared Error schema lists every code.
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let listed: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(listed, all);
}
