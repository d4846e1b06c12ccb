//! Roles and their policy.

use super::*;

use crate::records::events;
use crate::records::roles::{self, RoleSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleQuery {
    /// Only the roles the caller may request (is a candidate of).
    #[serde(default)]
    mine: Option<String>,
}

pub(super) async fn list_roles(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<RoleQuery>,
) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    let mine = match q.mine.as_deref() {
        None => false,
        Some(v) => crate::model::yes_no(v).ok_or_else(|| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("`mine` = `{v}` is not a yes/no value (true/false, 1/0, yes/no)"),
            )
        })?,
    };
    let mut list = api.service.store().read_long(roles::list).await?;
    if mine {
        list.retain(|r| {
            r.candidates
                .iter()
                .any(|a| crate::records::users::same_account(a, &c.account))
        });
    }
    Ok(Json(json!(list)))
}

pub(super) async fn create_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(spec): Json<RoleSpec>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
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
    Ok((StatusCode::CREATED, Json(json!(spec))))
}

pub(super) async fn get_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
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
    let mut out = json!(r);
    // An admin also hears what stands in the candidates' way today.
    if caller.admin {
        let warnings = api.service.role_warnings(&r.to_role()?).await?;
        out["warnings"] = json!(warnings);
    }
    Ok(Json(out))
}

pub(super) async fn set_role(
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
    Ok(Json(json!(spec)))
}

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

pub(super) async fn readiness(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    Ok(Json(json!(api.service.readiness(None).await?)))
}

pub(super) async fn role_readiness(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let mut r = api.service.readiness(Some(&name)).await?;
    Ok(Json(json!(r.pop())))
}

pub(super) async fn role_history(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
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
    Ok(Json(json!({"role": name, "changes": h})))
}

pub(super) async fn rollback_role(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Json_>> {
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
    Ok(Json(json!({
        "role": after.name,
        "providers_before": before.providers,
        "shadow_before": before.shadow,
        "providers": after.providers,
        "shadow": after.shadow,
    })))
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
