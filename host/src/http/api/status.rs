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

pub(super) async fn list_providers(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Json_>> {
    api.caller(&headers).await?;
    let mut out = Vec::new();
    for p in api.service.providers().iter() {
        let health = match p.health().await {
            Ok(h) => json!(h),
            Err(e) => json!({"status": "down", "message": e.to_string()}),
        };
        out.push(json!({
            "id": p.id(), "info": p.info(), "isolation": p.plugin.isolation.to_string(),
            "sha256": p.plugin.sha256, "health": health,
            "sunset": p.sunset().map(|t| t.to_string()),
            "retired": p.retired_at(api.service.clock().now()).is_some(),
        }));
    }
    Ok(Json(Json_::Array(out)))
}
