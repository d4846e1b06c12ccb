//! The HTTP JSON API, shaped after MIM PAM's REST API: requests, requests to approve, roles,
//! users, events, providers, tokens. Callers authenticate with bearer tokens.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use jiff::SignedDuration;
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use crate::error::Error;
use crate::events::{self, Filter};
use crate::roles::{self, RoleSpec};
use crate::service::{RequestView, Requester, Service};
use crate::store::changes::{self, Kind, Stamp};
use crate::tokens::{self, Caller};
use crate::users::{self, NewUser, UserChanges};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Api {
    service: Arc<Service>,
    /// Verified tokens (by hash) for a few seconds, so each call does not cost a read.
    /// With SQLite, also the token's stamp before its read: a revocation through this
    /// daemon's writer makes it stale at once, even when it raced the read.
    tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, CachedToken>>>,
    /// The directory users may be copied from.
    directory: Option<Arc<crate::directory::DirectoryConfig>>,
    /// The hash of the token that may read `/metrics` (and nothing else), if one is set.
    metrics_token: Option<Arc<str>>,
    /// The event chain's anchors, checked by `/v1/events/verify`.
    anchors: Option<Arc<crate::anchor::AnchorFile>>,
}

/// How long a verified token is trusted without a new look-up when the store cannot tell of
/// its revocation (PostgreSQL, where another host may revoke it): it stops working within
/// this time. With SQLite the writer reports revocations, and a token is trusted as long as
/// it is unchanged (at most [`crate::store::changes::MAX_AGE_MS`]).
const TOKEN_CACHE_MS: i64 = 5_000;

/// A verified token's caller, when it was verified, and (SQLite) its stamp before the read.
type CachedToken = (Caller, i64, Option<Stamp>);

/// An error as the API returns it: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use rolegate_sdk::ErrorKind;
        let (status, code) = match &e {
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::Refused(crate::role::Refusal::RateLimited { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            Error::Refused(_) => (StatusCode::FORBIDDEN, "refused"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Invalid { .. } | Error::Phone { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            Error::Provider { source, .. } if source.kind == ErrorKind::BadInput => {
                (StatusCode::BAD_REQUEST, "bad_input")
            }
            Error::Deadline { .. } | Error::WorkerCrashed { .. } | Error::CrashLoop { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable")
            }
            Error::Provider { .. } => (StatusCode::BAD_GATEWAY, "provider_error"),
            // Named to the caller: the rows that can be malformed are an admin's to read.
            Error::Malformed { .. } => {
                tracing::error!(error = %e, "a stored row is malformed");
                return ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "malformed_data",
                    e.to_string(),
                );
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
            return ApiError(status, code, "internal error; see the server's log".into());
        }
        ApiError(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": {"code": self.1, "message": self.2}})),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn unauthorized(m: &str) -> ApiError {
    ApiError(StatusCode::UNAUTHORIZED, "unauthorized", m.into())
}

impl Api {
    /// The API over a service.
    pub fn new(service: Arc<Service>) -> Self {
        Self {
            service,
            tokens: Arc::new(std::sync::Mutex::new(std::collections::HashMap::new())),
            directory: None,
            metrics_token: None,
            anchors: None,
        }
    }

    /// Checks the event chain against this anchor file in `/v1/events/verify`.
    pub fn with_anchors(mut self, anchors: Option<Arc<crate::anchor::AnchorFile>>) -> Self {
        self.anchors = anchors;
        self
    }

    /// Lets the holder of `token` read `/metrics` (admins always may).
    pub fn with_metrics_token(mut self, token: Option<&str>) -> Self {
        self.metrics_token = token.map(|t| crate::secrets::token_hash(t).into());
        self
    }

    /// Lets admins create users from this directory (`from_directory`).
    pub fn with_directory(mut self, directory: Option<crate::directory::DirectoryConfig>) -> Self {
        self.directory = directory.map(Arc::new);
        self
    }

    /// The bearer token of a call.
    fn bearer(headers: &HeaderMap) -> ApiResult<String> {
        Ok(bearer_token(headers)
            .ok_or_else(|| unauthorized("send `Authorization: Bearer <token>`"))?
            .to_string())
    }

    /// The caller of a token (by its hash) verified in the last few seconds, if any.
    fn cached_caller(&self, hash: &str, now: i64) -> Option<Caller> {
        let cache = self.tokens.lock().ok()?;
        let (caller, at, stamp) = cache.get(hash)?;
        // The token unchanged, and its user too (disabled or removed: the token does nothing).
        let fresh = match (stamp, self.service.store().changes()) {
            (Some(stamp), Some(c)) => {
                c.still_fresh(Kind::Token, hash, *stamp, *at, now)
                    && c.still_fresh(
                        Kind::Account,
                        &users::account_key(&caller.account),
                        *stamp,
                        *at,
                        now,
                    )
            }
            _ => (0..TOKEN_CACHE_MS).contains(&(now - at)),
        };
        let live = caller.expires_at.is_none_or(|e| now < e);
        (fresh && live).then(|| caller.clone())
    }

    /// Drops revoked tokens (by hash) from the cache: this daemon refuses them at once;
    /// another sharing the database, within its cache's few seconds.
    fn forget_tokens(&self, hashes: &[String]) {
        if let Ok(mut cache) = self.tokens.lock() {
            for hash in hashes {
                cache.remove(hash);
            }
        }
    }

    /// Drops the cached tokens of an account (disabled or removed through this daemon): they
    /// are refused at once here; another host sharing PostgreSQL refuses them within its
    /// cache's few seconds.
    fn forget_account(&self, account: &str) {
        let key = users::account_key(account);
        if let Ok(mut cache) = self.tokens.lock() {
            cache.retain(|_, (c, _, _)| users::account_key(&c.account) != key);
        }
    }

    /// The stamp before a read that verifies a token (SQLite), for [`Api::cache_caller`].
    fn token_stamp(&self) -> Option<Stamp> {
        self.service.store().changes().map(|c| c.stamp())
    }

    /// Remembers a verified token (by its hash) for a few seconds.
    fn cache_caller(&self, hash: String, caller: &Caller, now: i64, stamp: Option<Stamp>) {
        if let Ok(mut cache) = self.tokens.lock() {
            // Stale as `cached_caller` judges by age: a minute with the writer's stamp, a few
            // seconds without (PostgreSQL).
            crate::caches::make_room(&mut cache, crate::caches::MAX_ENTRIES, |_, (c, at, s)| {
                let young = match s {
                    Some(_) => changes::young(*at, now),
                    None => (0..TOKEN_CACHE_MS).contains(&(now - *at)),
                };
                !young || c.expires_at.is_some_and(|e| e <= now)
            });
            cache.insert(hash, (caller.clone(), now, stamp));
        }
    }

    async fn caller(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let hash = crate::secrets::token_hash(&Self::bearer(headers)?);
        let now = jiff::Timestamp::now().as_millisecond();
        if let Some(caller) = self.cached_caller(&hash, now) {
            return Ok(caller);
        }
        let h = hash.clone();
        let stamp = self.token_stamp();
        let caller = self
            .service
            .store()
            .read(move |tx| tokens::verify_hash(tx, &h, now))
            .await?
            .ok_or_else(|| unauthorized("the token is not valid"))?;
        self.cache_caller(hash, &caller, now, stamp);
        Ok(caller)
    }

    async fn admin(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let c = self.caller(headers).await?;
        if !c.admin {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs an admin token".into(),
            ));
        }
        Ok(c)
    }

    /// The router with every route.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/openapi.json", get(openapi))
            .route("/metrics", get(metrics))
            .route("/v1/me", get(me))
            .route("/v1/requests", post(create_request).get(my_requests))
            .route("/v1/requests/{id}", get(get_request))
            .route("/v1/requests/{id}/answer", post(answer))
            .route("/v1/requests/{id}/poll", post(poll))
            .route("/v1/requests/{id}/close", post(close))
            .route("/v1/enrolments", post(enrol_start))
            .route("/v1/enrolments/continue", post(enrol_continue))
            .route("/v1/approvals", get(approvals))
            .route("/v1/approvals/{id}/approve", post(approve))
            .route("/v1/approvals/{id}/reject", post(reject))
            .route("/v1/users", get(list_users).post(create_user))
            .route(
                "/v1/users/{account}",
                get(get_user).patch(set_user).delete(remove_user),
            )
            .route("/v1/users/{account}/unlock", post(unlock_user))
            .route("/v1/users/{account}/credentials", get(list_credentials))
            .route(
                "/v1/users/{account}/credentials/{provider}/{id}",
                delete(remove_credential),
            )
            .route("/v1/roles", get(list_roles).post(create_role))
            .route(
                "/v1/roles/{name}",
                get(get_role).put(set_role).delete(remove_role),
            )
            .route("/v1/events", get(list_events))
            .route("/v1/events/verify", get(verify_events))
            .route("/v1/providers", get(list_providers))
            .route("/v1/tokens", post(create_token).get(list_tokens))
            .route("/v1/tokens/{id}", delete(revoke_token))
            .merge(crate::web::routes())
            .with_state(self)
            .layer(axum::middleware::map_response(no_store))
    }
}

/// Marks every answer not to be stored by browsers or proxies (answers carry tokens, TOTP
/// secrets, prompts and personal data) nor sniffed as another type; the web page's own
/// files keep the caching they set.
async fn no_store(mut r: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let h = r.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The bearer token an `Authorization` header carries, if any (the API's callers, and the
/// access log's token ids).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRequest {
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

async fn create_request(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(body): Json<NewRequest>,
) -> ApiResult<(StatusCode, Json<RequestView>)> {
    // A token not seen lately is verified in the request's own read (one read, not two).
    let hash = crate::secrets::token_hash(&Api::bearer(&headers)?);
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
struct Limit {
    #[serde(default)]
    limit: Option<i64>,
}

async fn my_requests(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    let v = api
        .service
        .requests_of(&c.account, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(json!(v)))
}

async fn get_request(
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
struct Answer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    input: Option<rolegate_sdk::Input>,
}

async fn answer(
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

async fn poll(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    let c = api.caller(&headers).await?;
    Ok(Json(api.service.poll(&id, &c.account).await?))
}

async fn close(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(json!(
        api.service.close(&id, &c.account, c.admin).await?
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolStart {
    provider: String,
}

async fn enrol_start(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<EnrolStart>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(json!(
        api.service.enroll_start(&c.account, &b.provider).await?
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolContinue {
    provider: String,
    state: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    input: Option<rolegate_sdk::Input>,
}

async fn enrol_continue(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<EnrolContinue>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    let input = match (b.code, b.input) {
        (Some(code), None) => rolegate_sdk::Input::Code { code },
        (None, Some(i)) => i,
        (None, None) => rolegate_sdk::Input::Acknowledge,
        _ => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "send `code`, `input`, or neither (to acknowledge)".into(),
            ));
        }
    };
    Ok(Json(json!(
        api.service
            .enroll_continue(&c.account, &b.provider, &b.state, input)
            .await?
    )))
}

async fn approvals(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(json!(
        api.service.pending_approvals(&c.account).await?
    )))
}

async fn approve(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(json!(api.service.approve(&id, &c.account).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reject {
    #[serde(default)]
    reason: Option<String>,
}

async fn reject(
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

fn user_json(u: &users::User) -> Json_ {
    json!({
        "account": u.account, "display_name": u.display_name, "phone": u.phone,
        "email": u.email, "source": u.source, "enabled": u.enabled,
        "created_at": u.created_at, "updated_at": u.updated_at,
    })
}

async fn list_users(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let users = api.service.store().read_long(users::list).await?;
    Ok(Json(Json_::Array(users.iter().map(user_json).collect())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    account: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    source: Option<String>,
    /// Copy display name, phone and e-mail from the configured directory (once).
    #[serde(default)]
    from_directory: bool,
    /// Accept an account that mixes scripts or looks like an existing one (recorded).
    #[serde(default)]
    allow_lookalike: bool,
}

async fn create_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<UserBody>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    let c = api.admin(&headers).await?;
    let rules = users::UserRules {
        allow_lookalike: b.allow_lookalike,
        ..api.service.settings().user_rules()
    };
    let mut new = NewUser {
        account: b.account,
        display_name: b.display_name,
        phone: b.phone,
        email: b.email,
        source: b.source,
    };
    if b.from_directory {
        let Some(dir) = api.directory.clone() else {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "no [directory] is configured".into(),
            ));
        };
        let account = new.account.clone();
        let found = tokio::task::spawn_blocking(move || dir.lookup(&account))
            .await
            .map_err(|e| {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })??;
        let Some(d) = found else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("`{}` is not in the directory", new.account),
            ));
        };
        // What the admin wrote wins; the directory fills the rest, once.
        if new.display_name.trim().is_empty() {
            new.display_name = d.display_name.unwrap_or_default();
        }
        new.phone = new.phone.or(d.phone);
        new.email = new.email.or(d.email);
        new.source = Some(d.dn);
    }
    let u = api
        .service
        .store()
        .write(move |tx| {
            // A look-alike is refused before this; allowed, it is said in the event.
            let lookalike = if rules.allow_lookalike {
                let found = users::lookalike_of(tx, &new.account)?;
                let mixed = crate::identity::mixed_script_label(new.account.trim()).is_some();
                let mut why = Vec::new();
                if let Some(other) = found {
                    why.push(format!("looking like `{other}`"));
                }
                if mixed {
                    why.push("mixing scripts".to_string());
                }
                if why.is_empty() {
                    String::new()
                } else {
                    format!(", {}: allowed by `{}`", why.join(" and "), c.account)
                }
            } else {
                String::new()
            };
            let u = users::create(tx, new, rules, now_ms())?;
            let what = format!(
                "user created (source {}{lookalike})",
                u.source.as_deref().unwrap_or("api")
            );
            events::admin_change(
                tx,
                events::USER_CREATED,
                &c.account,
                Some(&u.account),
                None,
                &what,
                now_ms(),
            )?;
            Ok(u)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(user_json(&u))))
}

/// Who the token belongs to: the web page's greeting and its own credentials' account, and a
/// script's check of a token before it acts.
async fn me(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(
        json!({"account": c.account, "admin": c.admin, "expires_at": c.expires_at}),
    ))
}

async fn get_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    if !c.admin && !users::same_account(&c.account, &account) {
        return Err(Error::NotFound {
            what: format!("user `{account}`"),
        }
        .into());
    }
    let a = account.clone();
    let u = api
        .service
        .store()
        .read(move |tx| users::get(tx, &a))
        .await?
        .ok_or(Error::NotFound {
            what: format!("user `{account}`"),
        })?;
    Ok(Json(user_json(&u)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default, with = "double_option")]
    phone: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    email: Option<Option<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

async fn set_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
    Json(p): Json<UserPatch>,
) -> ApiResult<Json<Json_>> {
    let c = api.admin(&headers).await?;
    let rules = api.service.settings().user_rules();
    let mut fields = Vec::new();
    for (name, set) in [
        ("display_name", p.display_name.is_some()),
        ("phone", p.phone.is_some()),
        ("email", p.email.is_some()),
    ] {
        if set {
            fields.push(name.to_string());
        }
    }
    if let Some(en) = p.enabled {
        fields.push(format!("enabled={en}"));
    }
    let changes = UserChanges {
        display_name: p.display_name,
        phone: p.phone,
        email: p.email,
        enabled: p.enabled,
    };
    let u = api
        .service
        .store()
        .write(move |tx| {
            let before = users::get(tx, &account)?;
            let u = users::update(tx, &account, changes, rules, &c.account, now_ms())?;
            // Disabled: what the user holds or waits for ends with the account's access.
            if !u.enabled && before.is_some_and(|b| b.enabled) {
                let why = format!("`{}` was disabled by `{}`", u.account, c.account);
                let n = crate::service::end_access(tx, &u.account, &why, now_ms())?;
                if n > 0 {
                    fields.push(format!("{n} request(s) ended"));
                }
            }
            let what = format!("user changed ({})", fields.join(", "));
            events::admin_change(
                tx,
                events::USER_CHANGED,
                &c.account,
                Some(&u.account),
                None,
                &what,
                now_ms(),
            )?;
            Ok(u)
        })
        .await?;
    if !u.enabled {
        api.forget_account(&u.account);
    }
    Ok(Json(user_json(&u)))
}

async fn remove_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
) -> ApiResult<StatusCode> {
    let c = api.admin(&headers).await?;
    let a = account.clone();
    let removed = api
        .service
        .store()
        .write(move |tx| {
            if users::get(tx, &a)?.is_none() {
                return Ok(None);
            }
            // What the user holds or waits for ends with the account.
            let ended = crate::service::end_access(
                tx,
                &a,
                &format!("`{}` was removed by `{}`", a.trim(), c.account),
                now_ms(),
            )?;
            users::remove(tx, &a)?;
            // Its tokens speak for an account that is gone.
            let revoked = tokens::revoke_account(tx, &a)?;
            let mut what = match revoked.len() {
                0 => "user and credentials removed".to_string(),
                n => format!("user and credentials removed, {n} token(s) revoked"),
            };
            if ended > 0 {
                what.push_str(&format!(", {ended} request(s) ended"));
            }
            events::admin_change(
                tx,
                events::USER_REMOVED,
                &c.account,
                Some(&a),
                None,
                &what,
                now_ms(),
            )?;
            Ok(Some(revoked))
        })
        .await?;
    if let Some(revoked) = removed {
        api.forget_tokens(&revoked);
        api.forget_account(&account);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound {
            what: format!("user `{account}`"),
        }
        .into())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unlock {
    provider: String,
}

async fn unlock_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
    Json(b): Json<Unlock>,
) -> ApiResult<Json<Json_>> {
    let c = api.admin(&headers).await?;
    let lifted = api
        .service
        .unlock(&account, &b.provider, &c.account)
        .await?;
    Ok(Json(
        json!({"account": account, "provider": b.provider, "unlocked": lifted}),
    ))
}

async fn list_credentials(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    if !c.admin && !users::same_account(&c.account, &account) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admins see another user's credentials".into(),
        ));
    }
    Ok(Json(json!(api.service.credentials(&account).await?)))
}

async fn remove_credential(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((account, provider, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Json_>> {
    let c = api.admin(&headers).await?;
    api.service
        .remove_credential(&account, &provider, &id, &c.account)
        .await?;
    Ok(Json(
        json!({"account": account, "provider": provider, "credential": id, "removed": true}),
    ))
}

async fn list_roles(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Json_>> {
    api.caller(&headers).await?;
    Ok(Json(json!(
        api.service.store().read_long(roles::list).await?
    )))
}

async fn create_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(spec): Json<RoleSpec>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    let c = api.admin(&headers).await?;
    let s = spec.clone();
    api.service
        .store()
        .write(move |tx| {
            roles::create(tx, &s, now_ms())?;
            events::admin_change(
                tx,
                events::ROLE_CREATED,
                &c.account,
                None,
                Some(&s.name),
                "role created",
                now_ms(),
            )
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!(spec))))
}

async fn get_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
    api.caller(&headers).await?;
    let n = name.clone();
    let r = api
        .service
        .store()
        .read(move |tx| roles::get(tx, &n))
        .await?
        .ok_or(Error::NotFound {
            what: format!("role `{name}`"),
        })?;
    Ok(Json(json!(r)))
}

async fn set_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(spec): Json<RoleSpec>,
) -> ApiResult<Json<Json_>> {
    let c = api.admin(&headers).await?;
    if spec.name != name {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("the body names role `{}`, the path `{name}`", spec.name),
        ));
    }
    let s = spec.clone();
    api.service
        .store()
        .write(move |tx| {
            let old = roles::get(tx, &s.name)?;
            roles::replace(tx, &s, now_ms())?;
            let what = format!("role changed ({})", changed_settings(old.as_ref(), &s));
            events::admin_change(
                tx,
                events::ROLE_CHANGED,
                &c.account,
                None,
                Some(&s.name),
                &what,
                now_ms(),
            )
        })
        .await?;
    Ok(Json(json!(spec)))
}

async fn remove_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let c = api.admin(&headers).await?;
    let n = name.clone();
    if api
        .service
        .store()
        .write(move |tx| {
            let removed = roles::remove(tx, &n)?;
            if removed {
                events::admin_change(
                    tx,
                    events::ROLE_REMOVED,
                    &c.account,
                    None,
                    Some(&n),
                    "role removed",
                    now_ms(),
                )?;
            }
            Ok(removed)
        })
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound {
            what: format!("role `{name}`"),
        }
        .into())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    since_ms: Option<i64>,
    #[serde(default)]
    until_ms: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn list_events(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let f = Filter {
        id: q.id,
        account: q.account,
        role: q.role,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        limit: q.limit,
    };
    let list = api
        .service
        .store()
        .read_long(move |tx| events::list(tx, &f))
        .await?;
    let out: Vec<Json_> = list.iter().map(events::to_json).collect();
    Ok(Json(Json_::Array(out)))
}

/// The chain's verdict, checked against the anchor file when there is one: `intact` and
/// `events`, or `seq` and `reason`; and `anchored_seq` and `anchored_at`, the newest valid
/// checkpoint (null when none).
async fn verify_events(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let anchors = api.anchors.clone();
    let r = api
        .service
        .store()
        .read_long(move |tx| {
            let anchors = match anchors {
                Some(file) => file.read()?,
                None => Default::default(),
            };
            events::verify_anchored(tx, &anchors)
        })
        .await?;
    let mut out = match r.verification {
        events::Verification::Intact(n) => json!({"intact": true, "events": n}),
        events::Verification::Broken { seq, reason } => {
            json!({"intact": false, "seq": seq, "reason": reason})
        }
    };
    out["anchored_seq"] = json!(r.anchored_seq);
    out["anchored_at"] = json!(r.anchored_at_ms.map(crate::anchor::time));
    Ok(Json(out))
}

/// The metrics in Prometheus's text format, for the scrape token or an admin.
async fn metrics(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Response> {
    let hash = crate::secrets::token_hash(&Api::bearer(&headers)?);
    // Comparing hashes: the time it takes tells nothing of the token.
    if api.metrics_token.as_deref() != Some(hash.as_str()) {
        api.admin(&headers).await?;
    }
    let in_flight = api
        .service
        .store()
        .read_long(crate::service::in_flight)
        .await?;
    let body = crate::metrics::METRICS.render(&in_flight);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

async fn list_providers(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Json_>> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    account: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    label: String,
}

async fn create_token(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<TokenBody>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    let c = api.admin(&headers).await?;
    crate::limits::check(
        "label",
        &b.label,
        api.service.settings().limits.label_chars,
        "label_chars",
    )?;
    crate::identity::check_name(crate::identity::NameKind::Account, b.account.trim())?;
    let (account, admin) = (b.account.clone(), b.admin);
    let token = api
        .service
        .store()
        .write(move |tx| {
            // A user's token speaks for a user: one that does not exist would do nothing.
            if !b.admin && users::get(tx, &b.account)?.is_none() {
                return Err(Error::NotFound {
                    what: format!(
                        "user `{}` (create the user first: `rolegate user new`)",
                        b.account.trim()
                    ),
                });
            }
            let token = tokens::issue(tx, &b.account, b.admin, &b.label, now_ms())?;
            let (kind, label) = token_words(b.admin, &b.label);
            let what = format!("{kind} token issued{label}");
            events::admin_change(
                tx,
                events::TOKEN_ISSUED,
                &c.account,
                Some(&b.account),
                None,
                &what,
                now_ms(),
            )?;
            Ok(token)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"account": account, "admin": admin, "token": token})),
    ))
}

/// How a token's event names it: its kind, and its label when it has one.
fn token_words(admin: bool, label: &str) -> (&'static str, String) {
    let kind = if admin { "admin" } else { "user" };
    if label.is_empty() {
        (kind, String::new())
    } else {
        (kind, format!(" (label `{label}`)"))
    }
}

async fn list_tokens(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let list = api.service.store().read(tokens::list).await?;
    Ok(Json(json!(list)))
}

async fn revoke_token(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Json_>> {
    let c = api.admin(&headers).await?;
    let revoked = api
        .service
        .store()
        .write(move |tx| {
            let Some((hash, token)) = tokens::revoke(tx, &id)? else {
                return Ok(None);
            };
            let (kind, label) = token_words(token.admin, &token.label);
            let what = format!("{kind} token `{}` revoked{label}", token.id);
            events::admin_change(
                tx,
                events::TOKEN_REVOKED,
                &c.account,
                Some(&token.account),
                None,
                &what,
                now_ms(),
            )?;
            Ok(Some((hash, token)))
        })
        .await?;
    let Some((hash, token)) = revoked else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            "no token has this id".into(),
        ));
    };
    api.forget_tokens(&[hash]);
    Ok(Json(json!(token)))
}

/// The top-level settings of a role that differ between two versions, by name.
fn changed_settings(old: Option<&RoleSpec>, new: &RoleSpec) -> String {
    let (Some(old), Ok(Json_::Object(b))) = (old, serde_json::to_value(new)) else {
        return "policy replaced".into();
    };
    let Ok(Json_::Object(a)) = serde_json::to_value(old) else {
        return "policy replaced".into();
    };
    let changed: Vec<&str> = b
        .iter()
        .filter(|(k, v)| a.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    if changed.is_empty() {
        "no setting changed".into()
    } else {
        changed.join(", ")
    }
}

async fn openapi() -> Json<Json_> {
    Json(openapi_document())
}

/// The OpenAPI 3.1 document of the API.
pub fn openapi_document() -> Json_ {
    let op = |summary: &str, admin: bool| {
        json!({"summary": summary, "security": [{"bearer": []}],
               "x-rolegate-admin": admin,
               "responses": {"200": {"description": "OK"}, "401": {"description": "no or bad token"},
                             "403": {"description": "refused by policy, or not an admin"},
                             "404": {"description": "not found"}, "409": {"description": "conflict"},
                             "408": {"description": "the body did not arrive within [server] client_timeout_s"},
                             "413": {"description": "the body is over 1 MiB"},
                             "503": {"description": "a provider is unavailable, or too many large bodies are being received (Retry-After)"},
                             "422": {"description": "invalid input"}}})
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "rolegate", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Privileged role activation gated by pluggable MFA. Errors are {\"error\": {\"code\", \"message\"}}."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/me": {"get": op("The caller: {account, admin, expires_at}", false)},
            "/v1/requests": {"post": op("Request a role (New-PAMRequest): {role, justification, ttl_s?, provider?, starts_at?}", false),
                              "get": op("The caller's requests", false)},
            "/v1/requests/{id}": {"get": op("A request (Get-PAMRequest)", false)},
            "/v1/requests/{id}/answer": {"post": op("Answer the MFA prompt: {code} or {input}", false)},
            "/v1/requests/{id}/poll": {"post": op("Poll an out-of-band MFA (a phone call)", false)},
            "/v1/requests/{id}/close": {"post": op("Close a request (Close-PAMRequest)", false)},
            "/v1/enrolments": {"post": op("Begin enrolling the caller in a provider: {provider}", false)},
            "/v1/enrolments/continue": {"post": op("Continue an enrolment: {provider, state, code?|input?}", false)},
            "/v1/approvals": {"get": op("Requests to approve (Get-PAMRequestToApprove)", false)},
            "/v1/approvals/{id}/approve": {"post": op("Approve (Set-PAMRequestToApprove -Approve)", false)},
            "/v1/approvals/{id}/reject": {"post": op("Reject: {reason?} (Set-PAMRequestToApprove -Reject)", false)},
            "/v1/users": {"get": op("Users (Get-PAMUser)", true), "post": op("New user (New-PAMUser)", true)},
            "/v1/users/{account}": {"get": op("A user", false), "patch": op("Change a user (Set-PAMUser); a phone change raises event 825", true),
                                    "delete": op("Remove a user (Remove-PAMUser)", true)},
            "/v1/users/{account}/unlock": {"post": op("Lift a lockout: {provider} (event 301)", true)},
            "/v1/users/{account}/credentials": {"get": op("A user's credentials (id, provider, label, created_at; never their data): admins, or the user", false)},
            "/v1/users/{account}/credentials/{provider}/{id}": {"delete": op("Remove a credential, e.g. a lost phone (event 311)", true)},
            "/v1/roles": {"get": op("Roles (Get-PAMRole)", false), "post": op("New role (New-PAMRole)", true)},
            "/v1/roles/{name}": {"get": op("A role", false), "put": op("Replace a role's policy (Set-PAMRole)", true),
                                 "delete": op("Remove a role (Remove-PAMRole)", true)},
            "/v1/events": {"get": op("Events, newest first: ?id&account&role&since_ms&until_ms&limit", true)},
            "/v1/events/verify": {"get": op("Verify the event hash chain", true)},
            "/v1/providers": {"get": op("Providers with their health", false)},
            "/v1/tokens": {"post": op("Issue a token: {account, admin?, label?}; shown once", true),
                           "get": op("List tokens: id, account, admin, label, created_at, expires_at (never a secret)", true)},
            "/v1/tokens/{id}": {"delete": op("Revoke a token by its id; it stops working at once", true)},
            "/metrics": {"get": op("Metrics in Prometheus's text format: admins, or the token of [server] metrics_token_file", true)},
        }
    })
}
