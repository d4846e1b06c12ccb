//! Requests: create one (with the code, for providers that take it ahead), list the caller's,
//! read one, answer or poll its prompt, close it.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRequest {
    role: String,
    #[serde(default)]
    justification: String,
    #[serde(default)]
    ttl_s: Option<i64>,
    #[serde(default)]
    provider: Option<String>,
    /// A delayed start, RFC 3339.
    #[serde(default)]
    starts_at: Option<String>,
    /// The first prompt's code, sent ahead (providers that take it: TOTP).
    #[serde(default)]
    code: Option<String>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Everyone's requests (admins), not only the caller's.
    #[serde(default)]
    all: Option<String>,
    /// Only this user's (with `all`).
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    role: Option<String>,
    /// A comma list of states.
    #[serde(default)]
    state: Option<String>,
    /// Only those created before this time (Unix ms): the next page.
    #[serde(default)]
    before_ms: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

pub(super) async fn my_requests(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Json_>> {
    let all = match q.all.as_deref() {
        None => false,
        Some(v) => crate::model::yes_no(v).ok_or_else(|| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("`all` = `{v}` is not a yes/no value (true/false, 1/0, yes/no)"),
            )
        })?,
    };
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
    Ok(Json(json!(v)))
}

pub(super) async fn get_request(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    let owner = if c.admin {
        None
    } else {
        Some(c.account.as_str())
    };
    Ok(Json(json!(api.service.get(&id, owner).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Answer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    input: Option<rolegate_sdk::Input>,
}

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

pub(super) async fn poll(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    let c = api.caller(&headers).await?;
    Ok(Json(api.service.poll(&id, &c.account).await?))
}

pub(super) async fn close(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(json!(
        api.service.close(&id, &c.account, c.admin).await?
    )))
}
