//! The web pages of Applause — viewer (`/watch/{room}`), broadcaster studio
//! (`/studio`), streaming-tool overlay (`/overlay/{room}`) and finance
//! (`/finance`) — hand-written HTML, CSS and ES modules embedded in the binary.
//!
//! The pages talk only to the JSON API (`/v1/…`) and the room WebSocket by
//! relative URLs, so this crate knows nothing of the gift service, the gateway
//! or the ledger. Every response carries `Content-Security-Policy:
//! default-src 'self'` (no inline script or style, no third-party request),
//! `X-Content-Type-Options: nosniff`, and `Cache-Control: no-cache` with a
//! content-hash `ETag`, so a browser revalidates cheaply (304) and never runs
//! an old script against a new page after an upgrade.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The policy of every page and asset: only this origin, nothing inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: &'static str,
}

/// FNV-1a, 64 bit: a content hash computed at compile time for the `ETag`
/// (collisions only cost a stale cache entry, never correctness of money).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"` + 16 hex digits + `"`, built at compile time.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($name:literal, $ctype:expr) => {{
        const BODY: &[u8] = include_bytes!(concat!("../assets/", $name));
        const TAG: [u8; 18] = etag_of(BODY);
        Asset {
            name: $name,
            content_type: $ctype,
            body: BODY,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("etag is ASCII"),
            },
        }
    }};
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

static WATCH: Asset = asset!("watch.html", HTML);
static OVERLAY: Asset = asset!("overlay.html", HTML);
static STUDIO: Asset = asset!("studio.html", HTML);
static FINANCE: Asset = asset!("finance.html", HTML);

/// Everything under `/assets/`, by file name.
static ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("overlay.css", CSS),
    asset!("api.js", JS),
    asset!("feed.js", JS),
    asset!("money.js", JS),
    asset!("stickers.js", JS),
    asset!("watch.js", JS),
    asset!("overlay.js", JS),
    asset!("studio.js", JS),
    asset!("finance.js", JS),
    asset!("favicon.svg", SVG),
];

/// The pages and their assets. Merged into the binary's router; every path
/// here is outside `/v1`, so it never shadows the API.
pub fn router() -> Router {
    Router::new()
        .route("/watch/{room_id}", get(|h: HeaderMap| page(&WATCH, h)))
        .route("/overlay/{room_id}", get(|h: HeaderMap| page(&OVERLAY, h)))
        .route("/studio", get(|h: HeaderMap| page(&STUDIO, h)))
        .route("/finance", get(|h: HeaderMap| page(&FINANCE, h)))
        .route("/favicon.ico", get(|h: HeaderMap| asset("favicon.svg", h)))
        .route("/assets/", get(|| async { not_found() }))
        .route(
            "/assets/{*path}",
            get(|Path(path): Path<String>, h: HeaderMap| asset_owned(path, h)),
        )
}

async fn page(a: &'static Asset, headers: HeaderMap) -> Response {
    serve(a, &headers)
}

async fn asset(name: &'static str, headers: HeaderMap) -> Response {
    lookup(name, &headers)
}

async fn asset_owned(name: String, headers: HeaderMap) -> Response {
    lookup(&name, &headers)
}

fn lookup(name: &str, headers: &HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(a, headers),
        None => not_found(),
    }
}

/// The headers every response of this crate carries.
fn common_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn serve(a: &'static Asset, req: &HeaderMap) -> Response {
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, a.body).into_response()
    };
    let h = resp.headers_mut();
    common_headers(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn not_found() -> Response {
    let mut resp = (StatusCode::NOT_FOUND, "not found\n").into_response();
    let h = resp.headers_mut();
    common_headers(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str, etag: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(t) = etag {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header(r: &Response, name: header::HeaderName) -> &str {
        r.headers().get(name).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn pages_carry_csp_nosniff_type_and_etag() {
        for path in ["/watch/r1", "/overlay/r1", "/studio", "/finance"] {
            let r = get(path, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header(&r, header::CONTENT_SECURITY_POLICY),
                "default-src 'self'"
            );
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header(&r, header::CONTENT_TYPE), HTML);
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
            let body = r.into_body().collect().await.unwrap().to_bytes();
            let text = std::str::from_utf8(&body).unwrap();
            assert!(text.starts_with("<!doctype html>"), "{path}");
        }
    }

    #[tokio::test]
    async fn assets_have_their_content_types() {
        let js = get("/assets/watch.js", None).await;
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(header(&js, header::CONTENT_TYPE), JS);
        let css = get("/assets/app.css", None).await;
        assert_eq!(header(&css, header::CONTENT_TYPE), CSS);
        assert_eq!(header(&css, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304_and_a_stale_one_the_body() {
        let first = get("/assets/api.js", None).await;
        let tag = header(&first, header::ETAG).to_owned();
        assert_eq!(tag.len(), 18);
        let again = get("/assets/api.js", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let stale = get("/assets/api.js", Some("\"0000000000000000\"")).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_assets_are_404_and_never_leave_the_table() {
        for path in [
            "/assets/nope.js",
            "/assets/../Cargo.toml",
            "/assets/%2e%2e/src/lib.rs",
            "/assets/",
            "/assets/sub/app.css",
        ] {
            let r = get(path, None).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
    }

    #[test]
    fn no_page_has_inline_script_or_style() {
        for a in [&WATCH, &OVERLAY, &STUDIO, &FINANCE] {
            let text = std::str::from_utf8(a.body).unwrap();
            assert!(!text.contains("<script>"), "{}", a.name);
            assert!(!text.contains("<style"), "{}", a.name);
            assert!(!text.contains(" style="), "{}", a.name);
            assert!(!text.contains(" onclick="), "{}", a.name);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{}",
                a.name
            );
        }
    }
}
