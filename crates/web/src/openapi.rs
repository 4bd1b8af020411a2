//! The shared parts of the OpenAPI 3.1 description (served at
//! `GET /openapi.json`): the error responses, the bearer-token security
//! scheme, and the document's frame. Each service describes its own
//! operations next to its handlers (`#[utoipa::path]`); the binary merges
//! them and calls [`document`].
//!
//! Errors are described per operation and per status with the exact `code`s
//! the operation can answer (see [`api_errors!`](crate::api_errors)), so a
//! response with a code its operation does not list fails the description.

use std::collections::BTreeMap;

pub use applause_core::ErrorCode;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Components, ContentBuilder, HeaderBuilder, InfoBuilder, OpenApi, RefOr, Response,
    ResponseBuilder, Tag,
};

pub use utoipa;

/// The name of the bearer-token security scheme in the document.
pub const BEARER: &str = "bearer";

/// A server-issued id (a room, gift or red packet) or a user id in a path
/// or query: 1–64 characters of `[A-Za-z0-9_-]`. Anything else cannot
/// exist (404, or 400 where a user id is expected).
pub struct ObjectId;

impl utoipa::PartialSchema for ObjectId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
            .min_length(Some(1))
            .max_length(Some(64))
            .into()
    }
}

impl utoipa::ToSchema for ObjectId {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Id")
    }
}

/// The `{"error": {"code", "message"}}` body with `code` one of `codes`.
pub fn error_schema(codes: &[ErrorCode]) -> Schema {
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes.iter().map(|c| c.as_str())))
        .description(Some("A stable snake_case error code."));
    let detail = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("code", code)
        .required("code")
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("For people; never parse it.")),
        )
        .required("message")
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::<Schema>::FreeForm(false),
        ));
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("error", detail)
            .required("error")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::<Schema>::FreeForm(false),
            ))
            .build(),
    )
}

/// One response per status among `codes`, each listing the codes it may carry.
pub fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        let list = by_status.entry(code.status()).or_default();
        if !list.contains(code) {
            list.push(*code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            let mut resp = ResponseBuilder::new()
                .description(format!("{}: `{}`", reason(status), names.join("`, `")))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(error_schema(&codes)))
                        .build(),
                );
            if matches!(status, 429 | 503) {
                resp = resp.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(0)),
                        )
                        .description(Some("Seconds to wait before trying again."))
                        .build(),
                );
            }
            (status.to_string(), RefOr::T(resp.build()))
        })
        .collect()
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        401 => "Missing, invalid or expired token",
        402 => "Payment required",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload too large",
        415 => "Unsupported media type",
        422 => "Unprocessable",
        429 => "Too many requests",
        503 => "Unavailable; nothing was charged",
        _ => "Error",
    }
}

/// Declares a type whose [`utoipa::IntoResponses`] are the error responses
/// of the given codes, for an operation's `responses(...)`:
///
/// ```text
/// applause_web::api_errors!(PurchaseErrors = [Unauthorized, InsufficientFunds]);
/// #[utoipa::path(post, path = "/v1/…", responses((status = 201, body = X), PurchaseErrors))]
/// ```
#[macro_export]
macro_rules! api_errors {
    ($(#[$meta:meta])* $vis:vis $name:ident = [$($code:ident),* $(,)?]) => {
        $(#[$meta])*
        $vis struct $name;
        impl $crate::openapi::utoipa::IntoResponses for $name {
            fn responses() -> ::std::collections::BTreeMap<
                String,
                $crate::openapi::utoipa::openapi::RefOr<
                    $crate::openapi::utoipa::openapi::Response,
                >,
            > {
                $crate::openapi::error_responses(&[
                    $($crate::openapi::ErrorCode::$code),*
                ])
            }
        }
    };
}

/// The description of the token every signed-in operation takes.
fn bearer_scheme() -> SecurityScheme {
    SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "`Authorization: Bearer <JWT>`: HS256 (the algorithm is pinned), issuer \
                 `applause`, `exp` required, `nbf` honoured, at most 4096 bytes. Claims: `sub` \
                 (the user id, 1–64 characters of `[A-Za-z0-9_-]`), `role` (`viewer`, \
                 `broadcaster`, `finance` or `admin`), optional `name`. An operation's \
                 security requirement lists the roles it admits (none listed: any role); \
                 the user acted on is always the token's. `applause token` mints one.",
            ))
            .build(),
    )
}

/// Completes a merged description (title, version, the security scheme, the
/// shared `Error` schema with every code, the tags) and renders it as the
/// JSON that `/openapi.json` serves.
pub fn document(doc: OpenApi, version: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(complete(doc, version)).expect("the description serializes");
    fix_links(&mut v);
    v
}

/// utoipa 5 writes a Link Object's fixed fields in snake_case
/// (`operation_id`); OpenAPI spells them `operationId`, `operationRef`,
/// `requestBody` (fixed in utoipa 6, which needs a newer Rust).
fn fix_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for item in paths.values_mut().filter_map(|i| i.as_object_mut()) {
        for op in item.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            for resp in responses.values_mut() {
                let Some(links) = resp.get_mut("links").and_then(|l| l.as_object_mut()) else {
                    continue;
                };
                for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                    for (from, to) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(v) = link.remove(from) {
                            link.insert(to.to_owned(), v);
                        }
                    }
                }
            }
        }
    }
}

fn complete(mut doc: OpenApi, version: &str) -> OpenApi {
    doc.info = InfoBuilder::new()
        .title("Applause")
        .version(version)
        .description(Some(
            "The HTTP API of an Applause node (SPEC §3): the gift service's `/v1` \
             endpoints, the WebSocket upgrade `GET /v1/ws`, and the operator routes. \
             Each node describes the routes it serves: `applause serve` all of them, a \
             gifts node everything but `/v1/ws`, a gateway node `/v1/ws` and the \
             operator routes. Amounts are JSON strings in the deployment's currency. \
             Every error is `{\"error\": {\"code\", \"message\"}}` with one of the codes \
             listed for its operation and status. The web pages (`/watch/{room}`, \
             `/studio`, `/overlay/{room}`, `/finance`, `/assets/…`) are HTML, not API, \
             and are not described here.",
        ))
        .build();
    let components = doc.components.get_or_insert_with(Components::new);
    components
        .security_schemes
        .insert(BEARER.to_owned(), bearer_scheme());
    components
        .schemas
        .insert("Error".to_owned(), RefOr::T(error_schema(ErrorCode::ALL)));
    let mut tags: Vec<Tag> = Vec::new();
    for (name, what) in [
        ("catalog", "The sticker catalog."),
        ("rooms", "Live rooms (stream sessions)."),
        ("money", "Top-ups and wallets."),
        ("gifts", "Buying, reading and acknowledging gifts."),
        ("leaderboards", "Top gifters and top broadcasters."),
        ("red-packets", "Red packets: drop, read, claim."),
        ("finance", "Reports, statements and refunds."),
        ("realtime", "The WebSocket feed of a room."),
        (
            "operators",
            "Health, readiness, metrics and this description.",
        ),
    ] {
        let mut tag = Tag::new(name);
        tag.description = Some(what.to_owned());
        tags.push(tag);
    }
    doc.tags = Some(tags);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_grouped_by_status_with_their_codes() {
        let r = error_responses(&[
            ErrorCode::InvalidJson,
            ErrorCode::Unauthorized,
            ErrorCode::InvalidQuantity,
            ErrorCode::RateLimited,
        ]);
        assert_eq!(
            r.keys().map(String::as_str).collect::<Vec<_>>(),
            ["400", "401", "429"]
        );
        let v = serde_json::to_value(&r["400"]).unwrap();
        let codes = &v["content"]["application/json"]["schema"]["properties"]["error"]
            ["properties"]["code"]["enum"];
        assert_eq!(
            codes,
            &serde_json::json!(["invalid_json", "invalid_quantity"])
        );
        let v = serde_json::to_value(&r["429"]).unwrap();
        assert!(v["headers"]["Retry-After"].is_object(), "{v}");
    }

    #[test]
    fn links_are_spelled_as_openapi_spells_them() {
        let mut v = serde_json::json!({"paths": {"/a": {"post": {"responses": {"201": {
            "links": {"Next": {"operation_id": "b", "parameters": {"id": "$response.body#/id"}}}
        }}}}}});
        fix_links(&mut v);
        let link = &v["paths"]["/a"]["post"]["responses"]["201"]["links"]["Next"];
        assert_eq!(link["operationId"], "b");
        assert!(link.get("operation_id").is_none());
        let doc = document(OpenApi::default(), "1.2.3");
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{doc}"
        );
        assert_eq!(doc["info"]["version"], "1.2.3");
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
    }
}
