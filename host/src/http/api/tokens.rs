//! API tokens: issued, listed by id, revoked.

use super::*;

use crate::records::events;
use crate::records::tokens;
use crate::records::users;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    account: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    label: String,
}

pub(super) async fn create_token(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<TokenBody>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    let c = api.admin(&headers).await?;
    crate::model::limits::check(
        "label",
        &b.label,
        api.service.settings().limits.label_chars,
        "label_chars",
    )?;
    crate::model::identity::check_name(
        crate::model::identity::NameKind::Account,
        b.account.trim(),
    )?;
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
pub(super) fn token_words(admin: bool, label: &str) -> (&'static str, String) {
    let kind = if admin { "admin" } else { "user" };
    if label.is_empty() {
        (kind, String::new())
    } else {
        (kind, format!(" (label `{label}`)"))
    }
}

pub(super) async fn list_tokens(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Json_>> {
    api.admin(&headers).await?;
    let list = api.service.store().read(tokens::list).await?;
    Ok(Json(json!(list)))
}

pub(super) async fn revoke_token(
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
