//! What the daemon reports of itself: its metrics and its providers' health.

use super::*;

/// The metrics in Prometheus's text format, for the scrape token or an admin.
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

/// The providers and their health: the worse of the provider's own answer and what the host
/// has seen of its calls. An admin gets the detail (library hash, messages, failure counts); a
/// user, what they can act on.
pub(super) async fn list_providers(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Json_>> {
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
            out.push(json!({
                "id": p.id(), "info": p.info(), "isolation": p.plugin.isolation.to_string(),
                "sha256": p.plugin.sha256,
                "health": {"status": status, "message": own.message, "provider": own, "seen": seen},
                "sunset": p.sunset().map(|t| t.to_string()),
                "retired": retired,
            }));
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
            out.push(json!({
                "id": p.id(), "info": info,
                "health": {"status": status, "message": note},
                "sunset": p.sunset().map(|t| t.to_string()),
                "retired": retired,
            }));
        }
    }
    Ok(Json(Json_::Array(out)))
}
