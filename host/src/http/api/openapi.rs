//! The OpenAPI 3.1 document of the API (`/openapi.json`), generated with utoipa: each handler's
//! `#[utoipa::path]` attribute gives its operation (id, summary, description, parameters, body,
//! responses, security), the `ToSchema` derives of the types it reads and answers give the
//! schemas, and the router (`api_routes` in `mod.rs`) registers handler and operation together.
//! [`complete`] then adds what every operation shares: the errors the token check, the store and
//! the server's body limits answer.

use std::sync::OnceLock;

use axum::http::Method;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HttpMethod, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder,
};

use super::*;

/// The document's fixed parts; the operations come from the router.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "rolegate",
        description = "Privileged role activation gated by pluggable multi-factor authentication. \
Callers authenticate with `Authorization: Bearer <token>` (tokens are issued by admins: \
`POST /v1/tokens`, `rolegate token new`); operations marked `x-rolegate-admin: true` need an \
admin token. Every error is `{\"error\": {\"code\", \"message\"}}` (schema `ErrorBody`), except \
the body and query decoding errors of axum's extractors, which are plain text (400, 415, 422). \
Times are Unix milliseconds unless a field says RFC 3339. This document is generated from the \
code (utoipa): what it lists is what the daemon serves.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "requests", description = "Role requests (MIM PAM's PAMRequest): create, read, answer the MFA prompt, close."),
        (name = "enrolments", description = "A user enrols a credential in a provider that needs one (TOTP, WebAuthn, smartcard)."),
        (name = "approvals", description = "Requests waiting for the caller's approval (PAMRequestToApprove)."),
        (name = "users", description = "Users, their credentials and lockouts (PAMUser); `/v1/me` is the caller."),
        (name = "roles", description = "Roles and their policy (PAMRole), readiness, provider history and rollback."),
        (name = "events", description = "The hash-chained event log, and its verification."),
        (name = "providers", description = "The MFA providers loaded, their health, and a test message."),
        (name = "tokens", description = "API tokens: issued, listed by id, revoked."),
        (name = "status", description = "The daemon itself: liveness, metrics, this document."),
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SecuritySchemes),
)]
pub(super) struct ApiDoc;

/// The bearer schemes: API tokens, and the metrics scrape token.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`Authorization: Bearer <token>`): a user's, or an admin's",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The scrape token of `[server] metrics_token_file`: reads `/metrics` and nothing else",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "get_openapi",
    tag = "status",
    summary = "This document",
    description = "The OpenAPI 3.1 document of the API, generated from the code. Needs no token.",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn openapi() -> Json<&'static Json_> {
    Json(openapi_document_ref())
}

fn openapi_document_ref() -> &'static Json_ {
    static DOC: OnceLock<Json_> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = super::api_routes().into_openapi();
        complete(&mut doc);
        serde_json::to_value(&doc).unwrap_or_else(|e| json!({"error": e.to_string()}))
    })
}

/// The OpenAPI 3.1 document of the API, as `/openapi.json` serves it.
pub fn openapi_document() -> Json_ {
    openapi_document_ref().clone()
}

/// The routes the API serves (each documented in [`openapi_document`]), as method and path
/// template (`/v1/requests/{id}`). The web page's routes (`/`, `/ui/…`) are not in it.
pub fn routes() -> Vec<(Method, String)> {
    let doc = super::api_routes().into_openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in operations(item) {
            if op.is_some() {
                out.push((method, path.clone()));
            }
        }
    }
    out
}

fn operations(item: &utoipa::openapi::path::PathItem) -> [(Method, &Option<Operation>); 5] {
    [
        (Method::GET, &item.get),
        (Method::POST, &item.post),
        (Method::PUT, &item.put),
        (Method::PATCH, &item.patch),
        (Method::DELETE, &item.delete),
    ]
}

/// A response whose body is the error schema.
fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .into()
}

/// A response that is the error schema, or plain text from axum's extractors.
fn error_or_text(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .content(
            "text/plain",
            ContentBuilder::new()
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String),
                ))
                .build(),
        )
        .into()
}

/// Adds to each operation the errors it shares with the others: a token's (401) and the
/// store's (500) for those with security; for those with a body, the server's limits (408,
/// 413, 503) and the JSON extractor's refusals (400, 415, 422 as plain text); for those with a
/// query, the query extractor's (400).
fn complete(doc: &mut Document) {
    for item in doc.paths.paths.values_mut() {
        for method in [
            HttpMethod::Get,
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Patch,
            HttpMethod::Delete,
        ] {
            let op = match method {
                HttpMethod::Get => &mut item.get,
                HttpMethod::Post => &mut item.post,
                HttpMethod::Put => &mut item.put,
                HttpMethod::Patch => &mut item.patch,
                _ => &mut item.delete,
            };
            let Some(op) = op.as_mut() else { continue };
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_query = op.parameters.as_ref().is_some_and(|p| {
                p.iter()
                    .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
            });
            let has_body = op.request_body.is_some();
            let r = &mut op.responses.responses;
            let mut add = |status: &str, response: RefOr<Response>| {
                r.entry(status.to_string()).or_insert(response);
            };
            if secured {
                add(
                    "503",
                    error(if has_body {
                        "`store_unavailable`: the store is unreachable now (Retry-After); \
                         `busy`: too many large bodies are being received (Retry-After); or \
                         `provider_unavailable`"
                    } else {
                        "`store_unavailable`: the store is unreachable now (Retry-After)"
                    }),
                );
                add(
                    "401",
                    error("`unauthorized`: no `Authorization: Bearer` token, or not a valid one"),
                );
                add(
                    "500",
                    error("`internal` or `malformed_data`: the server's log says more"),
                );
            }
            if op.request_body.is_some() {
                add(
                    "400",
                    error_or_text(
                        "The body is not JSON (plain text), could not be read (`bad_request`), or \
                         an answer the factor could not take (`bad_input`)",
                    ),
                );
                add(
                    "408",
                    error("`timeout`: the body did not arrive within `[server] client_timeout_s`"),
                );
                add("413", error("`too_large`: the body is over 1 MiB"));
                add(
                    "415",
                    error_or_text("The body is not sent as `Content-Type: application/json`"),
                );
                add(
                    "503",
                    error(
                        "`busy`: too many large bodies are being received (Retry-After), or \
                         `provider_unavailable`",
                    ),
                );
                // The JSON extractor answers a body of the wrong shape in plain text.
                match r.get_mut("422") {
                    Some(RefOr::T(resp)) => {
                        resp.content.entry("text/plain".into()).or_insert_with(|| {
                            ContentBuilder::new()
                                .schema(Some(
                                    utoipa::openapi::ObjectBuilder::new()
                                        .schema_type(utoipa::openapi::schema::Type::String),
                                ))
                                .build()
                        });
                    }
                    _ => {
                        r.insert(
                            "422".into(),
                            error_or_text(
                                "`invalid`, or a body of the wrong shape (an unknown field, a \
                                 wrong type: plain text)",
                            ),
                        );
                    }
                }
            }
            if has_query {
                let r = &mut op.responses.responses;
                r.entry("400".into()).or_insert_with(|| {
                    error_or_text("The query string could not be decoded (plain text)")
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document is generated whole: every operation has an id, a success response and
    /// (but for the two public ones) security and the error schema.
    #[test]
    fn every_operation_is_documented() {
        let doc = openapi_document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = std::collections::BTreeSet::new();
        let mut n = 0;
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                n += 1;
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(
                    ids.insert(id.to_string()),
                    "{method} {path}: id `{id}` twice"
                );
                let public = ["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str());
                assert_eq!(op["security"].is_array(), !public, "{method} {path}");
                let text = op.to_string();
                // Readiness is public, and its 503 has the error shape.
                assert_eq!(
                    text.contains("#/components/schemas/ErrorBody"),
                    !public || path == "/readyz",
                    "{method} {path}"
                );
            }
        }
        assert_eq!(n, routes().len());
        assert!(n >= 33, "{n}");
    }
}
