//! The HTTP JSON API, shaped after MIM PAM's REST API: requests, requests to approve, roles,
//! users, events, providers, tokens. Callers authenticate with bearer tokens.
//!
//! One file per resource: `requests`, `enrolments`, `approvals`, `users` (and credentials,
//! lockouts), `roles`, `events`, `tokens`, `status` (metrics, providers), `providers` (one
//! provider's test message), `openapi`. This file keeps the shared state, the token check and
//! its cache, errors and the router.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use jiff::SignedDuration;
use serde::Deserialize;
use serde_json::{Value as Json_, json};

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

use approvals::{approvals, approve, reject};
use enrolments::{enrol_continue, enrol_start};
use events::{list_events, verify_events};
use openapi::openapi;
pub use openapi::openapi_document;
use providers::test_provider;
use requests::{answer, close, create_request, get_request, my_requests, poll};
use roles::{
    create_role, get_role, list_roles, readiness, remove_role, role_history, role_readiness,
    rollback_role, set_role,
};
use status::{list_providers, metrics};
use tokens::{create_token, list_tokens, revoke_token};
use users::{
    create_user, get_user, list_credentials, list_users, me, remove_credential, remove_user,
    set_user, unlock_user,
};

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
            .route("/v1/roles/{name}/history", get(role_history))
            .route("/v1/roles/{name}/readiness", get(role_readiness))
            .route("/v1/readiness", get(readiness))
            .route("/v1/roles/{name}/rollback", post(rollback_role))
            .route("/v1/events", get(list_events))
            .route("/v1/events/verify", get(verify_events))
            .route("/v1/providers", get(list_providers))
            .route("/v1/providers/{id}/test", post(test_provider))
            .route("/v1/tokens", post(create_token).get(list_tokens))
            .route("/v1/tokens/{id}", delete(revoke_token))
            .merge(crate::http::web::routes())
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
