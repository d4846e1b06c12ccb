//! Users (and their credentials and lockouts): admins create, change, unlock and remove them;
//! a user reads their own.

use super::*;

use crate::records::events;
use crate::records::tokens;
use crate::records::users::{self, NewUser, UserChanges};

/// A user as the API shows it.
#[derive(Serialize, ToSchema)]
pub(super) struct UserView {
    /// Account name as given (`CONTOSO\jdoe`); unique without regard to case.
    account: String,
    /// Display name.
    display_name: String,
    /// Phone in E.164, with ` x<extension>` when there is one.
    phone: Option<String>,
    /// E-mail address.
    email: Option<String>,
    /// Where the user came from (a directory DN), when imported.
    source: Option<String>,
    /// Whether the user may request roles.
    enabled: bool,
    /// Created, Unix ms.
    created_at: i64,
    /// Last changed, Unix ms.
    updated_at: i64,
}

pub(super) fn user_json(u: &users::User) -> UserView {
    UserView {
        account: u.account.clone(),
        display_name: u.display_name.clone(),
        phone: u.phone.clone(),
        email: u.email.clone(),
        source: u.source.clone(),
        enabled: u.enabled,
        created_at: u.created_at,
        updated_at: u.updated_at,
    }
}

#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "list_users",
    tag = "users",
    summary = "Users (Get-PAMUser)",
    description = "Every user.",
    responses(
        (status = 200, description = "The users", body = Vec<UserView>),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn list_users(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<UserView>>> {
    api.admin(&headers).await?;
    let users = api.service.store().read_long(users::list).await?;
    Ok(Json(users.iter().map(user_json).collect()))
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UserBody {
    /// Account name (`CONTOSO\jdoe`).
    account: String,
    /// Display name.
    #[serde(default)]
    display_name: String,
    /// Phone, as the user writes it (the default country code applies); stored in E.164.
    #[serde(default)]
    phone: Option<String>,
    /// E-mail address.
    #[serde(default)]
    email: Option<String>,
    /// Where the user came from.
    #[serde(default)]
    source: Option<String>,
    /// Copy display name, phone and e-mail from the configured directory (once).
    #[serde(default)]
    from_directory: bool,
    /// Accept an account that mixes scripts or looks like an existing one (recorded).
    #[serde(default)]
    allow_lookalike: bool,
}

#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "create_user",
    tag = "users",
    summary = "New user (New-PAMUser)",
    description = "Body `{account, display_name?, phone?, email?, source?, from_directory?, \
allow_lookalike?}`. `from_directory` copies display name, phone and e-mail from the configured \
directory (what the body says wins). An account that mixes scripts or looks like an existing \
one is refused unless `allow_lookalike` (recorded in event 701).",
    request_body = UserBody,
    responses(
        (status = 201, description = "The user", body = UserView),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`: not in the directory (`from_directory`)", body = ErrorBody),
        (status = 409, description = "`conflict`: the account exists, or looks like one that does", body = ErrorBody),
        (status = 422, description = "`invalid`: a field is not valid, or no directory is configured", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn create_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<UserBody>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
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

/// The caller.
#[derive(Serialize, ToSchema)]
pub(super) struct Me {
    /// The account the token speaks for.
    account: String,
    /// Whether the token may administer.
    admin: bool,
    /// When the token stops working (Unix ms), if ever.
    expires_at: Option<i64>,
}

/// Who the token belongs to: the web page's greeting and its own credentials' account, and a
/// script's check of a token before it acts.
#[utoipa::path(
    get,
    path = "/v1/me",
    operation_id = "get_me",
    tag = "users",
    summary = "The caller: {account, admin, expires_at}",
    description = "Who the token belongs to: a script's check of a token before it acts.",
    responses((status = 200, description = "The caller", body = Me)),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn me(State(api): State<Api>, headers: HeaderMap) -> ApiResult<Json<Me>> {
    let c = api.caller(&headers).await?;
    Ok(Json(Me {
        account: c.account,
        admin: c.admin,
        expires_at: c.expires_at,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/users/{account}",
    operation_id = "get_user",
    tag = "users",
    summary = "A user",
    description = "Admins read anyone; a user, themself (another user is `not_found`).",
    params(("account" = String, Path, description = "The user's account (compared without regard to case)")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn get_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
) -> ApiResult<Json<UserView>> {
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

/// A change to a user: the fields sent change, the others stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UserPatch {
    /// Display name.
    #[serde(default)]
    display_name: Option<String>,
    /// Phone (null removes it); a change raises event 825.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>, required = false)]
    phone: Option<Option<String>>,
    /// E-mail address (null removes it).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>, required = false)]
    email: Option<Option<String>>,
    /// Enabled; disabling ends what the user holds or waits for, and their tokens stop working.
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

#[utoipa::path(
    patch,
    path = "/v1/users/{account}",
    operation_id = "update_user",
    tag = "users",
    summary = "Change a user (Set-PAMUser)",
    description = "Body `{display_name?, phone?, email?, enabled?}`; a phone change raises event \
825. Disabling ends the user's active and pending requests.",
    params(("account" = String, Path, description = "The user's account (compared without regard to case)")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "The user as changed", body = UserView),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
        (status = 422, description = "`invalid`: a field is not valid (a phone number)", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn set_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
    Json(p): Json<UserPatch>,
) -> ApiResult<Json<UserView>> {
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

#[utoipa::path(
    delete,
    path = "/v1/users/{account}",
    operation_id = "delete_user",
    tag = "users",
    summary = "Remove a user (Remove-PAMUser)",
    description = "Removes the user and their credentials, ends their requests and revokes their \
tokens.",
    params(("account" = String, Path, description = "The user's account (compared without regard to case)")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
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
            // The account as its user spells it, whatever the path's spelling.
            let Some(a) = users::get(tx, &a)?.map(|u| u.account) else {
                return Ok(None);
            };
            // What the user holds or waits for ends with the account.
            let ended = crate::service::end_access(
                tx,
                &a,
                &format!("`{a}` was removed by `{}`", c.account),
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

/// The lockout to lift.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Unlock {
    /// The provider the user is locked out of.
    provider: String,
}

/// What an unlock did.
#[derive(Serialize, ToSchema)]
pub(super) struct Unlocked {
    /// The user.
    account: String,
    /// The provider.
    provider: String,
    /// Whether a lockout was lifted (false: there was none).
    unlocked: bool,
}

#[utoipa::path(
    post,
    path = "/v1/users/{account}/unlock",
    operation_id = "unlock_user",
    tag = "users",
    summary = "Lift a lockout",
    description = "Body `{provider}` (event 301).",
    params(("account" = String, Path, description = "The user's account (compared without regard to case)")),
    request_body = Unlock,
    responses(
        (status = 200, description = "Whether a lockout was lifted", body = Unlocked),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn unlock_user(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
    Json(b): Json<Unlock>,
) -> ApiResult<Json<Unlocked>> {
    let c = api.admin(&headers).await?;
    let lifted = api
        .service
        .unlock(&account, &b.provider, &c.account)
        .await?;
    Ok(Json(Unlocked {
        account,
        provider: b.provider,
        unlocked: lifted,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/users/{account}/credentials",
    operation_id = "list_credentials",
    tag = "users",
    summary = "A user's credentials: admins, or the user",
    description = "Each credential's id, provider, label, created_at, and `flag` and `flagged_at` \
when set aside as a suspected copy; never their data.",
    params(("account" = String, Path, description = "The user's account (compared without regard to case)")),
    responses(
        (status = 200, description = "The credentials", body = Vec<crate::service::CredentialView>),
        (status = 403, description = "`forbidden`: only admins see another user's credentials", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn list_credentials(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(account): Path<String>,
) -> ApiResult<Json<Vec<crate::service::CredentialView>>> {
    let c = api.caller(&headers).await?;
    if !c.admin && !users::same_account(&c.account, &account) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admins see another user's credentials".into(),
        ));
    }
    Ok(Json(api.service.credentials(&account).await?))
}

/// A credential removed.
#[derive(Serialize, ToSchema)]
pub(super) struct CredentialRemoved {
    /// The user.
    account: String,
    /// The provider.
    provider: String,
    /// The credential's id.
    credential: String,
    /// Always true.
    removed: bool,
}

#[utoipa::path(
    delete,
    path = "/v1/users/{account}/credentials/{provider}/{id}",
    operation_id = "delete_credential",
    tag = "users",
    summary = "Remove a credential, e.g. a lost phone",
    description = "Event 311.",
    params(
        ("account" = String, Path, description = "The user's account"),
        ("provider" = String, Path, description = "The provider the credential belongs to"),
        ("id" = String, Path, description = "The credential's id"),
    ),
    responses(
        (status = 200, description = "Removed", body = CredentialRemoved),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user or credential", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn remove_credential(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((account, provider, id)): Path<(String, String, String)>,
) -> ApiResult<Json<CredentialRemoved>> {
    let c = api.admin(&headers).await?;
    api.service
        .remove_credential(&account, &provider, &id, &c.account)
        .await?;
    Ok(Json(CredentialRemoved {
        account,
        provider,
        credential: id,
        removed: true,
    }))
}
