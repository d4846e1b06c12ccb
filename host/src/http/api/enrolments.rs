//! Enrolments: a user enrols in a provider that needs it, step by step.

use super::*;

use crate::service::EnrolmentView;

/// The start of an enrolment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrolStart {
    /// The provider to enrol in.
    provider: String,
}

#[utoipa::path(
    post,
    path = "/v1/enrolments",
    operation_id = "start_enrolment",
    tag = "enrolments",
    summary = "Begin enrolling the caller in a provider",
    description = "Body `{provider}`. Answers the first step: a `prompt` to show (a TOTP secret's \
QR code, a WebAuthn creation challenge) and the opaque `state` to send back with the answer.",
    request_body = EnrolStart,
    responses(
        (status = 200, description = "The first step", body = EnrolmentView),
        (status = 404, description = "`not_found`: no such provider, or the caller's user is gone", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
        (status = 422, description = "`invalid`: the provider needs no enrolment, or a phone the user has not", body = ErrorBody),
        (status = 502, description = "`provider_error`", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn enrol_start(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<EnrolStart>,
) -> ApiResult<Json<EnrolmentView>> {
    let c = api.caller(&headers).await?;
    Ok(Json(
        api.service.enroll_start(&c.account, &b.provider).await?,
    ))
}

/// The next step of an enrolment: the answer to its prompt.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrolContinue {
    /// The provider being enrolled in.
    provider: String,
    /// The `state` of the previous step, as it was.
    state: String,
    /// A code (TOTP's first code).
    #[serde(default)]
    code: Option<String>,
    /// The provider's input as its prompt asks for it (a WebAuthn attestation): an object
    /// tagged by `type`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    input: Option<rolegate_sdk::Input>,
}

#[utoipa::path(
    post,
    path = "/v1/enrolments/continue",
    operation_id = "continue_enrolment",
    tag = "enrolments",
    summary = "Continue an enrolment",
    description = "Body `{provider, state, code?|input?}` (neither: acknowledge the prompt). \
Answers the next step, or `done` with the stored credential's id.",
    request_body = EnrolContinue,
    responses(
        (status = 200, description = "The next step, or the end", body = EnrolmentView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`", body = ErrorBody),
        (status = 422, description = "`invalid`: both `code` and `input`, or a state that is not valid or has expired", body = ErrorBody),
        (status = 502, description = "`provider_error`", body = ErrorBody),
        (status = 503, description = "`provider_unavailable`", body = ErrorBody),
    ),
    security(("bearer" = [])),
    extensions(("x-rolegate-admin" = json!(false))),
)]
pub(super) async fn enrol_continue(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(b): Json<EnrolContinue>,
) -> ApiResult<Json<EnrolmentView>> {
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
    Ok(Json(
        api.service
            .enroll_continue(&c.account, &b.provider, &b.state, input)
            .await?,
    ))
}
