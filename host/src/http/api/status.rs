//! What the daemon reports of itself: its metrics and its providers' health.

use super::*;

/// Liveness: `ok` while the daemon serves.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "status",
    summary = "Liveness",
    description = "Answers `ok` while the daemon serves. Needs no token.",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String, example = "ok")),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// How long `/readyz` waits for the store before it calls this host not ready.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: whether this host can serve calls now — its store answers a read within 2 s.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "status",
    summary = "Readiness",
    description = "`ready` (200) while the store answers a read within 2 s; otherwise 503 \
`store_unavailable` with Retry-After, for a load balancer to take this host out until its \
database is back. `/healthz` is liveness only: it answers while the process serves, whatever \
the store. Needs no token.",
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain", body = String, example = "ready"),
        (status = 503, description = "the store is unreachable (Retry-After)", body = ErrorBody),
    ),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn readyz(State(api): State<Api>) -> ApiResult<&'static str> {
    let probe = api
        .service
        .store()
        .read(|tx| tx.query("SELECT 1", &[]).map(drop));
    match tokio::time::timeout(READY_WAIT, probe).await {
        Ok(Ok(())) => Ok("ready"),
        Ok(Err(e)) => Err(match e {
            Error::StoreUnavailable { .. } => e.into(),
            other => Error::StoreUnavailable {
                what: "the readiness probe".into(),
                message: other.to_string(),
            }
            .into(),
        }),
        Err(_) => Err(Error::StoreUnavailable {
            what: "the readiness probe".into(),
            message: format!("no answer within {} s", READY_WAIT.as_secs()),
        }
        .into()),
    }
}

/// The metrics in Prometheus's text format, for the scrape token or an admin.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "get_metrics",
    tag = "status",
    summary = "Metrics in Prometheus's text format",
    description = "For admins, or the holder of the scrape token of `[server] metrics_token_file` \
(security scheme `metrics_token`: a bearer token that reads this and nothing else).",
    responses(
        (status = 200, description = "The metrics (Prometheus text format 0.0.4)", content_type = "text/plain", body = String),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
    ),
    security(("bearer" = []), ("metrics_token" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn metrics(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Response> {
    let hash = crate::store::secrets::token_hash(&Api::bearer(&headers)?);
    // Comparing hashes: the time it takes tells nothing of the token.
    if api.metrics_token.as_deref() != Some(hash.as_str()) {
        api.admin(&headers).await?;
    }
    let in_flight = api
        .service
        .store()
        .read_long(crate::service::in_flight)
        .await?;
    let body = crate::model::metrics::METRICS.render(&in_flight);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// A provider as `/v1/providers` lists it.
#[derive(Serialize, ToSchema)]
pub(super) struct ProviderView {
    /// The provider's id (what roles name).
    id: String,
    /// What the provider says of itself (null while it is not loaded): for an admin all of it,
    /// for a user `{name, version, factor, responder, needs_enrolment, needs_phone}`.
    #[schema(value_type = Option<Object>)]
    info: Json_,
    /// How it runs: `in-process` or `process` (admins).
    #[serde(skip_serializing_if = "Option::is_none")]
    isolation: Option<String>,
    /// The library's SHA-256 (admins).
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// Its health.
    health: ProviderHealth,
    /// When it is retired (RFC 3339), if a sunset is set.
    sunset: Option<String>,
    /// Whether it is past its sunset (no longer offered).
    retired: bool,
}

/// A provider's health.
#[derive(Serialize, ToSchema)]
pub(super) struct ProviderHealth {
    /// The worse of the provider's own answer and what the host has seen of its calls: `ok`,
    /// `degraded` or `down`.
    #[schema(value_type = String, example = "ok")]
    status: Json_,
    /// The provider's message (admins), or for a user a sentence when it is not `ok`.
    message: Option<String>,
    /// The provider's own answer `{status, message}` (admins).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    provider: Option<Json_>,
    /// What the host has seen of its calls (admins): `{status, reason, since,
    /// failures_in_window, failures_in_a_row}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    seen: Option<Json_>,
}

/// The providers and their health: the worse of the provider's own answer and what the host
/// has seen of its calls. An admin gets the detail (library hash, messages, failure counts); a
/// user, what they can act on.
#[utoipa::path(
    get,
    path = "/v1/providers",
    operation_id = "list_providers",
    tag = "providers",
    summary = "Providers with their health",
    description = "`health.status` is the worse of the provider's own answer and what the host \
has seen of its calls (`ok`, `degraded`, `down`). An admin also gets `health.provider`, \
`health.seen` `{status, reason, since, failures_in_window, failures_in_a_row}`, `sha256` and \
`isolation`.",
    responses((status = 200, description = "The providers", body = Vec<ProviderView>)),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn list_providers(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<ProviderView>>> {
    let caller = api.caller(&headers).await?;
    let mut out = Vec::new();
    for p in api.service.providers().iter() {
        let own = match p.health().await {
            Ok(h) => h,
            Err(e) => rolegate_sdk::Health {
                status: rolegate_sdk::HealthStatus::Down,
                message: e.to_string(),
            },
        };
        let seen = p.observed();
        let own_level = match own.status {
            rolegate_sdk::HealthStatus::Ok => crate::plugins::health::Seen::Ok,
            rolegate_sdk::HealthStatus::Degraded => crate::plugins::health::Seen::Degraded,
            _ => crate::plugins::health::Seen::Down,
        };
        let status = own_level.max(seen.status);
        let retired = p.retired_at(api.service.clock().now()).is_some();
        if caller.admin {
            out.push(ProviderView {
                id: p.id().to_string(),
                info: json!(p.info()),
                isolation: Some(p.plugin.isolation.to_string()),
                sha256: Some(p.plugin.sha256.clone()),
                health: ProviderHealth {
                    status: json!(status),
                    message: Some(own.message.clone()),
                    provider: Some(json!(own)),
                    seen: Some(json!(seen)),
                },
                sunset: p.sunset().map(|t| t.to_string()),
                retired,
            });
        } else {
            let info = p.info().map(|i| {
                json!({
                    "name": i.name, "version": i.version, "factor": i.factor, "responder": i.responder,
                    "needs_enrolment": i.needs_enrolment, "needs_phone": i.needs_phone,
                })
            });
            let note = match status {
                crate::plugins::health::Seen::Ok => None,
                _ => Some("this factor is unavailable now: try later, or use another factor"),
            };
            out.push(ProviderView {
                id: p.id().to_string(),
                info: json!(info),
                isolation: None,
                sha256: None,
                health: ProviderHealth {
                    status: json!(status),
                    message: note.map(str::to_string),
                    provider: None,
                    seen: None,
                },
                sunset: p.sunset().map(|t| t.to_string()),
                retired,
            });
        }
    }
    Ok(Json(out))
}
