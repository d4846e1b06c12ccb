//! The HTTP JSON API, shaped after MIM PAM's REST API: requests, requests to approve, roles,
//! users, events, providers, tokens. Callers authenticate with bearer tokens.
//!
//! One file per resource: `requests`, `enrolments`, `approvals`, `users` (and credentials,
//! lockouts), `roles`, `events`, `tokens`, `status` (metrics, providers), `providers` (one
//! provider's test message), `openapi`. This file keeps the shared state, the token check and
//! its cache, errors and the router.
//!
//! The router is built through utoipa-axum's [`OpenApiRouter`]: every route is a handler with
//! a `#[utoipa::path]` attribute, registered with `routes!`, so the routes served and the
//! operations `/openapi.json` documents are one list (`openapi.rs` completes the document).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json_, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::model::error::Error;
use crate::records::tokens::Caller;
use crate::service::{RequestView, Requester, Service};
use crate::store::changes::{self, Kind, Stamp};

mod approvals;
mod enrolments;
mod events;
#[doc(hidden)]
pub mod fuzz;
mod openapi;
mod providers;
mod requests;
mod roles;
mod status;
mod tokens;
mod users;

pub use openapi::{openapi_document, routes};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Api {
    service: Arc<Service>,
    /// Verified tokens (by hash) for a few seconds, so each call does not cost a read.
    /// With SQLite, also the token's stamp before its read: a revocation through this
    /// daemon's writer makes it stale at once, even when it raced the read.
    tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, CachedToken>>>,
    /// The directory users may be copied from.
    directory: Option<Arc<crate::records::directory::DirectoryConfig>>,
    /// The hash of the token that may read `/metrics` (and nothing else), if one is set.
    metrics_token: Option<Arc<str>>,
    /// The event chain's anchors, checked by `/v1/events/verify`.
    anchors: Option<Arc<crate::records::anchor::AnchorFile>>,
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

/// The body of every error the API answers (the server's own refusals too).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong: a stable code for programs, a sentence for people.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// `unauthorized` (401), `forbidden` (403: not an admin, or not allowed to see this),
    /// `refused` (403: the policy refuses), `not_found` (404), `timeout` (408: the body did
    /// not arrive in time), `conflict` (409), `too_large` (413: a body over 1 MiB), `invalid`
    /// (422), `rate_limited` (429), `bad_input` (400: the factor could not take the answer),
    /// `bad_request` (400: the body could not be read), `provider_error` (502),
    /// `provider_unavailable` (503), `busy` (503, with Retry-After), `malformed_data` and
    /// `internal` (500).
    #[schema(example = "not_found")]
    code: String,
    /// What happened and what to do, in words for the caller.
    #[schema(example = "role `ops` not found")]
    message: String,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use rolegate_sdk::ErrorKind;
        let (status, code) = match &e {
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::Refused(crate::model::role::Refusal::RateLimited { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            Error::Refused(_) => (StatusCode::FORBIDDEN, "refused"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Invalid { .. } | Error::Phone { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            // A provider's words are for the admin (its log, events, `provider list`); the
            // caller — a user, usually — gets a sentence to act on.
            // A malformed answer: the provider says what is wrong with what the user typed
            // ("the code has 6 digits"), which the header asks it to say in the user's terms.
            Error::Provider { id, source, .. } if source.kind == ErrorKind::BadInput => {
                return ApiError(
                    StatusCode::BAD_REQUEST,
                    "bad_input",
                    format!(
                        "the factor `{id}` could not take that answer: {}",
                        source.message
                    ),
                );
            }
            Error::Deadline { id, .. }
            | Error::WorkerCrashed { id, .. }
            | Error::CrashLoop { id, .. }
            | Error::Provider { id, .. } => {
                tracing::warn!(provider = %id, error = %e, "a provider call failed");
                let code = if matches!(e, Error::Provider { .. }) {
                    (StatusCode::BAD_GATEWAY, "provider_error")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "provider_unavailable")
                };
                return ApiError(
                    code.0,
                    code.1,
                    format!(
                        "the factor `{id}` is unavailable now: try again later, or choose another factor"
                    ),
                );
            }
            // The database is away: a load balancer's retry (or the client's, after
            // Retry-After) may find it back, or another host that reaches it.
            Error::StoreUnavailable { .. } => {
                tracing::warn!(error = %e, "the store is unreachable");
                return ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    STORE_UNAVAILABLE,
                    "the store is unreachable now: try again shortly".into(),
                );
            }
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

/// The error code of a call the store could not serve (503, with Retry-After).
const STORE_UNAVAILABLE: &str = "store_unavailable";

/// How long a client should wait before it tries again while the store is away, seconds.
const STORE_RETRY_AFTER_S: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.1 == STORE_UNAVAILABLE;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.1.into(),
                message: self.2,
            },
        };
        let mut r = (self.0, Json(body)).into_response();
        if retry {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(STORE_RETRY_AFTER_S),
            );
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A yes/no query parameter (`name` = `value`): absent is no; anything but a yes/no value
/// (see [`crate::model::yes_no`]) is refused naming it.
fn query_flag(name: &str, value: Option<&str>) -> ApiResult<bool> {
    match value {
        None => Ok(false),
        Some(v) => crate::model::yes_no(v).ok_or_else(|| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("`{name}` = `{v}` is not a yes/no value (true/false, 1/0, yes/no)"),
            )
        }),
    }
}

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
    pub fn with_anchors(
        mut self,
        anchors: Option<Arc<crate::records::anchor::AnchorFile>>,
    ) -> Self {
        self.anchors = anchors;
        self
    }

    /// Lets the holder of `token` read `/metrics` (admins always may).
    pub fn with_metrics_token(mut self, token: Option<&str>) -> Self {
        self.metrics_token = token.map(|t| crate::store::secrets::token_hash(t).into());
        self
    }

    /// Lets admins create users from this directory (`from_directory`).
    pub fn with_directory(
        mut self,
        directory: Option<crate::records::directory::DirectoryConfig>,
    ) -> Self {
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
                        &crate::records::users::account_key(&caller.account),
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
        let key = crate::records::users::account_key(account);
        if let Ok(mut cache) = self.tokens.lock() {
            cache.retain(|_, (c, _, _)| crate::records::users::account_key(&c.account) != key);
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
            crate::model::caches::make_room(
                &mut cache,
                crate::model::caches::MAX_ENTRIES,
                |_, (c, at, s)| {
                    let young = match s {
                        Some(_) => changes::young(*at, now),
                        None => (0..TOKEN_CACHE_MS).contains(&(now - *at)),
                    };
                    !young || c.expires_at.is_some_and(|e| e <= now)
                },
            );
            cache.insert(hash, (caller.clone(), now, stamp));
        }
    }

    async fn caller(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let hash = crate::store::secrets::token_hash(&Self::bearer(headers)?);
        let now = jiff::Timestamp::now().as_millisecond();
        if let Some(caller) = self.cached_caller(&hash, now) {
            return Ok(caller);
        }
        let h = hash.clone();
        let stamp = self.token_stamp();
        let caller = self
            .service
            .store()
            .read(move |tx| crate::records::tokens::verify_hash(tx, &h, now))
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

    /// The router with every route: the API's (documented in `/openapi.json`) and the web
    /// page's.
    pub fn router(self) -> Router {
        let (api, _) = api_routes().split_for_parts();
        api.merge(crate::http::web::routes())
            .with_state(self)
            .layer(axum::middleware::map_response(no_store))
    }
}

/// The API's routes with their OpenAPI operations: one `routes!` per path (a path's methods
/// together). What this lists is what is served and what is documented.
fn api_routes() -> OpenApiRouter<Api> {
    use utoipa::OpenApi as _;
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(status::healthz))
        .routes(routes!(status::readyz))
        .routes(routes!(openapi::openapi))
        .routes(routes!(status::metrics))
        .routes(routes!(users::me))
        .routes(routes!(requests::create_request, requests::my_requests))
        .routes(routes!(requests::get_request))
        .routes(routes!(requests::answer))
        .routes(routes!(requests::poll))
        .routes(routes!(requests::close))
        .routes(routes!(enrolments::enrol_start))
        .routes(routes!(enrolments::enrol_continue))
        .routes(routes!(approvals::approvals))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::reject))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::set_user,
            users::remove_user
        ))
        .routes(routes!(users::unlock_user))
        .routes(routes!(users::list_credentials))
        .routes(routes!(users::remove_credential))
        .routes(routes!(roles::list_roles, roles::create_role))
        .routes(routes!(
            roles::get_role,
            roles::set_role,
            roles::remove_role
        ))
        .routes(routes!(roles::role_history))
        .routes(routes!(roles::role_readiness))
        .routes(routes!(roles::readiness))
        .routes(routes!(roles::rollback_role))
        .routes(routes!(events::list_events))
        .routes(routes!(events::verify_events))
        .routes(routes!(status::list_providers))
        .routes(routes!(providers::test_provider))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
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

#[cfg(test)]
mod tests {
    use super::*;
    use rolegate_sdk::ProviderError;

    /// What a provider fault says to the caller: the factor and what to do, none of the
    /// provider's internals (a signal, a path, an upstream's account or code).
    #[test]
    fn provider_faults_reach_the_caller_as_a_sentence_they_can_act_on() {
        let faults = [
            Error::WorkerCrashed {
                id: "sms".into(),
                op: "challenge_start",
                status: "was killed by signal 11 (SIGSEGV)".into(),
            },
            Error::Deadline {
                id: "sms".into(),
                op: "challenge_start",
                ms: 5000,
                action: "its worker is killed",
            },
            Error::CrashLoop {
                id: "sms".into(),
                crashes: 5,
                window_s: 60,
                wait_s: 42,
            },
            Error::Provider {
                id: "sms".into(),
                op: "enroll_start",
                source: ProviderError::unavailable(
                    "Twilio answered 401 (20003) for account AC0123 with /etc/rolegate/twilio.token",
                ),
            },
            Error::Provider {
                id: "sms".into(),
                op: "enroll_start",
                source: ProviderError::config("setting `from`: +15550100 is not a Twilio number"),
            },
        ];
        for e in faults {
            let ApiError(status, code, message) = ApiError::from(e);
            assert!(
                status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_GATEWAY,
                "{status}"
            );
            assert!(code.starts_with("provider_"), "{code}");
            assert_eq!(
                message,
                "the factor `sms` is unavailable now: try again later, or choose another factor"
            );
        }
    }

    /// A malformed answer is the user's to correct: the provider's words about it reach them.
    #[test]
    fn a_malformed_answer_names_what_is_wrong_with_it() {
        let ApiError(status, code, message) = ApiError::from(Error::Provider {
            id: "totp".into(),
            op: "challenge_continue",
            source: ProviderError::bad_input("the code has 6 digits"),
        });
        assert_eq!((status, code), (StatusCode::BAD_REQUEST, "bad_input"));
        assert_eq!(
            message,
            "the factor `totp` could not take that answer: the code has 6 digits"
        );
    }
}
