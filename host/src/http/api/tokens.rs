//! API tokens: issued, listed by id, revoked.

use super::*;

use crate::records::events;
use crate::records::tokens;
use crate::records::users;

/// A token to issue.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    /// The account it speaks for (a user's token: an existing user).
    account: String,
    /// Whether it may administer.
    #[serde(default)]
    admin: bool,
    /// The admin's note.
    #[serde(default)]
    label: String,
}

/// A token just issued: the secret, shown once.
#[derive(Serialize, ToSchema)]
pub(super) struct TokenIssued {
    /// The account it speaks for.
    account: String,
    /// Whether it may administer.
    admin: bool,
    /// The secret: send it as `Authorization: Bearer <token>`. Never shown again.
    token: String,
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "create_token",
    tag = "tokens",
    summary = "Issue a token",
    description = "Body `{account, admin?, label?}`; the secret is shown once (event 601).",
    request_body = TokenBody,
    responses(
        (status = 201, description = "The token, shown once", body = TokenIssued),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`: a user's token for a user that does not exist", body = ErrorBody),
        (status = 422, description = "`invalid`: the account or label is not valid", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn create_token(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<TokenBody>,
) -> ApiResult<(StatusCode, Json<TokenIssued>)> {
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
    let admin = b.admin;
    let token = api
        .service
        .store()
        .write(move |tx| {
            // A user's token speaks for a user: one that does not exist would do nothing.
            let user = users::get(tx, &b.account)?;
            if !b.admin && user.is_none() {
                return Err(Error::NotFound {
                    what: format!(
                        "user `{}` (create the user first: `rolegate user new`)",
                        b.account.trim()
                    ),
                });
            }
            // The account as its user spells it, whatever the admin typed.
            let b = TokenBody {
                account: user.map_or(b.account, |u| u.account),
                ..b
            };
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
            Ok((token, b.account))
        })
        .await?;
    let (token, account) = token;
    Ok((
        StatusCode::CREATED,
        Json(TokenIssued {
            account,
            admin,
            token,
        }),
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

#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "list_tokens",
    tag = "tokens",
    summary = "List tokens",
    description = "Each token's id, account, admin, label, created_at and expires_at (never a \
secret).",
    responses(
        (status = 200, description = "The tokens", body = Vec<tokens::TokenView>),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn list_tokens(
    State(api): State<Api>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<tokens::TokenView>>> {
    api.admin(&headers).await?;
    let list = api.service.store().read(tokens::list).await?;
    Ok(Json(list))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    operation_id = "revoke_token",
    tag = "tokens",
    summary = "Revoke a token by its id",
    description = "It stops working at once on this daemon (within seconds on another sharing \
the database); event 602. Answers the revoked token.",
    params(("id" = String, Path, description = "The token's id (the start of its hash, as listed)")),
    responses(
        (status = 200, description = "The revoked token", body = tokens::TokenView),
        (status = 403, description = "`forbidden`: this needs an admin token", body = ErrorBody),
        (status = 404, description = "`not_found`: no token has this id", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(true))),
)]
pub(super) async fn revoke_token(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<tokens::TokenView>> {
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
    Ok(Json(token))
}
