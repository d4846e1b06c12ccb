//! Users (and their credentials and lockouts): admins create, change, unlock and remove them;
//! a user reads their own.

use super::*;

use crate::records::events;
use crate::records::tokens;
use crate::records::users::{self, NewUser, UserChanges};

pub(super) fn user_json(u: &users::User) -> Json_ {
    json!({
        "account": u.account, "display_name": u.display_name, "phone": u.phone,
        "email": u.email, "source": u.source, "enabled": u.enabled,
        "created_at": u.created_at, "updated_at": u.updated_at,
    })
}

pub(super) async fn list_users(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let users = api.service.store().read_long(users::list).await?;
    Ok(Json(Json_::Array(users.iter().map(user_json).collect())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserBody {
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

pub(super) async fn create_user(
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
                let mixed =
                    crate::model::identity::mixed_script_label(new.account.trim()).is_some();
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
pub(super) async fn me(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Json_>> {
    let c = api.caller(&headers).await?;
    Ok(Json(
        json!({"account": c.account, "admin": c.admin, "expires_at": c.expires_at}),
    ))
}

pub(super) async fn get_user(
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
pub(super) struct UserPatch {
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

pub(super) async fn set_user(
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

pub(super) async fn remove_user(
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
pub(super) struct Unlock {
    provider: String,
}

pub(super) async fn unlock_user(
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

pub(super) async fn list_credentials(
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

pub(super) async fn remove_credential(
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
