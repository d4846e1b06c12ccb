//! Requests: create one (with the code, for providers that take it ahead), list the caller's,
//! read one, answer or poll its prompt, close it.

use super::*;

/// A new request for a role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRequest {
    /// The role.
    role: String,
    /// Why (required when the role says so).
    #[serde(default)]
    justification: String,
    /// The activation's length, seconds (default: the role's; at most its `max_ttl_s`).
    #[serde(default)]
    ttl_s: Option<i64>,
    /// The MFA provider to use, among the role's (default: the first the user can use).
    #[serde(default)]
    provider: Option<String>,
    /// A delayed start, RFC 3339 (`scheduled` until then).
    #[serde(default)]
    starts_at: Option<String>,
    /// The first prompt's code, sent ahead (providers that take it: TOTP).
    #[serde(default)]
    code: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/requests",
    operation_id = "create_request",
    tag = "requests",
    summary = "Request a role (New-PAMRequest)",
    description = "Body `{role, justification, ttl_s?, provider?, starts_at?, code?}`. `code` is \
the first prompt's code sent ahead, for providers that take it (TOTP): the request can then be \
decided in this one call. Answers the request: `pending_mfa` with its `prompt` (answer it at \
`/v1/requests/{id}/answer`), `pending_approval`, `scheduled` (a `starts_at` in the future) or \
`active`.",
    request_body = NewRequest,
    responses(
        (status = 201, description = "The request", body = RequestView),
        (status = 403, description = "`refused`: the policy refuses (not a candidate, outside the role's window, locked out, disabled)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such role, or the caller's user is gone", body = ErrorBody),
        (status = 409, description = "`conflict`: the request clashes with one in progress", body = ErrorBody),
        (status = 422, description = "`invalid`: a field is not valid (`starts_at` not RFC 3339, a ttl over the role's maximum, a provider the role does not accept)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many requests in the last minute", body = ErrorBody),
        (status = 502, description = "`provider_error`: the factor failed", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`: the factor is unavailable now", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn create_request(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<NewRequest>,
) -> ApiResult<(StatusCode, Json<RequestView>)> {
    // A token not seen lately is verified in the request's own read (one read, not two).
    let hash = crate::store::secrets::token_hash(&Api::bearer(&headers)?);
    let now = jiff::Timestamp::now().as_millisecond();
    let (who, stamp) = match api.cached_caller(&hash, now) {
        Some(c) => (Requester::Account(c.account), None),
        None => (Requester::TokenHash(hash.clone()), api.token_stamp()),
    };
    let starts_at = match &body.starts_at {
        None => None,
        Some(t) => Some(t.parse::<jiff::Timestamp>().map_err(|_| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("`starts_at` = `{t}` is not an RFC 3339 time"),
            )
        })?),
    };
    let (caller, v) = api
        .service
        .request_as(
            who,
            crate::service::NewRequest {
                role: &body.role,
                justification: &body.justification,
                ttl: body.ttl_s.map(SignedDuration::from_secs),
                provider: body.provider.as_deref(),
                starts_at,
                answer: body.code.map(|code| rolegate_sdk::Input::Code { code }),
            },
        )
        .await?;
    if let Some(c) = caller {
        api.cache_caller(hash, &c, now, stamp);
    }
    // Serialized straight from the view, not through a JSON tree (this is the hot path).
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Everyone's requests (admins), not only the caller's: a yes/no value (true/false, 1/0,
    /// yes/no).
    #[serde(default)]
    all: Option<String>,
    /// Only this user's (with `all`).
    #[serde(default)]
    account: Option<String>,
    /// Only this role's.
    #[serde(default)]
    role: Option<String>,
    /// A comma list of states (pending_mfa, pending_approval, scheduled, active, expired,
    /// closed, rejected, failed, cancelled).
    #[serde(default)]
    state: Option<String>,
    /// Only those created before this time (Unix ms): the next page.
    #[serde(default)]
    before_ms: Option<i64>,
    /// At most this many, newest first (default 100).
    #[serde(default)]
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/requests",
    operation_id = "list_requests",
    tag = "requests",
    summary = "The caller's requests; everyone's for an admin with `all=true`",
    description = "Newest first, at most `limit` (default 100). Page with `before_ms`: the \
`created_at` of the last request of the previous page. `account` narrows everyone's requests \
(with `all=true`, admins only).",
    params(ListQuery),
    responses(
        (status = 200, description = "The requests, newest first", body = Vec<RequestView>),
        (status = 403, description = "`forbidden`: `all=true` needs an admin token", body = ErrorBody),
        (status = 422, description = "`invalid`: `all` is not yes/no, a state is unknown, or `account` without `all`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn my_requests(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<RequestView>>> {
    let all = query_flag("all", q.all.as_deref())?;
    let c = if all {
        api.admin(&headers).await?
    } else {
        api.caller(&headers).await?
    };
    let account = match (all, q.account) {
        (true, a) => a,
        (false, None) => Some(c.account.clone()),
        (false, Some(_)) => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "`account` narrows everyone's requests: send it with `all=true` (admins)".into(),
            ));
        }
    };
    let mut states = Vec::new();
    for s in q.state.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if s.is_empty() {
            continue;
        }
        states.push(s.parse().map_err(|_| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "`state` = `{s}` is not a request state (pending_mfa, pending_approval, scheduled, active, expired, closed, rejected, failed, cancelled)"
                ),
            )
        })?);
    }
    let v = api
        .service
        .list_requests(crate::service::RequestFilter {
            account,
            role: q.role,
            states,
            before_ms: q.before_ms,
            limit: q.limit.unwrap_or(100),
        })
        .await?;
    Ok(Json(v))
}

#[utoipa::path(
    get,
    path = "/v1/requests/{id}",
    operation_id = "get_request",
    tag = "requests",
    summary = "A request (Get-PAMRequest)",
    description = "The caller's own request (any request for an admin); with `shadow` while its \
role's shadow factor's prompt is open.",
    params(("id" = String, Path, description = "The request's id")),
    responses(
        (status = 200, description = "The request", body = RequestView),
        (status = 404, description = "`not_found`: no such request (or not the caller's)", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn get_request(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    let c = api.caller(&headers).await?;
    let owner = if c.admin {
        None
    } else {
        Some(c.account.as_str())
    };
    Ok(Json(api.service.get(&id, owner).await?))
}

/// An answer to a prompt: `code`, or `input` (one of the two).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Answer {
    /// A code (TOTP, SMS): short for `{"input": {"type": "code", "code": …}}`.
    #[serde(default)]
    code: Option<String>,
    /// The provider's input as its prompt asks for it (a WebAuthn assertion, a choice, a
    /// smartcard's signature): an object tagged by `type`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    input: Option<rolegate_sdk::Input>,
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/answer",
    operation_id = "answer_request",
    tag = "requests",
    summary = "Answer the MFA prompt",
    description = "Body `{code}` or `{input}`. Once MFA is done, the answer may carry the role's \
shadow factor's prompt (the view's `shadow`: `{provider, outcome: asked|completed|not_completed|\
not_asked, prompt?, reason?}`), answered here too; the shadow never decides the request.",
    params(("id" = String, Path, description = "The request's id")),
    request_body = Answer,
    responses(
        (status = 200, description = "The request after the answer", body = RequestView),
        (status = 403, description = "`refused`: locked out after too many wrong answers", body = ErrorBody),
        (status = 404, description = "`not_found`: no such request of the caller's", body = ErrorBody),
        (status = 409, description = "`conflict`: the request is not waiting for an answer", body = ErrorBody),
        (status = 422, description = "`invalid`: neither or both of `code` and `input`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`provider_error`: the factor failed", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`: the factor is unavailable now", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn answer(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Answer>,
) -> ApiResult<Json<RequestView>> {
    let c = api.caller(&headers).await?;
    let input = match (body.code, body.input) {
        (Some(code), None) => rolegate_sdk::Input::Code { code },
        (None, Some(i)) => i,
        _ => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "send either `code` or `input`".into(),
            ));
        }
    };
    Ok(Json(api.service.answer(&id, &c.account, input).await?))
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/poll",
    operation_id = "poll_request",
    tag = "requests",
    summary = "Poll an out-of-band MFA (a phone call), or the shadow factor's",
    description = "Asks the provider whether the out-of-band step is done; answers the request \
as it stands.",
    params(("id" = String, Path, description = "The request's id")),
    responses(
        (status = 200, description = "The request", body = RequestView),
        (status = 403, description = "`refused`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such request of the caller's", body = ErrorBody),
        (status = 409, description = "`conflict`: the request is not waiting for MFA", body = ErrorBody),
        (status = 502, description = "`provider_error`", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn poll(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    let c = api.caller(&headers).await?;
    Ok(Json(api.service.poll(&id, &c.account).await?))
}

#[utoipa::path(
    post,
    path = "/v1/requests/{id}/close",
    operation_id = "close_request",
    tag = "requests",
    summary = "Close a request (Close-PAMRequest)",
    description = "Ends the caller's request (an admin's: anyone's), active or still pending.",
    params(("id" = String, Path, description = "The request's id")),
    responses(
        (status = 200, description = "The closed request", body = RequestView),
        (status = 403, description = "`refused`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the request has ended already", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn close(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    let c = api.caller(&headers).await?;
    Ok(Json(api.service.close(&id, &c.account, c.admin).await?))
}
