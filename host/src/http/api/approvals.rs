//! Approvals: the requests an approver may decide on, and the decision.

use super::*;

pub(super) async fn approvals(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(json!(
        api.service.pending_approvals(&c.account).await?
    )))
}

pub(super) async fn approve(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(json!(api.service.approve(&id, &c.account).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Reject {
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn reject(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<Reject>>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    let reason = body.and_then(|b| b.0.reason);
    Ok(Json(json!(
        api.service
            .reject(&id, &c.account, reason.as_deref())
            .await?
    )))
}
