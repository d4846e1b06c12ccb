//! Roles and their policy.

use super::*;

use crate::records::events;
use crate::records::roles::{self, RoleSpec};

pub(super) async fn list_roles(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Json_>> {
    api.caller(&headers).await?;
    Ok(Json(json!(
        api.service.store().read_long(roles::list).await?
    )))
}

pub(super) async fn create_role(
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
