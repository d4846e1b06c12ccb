//! Approvals: the requests an approver may decide on, and the decision.

use super::*;

#[utoipa::path(
    get,
    path = "/v1/approvals",
    operation_id = "list_approvals",
    tag = "approvals",
    summary = "Requests to approve (Get-PAMRequestToApprove)",
    description = "The `pending_approval` requests of the roles the caller approves.",
    responses(
        (status = 200, description = "The requests waiting for the caller", body = Vec<RequestView>),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn approvals(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<RequestView>>> {
    let c = api.caller(&headers).await?;
    Ok(Json(api.service.pending_approvals(&c.account).await?))
}

#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/approve",
    operation_id = "approve_request",
    tag = "approvals",
    summary = "Approve (Set-PAMRequestToApprove -Approve)",
    description = "The request becomes active (or scheduled); the caller must approve its role \
and may not approve their own request.",
    params(("id" = String, Path, description = "The request's id")),
    responses(
        (status = 200, description = "The approved request", body = RequestView),
        (status = 403, description = "`refused`: not an approver of the role, or the caller's own request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the request is not waiting for approval", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn approve(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    let c = api.caller(&headers).await?;
    Ok(Json(api.service.approve(&id, &c.account).await?))
}

/// A rejection (the body is optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Reject {
    /// Why, for the requester.
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/reject",
    operation_id = "reject_request",
    tag = "approvals",
    summary = "Reject (Set-PAMRequestToApprove -Reject)",
    description = "Body `{reason?}`, optional.",
    params(("id" = String, Path, description = "The request's id")),
    request_body(content = Option<Reject>, description = "An optional reason", content_type = "application/json"),
    responses(
        (status = 200, description = "The rejected request", body = RequestView),
        (status = 403, description = "`refused`: not an approver of the role", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the request is not waiting for approval", body = ErrorBody),
        (status = 422, description = "`invalid`: the reason is too long", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn reject(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<Reject>>,
) -> ApiResult<Json<RequestView>> {
    let c = api.caller(&headers).await?;
    let reason = body.and_then(|b| b.0.reason);
    Ok(Json(
        api.service
            .reject(&id, &c.account, reason.as_deref())
            .await?,
    ))
}
