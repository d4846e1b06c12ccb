//! Roles and their policy.

use super::*;

use crate::records::events;
use crate::records::roles::{self, ProviderChange, RoleSpec};
use crate::service::Readiness;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RoleQuery {
    /// Only the roles the caller may request (is a candidate of): a yes/no value (true/false,
    /// 1/0, yes/no).
    #[serde(default)]
    mine: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/roles",
    operation_id = "list_roles",
    tag = "roles",
    summary = "Roles (Get-PAMRole)",
    description = "Every role's policy; with `mine=true`, only those the caller may request.",
    params(RoleQuery),
    responses(
        (status = 200, description = "The roles", body = Vec<RoleSpec>),
        (status = 422, description = "`invalid`: `mine` is not yes/no", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn list_roles(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<RoleQuery>,
) -> ApiResult<Json<Vec<RoleSpec>>> {
    let c = api.caller(&headers).await?;
    let mine = query_flag("mine", q.mine.as_deref())?;
    let mut list = api.service.store().read_long(roles::list).await?;
    if mine {
        list.retain(|r| {
            r.candidates
                .iter()
                .any(|a| crate::records::users::same_account(a, &c.account))
        });
    }
    Ok(Json(list))
}

#[utoipa::path(
    post,
    path = "/v1/roles",
    operation_id = "create_role",
    tag = "roles",
    summary = "New role (New-PAMRole)",
    description = "The role's policy: candidates, approvers, ttl_s, max_ttl_s, availability, \
justification_required, approval_enabled, mfa_enabled, providers, when_factor_down \
(`fail_closed`|`fallback`), shadow (providers tried after the real factor without deciding).",
    request_body = RoleSpec,
    responses(
        (status = 201, description = "The role", body = RoleSpec),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 409, description = "`conflict`: the role exists already", body = ErrorBody),
        (status = 422, description = "`invalid`: a setting is not valid (an unknown provider, a window, a name)", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn create_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(spec): Json<RoleSpec>,
) -> ApiResult<(StatusCode, Json<RoleSpec>)> {
    let c = api.admin(&headers).await?;
    roles::check_providers(&spec, None, api.service.providers().ids())?;
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
    Ok((StatusCode::CREATED, Json(spec)))
}

/// A role as `GET /v1/roles/{name}` shows it: its policy, and for an admin its warnings.
#[derive(Serialize, ToSchema)]
pub(super) struct RoleView {
    /// The policy.
    #[serde(flatten)]
    spec: RoleSpec,
    /// What stands in the candidates' way today (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<String>>,
}

#[utoipa::path(
    get,
    path = "/v1/roles/{name}",
    operation_id = "get_role",
    tag = "roles",
    summary = "A role",
    description = "Its policy (when_factor_down: `fail_closed`|`fallback`; shadow: providers \
tried after the real factor without deciding); for an admin also `warnings`: what stands in its \
candidates' way today.",
    params(("name" = String, Path, description = "The role's name")),
    responses(
        (status = 200, description = "The role", body = RoleView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn get_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<RoleView>> {
    let caller = api.caller(&headers).await?;
    let n = name.clone();
    let r = api
        .service
        .store()
        .read(move |tx| roles::get(tx, &n))
        .await?
        .ok_or(Error::NotFound {
            what: format!("role `{name}`"),
        })?;
    // An admin also hears what stands in the candidates' way today.
    let warnings = if caller.admin {
        Some(api.service.role_warnings(&r.to_role()?).await?)
    } else {
        None
    };
    Ok(Json(RoleView { spec: r, warnings }))
}

#[utoipa::path(
    put,
    path = "/v1/roles/{name}",
    operation_id = "replace_role",
    tag = "roles",
    summary = "Replace a role's policy (Set-PAMRole)",
    description = "The body is the whole policy (its `name` the path's); a change of providers \
or shadows is kept in the role's history.",
    params(("name" = String, Path, description = "The role's name")),
    request_body = RoleSpec,
    responses(
        (status = 200, description = "The role", body = RoleSpec),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid`: a setting is not valid, or the body names another role", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn set_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(spec): Json<RoleSpec>,
) -> ApiResult<Json<RoleSpec>> {
    let c = api.admin(&headers).await?;
    if spec.name != name {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("the body names role `{}`, the path `{name}`", spec.name),
        ));
    }
    let s = spec.clone();
    let providers = Arc::clone(api.service.providers());
    api.service
        .store()
        .write(move |tx| {
            let old = roles::get(tx, &s.name)?;
            roles::check_providers(&s, old.as_ref(), providers.ids())?;
            roles::replace(tx, &s, &c.account, now_ms())?;
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
    Ok(Json(spec))
}

#[utoipa::path(
    delete,
    path = "/v1/roles/{name}",
    operation_id = "delete_role",
    tag = "roles",
    summary = "Remove a role (Remove-PAMRole)",
    description = "Event 503.",
    params(("name" = String, Path, description = "The role's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn remove_role(
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

#[utoipa::path(
    get,
    path = "/v1/readiness",
    operation_id = "list_readiness",
    tag = "roles",
    summary = "Every role's readiness",
    description = "For each provider and shadow, how many enabled candidates can use it today \
(enrolled, phone on record, not locked out) and completed it in shadow; each candidate's \
standing; a summary saying which provider the role could drop.",
    responses(
        (status = 200, description = "Each role's readiness, by name", body = Vec<Readiness>),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn readiness(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<Readiness>>> {
    api.admin(&headers).await?;
    Ok(Json(api.service.readiness(None).await?))
}

#[utoipa::path(
    get,
    path = "/v1/roles/{name}/readiness",
    operation_id = "get_role_readiness",
    tag = "roles",
    summary = "One role's readiness (as /v1/readiness)",
    description = "The role's entry of `/v1/readiness`.",
    params(("name" = String, Path, description = "The role's name")),
    responses(
        (status = 200, description = "The role's readiness", body = Readiness),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn role_readiness(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Option<Readiness>>> {
    api.admin(&headers).await?;
    let mut r = api.service.readiness(Some(&name)).await?;
    Ok(Json(r.pop()))
}

/// A role's provider changes.
#[derive(Serialize, ToSchema)]
pub(super) struct RoleHistory {
    /// The role.
    role: String,
    /// Its changes of providers and shadows, newest first.
    changes: Vec<ProviderChange>,
}

#[utoipa::path(
    get,
    path = "/v1/roles/{name}/history",
    operation_id = "get_role_history",
    tag = "roles",
    summary = "A role's provider changes, newest first",
    description = "`{role, changes: [{at, actor, providers_before, shadow_before, \
providers_after, shadow_after, rollback}]}`.",
    params(("name" = String, Path, description = "The role's name")),
    responses(
        (status = 200, description = "The history", body = RoleHistory),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn role_history(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<RoleHistory>> {
    api.admin(&headers).await?;
    let n = name.clone();
    let h = api
        .service
        .store()
        .read(move |tx| {
            if roles::get(tx, &n)?.is_none() {
                return Err(Error::NotFound {
                    what: format!("role `{n}`"),
                });
            }
            roles::history(tx, &n)
        })
        .await?;
    Ok(Json(RoleHistory {
        role: name,
        changes: h,
    }))
}

/// What a rollback did.
#[derive(Serialize, ToSchema)]
pub(super) struct RolledBack {
    /// The role.
    role: String,
    /// The providers before the rollback.
    providers_before: Vec<String>,
    /// The shadows before the rollback.
    shadow_before: Vec<String>,
    /// The providers now.
    providers: Vec<String>,
    /// The shadows now.
    shadow: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/roles/{name}/rollback",
    operation_id = "rollback_role",
    tag = "roles",
    summary = "Put the role's providers and shadows back as they were before their latest change",
    description = "Event 513; 409 when there is no change to roll back.",
    params(("name" = String, Path, description = "The role's name")),
    responses(
        (status = 200, description = "Rolled back", body = RolledBack),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: no change to roll back", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn rollback_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<RolledBack>> {
    let c = api.admin(&headers).await?;
    let (before, after) = api
        .service
        .store()
        .write(move |tx| {
            let now = now_ms();
            let (before, after) = roles::rollback(tx, &name, &c.account, now)?;
            let what = format!(
                "providers of role `{}` rolled back from {} to {}",
                after.name,
                provider_lists(&before),
                provider_lists(&after)
            );
            events::admin_change(
                tx,
                events::ROLE_ROLLED_BACK,
                &c.account,
                None,
                Some(&after.name),
                &what,
                now,
            )?;
            Ok((before, after))
        })
        .await?;
    Ok(Json(RolledBack {
        role: after.name,
        providers_before: before.providers,
        shadow_before: before.shadow,
        providers: after.providers,
        shadow: after.shadow,
    }))
}

/// A role's providers and shadows as an event names them: `[phone-legacy, totp] (shadow: [sms])`.
fn provider_lists(r: &RoleSpec) -> String {
    let list = |l: &[String]| format!("[{}]", l.join(", "));
    if r.shadow.is_empty() {
        list(&r.providers)
    } else {
        format!("{} (shadow: {})", list(&r.providers), list(&r.shadow))
    }
}

/// The top-level settings of a role that differ between two versions, by name.
pub(super) fn changed_settings(old: Option<&RoleSpec>, new: &RoleSpec) -> String {
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
